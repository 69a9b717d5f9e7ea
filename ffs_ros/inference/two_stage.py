"""The backend-independent parts of running a network matcher.

* :func:`stage_plan` -- which feature outputs feed the post stage, in which dtype, and the correlation-volume
  parameters, for one network size (pure; used by every backend and by the TensorRT buffer planning).
* :class:`NetworkMatcher` -- the ``StereoMatcher`` skeleton for host-side (numpy) pipelines: letterbox
  preprocessing, the network call (subclass), crop/resize/invalidate postprocessing, per-stage timings
  (``preprocess``, ``feature``, ``gwc``, ``post``, ``postprocess`` in ms) and the reported valid window.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np

from .base import MatcherInfo, StereoMatcher, check_pair
from .contracts import (GWC_INPUT, GWC_SOURCES, IMAGENET_MEAN_255, IMAGENET_STD_255, POST_OUTPUT, ModelSource)
from .letterbox import ResizePlan, from_network, invalidate, plan_for_input, plan_resize, to_network

STAGES = ('preprocess', 'feature', 'gwc', 'post', 'postprocess')


@dataclass(frozen=True)
class StagePlan:
    """Wiring of a two-stage model at one network size."""
    net_hw: tuple[int, int]
    post_feeds: dict          # post-graph input name (not gwc_volume) -> np.dtype it declares
    post_output: str
    num_groups: int
    num_disparities: int
    normalize: bool
    gwc_dtype: np.dtype
    gwc_shape: tuple          # [1, G, D, H/4, W/4]
    unused_features: tuple = ()  # feature outputs the post graph does not take (computed, never bound)


def stage_plan(src: ModelSource, net_hw: tuple[int, int]) -> StagePlan:
    """Plan the feature -> volume -> post wiring of the two-stage model `src` at network size `net_hw`."""
    h, w = net_hw
    if h % 32 or w % 32:
        raise ValueError(f'network size {w}x{h} is not a multiple of 32')
    post_feeds = {t.name: t.dtype for t in src.post.inputs if t.name != GWC_INPUT}
    out_name = POST_OUTPUT if src.post.output(POST_OUTPUT) is not None else src.post.outputs[0].name
    g, d = src.num_groups, src.num_disparities
    unused = tuple(n for n in src.feature.output_names if n not in post_feeds and n not in GWC_SOURCES)
    return StagePlan((h, w), post_feeds, out_name, g, d, src.config.normalize, np.dtype(src.gwc_dtype),
                     (1, g, d, h // 4, w // 4), unused)


def to_nchw(image: np.ndarray) -> np.ndarray:
    """HxWx3 (uint8 or float) -> float32 [1,3,H,W] on the 0..255 scale."""
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32)


def imagenet_normalise(x: np.ndarray) -> np.ndarray:
    """[1,3,H,W] 0..255 RGB -> ImageNet-normalised (single-engine contract), in place."""
    x -= IMAGENET_MEAN_255.reshape(1, 3, 1, 1)
    x /= IMAGENET_STD_255.reshape(1, 3, 1, 1)
    return x


class NetworkMatcher(StereoMatcher):
    """StereoMatcher for networks with host-side (numpy) pre/postprocessing.

    Subclasses set ``self.source``, ``self._backend``, ``self._device`` and implement :meth:`_network`, which takes
    the two [1,3,H,W] float32 inputs at the network size and returns the [H,W] disparity, adding its stage times to
    ``self.last_timings``.

    Options: ``resize_mode`` ('letterbox' | 'stretch'), ``allow_upscale`` (scale > 1 for small images on a
    fixed-size graph), ``net_size`` ((H, W) to run a dynamic graph at a fixed size), ``remove_invisible`` (NaN where
    x - d < 0: no match possible in the right image).
    """

    prenormalise = False  # True for the single-engine contract (the caller normalises)

    def __init__(self, source: ModelSource, resize_mode: str = 'letterbox', allow_upscale: bool = False,
                 net_size=None, remove_invisible: bool = True) -> None:
        super().__init__()
        self.source = source
        self.resize_mode = resize_mode
        self.allow_upscale = allow_upscale
        self.remove_invisible = remove_invisible
        fixed = source.network_size
        if net_size is not None:
            net_size = (int(net_size[0]), int(net_size[1]))
            if fixed is not None and tuple(net_size) != fixed:
                raise ValueError(f'net_size {net_size[1]}x{net_size[0]} conflicts with the model, which is fixed '
                                 f'at {fixed[1]}x{fixed[0]}; drop net_size or re-export the model')
            if net_size[0] % 32 or net_size[1] % 32:
                raise ValueError(f'net_size {net_size[1]}x{net_size[0]} must be multiples of 32')
        self.net_size = fixed or net_size
        plan_resize((32, 32), self.net_size, resize_mode)  # validates resize_mode early
        self.last_plan: ResizePlan | None = None
        self._backend = 'network'
        self._device = 'cpu'

    # -- to implement ---------------------------------------------------------------------------------------------
    def _network(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------------------------
    def plan_for(self, in_hw) -> ResizePlan:
        return plan_for_input(in_hw, self.net_size, self.resize_mode, self.allow_upscale)

    @property
    def info(self) -> MatcherInfo:
        extra = {'resize_mode': self.resize_mode, 'model_kind': self.source.kind}
        if self.source.kind == 'two_stage':
            extra.update(normalize=self.source.config.normalize, num_groups=self.source.num_groups,
                         max_disp=4 * self.source.num_disparities)
        if self.last_plan is not None:
            p = self.last_plan
            extra.update(valid_window=p.valid_window, scale=(p.scale_x, p.scale_y), network_input=p.net_hw)
        return MatcherInfo(backend=self._backend, device=self._device, model=self.source.describe(),
                           resolution=self.net_size, extra=extra)

    def match(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        check_pair(left, right)
        t0 = time.perf_counter()
        plan = self.plan_for(left.shape[:2])
        self.last_plan = plan
        l_in, r_in = to_nchw(to_network(left, plan)), to_nchw(to_network(right, plan))
        if self.prenormalise:
            imagenet_normalise(l_in)
            imagenet_normalise(r_in)
        self.last_timings = {'preprocess': (time.perf_counter() - t0) * 1e3}
        disp = self._network(l_in, r_in)
        t1 = time.perf_counter()
        out = invalidate(from_network(disp, plan), self.remove_invisible)
        self.last_timings['postprocess'] = (time.perf_counter() - t1) * 1e3
        return out


def timed(timings: dict, stage: str):
    """Context manager adding the elapsed ms of a block to timings[stage]."""
    return _Timer(timings, stage)


class _Timer:
    def __init__(self, timings: dict, stage: str) -> None:
        self.timings, self.stage = timings, stage

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.timings[self.stage] = self.timings.get(self.stage, 0.0) + (time.perf_counter() - self.t0) * 1e3


_STRIDES = {'_04': 4, '_08': 8, '_16': 16, '_32': 32, '_2x': 2}


def feature_output_shapes(src: ModelSource, net_hw: tuple[int, int]) -> dict:
    """Feature-graph output name -> concrete shape at network size `net_hw`.

    Fixed dimensions come from the graph; symbolic spatial ones from the stride in the contract name
    (``*_04`` = 1/4, ``*_08``, ``*_16``, ``*_32``, ``stem_2x`` = 1/2). When a channel axis is symbolic too (some
    dynamic exports), the shapes are measured once by running the feature graph on zeros with ONNX Runtime (CPU).
    A fixed graph at another size raises ValueError.
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
                    raise ValueError(f'{src.feature.path}: output {spec.name!r} is fixed at {spec.shape}, which '
                                     f'does not match network size {w}x{h}')
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
