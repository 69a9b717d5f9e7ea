"""A matcher whose network stages run on one torch device (CUDA on robots; CPU works too and is what tests use).

On a GPU, per frame: the two uint8 images go to the device in ONE copy (stacked, from a reused pinned buffer), are
letterboxed/normalised there, the subclass runs the network stages on device tensors
(:meth:`DevicePipelineMatcher._stages`), the disparity is cropped, resized, scaled and invalidated on the device and
comes back in ONE copy. On CPU the letterbox and postprocessing are the host (OpenCV/numpy) ones. Used by the torch backend (our own
checkpoint), the TensorRT backend and ONNX Runtime with I/O binding.

Optional CUDA-graph capture (``cuda_graph=True``, CUDA only) records the network stages once per network size and
replays them; stage times are then reported as one ``network`` entry.
"""
from __future__ import annotations

import time

import numpy as np

from .base import MatcherInfo, StereoMatcher, check_pair
from .contracts import IMAGENET_MEAN_255, IMAGENET_STD_255, ModelSource
from .letterbox import (ResizePlan, from_network, from_network_torch, invalidate, plan_for_input, plan_resize,
                        to_network, to_network_torch)
from .two_stage import imagenet_normalise, to_nchw


def resolve_torch_device(device):
    """'cuda', 'cuda:1', 'cpu' or None (CUDA if available) -> torch.device, with a clear error if CUDA is absent."""
    import torch
    if device is None or device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    dev = torch.device(device)
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise RuntimeError(f'device {device!r} requested but torch sees no CUDA GPU (torch {torch.__version__}); '
                           f'use device cpu, or install a CUDA build of torch')
    return dev


class DevicePipelineMatcher(StereoMatcher):
    """Base for device-resident pipelines; subclasses implement :meth:`_stages`."""

    prenormalise = False

    def __init__(self, source: ModelSource, device=None, resize_mode: str = 'letterbox',
                 allow_upscale: bool = False, net_size=None, remove_invisible: bool = True,
                 cuda_graph: bool = False, sync_timings: bool = True) -> None:
        super().__init__()
        import torch
        self.torch = torch
        self.source = source
        self.device = resolve_torch_device(device)
        self.resize_mode = resize_mode
        self.allow_upscale = allow_upscale
        self.remove_invisible = remove_invisible
        self.sync_timings = sync_timings
        if cuda_graph and self.device.type != 'cuda':
            raise ValueError('cuda_graph=True needs a CUDA device; drop the option on CPU')
        self.cuda_graph = cuda_graph
        fixed = source.network_size
        if net_size is not None:
            net_size = (int(net_size[0]), int(net_size[1]))
            if fixed is not None and net_size != fixed:
                raise ValueError(f'net_size {net_size[1]}x{net_size[0]} conflicts with the model, which is fixed '
                                 f'at {fixed[1]}x{fixed[0]}; drop net_size or re-export the model')
            if net_size[0] % 32 or net_size[1] % 32:
                raise ValueError(f'net_size {net_size[1]}x{net_size[0]} must be multiples of 32')
        self.net_size = fixed or net_size
        plan_resize((32, 32), self.net_size, resize_mode)
        self._graphs: dict = {}
        self._pinned: dict = {}
        self.last_plan: ResizePlan | None = None
        self._backend = 'device'
        self._mean = torch.tensor(IMAGENET_MEAN_255, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD_255, device=self.device).view(1, 3, 1, 1)

    # -- to implement ---------------------------------------------------------------------------------------------
    def _stages(self, left, right, timings: dict | None):  # pragma: no cover - abstract
        """[1,3,H,W] float32 device tensors at the network size -> [1,1,H,W] disparity tensor."""
        raise NotImplementedError

    def _describe(self) -> dict:
        return {}

    def _model_text(self) -> str:
        return self.source.describe()

    # -- shared ---------------------------------------------------------------------------------------------------
    def _sync(self) -> None:
        if self.sync_timings and self.device.type == 'cuda':
            self.torch.cuda.synchronize(self.device)

    def stage(self, timings: dict | None, name: str):
        """Context manager timing a device stage (synchronises CUDA at its end when sync_timings)."""
        return _DeviceTimer(self, timings, name)

    def plan_for(self, in_hw) -> ResizePlan:
        return plan_for_input(in_hw, self.net_size, self.resize_mode, self.allow_upscale)

    @property
    def info(self) -> MatcherInfo:
        extra = {'resize_mode': self.resize_mode, 'model_kind': self.source.kind, 'cuda_graph': self.cuda_graph}
        extra.update(self._describe())
        if self.last_plan is not None:
            p = self.last_plan
            extra.update(valid_window=p.valid_window, scale=(p.scale_x, p.scale_y), network_input=p.net_hw)
        return MatcherInfo(backend=self._backend, device=str(self.device), model=self._model_text(),
                           resolution=self.net_size, extra=extra)

    def _network(self, x, plan: ResizePlan, timings: dict):
        """Run the stages, through a captured CUDA graph when enabled."""
        left, right = x[0:1], x[1:2]
        if not self.cuda_graph:
            return self._stages(left, right, timings)
        torch = self.torch
        key = plan.net_hw
        if key not in self._graphs:
            static_in = x.clone()
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(2):  # warm-up outside capture (allocations, autotuning)
                    self._stages(static_in[0:1], static_in[1:2], None)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._stages(static_in[0:1], static_in[1:2], None)
            self._graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self._graphs[key]
        t0 = time.perf_counter()
        static_in.copy_(x)
        graph.replay()
        self._sync()
        timings['network'] = (time.perf_counter() - t0) * 1e3
        return static_out

    def match(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        check_pair(left, right)
        timings: dict = {}
        plan = self.plan_for(left.shape[:2])
        self.last_plan = plan
        with self.torch.inference_mode():
            if self.device.type == 'cpu':
                out = self._match_host(left, right, plan, timings)
            else:
                out = self._match_device(left, right, plan, timings)
        self.last_timings = timings
        return np.ascontiguousarray(out, dtype=np.float32)

    def _match_host(self, left, right, plan: ResizePlan, timings: dict) -> np.ndarray:
        """CPU: letterbox and postprocess with OpenCV/numpy (the same code as the host matchers; small torch
        elementwise ops stall for tens of ms in torch's thread pool on a busy CPU)."""
        torch = self.torch
        with self.stage(timings, 'preprocess'):
            x = np.concatenate([to_nchw(to_network(left, plan)), to_nchw(to_network(right, plan))])
            if self.prenormalise:
                imagenet_normalise(x)
            x = torch.from_numpy(x)
        disp = self._network(x, plan, timings)
        with self.stage(timings, 'postprocess'):
            d = disp.detach().float().numpy()[0, 0]
            return invalidate(from_network(d, plan), self.remove_invisible)

    def _match_device(self, left, right, plan: ResizePlan, timings: dict) -> np.ndarray:
        """GPU: one upload of the pair, letterbox/normalise/crop/resize/invalidate on the device, one download."""
        torch = self.torch
        with self.stage(timings, 'preprocess'):
            host = self._pinned.get(left.shape)
            if host is None:  # page-locked staging buffer, reused per image size
                host = self._pinned[left.shape] = torch.empty((2,) + left.shape, dtype=torch.uint8,
                                                              pin_memory=True)
            host[0].numpy()[...] = left
            host[1].numpy()[...] = right
            pair = host.to(self.device, non_blocking=True)                 # the one upload
            x = pair.permute(0, 3, 1, 2).float()
            x = to_network_torch(x, plan)
            if self.prenormalise:
                x = (x - self._mean) / self._std
            x = x.contiguous()
        disp = self._network(x, plan, timings)
        with self.stage(timings, 'postprocess'):
            d = from_network_torch(disp.float(), plan)[0, 0]
            bad = ~torch.isfinite(d) | (d <= 0)
            if self.remove_invisible:
                xs = torch.arange(d.shape[-1], device=d.device, dtype=d.dtype)
                bad |= (xs - d) < 0
            d = d.masked_fill(bad, float('nan'))
            return d.cpu().numpy()                                          # the one download


class _DeviceTimer:
    def __init__(self, matcher: DevicePipelineMatcher, timings: dict | None, name: str) -> None:
        self.m, self.timings, self.name = matcher, timings, name

    def __enter__(self):
        if self.timings is not None:
            self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.timings is not None:
            self.m._sync()
            self.timings[self.name] = self.timings.get(self.name, 0.0) + (time.perf_counter() - self.t0) * 1e3
