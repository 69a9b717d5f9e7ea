"""How the graphs of a model are wired together at one network size (pure; no runtime needed).

* :func:`stage_plan` -- which feature outputs feed the post graph, in which dtype, and the
correlation-volume
  parameters of a two-stage model at one network size (used by every backend).
* :func:`feature_output_shapes` / :func:`graph_input_shapes` -- concrete tensor shapes at a
network size (for
  device buffers and TensorRT optimisation profiles).
* :func:`to_nchw` / :func:`imagenet_normalise` -- the image layout every contract takes.
"""

from __future__ import annotations

from dataclasses import dataclass
import functools

import numpy as np

from .files import (
    GWC_INPUT,
    GWC_SOURCES,
    IMAGENET_MEAN_255,
    IMAGENET_STD_255,
    MULTIPLE,
    ModelSource,
)


@dataclass(frozen=True)
class StagePlan:
    """Wiring of a two-stage model at one network size."""

    net_hw: tuple[int, int]
    post_feeds: dict  # post-graph input name (not gwc_volume) -> np.dtype it declares
    post_output: str
    num_groups: int
    num_disparities: int
    normalize: bool
    gwc_dtype: np.dtype
    gwc_shape: tuple  # [1, G, D, H/4, W/4]
    # feature outputs the post graph does not take (computed, never bound)
    unused_features: tuple = ()
    confidence_output: str | None = None  # the post graph's confidence output, if it has one


def check_net_size(net_hw) -> tuple[int, int]:
    h, w = int(net_hw[0]), int(net_hw[1])
    if h % MULTIPLE or w % MULTIPLE or h <= 0 or w <= 0:
        raise ValueError(f'network size {w}x{h} must be positive multiples of {MULTIPLE}')
    return h, w


def stage_plan(src: ModelSource, net_hw: tuple[int, int]) -> StagePlan:
    """Plan the feature -> volume -> post wiring of the two-stage model `src`.

    The plan is for network size `net_hw`.
    """
    h, w = check_net_size(net_hw)
    post_feeds = {t.name: t.dtype for t in src.post.inputs if t.name != GWC_INPUT}
    g, d = src.num_groups, src.num_disparities
    unused = tuple(
        n for n in src.feature.output_names if n not in post_feeds and n not in GWC_SOURCES
    )
    return StagePlan(
        (h, w),
        post_feeds,
        src.disparity_output,
        g,
        d,
        src.config.normalize,
        np.dtype(src.gwc_dtype),
        (1, g, d, h // 4, w // 4),
        unused,
        src.confidence_output,
    )


_STRIDES = {'_04': 4, '_08': 8, '_16': 16, '_32': 32, '_2x': 2}


def feature_output_shapes(src: ModelSource, net_hw: tuple[int, int]) -> dict:
    """Feature-graph output name -> concrete shape at network size `net_hw`.

    Fixed dimensions come from the graph; symbolic spatial ones from the stride in the contract
    name (``*_04`` = 1/4, ``*_08``, ``*_16``, ``*_32``, ``stem_2x`` = 1/2). When a channel axis is
    symbolic too (some dynamic exports), the shapes are measured once by running the feature graph
    on zeros with ONNX Runtime (CPU). A fixed graph at another size raises ValueError.
    """
    h, w = net_hw
    shapes = {}
    for spec in src.feature.outputs:
        stride = next((s for suf, s in _STRIDES.items() if spec.name.endswith(suf)), None)
        dims = list(spec.shape)
        if len(dims) != 4:
            raise ValueError(f'{src.feature.path}: output {spec.name!r} is not 4-D ({dims})')
        if not isinstance(dims[1], int) or (stride is None and not spec.fixed):
            return dict(_probe_shapes(str(src.feature.path), (h, w)))
        dims[0] = 1
        for axis, full in ((2, h), (3, w)):
            if isinstance(dims[axis], int):
                if stride is not None and dims[axis] != full // stride:
                    raise ValueError(
                        f'{src.feature.path}: output {spec.name!r} is fixed at {spec.shape}, '
                        'which '
                        f'does not match network size {w}x{h}'
                    )
            else:
                dims[axis] = full // stride
        shapes[spec.name] = tuple(dims)
    return shapes


@functools.lru_cache(maxsize=8)
def _probe_shapes(feature_path: str, net_hw: tuple[int, int]) -> tuple:
    """Run the feature graph once on zeros (ORT, CPU) and return ((name, shape), ...)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(feature_path, sess_options=so, providers=['CPUExecutionProvider'])
    x = np.zeros((1, 3) + tuple(net_hw), np.float32)
    outs = sess.run(None, {'left': x, 'right': x})
    return tuple((o.name, tuple(v.shape)) for o, v in zip(sess.get_outputs(), outs))


def graph_input_shapes(source: ModelSource, role: str, net_hw) -> dict:
    """Return input name -> concrete shape of graph `role` at network size `net_hw`.

    `role` is 'feature', 'post' or 'single'.
    """
    h, w = check_net_size(net_hw)
    if role in ('feature', 'single'):
        if role == 'feature' and source.kind != 'two_stage':
            raise ValueError(f'{source.describe()} has no feature graph')
        a, b = source.image_inputs
        return {a: (1, 3, h, w), b: (1, 3, h, w)}
    if role == 'post':
        feats = feature_output_shapes(source, (h, w))
        plan = stage_plan(source, (h, w))
        shapes = {n: feats[n] for n in plan.post_feeds}
        shapes[GWC_INPUT] = plan.gwc_shape
        return shapes
    raise ValueError(f'unknown graph role {role!r}')


def to_nchw(image: np.ndarray) -> np.ndarray:
    """HxWx3 (uint8 or float) -> float32 [1,3,H,W] on the 0..255 scale."""
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32)


def imagenet_normalise(x: np.ndarray) -> np.ndarray:
    """[N,3,H,W] 0..255 RGB -> ImageNet-normalised (single-engine contract), in place."""
    x -= IMAGENET_MEAN_255.reshape(1, 3, 1, 1)
    x /= IMAGENET_STD_255.reshape(1, 3, 1, 1)
    return x
