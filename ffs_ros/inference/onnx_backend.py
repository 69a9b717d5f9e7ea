"""ONNX Runtime: how a graph runs (host numpy buffers, or I/O binding onto torch device tensors).

CPU: the CPU execution provider, intra-op threads = cores, numpy in and out (the host runner of
:class:`~.network.NetworkMatcher`). GPU (onnxruntime-gpu, CUDA or TensorRT execution provider): I/O
binding onto torch CUDA tensors so features and the volume never leave the device (the device
runner), with the matcher's own stream given to ONNX Runtime as its compute stream. CUDA graphs are
refused with this backend: ONNX Runtime runs on its own terms inside ``Run()`` (it synchronises at
the end) and cannot be captured from outside.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..contract import ModelSource, feature_output_shapes
from .device import Device
from .network import Graphs

GPU_PROVIDERS = ('TensorrtExecutionProvider', 'CUDAExecutionProvider')
CUDA_GRAPH_REFUSAL = (
    'cuda_graph does not work with backend onnxruntime: ONNX Runtime synchronises and runs on its '
    'own terms inside Run(), so its kernels cannot be captured from outside. Use backend tensorrt '
    'or torch for CUDA graphs, or drop cuda_graph'
)


def import_ort():
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise RuntimeError(
            'backend onnxruntime needs the onnxruntime package (pip install onnxruntime, or '
            'onnxruntime-gpu for CUDA); or use backend torch / sgbm'
        ) from exc
    return ort


def ort_engine_cache_dir() -> Path:
    from .engine_cache import cache_dir

    return cache_dir() / 'onnxruntime'


def choose_providers(device, available, fp16: bool = True, stream_handle: int = 0) -> list:
    """Return the execution providers for `device`.

    `device`: 'cpu', 'cuda', 'cuda:N' or None = best available.

    With onnxruntime-gpu: TensorRT EP first when present (fp16, engine and timing caches under the
    ffs_ros engine cache, which is created here: the EP creates only one directory level and fails
    otherwise), then the CUDA EP, then CPU for any leftover node. A non-zero `stream_handle`
    becomes both EPs' ``user_compute_stream``.
    """
    available = list(available)
    dev = (device or 'auto').lower()
    if dev == 'cpu':
        return ['CPUExecutionProvider']
    if dev.startswith('cuda') and 'CUDAExecutionProvider' not in available:
        raise RuntimeError(
            f'device {device!r} needs onnxruntime-gpu (CUDAExecutionProvider); this onnxruntime '
            'offers '
            f'{available}. Install onnxruntime-gpu, use device cpu, or backend tensorrt / torch'
        )
    if 'CUDAExecutionProvider' not in available:
        return ['CPUExecutionProvider']
    idx = int(dev.split(':')[1]) if ':' in dev else 0
    stream = {'user_compute_stream': str(int(stream_handle))} if stream_handle else {}
    providers = []
    if 'TensorrtExecutionProvider' in available:
        cache = ort_engine_cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        providers.append(
            (
                'TensorrtExecutionProvider',
                {
                    'device_id': idx,
                    'trt_fp16_enable': bool(fp16),
                    'trt_engine_cache_enable': True,
                    'trt_engine_cache_path': str(cache),
                    'trt_timing_cache_enable': True,
                    'trt_timing_cache_path': str(cache),
                    **stream,
                },
            )
        )
    providers += [('CUDAExecutionProvider', {'device_id': idx, **stream}), 'CPUExecutionProvider']
    return providers


def make_session(path, providers, threads: int | None = None, spinning: bool = False):
    """Return an ORT session; intra-op threads = cores by default.

    Thread spinning is off by default: on a robot the CPU is shared with the ROS graph, and
    spinning workers then cost more than they save (measured on the 2-core dev CPU: feature stage
    330 ms with spinning vs 305 ms without, under load).
    """
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


class OrtHostGraph:
    """One ONNX graph on host (numpy) buffers."""

    def __init__(self, session) -> None:
        self.session = session
        self.names = [o.name for o in session.get_outputs()]

    def run(self, feeds: dict) -> dict:
        return dict(zip(self.names, self.session.run(None, feeds)))


def _np_dtype(tensor) -> np.dtype:
    return np.dtype(str(tensor.dtype).replace('torch.', ''))


class OrtBoundGraph:
    """One ONNX graph run through I/O binding onto torch tensors on the matcher's device.

    Memory stays on that device.
    """

    def __init__(self, session, device: Device, output_shapes) -> None:
        self.session = session
        self.device = device
        self.kind = 'cuda' if device.is_cuda else 'cpu'
        self.index = device.device.index or 0
        self.output_shapes = output_shapes  # net_hw -> {output name: shape}
        self.output_dtypes = {o.name: _ort_type_to_np(o.type) for o in session.get_outputs()}
        self._outputs: dict = {}

    def prepare(self, net_hw, shared: dict) -> dict:
        import torch

        if net_hw not in self._outputs:
            self._outputs[net_hw] = {
                n: torch.empty(
                    tuple(s),
                    dtype=getattr(torch, self.output_dtypes[n].name),
                    device=self.device.device,
                )
                for n, s in self.output_shapes(net_hw).items()
            }
        return dict(self._outputs[net_hw])

    def run(self, feeds: dict, net_hw) -> dict:
        outputs = self.prepare(net_hw, {})
        b = self.session.io_binding()
        # contiguous copies must outlive run_with_iobinding (ORT keeps only the raw pointer)
        alive = []
        for name, t in feeds.items():
            t = t.contiguous()
            alive.append(t)
            b.bind_input(name, self.kind, self.index, _np_dtype(t), list(t.shape), t.data_ptr())
        for name, t in outputs.items():
            b.bind_output(name, self.kind, self.index, _np_dtype(t), list(t.shape), t.data_ptr())
        if self.kind == 'cuda':
            # ORT does not wait for work queued on other streams: our stream's writes must land
            # first (the
            # stream is also ORT's compute stream where this onnxruntime accepts
            # user_compute_stream)
            self.device.synchronize()
            b.synchronize_inputs()
        self.session.run_with_iobinding(b)
        if self.kind == 'cuda':
            b.synchronize_outputs()
        del alive
        return outputs


def _ort_type_to_np(type_str: str) -> np.dtype:
    table = {
        'tensor(float)': np.float32,
        'tensor(float16)': np.float16,
        'tensor(double)': np.float64,
        'tensor(int32)': np.int32,
        'tensor(int64)': np.int64,
    }
    if type_str not in table:
        raise ValueError(f'unsupported ONNX output type {type_str}')
    return np.dtype(table[type_str])


def _torch_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def ort_graphs(
    source: ModelSource, device=None, threads=None, gwc_threads=None, io_binding=None
) -> Graphs:
    """Return the graphs of `source` on ONNX Runtime.

    `device` None = GPU when onnxruntime-gpu offers one, else CPU.
    """
    ort = import_ort()
    if source.kind not in ('two_stage', 'single'):
        if source.kind == 'plugin':
            raise ValueError(
                f'{source.describe()} needs TensorRT with its plugin library (ONNX Runtime has no '
                f'kernel for that node): use backend tensorrt with plugin_library'
            )
        raise ValueError(
            f'backend onnxruntime needs an ONNX model; {source.describe()} is a torch '
            'checkpoint: use '
            f'backend torch, or export it to ONNX with `ffs-ros export`'
        )
    providers = choose_providers(device, ort.get_available_providers())
    gpu = _uses_gpu(providers)
    if io_binding is None:
        io_binding = (
            gpu and source.kind == 'two_stage' and _torch_cuda()
        )  # device buffers need torch CUDA
    details = {'providers': [p[0] if isinstance(p, tuple) else p for p in providers]}
    if not io_binding:
        details['device'] = 'cuda' if gpu else 'cpu'
        return Graphs(
            'onnxruntime',
            {
                role: OrtHostGraph(make_session(path, providers, threads))
                for role, path in source.onnx_files.items()
            },
            details=details,
            gwc_threads=gwc_threads,
            allow_cuda_graph=False,
            cuda_graph_refusal=CUDA_GRAPH_REFUSAL,
        )
    dev = Device(device if device not in (None, 'auto') else ('cuda' if gpu else 'cpu'))
    if dev.is_cuda:
        providers = choose_providers(
            str(dev.device), ort.get_available_providers(), stream_handle=dev.stream_handle
        )
    details['io_binding'] = True

    def shapes_for(role):
        if role == 'feature':
            return lambda net_hw: feature_output_shapes(source, net_hw)
        spec = {'post': source.post, 'single': source.single}[role]
        return lambda net_hw: {o.name: (1, 1) + tuple(net_hw) for o in spec.outputs}

    with dev.scope():
        graphs = {
            role: OrtBoundGraph(make_session(path, providers, threads), dev, shapes_for(role))
            for role, path in source.onnx_files.items()
        }
    return Graphs(
        'onnxruntime',
        graphs,
        device=dev,
        details=details,
        allow_cuda_graph=False,
        cuda_graph_refusal=CUDA_GRAPH_REFUSAL,
    )
