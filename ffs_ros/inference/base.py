"""The one interface every stereo backend implements."""
from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np


@dataclass
class MatcherInfo:
    """What a matcher reports for diagnostics and tools."""
    backend: str                 # 'sgbm', 'onnxruntime', 'torch', 'tensorrt'
    device: str = 'cpu'          # 'cpu', 'cuda:0', ...
    model: str = ''              # model path or description
    resolution: tuple[int, int] | None = None  # network (H, W); None = any size
    extra: dict = field(default_factory=dict)


class StereoMatcher(abc.ABC):
    """rgb uint8 left/right HxWx3 -> float32 HxW disparity in left-image pixels, NaN invalid.

    Disparity is x_left - x_right of the images as given (no principal-point correction:
    that is geometry's job). Implementations may keep the per-stage times of the last call
    in `last_timings` (stage name -> milliseconds) for benchmarks and diagnostics.
    """

    def __init__(self) -> None:
        self.last_timings: dict[str, float] = {}

    @property
    @abc.abstractmethod
    def info(self) -> MatcherInfo:
        """Backend, device, model and network resolution."""

    @abc.abstractmethod
    def match(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Compute the disparity of `left` against `right` (both HxWx3 uint8 RGB)."""

    def close(self) -> None:
        """Release device resources (optional)."""

    def __call__(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return self.match(left, right)


def check_pair(left: np.ndarray, right: np.ndarray) -> None:
    """Raise ValueError unless left/right are same-size HxWx3 uint8 arrays."""
    for name, im in (('left', left), ('right', right)):
        if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
            raise ValueError(f'{name} image must be HxWx3 uint8 RGB, got shape {im.shape} dtype {im.dtype}')
    if left.shape != right.shape:
        raise ValueError(f'left {left.shape[:2]} and right {right.shape[:2]} images differ in size')
