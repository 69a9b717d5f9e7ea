"""ONNX Runtime backend for the two-stage and single-engine contracts.

CPU: the CPU execution provider with intra-op threads = cores; host numpy pipeline; the correlation volume by
:func:`gwc_volume_numpy` written straight into a preallocated buffer of the dtype the post graph declares.
GPU (onnxruntime-gpu with the CUDA or TensorRT execution provider): I/O binding to torch CUDA buffers so features and
the volume never leave the device (GWC by :func:`gwc_volume_tensor`), one upload and one download per frame.
"""
from __future__ import annotations

import os

import numpy as np

from .contracts import GWC_INPUT, GWC_SOURCES, SINGLE_INPUTS, SINGLE_OUTPUT, ModelSource
from .device_pipeline import DevicePipelineMatcher
from .gwc import gwc_volume_numpy, gwc_volume_tensor
from .two_stage import NetworkMatcher, feature_output_shapes, stage_plan, timed

GPU_PROVIDERS = ('TensorrtExecutionProvider', 'CUDAExecutionProvider')


def import_ort():
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise RuntimeError('backend onnxruntime needs the onnxruntime package (pip install onnxruntime, or '
                           'onnxruntime-gpu for CUDA); or use backend torch / sgbm') from exc
    return ort


def choose_providers(device, available, fp16: bool = True) -> list:
    """Execution providers for `device` ('cpu', 'cuda', 'cuda:N' or None = best available).

    With onnxruntime-gpu: TensorRT EP first when present (fp16, engine cache under the ffs_ros engine cache), then
    the CUDA EP, then CPU for any leftover node.
    """
    available = list(available)
    dev = (device or 'auto').lower()
    if dev == 'cpu':
        return ['CPUExecutionProvider']
    if dev.startswith('cuda') and 'CUDAExecutionProvider' not in available:
        raise RuntimeError(f'device {device!r} needs onnxruntime-gpu (CUDAExecutionProvider); this onnxruntime offers '
                           f'{available}. Install onnxruntime-gpu, use device cpu, or backend tensorrt / torch')
    if 'CUDAExecutionProvider' not in available:
        return ['CPUExecutionProvider']
    idx = int(dev.split(':')[1]) if ':' in dev else 0
    providers = []
    if 'TensorrtExecutionProvider' in available:
        from .engine_cache import cache_dir
        providers.append(('TensorrtExecutionProvider', {
            'device_id': idx, 'trt_fp16_enable': bool(fp16), 'trt_engine_cache_enable': True,
            'trt_engine_cache_path': str(cache_dir() / 'onnxruntime')}))
    providers += [('CUDAExecutionProvider', {'device_id': idx}), 'CPUExecutionProvider']
    return providers


def make_session(path, providers, threads: int | None = None, spinning: bool = False):
    """An ORT session; intra-op threads = cores by default. Thread spinning is off by default: on a robot the
    CPU is shared with the ROS graph, and spinning workers then cost more than they save (measured on the 2-core
    dev CPU: feature stage 330 ms with spinning vs 305 ms without, under load)."""
    ort = import_ort()
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or os.cpu_count() or 1)
    so.inter_op_num_threads = 1
    so.add_session_config_entry('session.intra_op.allow_spinning', '1' if spinning else '0')
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=providers)


def _uses_gpu(providers) -> bool:
    return any((p[0] if isinstance(p, tuple) else p) in GPU_PROVIDERS for p in providers)


# ------------------------------------------------------------------------------------------------------------------
# CPU (host numpy) matchers

class OrtTwoStageMatcher(NetworkMatcher):
    """Two-stage contract on ONNX Runtime with host buffers (the CPU path)."""

    def __init__(self, source: ModelSource, providers=None, threads=None, gwc_threads=None, **options) -> None:
        super().__init__(source, **options)
        ort = import_ort()
        self.providers = providers or ['CPUExecutionProvider']
        self.feature = make_session(source.feature.path, self.providers, threads)
        self.post = make_session(source.post.path, self.providers, threads)
        self.gwc_threads = gwc_threads
        self._backend = 'onnxruntime'
        self._device = 'cpu'
        self._vol: dict = {}
        self._plan_cache: dict = {}
        self._ort_version = ort.__version__

    def _network(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        t = self.last_timings
        net_hw = left.shape[2:]
        plan = self._plan_cache.get(net_hw) or self._plan_cache.setdefault(net_hw, stage_plan(self.source, net_hw))
        with timed(t, 'feature'):
            names = [o.name for o in self.feature.get_outputs()]
            feats = dict(zip(names, self.feature.run(None, {'left': left, 'right': right})))
        with timed(t, 'gwc'):
            vol = self._vol.get(net_hw)
            if vol is None:
                vol = self._vol[net_hw] = np.empty(plan.gwc_shape, plan.gwc_dtype)
            gwc_volume_numpy(feats[GWC_SOURCES[0]], feats[GWC_SOURCES[1]], plan.num_groups,
                             plan.num_disparities, plan.normalize, out=vol, threads=self.gwc_threads)
            feeds = {n: feats[n].astype(dt, copy=False) for n, dt in plan.post_feeds.items()}
            feeds[GWC_INPUT] = vol
        with timed(t, 'post'):
            disp = self.post.run([plan.post_output], feeds)[0]
        return disp[0, 0]


class OrtSingleMatcher(NetworkMatcher):
    """Single-engine contract (left_image/right_image -> disparity) on ONNX Runtime, host buffers."""

    prenormalise = True

    def __init__(self, source: ModelSource, providers=None, threads=None, **options) -> None:
        super().__init__(source, **options)
        self.providers = providers or ['CPUExecutionProvider']
        self.session = make_session(source.single.path, self.providers, threads)
        self._backend = 'onnxruntime'
        self._device = 'cpu'

    def _network(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        with timed(self.last_timings, 'feature'):
            disp = self.session.run([SINGLE_OUTPUT], {SINGLE_INPUTS[0]: left, SINGLE_INPUTS[1]: right})[0]
        self.last_timings.setdefault('gwc', 0.0)
        self.last_timings.setdefault('post', 0.0)
        return disp[0, 0]


# ------------------------------------------------------------------------------------------------------------------
# I/O-bound (device buffer) matcher


def _np_dtype(tensor) -> np.dtype:
    return np.dtype(str(tensor.dtype).replace('torch.', ''))


class _BoundSession:
    """An ORT session run through I/O binding onto caller-owned torch buffers (device memory stays put)."""

    def __init__(self, session, device) -> None:
        self.session = session
        self.device = device
        self.kind = 'cuda' if device.type == 'cuda' else 'cpu'
        self.index = device.index or 0

    def run(self, inputs: dict, outputs: dict) -> None:
        b = self.session.io_binding()
        for name, t in inputs.items():
            t = t.contiguous()
            b.bind_input(name, self.kind, self.index, _np_dtype(t), list(t.shape), t.data_ptr())
        for name, t in outputs.items():
            b.bind_output(name, self.kind, self.index, _np_dtype(t), list(t.shape), t.data_ptr())
        if self.kind == 'cuda':
            import torch
            torch.cuda.current_stream(self.device).synchronize()  # torch's writes land before ORT's stream reads
            b.synchronize_inputs()
        self.session.run_with_iobinding(b)
        if self.kind == 'cuda':
            b.synchronize_outputs()


class OrtBoundTwoStageMatcher(DevicePipelineMatcher):
    """Two-stage contract through ORT I/O binding with torch buffers on the session's device (GPU path).

    Also runs on CPU (device='cpu'), which is how it is tested without a GPU.
    """

    def __init__(self, source: ModelSource, providers=None, device=None, threads=None, **options) -> None:
        super().__init__(source, device=device, **options)
        self.providers = providers or ['CPUExecutionProvider']
        self.feature = _BoundSession(make_session(source.feature.path, self.providers, threads), self.device)
        self.post = _BoundSession(make_session(source.post.path, self.providers, threads), self.device)
        self._backend = 'onnxruntime'
        self._buffers: dict = {}

    def _describe(self) -> dict:
        return {'normalize': self.source.config.normalize, 'num_groups': self.source.num_groups,
                'max_disp': 4 * self.source.num_disparities, 'io_binding': True}

    def _alloc(self, net_hw):
        if net_hw not in self._buffers:
            torch = self.torch
            plan = stage_plan(self.source, net_hw)
            feats = {n: torch.empty(s, dtype=torch.float32, device=self.device)
                     for n, s in feature_output_shapes(self.source, net_hw).items()}
            disp = torch.empty((1, 1) + tuple(net_hw), dtype=torch.float32, device=self.device)
            self._buffers[net_hw] = (plan, feats, disp)
        return self._buffers[net_hw]

    def _stages(self, left, right, timings):
        torch = self.torch
        plan, feats, disp = self._alloc(tuple(left.shape[2:]))
        with self.stage(timings, 'feature'):
            self.feature.run({'left': left, 'right': right}, feats)
        with self.stage(timings, 'gwc'):
            vol = gwc_volume_tensor(feats[GWC_SOURCES[0]], feats[GWC_SOURCES[1]], plan.num_groups,
                                   plan.num_disparities, plan.normalize)
            feeds = {n: feats[n].to(getattr(torch, np.dtype(dt).name)) for n, dt in plan.post_feeds.items()}
            feeds[GWC_INPUT] = vol.to(getattr(torch, np.dtype(plan.gwc_dtype).name))
        with self.stage(timings, 'post'):
            self.post.run(feeds, {plan.post_output: disp})
        return disp


def _torch_cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


def build_ort_matcher(source: ModelSource, device=None, threads=None, io_binding=None, **options):
    """The ORT matcher for `source` on `device` (None = GPU when onnxruntime-gpu offers one, else CPU)."""
    ort = import_ort()
    providers = choose_providers(device, ort.get_available_providers())
    gpu = _uses_gpu(providers)
    if source.kind == 'two_stage':
        if gpu and io_binding is None:
            io_binding = _torch_cuda()   # device buffers need torch CUDA; else host buffers (more copies)
        if io_binding:
            dev = device if device not in (None, 'auto') else ('cuda' if gpu else 'cpu')
            options.pop('gwc_threads', None)
            return OrtBoundTwoStageMatcher(source, providers=providers, device=dev, threads=threads, **options)
        options.pop('cuda_graph', None)
        m = OrtTwoStageMatcher(source, providers=providers, threads=threads, **options)
        m._device = 'cuda' if gpu else 'cpu'
        return m
    if source.kind == 'single':
        options.pop('cuda_graph', None)
        m = OrtSingleMatcher(source, providers=providers, threads=threads, **options)
        m._device = 'cuda' if gpu else 'cpu'
        return m
    raise ValueError(f'backend onnxruntime needs an ONNX model; {source.describe()} is a torch checkpoint: use '
                     f'backend torch, or export it to ONNX with `ffs-ros export`')
