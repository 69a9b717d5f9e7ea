"""The one interface every stereo backend implements, and what a matcher reports about itself."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np

# Nominal sub-pixel resolution of a disparity (px): SGBM's exact 1/16 step; networks regress
# continuous values.
DEFAULT_DELTA_D = 1.0 / 16.0


@dataclass(frozen=True)
class MatcherInfo:
    """What a matcher reports for diagnostics, DisparityImage fields and tools.

    network_size: (H, W) the network runs at (None: any size / no network). valid_window: (x, y,
    width, height) of the region of the *output image* (input resolution) where the matcher can
    produce disparities, for the last input size seen (None before the first frame: the whole
    image). max_disparity: the largest disparity the matcher searches, in output-image pixels
    (None: unknown). delta_d: the smallest disparity step it resolves (px).
    """

    backend: str  # 'sgbm', 'onnxruntime', 'torch', 'tensorrt'
    device: str = 'cpu'  # 'cpu', 'cuda:0', ...
    model: str = ''  # model path or description
    network_size: tuple[int, int] | None = None
    valid_window: tuple[int, int, int, int] | None = None
    max_disparity: float | None = None
    delta_d: float = DEFAULT_DELTA_D
    confidence: str = ''
    lr_check: bool = False
    extra: dict = field(default_factory=dict)  # backend details (precision, resize mode, ...)


@dataclass(frozen=True)
class MatchResult:
    """What :meth:`StereoMatcher.match_full` returns.

    disparity: float32 HxW in left-image pixels, NaN where invalid. confidence: float32 HxW in
    [0, 1] at the same resolution (how sure each disparity is; NaN where the disparity is NaN),
    or None when the matcher cannot give one (``MatcherInfo.confidence`` says which).
    """

    disparity: np.ndarray
    confidence: np.ndarray | None = None


def with_nan(confidence, disparity):
    """Return `confidence` as float32 with NaN wherever `disparity` is NaN (None stays None)."""
    if confidence is None:
        return None
    c = np.asarray(confidence, np.float32)
    c = np.clip(c, 0.0, 1.0, out=c if c.flags.writeable else None)
    c[~np.isfinite(disparity)] = np.nan
    return c


class StereoMatcher(abc.ABC):
    """rgb uint8 left/right HxWx3 -> float32 HxW disparity in left-image pixels, NaN invalid.

    Disparity is x_left - x_right of the images as given (no principal-point correction:
    that is geometry's job). Implementations may keep the per-stage times of the last call
    in `last_timings` (stage name -> milliseconds) for benchmarks and diagnostics.
    """

    # : True when prepare() does real work (device buffers, engine builds): the node then calls it
    # at start-up
    prepares: bool = False

    def __init__(self) -> None:
        self.last_timings: dict[str, float] = {}

    @property
    @abc.abstractmethod
    def info(self) -> MatcherInfo:
        """Backend, device, model, network size, valid window."""

    @abc.abstractmethod
    def match(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Compute the disparity of `left` against `right` (both HxWx3 uint8 RGB)."""

    def match_full(self, left: np.ndarray, right: np.ndarray) -> MatchResult:
        """Compute the disparity and, where the matcher can, its confidence.

        The default gives no confidence; matchers that can override this.
        """
        return MatchResult(self.match(left, right), None)

    def prepare(self, in_hw: tuple[int, int]) -> None:
        """Get ready for inputs of size (H, W) (e.g.

        build TensorRT engines) so the first frame does not wait.

        Optional; matchers with nothing to prepare do nothing. May take minutes (engine builds).
        """

    def close(self) -> None:
        """Release device resources (optional)."""

    def __call__(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return self.match(left, right)


def check_pair(left: np.ndarray, right: np.ndarray) -> None:
    """Raise ValueError unless left/right are same-size HxWx3 uint8 arrays."""
    for name, im in (('left', left), ('right', right)):
        if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
            raise ValueError(
                f'{name} image must be HxWx3 uint8 RGB, got shape {im.shape} dtype {im.dtype}'
            )
    if left.shape != right.shape:
        raise ValueError(
            f'left {left.shape[:2]} and right {right.shape[:2]} images differ in size'
        )
