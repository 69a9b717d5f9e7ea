"""The one network matcher: plan -> preprocess -> run the network -> postprocess.

A backend only says how one graph runs (:class:`Graphs`): ONNX Runtime, PyTorch or TensorRT.
Everything else is here, once:

* **plan** -- fit the camera image to the network size (:mod:`.letterbox`);
* **preprocess** -- letterbox, NCHW float, ImageNet normalisation for the single-engine contract;
* **network** -- the contract's wiring: ``feature`` graph -> group-wise correlation volume ->
``post`` graph
  (two-stage), or one graph (``single`` / ``plugin``);
* **postprocess** -- crop, resize back, scale, invalidate (NaN where no match is possible).

Two runners share that sequence. On the **host** (numpy; ONNX Runtime on a CPU) OpenCV does the
letterbox and the volume is the BLAS one. On a **device** (torch tensors; CUDA on robots, CPU in
tests) everything runs inside the matcher's :class:`~.device.Device` scope, on its own stream: the
pair goes up in one copy from a reused pinned buffer, letterbox/normalise/volume/crop/resize happen
on the device, the disparity comes down in one copy, and the stream is synchronised once, after
which the stage times (CUDA events) are read. Optionally (``cuda_graph``) the network part is
captured once per network size into a CUDA graph and replayed; a size that cannot be captured is
logged once and runs without a graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import logging
import threading

import numpy as np

from ..contract import (
    CONFIDENCE_OUTPUT,
    GWC_INPUT,
    GWC_SOURCES,
    ModelSource,
    imagenet_normalise,
    stage_plan,
    to_nchw,
)
from ..contract.gwc import gwc_volume_numpy, gwc_volume_tensor
from .base import DEFAULT_DELTA_D, MatcherInfo, MatchResult, StereoMatcher, check_pair, with_nan
from .confidence import feature_confidence_numpy, feature_confidence_torch
from .device import Device, HostClock
from .letterbox import (
    ResizePlan,
    from_network,
    from_network_torch,
    invalidate,
    plan_for_input,
    plan_resize,
    to_network,
    to_network_torch,
)

log = logging.getLogger(__name__)

STAGES = ('preprocess', 'feature', 'gwc', 'post', 'confidence', 'postprocess')
CONFIDENCE_SOURCES = ('auto', 'network', 'features', 'off')


@dataclass
class Graphs:
    """What a backend supplies: one runnable per graph role, and where they run.

    graphs: role ('feature' + 'post', or 'single') -> runnable. Host runnables have ``run(feeds)
    -> outputs`` on
    numpy arrays. Device runnables have ``prepare(net_hw, shared) -> {name: tensor}`` (set up for
    one network size;
    returns the stable tensors they read and write, adopting tensors of `shared` -- the previous
    graph's outputs --
    as inputs where they can; {} when they take any tensor) and ``run(feeds, net_hw) -> outputs``
    on torch
    tensors, enqueued on the current stream.
    device: the :class:`Device` for device runnables; None for host ones.
    plan: net_hw -> StagePlan for the volume between feature and post (default: read from the ONNX
    graphs).
    """

    backend: str
    graphs: dict
    device: Device | None = None
    details: dict = field(default_factory=dict)
    gwc_threads: int | None = None  # host volume worker threads (None: one per core)
    allow_cuda_graph: bool = (
        True  # False: this backend cannot be captured (the caller is told why)
    )
    cuda_graph_refusal: str = ''
    plan: object = None

    @property
    def on_device(self) -> bool:
        return self.device is not None

    @property
    def two_stage(self) -> bool:
        return 'single' not in self.graphs


class NetworkMatcher(StereoMatcher):
    """StereoMatcher for every network backend.

    Options: ``resize_mode`` ('letterbox' | 'stretch'), ``allow_upscale`` (scale > 1 for small
    images on a fixed-size graph), ``net_size`` ((H, W) to run a dynamic graph at a fixed size),
    ``remove_invisible`` (NaN where x - d < 0: no match possible in the right image),
    ``cuda_graph`` (device runner on CUDA only), ``confidence_source`` ('auto': the model's own
    confidence output if it has one, else the feature-based one; 'network', 'features', 'off').
    """

    def __init__(
        self,
        source: ModelSource,
        graphs: Graphs,
        resize_mode: str = 'letterbox',
        allow_upscale: bool = False,
        net_size=None,
        remove_invisible: bool = True,
        cuda_graph: bool = False,
        confidence_source: str = 'auto',
    ) -> None:
        super().__init__()
        self.source = source
        self.graphs = graphs
        self.confidence_source = resolve_confidence(source, confidence_source or 'auto')
        self.resize_mode = resize_mode
        self.allow_upscale = allow_upscale
        self.remove_invisible = remove_invisible
        fixed = source.network_size
        if net_size is not None:
            net_size = (int(net_size[0]), int(net_size[1]))
            if fixed is not None and tuple(net_size) != fixed:
                raise ValueError(
                    f'net_size {net_size[1]}x{net_size[0]} conflicts with the model, which is '
                    'fixed '
                    f'at {fixed[1]}x{fixed[0]}; drop net_size or re-export the model'
                )
            if net_size[0] % 32 or net_size[1] % 32:
                raise ValueError(f'net_size {net_size[1]}x{net_size[0]} must be multiples of 32')
        self.net_size = fixed or net_size
        plan_resize((32, 32), self.net_size, resize_mode)  # validates resize_mode early
        if cuda_graph:
            if not graphs.allow_cuda_graph:
                raise ValueError(
                    graphs.cuda_graph_refusal
                    or f'cuda_graph is not supported by backend {graphs.backend}; drop the option'
                )
            if not (graphs.on_device and graphs.device.is_cuda):
                raise ValueError('cuda_graph=True needs a CUDA device; drop the option on CPU')
        self.cuda_graph = bool(cuda_graph)
        self.device = graphs.device
        self.last_plan: ResizePlan | None = None
        self._lock = threading.Lock()
        self._host_vol: dict = {}
        self._sized: dict = {}  # net_hw -> _DeviceBuffers
        self._pinned: dict = {}
        # net_hw -> (graph, static input, static output) or None (capture failed)
        self._captured: dict = {}
        self._plans: dict = {}        # net_hw -> StagePlan (the host path needs it every frame)
        if graphs.on_device:
            import torch

            from ..contract import IMAGENET_MEAN_255, IMAGENET_STD_255

            self._mean = torch.tensor(IMAGENET_MEAN_255, device=self.device.device).view(
                1, 3, 1, 1
            )
            self._std = torch.tensor(IMAGENET_STD_255, device=self.device.device).view(1, 3, 1, 1)

    # -- reporting --------------------------------------------------------------------------------
    def plan_for(self, in_hw) -> ResizePlan:
        return plan_for_input(in_hw, self.net_size, self.resize_mode, self.allow_upscale)

    @property
    def info(self) -> MatcherInfo:
        extra = {
            'resize_mode': self.resize_mode,
            'model_kind': self.source.kind,
            'cuda_graph': self.cuda_graph,
        }
        extra.update(self.graphs.details)
        max_disp = self.graphs.details.get('max_disp')
        if self.source.kind == 'two_stage':
            extra.update(
                normalize=self.source.config.normalize,
                num_groups=self.source.num_groups,
                num_disparities=self.source.num_disparities,
            )
            max_disp = float(4 * self.source.num_disparities)
        elif self.source.config.max_disp:
            max_disp = float(self.source.config.max_disp)
        window, net = None, self.net_size
        p = self.last_plan
        if p is not None:
            # the network covers the whole image (letterbox: scaled into the valid region, then
            # resized back)
            window = (0, 0, p.in_hw[1], p.in_hw[0])
            net = p.net_hw
            extra.update(scale=(p.scale_x, p.scale_y))
            if max_disp is not None:
                max_disp = max_disp / p.scale_x
        device = (
            str(self.device)
            if self.device is not None
            else self.graphs.details.get('device', 'cpu')
        )
        return MatcherInfo(
            backend=self.graphs.backend,
            device=device,
            model=self.source.describe(),
            network_size=net,
            valid_window=window,
            max_disparity=max_disp,
            delta_d=DEFAULT_DELTA_D,
            confidence=self.confidence_source,
            extra=extra,
        )

    # -- entry points -----------------------------------------------------------------------------
    @property
    def prepares(self) -> bool:
        return self.graphs.on_device

    def prepare(self, in_hw) -> None:
        """Build/allocate everything the network needs for inputs of size `in_hw`.

        Engines are built here.
        """
        plan = self.plan_for(in_hw)
        if not self.graphs.on_device:
            return
        with self._lock, self.device.scope():
            self._buffers(plan.net_hw)

    def match(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return self._match(left, right, False).disparity

    def match_full(self, left: np.ndarray, right: np.ndarray) -> MatchResult:
        return self._match(left, right, True)

    def _match(self, left, right, want_confidence: bool) -> MatchResult:
        check_pair(left, right)
        want = want_confidence and bool(self.confidence_source)
        with self._lock:
            plan = self.plan_for(left.shape[:2])
            self.last_plan = plan
            if self.graphs.on_device:
                out, conf, timings = self._match_device(left, right, plan, want)
            else:
                out, conf, timings = self._match_host(left, right, plan, want)
            self.last_timings = timings
        return MatchResult(out, with_nan(conf, out) if want else None)

    def close(self) -> None:
        for g in self.graphs.graphs.values():
            closer = getattr(g, 'close', None)
            if closer is not None:
                closer()
        self._captured.clear()
        self._sized.clear()

    # -- host runner ------------------------------------------------------------------------------
    def _match_host(self, left, right, plan: ResizePlan, want_confidence: bool):
        clock = HostClock()
        l_in, r_in = to_nchw(to_network(left, plan)), to_nchw(to_network(right, plan))
        if self.source.prenormalised:
            imagenet_normalise(l_in)
            imagenet_normalise(r_in)
        clock.mark('preprocess')
        disp, conf = self._network_host(l_in, r_in, plan.net_hw, clock, want_confidence)
        out = invalidate(from_network(disp, plan), self.remove_invisible)
        if conf is not None:
            conf = from_network(conf, plan, scale_values=False)
        clock.mark('postprocess')
        return out, conf, clock.read()

    def _network_host(self, left, right, net_hw, clock, want_confidence=False):
        """Run the graphs at `net_hw` -> (disparity [H,W], confidence [H,W] or None)."""
        g = self.graphs.graphs
        a, b = self.source.image_inputs
        if not self.graphs.two_stage:
            outs = g['single'].run({a: left, b: right})
            clock.mark('feature')
            clock.times.setdefault('gwc', 0.0)
            clock.times.setdefault('post', 0.0)
            conf = outs[self.source.confidence_output][0, 0] if want_confidence else None
            return outs[self.source.disparity_output][0, 0], conf
        plan = self._plan(net_hw)
        feats = g['feature'].run({a: left, b: right})
        clock.mark('feature')
        vol = self._host_vol.get(net_hw)
        if vol is None:
            self._host_vol.clear()  # keep only the current size's buffer
            vol = self._host_vol[net_hw] = np.empty(plan.gwc_shape, plan.gwc_dtype)
        gwc_volume_numpy(
            feats[GWC_SOURCES[0]],
            feats[GWC_SOURCES[1]],
            plan.num_groups,
            plan.num_disparities,
            plan.normalize,
            out=vol,
            threads=self.graphs.gwc_threads,
        )
        feeds = {n: feats[n].astype(dt, copy=False) for n, dt in plan.post_feeds.items()}
        feeds[GWC_INPUT] = vol
        clock.mark('gwc')
        outs = g['post'].run(feeds)
        disp = outs[plan.post_output][0, 0]
        clock.mark('post')
        conf = None
        if want_confidence and self.confidence_source == 'network':
            conf = outs[plan.confidence_output][0, 0]
        elif want_confidence and self.confidence_source == 'features':
            conf = feature_confidence_numpy(vol, disp)
            clock.mark('confidence')
        return disp, conf

    # -- device runner ----------------------------------------------------------------------------
    def _match_device(self, left, right, plan: ResizePlan, want_confidence: bool):
        dev = self.device
        with self.torch_inference(), dev.scope():
            clock = dev.clock()
            try:
                x = self._upload(left, right, plan)
                clock.mark('preprocess')
                disp, conf = self._network_device(x, plan.net_hw, clock, want_confidence)
                out, conf = self._download(disp, conf, plan, clock)
            finally:
                # the one wait: the result is needed on the host (and after a failure, the pinned
                # buffers must
                # not be rewritten by the next frame while a copy from this one may still be in
                # flight)
                dev.synchronize()
            timings = clock.read()  # events are complete now
        if dev.is_cuda:  # the pinned buffers are reused by the next frame
            out = np.array(out, dtype=np.float32, copy=True)
            conf = None if conf is None else np.array(conf, dtype=np.float32, copy=True)
        return out, conf, timings

    def torch_inference(self):
        import torch

        return torch.inference_mode()

    def _upload(self, left, right, plan: ResizePlan):
        import torch

        dev = self.device
        if not dev.is_cuda:
            # CPU: letterbox with OpenCV (small torch elementwise ops stall in torch's thread pool
            # on a busy CPU)
            x = np.concatenate([to_nchw(to_network(left, plan)), to_nchw(to_network(right, plan))])
            if self.source.prenormalised:
                imagenet_normalise(x)
            return torch.from_numpy(x)
        host = self._pinned.get(left.shape)
        if host is None:  # page-locked staging buffer, reused while the image size stays
            self._pinned = {k: v for k, v in self._pinned.items() if isinstance(k[0], str)}
            host = self._pinned[left.shape] = torch.empty(
                (2,) + left.shape, dtype=torch.uint8, pin_memory=True
            )
        host[0].numpy()[...] = left
        host[1].numpy()[...] = right
        pair = host.to(dev.device, non_blocking=True)  # the one upload, on our stream
        x = to_network_torch(pair.permute(0, 3, 1, 2).float(), plan)
        if self.source.prenormalised:
            x = (x - self._mean) / self._std
        return x.contiguous()

    def _download(self, disp, conf, plan: ResizePlan, clock):
        """Bring the disparity (and confidence) to the host at input resolution."""
        dev = self.device
        if not dev.is_cuda:
            out = invalidate(self._host_copy(disp, plan, True), self.remove_invisible)
            c = None if conf is None else self._host_copy(conf, plan, False)
            clock.mark('postprocess')
            return out, c
        import torch

        d = from_network_torch(disp.float(), plan)[0, 0]
        bad = ~torch.isfinite(d) | (d <= 0)
        if self.remove_invisible:
            xs = torch.arange(d.shape[-1], device=d.device, dtype=d.dtype)
            bad |= (xs - d) < 0
        d = d.masked_fill(bad, float('nan'))
        out = self._pinned_copy('out', d)  # the one download, on our stream
        c = None
        if conf is not None:
            c = self._pinned_copy('conf', from_network_torch(conf.float(), plan, False)[0, 0])
        clock.mark('postprocess')
        return out, c

    @staticmethod
    def _host_copy(t, plan, scale_values):
        """CPU tensor [1,1,h,w] at network size -> numpy at input size, never a graph's buffer."""
        a = t.detach().float().numpy()[0, 0]
        out = from_network(a, plan, scale_values=scale_values)
        # a graph's output buffer: the next frame would overwrite it
        return out.copy() if np.shares_memory(out, a) else out

    def _pinned_copy(self, role, t):
        """Copy device tensor `t` into a reused page-locked host buffer (non-blocking)."""
        import torch

        key = (role,) + tuple(t.shape)
        host = self._pinned.get(key)
        if host is None:
            self._pinned = {k: v for k, v in self._pinned.items() if k[0] != role}
            host = self._pinned[key] = torch.empty(
                tuple(t.shape), dtype=torch.float32, pin_memory=True
            )
        host.copy_(t, non_blocking=True)
        return host.numpy()

    def _network_device(self, x, net_hw, clock, want_confidence):
        """Run the network on device tensors -> (disparity, confidence or None) [1,1,H,W].

        A captured CUDA graph always computes the confidence (when there is a source).
        """
        if self.cuda_graph:
            entry = self._captured.get(net_hw, ())
            if entry == ():
                entry = self._captured[net_hw] = self._capture(x, net_hw)
            if entry is not None:
                graph, static_in, static_out = entry
                static_in.copy_(x)
                graph.replay()
                clock.mark('network')
                return static_out
        return self._stages(x[0:1], x[1:2], net_hw, clock, want_confidence)

    def _capture(self, x, net_hw):
        """Capture the network stages at `net_hw` into a CUDA graph on our stream.

        Returns None (logged once) on failure.
        """
        import torch

        dev = self.device
        try:
            static_in = x.clone()
            self._stages(
                static_in[0:1], static_in[1:2], net_hw, None, True
            )  # warm-up: lazy init is not captured
            dev.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=dev.stream, capture_error_mode='thread_local'):
                static_out = self._stages(static_in[0:1], static_in[1:2], net_hw, None, True)
            dev.synchronize()
            return graph, static_in, static_out
        except Exception as exc:  # noqa: BLE001 - any capture failure means: run without a graph
            log.warning(
                'CUDA graph capture failed at network size %dx%d (%s: %s); running without CUDA '
                'graphs for '
                'this size (same results, more launch overhead)',
                net_hw[1],
                net_hw[0],
                type(exc).__name__,
                exc,
            )
            try:
                dev.synchronize()
            # a failed capture can leave a sticky error; nothing more to do
            except Exception:
                pass
            return None

    def _buffers(self, net_hw) -> '_DeviceBuffers':
        """Prepare every graph for `net_hw` once and plan the volume buffer.

        Preparing covers engine builds and buffer binding.
        """
        bufs = self._sized.get(net_hw)
        if bufs is not None:
            return bufs
        import torch

        g = self.graphs.graphs
        if not self.graphs.two_stage:
            g['single'].prepare(net_hw, {})
            bufs = _DeviceBuffers(None, None)
        else:
            plan = self._plan(net_hw)
            feats = g['feature'].prepare(net_hw, {})
            post_in = g['post'].prepare(net_hw, feats)
            vol = post_in.get(GWC_INPUT)
            if vol is None:
                vol = torch.empty(
                    plan.gwc_shape,
                    dtype=getattr(torch, plan.gwc_dtype.name),
                    device=self.device.device,
                )
            bufs = _DeviceBuffers(plan, vol)
        self._sized[net_hw] = bufs
        return bufs

    def _stages(self, left, right, net_hw, clock, want_confidence=True):
        """Run [1,3,H,W] device tensors at the network size -> (disparity, confidence) [1,1,H,W].

        Runs on the current stream.
        """
        import torch

        bufs = self._buffers(net_hw)
        g = self.graphs.graphs
        a, b = self.source.image_inputs
        mark = clock.mark if clock is not None else (lambda stage: None)
        if bufs.plan is None:
            outs = g['single'].run({a: left, b: right}, net_hw)
            mark('feature')
            conf = None
            if want_confidence and self.confidence_source:
                conf = outs[self.source.confidence_output]
            return outs[self.source.disparity_output], conf
        plan = bufs.plan
        feats = g['feature'].run({a: left, b: right}, net_hw)
        mark('feature')
        gwc_volume_tensor(
            feats[GWC_SOURCES[0]],
            feats[GWC_SOURCES[1]],
            plan.num_groups,
            plan.num_disparities,
            plan.normalize,
            out=bufs.volume,
        )
        if (
            plan.post_feeds is None
        ):  # the post stage takes every feature as it comes (torch modules)
            feeds = dict(feats)
        else:
            feeds = {}
            for n, dt in plan.post_feeds.items():
                want = getattr(torch, np.dtype(dt).name)
                feeds[n] = feats[n] if feats[n].dtype == want else feats[n].to(want)
        feeds[GWC_INPUT] = bufs.volume
        mark('gwc')
        outs = g['post'].run(feeds, net_hw)
        disp = outs[plan.post_output]
        mark('post')
        conf = None
        if want_confidence and self.confidence_source == 'network':
            conf = outs[plan.confidence_output]
        elif want_confidence and self.confidence_source == 'features':
            conf = feature_confidence_torch(bufs.volume, disp)
            mark('confidence')
        return disp, conf

    def _plan(self, net_hw):
        """Return the feature -> volume -> post wiring at `net_hw` (planned once per size)."""
        plan = self._plans.get(net_hw)
        if plan is None:
            make = self.graphs.plan if self.graphs.plan is not None else self._stage_plan
            plan = self._plans[net_hw] = make(net_hw)
        return plan

    def _stage_plan(self, net_hw):
        return stage_plan(self.source, net_hw)


@dataclass
class _DeviceBuffers:
    plan: object  # StagePlan (two-stage) or None (one graph)
    # the correlation-volume tensor the post graph reads (its own input buffer if it has one)
    volume: object


def resolve_confidence(source: ModelSource, wanted: str) -> str:
    """Return where the confidence of `source` comes from ('network', 'features' or '').

    wanted: one of CONFIDENCE_SOURCES. Raises ValueError when the model cannot give the one asked
    for.
    """
    if wanted not in CONFIDENCE_SOURCES:
        raise ValueError(
            f'confidence_source {wanted!r}: choose one of {", ".join(CONFIDENCE_SOURCES)}'
        )
    has_network = source.confidence_output is not None
    has_volume = source.kind in ('two_stage', 'torch')
    if wanted == 'off':
        return ''
    if wanted == 'network' and not has_network:
        raise ValueError(
            f'confidence_source network: {source.describe()} has no {CONFIDENCE_OUTPUT!r} output '
            "(official exports output only the disparity); use 'features' (two-stage exports) or "
            "'auto'"
        )
    if wanted == 'features' and not has_volume:
        raise ValueError(
            f'confidence_source features needs a two-stage model (the correlation volume between '
            f'its graphs); {source.describe()} is a {source.kind} model: use '
            f"'{'network' if has_network else 'off'}'"
        )
    if wanted == 'auto':
        return 'network' if has_network else ('features' if has_volume else '')
    return wanted
