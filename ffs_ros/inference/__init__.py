"""Stereo matching backends behind one interface: `load_matcher(...)` -> StereoMatcher."""
from __future__ import annotations

from pathlib import Path

from .base import MatcherInfo, StereoMatcher

BACKENDS = ('auto', 'sgbm', 'onnxruntime', 'torch', 'tensorrt')

# Options every network backend understands (resolution handling; see letterbox.py).
COMMON_OPTIONS = ('resize_mode', 'allow_upscale', 'net_size', 'remove_invisible')
BACKEND_OPTIONS = {
    'onnxruntime': ('threads', 'gwc_threads', 'io_binding', 'cuda_graph'),
    'torch': ('fp16', 'cuda_graph', 'sync_timings', 'threads'),
    'tensorrt': ('precision', 'workspace_gb', 'opt_level', 'force_engine_update', 'engine_cache_dir',
                 'cuda_graph', 'sync_timings'),
}
SGBM_OPTIONS = ('max_disparity', 'block_size')


def resolve_model_path(model) -> Path:
    """`model` as a Path; None -> the shipped default model, with a clear error while none is shipped."""
    if model is not None and str(model) != '':
        return Path(model).expanduser()
    from ffs_ros.paths import default_model_dir
    d = default_model_dir()
    if not d.is_dir() or not any(p.suffix in ('.onnx', '.pt', '.pth') for p in d.iterdir()):
        raise ValueError(f'no default model is installed at {d}; pass a model (a Fast-FoundationStereo export '
                         f'directory with feature_runner.onnx + post_runner.onnx, a single .onnx, or an ffs_ros .pt) '
                         f'or use backend sgbm')
    return d


def choose_backend(source, cuda_torch: bool | None = None, trt_ok: bool | None = None) -> str:
    """'auto' policy: tensorrt if importable with CUDA (ONNX models), else torch/CUDA for our own checkpoint, else
    onnxruntime (ONNX), else torch on CPU (checkpoint only)."""
    has_onnx = source.kind in ('two_stage', 'single')
    if trt_ok is None:
        from .tensorrt_backend import tensorrt_usable
        trt_ok = tensorrt_usable() if has_onnx else False
    if cuda_torch is None:
        try:
            import torch
            cuda_torch = torch.cuda.is_available()
        except ImportError:
            cuda_torch = False
    if has_onnx and trt_ok:
        return 'tensorrt'
    if source.checkpoint is not None and cuda_torch:
        return 'torch'
    if has_onnx:
        return 'onnxruntime'
    return 'torch'


def load_matcher(model=None, backend: str = 'auto', device=None, **options) -> StereoMatcher:
    """Return a StereoMatcher for `model` on `backend`.

    model: a model directory or file (see contracts.py), or None for the shipped default model.
    backend: 'auto', 'sgbm' (needs no model), 'onnxruntime', 'torch' or 'tensorrt'.
    device: None (best available), 'cpu', 'cuda', 'cuda:N'.
    options: resize_mode ('letterbox' | 'stretch'), allow_upscale, net_size (H, W), remove_invisible, and the
    backend's own (BACKEND_OPTIONS). Raises ValueError / RuntimeError with a message naming what to change.
    """
    if backend not in BACKENDS:
        raise ValueError(f'unknown backend {backend!r}; choose one of {", ".join(BACKENDS)}')
    if backend == 'sgbm':
        from .sgbm import SGBMMatcher
        kwargs = {k: options[k] for k in SGBM_OPTIONS if k in options}
        return SGBMMatcher(**kwargs)
    from .contracts import detect_model
    source = detect_model(resolve_model_path(model))
    if backend == 'auto':
        backend = choose_backend(source)
    allowed = COMMON_OPTIONS + BACKEND_OPTIONS[backend]
    unknown = sorted(k for k in options if k not in allowed and k not in SGBM_OPTIONS)
    if unknown:
        raise ValueError(f'unknown option(s) {unknown} for backend {backend}; allowed: {", ".join(allowed)}')
    kwargs = {k: v for k, v in options.items() if k in allowed}
    if backend == 'onnxruntime':
        from .onnx_backend import build_ort_matcher
        return build_ort_matcher(source, device=device, **kwargs)
    if backend == 'torch':
        from .torch_backend import TorchMatcher
        return TorchMatcher(source, device=device, **kwargs)
    from .tensorrt_backend import TensorRTMatcher
    return TensorRTMatcher(source, device=device, **kwargs)


__all__ = ['BACKENDS', 'MatcherInfo', 'StereoMatcher', 'choose_backend', 'load_matcher', 'resolve_model_path']
