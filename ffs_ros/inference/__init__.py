"""Stereo matching behind one interface: ``load_matcher(...)`` -> StereoMatcher.

All backend policy lives here: which backend ``auto`` picks, the fall-back to SGBM while no model
is installed, which options a backend takes (:mod:`.options`). Backends only say how a graph runs;
the matcher around them is :class:`~.network.NetworkMatcher` (plus :class:`~.sgbm.SGBMMatcher`, the
model-free baseline).
"""

from __future__ import annotations

import logging
from pathlib import Path

from .base import MatcherInfo, StereoMatcher
from .options import BACKENDS, NETWORK_BACKENDS, OPTIONS, check_options, options_for

log = logging.getLogger(__name__)

# What 'auto' falls back to while no model is installed (keeps the node usable on a CPU).
AUTO_FALLBACK_BACKEND = 'sgbm'
_SGBM_ONLY = ('max_disparity', 'block_size')
_ANY_BACKEND = ('lr_check', 'lr_max_diff')  # wrappers around whatever matcher is made


class NoModelInstalled(ValueError):
    """No model was given and none is installed."""


def resolve_model_path(model, on_gpu: bool = False) -> Path:
    """Return the model to load as a Path.

    model: a file or directory; 'fast' or 'accurate' (a shipped tier, see ffs_ros.paths); None or
    '' = the default tier: 'fast' where the matcher runs on a CPU (`on_gpu` False), 'accurate' on
    a GPU, or the one installed when only one is. Raises NoModelInstalled while no tier is
    installed, ValueError for a tier name that is not.
    """
    from ffs_ros.paths import MODEL_TIERS, installed_tiers, models_root

    name = '' if model is None else str(model)
    if name and name not in MODEL_TIERS:
        return Path(name).expanduser()
    tiers = installed_tiers()
    if not tiers:
        raise NoModelInstalled(
            f'no shipped model is installed in {models_root()}; pass a model (a '
            'Fast-FoundationStereo export directory with feature_runner.onnx + post_runner.onnx, '
            'a single .onnx, or an ffs_ros .pt) or use backend sgbm'
        )
    if name:
        if name not in tiers:
            raise ValueError(
                f'model {name!r}: the {name} tier ({MODEL_TIERS[name]}) is not installed in '
                f'{models_root()} (installed: {", ".join(tiers)}); pick an installed tier or a '
                'model path'
            )
        return tiers[name]
    want = 'accurate' if on_gpu else 'fast'
    if want not in tiers:
        other = next(iter(tiers))
        log.info('model tier %r is not installed; using %r (%s)', want, other, tiers[other])
        want = other
    return tiers[want]


def runs_on_gpu(backend: str, device) -> bool:
    """Guess whether `backend` on `device` (None = best available) will run on a GPU.

    Used only to pick the default model tier; importing nothing heavy on CPU-only machines.
    """
    if backend == 'tensorrt':
        return True
    if backend == 'sgbm':
        return False
    if device not in (None, '', 'auto'):
        return str(device).startswith('cuda')
    if cuda_torch_available():
        return True
    if backend == 'onnxruntime':
        try:
            import onnxruntime as ort
        except ImportError:
            return False
        return 'CUDAExecutionProvider' in ort.get_available_providers()
    if backend == 'auto':
        from .tensorrt_build import tensorrt_usable

        return tensorrt_usable()
    return False


def cuda_torch_available() -> bool:
    """Return whether torch can use a CUDA GPU, importing torch only where that is plausible.

    Importing torch costs ~330 MB of RSS (libtorch) even when ONNX Runtime runs the model, so it is
    imported only when a CUDA build of torch is installed and the machine has an NVIDIA device node
    (discrete GPU or Jetson); elsewhere the answer is no without importing it.
    """
    import importlib.util
    import os
    import re

    spec = importlib.util.find_spec('torch')
    if spec is None or not spec.submodule_search_locations:
        return False
    version = os.path.join(list(spec.submodule_search_locations)[0], 'version.py')
    try:
        with open(version) as f:
            cuda_build = re.search(r"^cuda[^=]*=\s*'[0-9]", f.read(), re.M) is not None
    except OSError:
        cuda_build = True          # unusual layout: ask torch itself
    devices = ('/dev/nvidiactl', '/dev/nvidia0', '/dev/nvhost-ctrl-gpu', '/dev/nvgpu')
    if not cuda_build or not any(os.path.exists(d) for d in devices):
        return False
    import torch

    return bool(torch.cuda.is_available())


def choose_backend(source, cuda_torch: bool | None = None, trt_ok: bool | None = None) -> str:
    """Choose the backend by the 'auto' policy.

    tensorrt if importable with CUDA (ONNX models), else torch/CUDA for our own checkpoint, else
    onnxruntime (ONNX), else torch on CPU (checkpoint only).
    """
    has_onnx = source.kind in ('two_stage', 'single', 'plugin')
    if trt_ok is None:
        from .tensorrt_build import tensorrt_usable

        trt_ok = tensorrt_usable() if has_onnx else False
    if source.kind == 'plugin':
        return 'tensorrt'
    if cuda_torch is None:
        cuda_torch = cuda_torch_available() if source.checkpoint is not None else False
    if has_onnx and trt_ok:
        return 'tensorrt'
    if source.checkpoint is not None and cuda_torch:
        return 'torch'
    if has_onnx:
        return 'onnxruntime'
    return 'torch'


def load_matcher(model=None, backend: str = 'auto', device=None, **options) -> StereoMatcher:
    """Return a StereoMatcher for `model` on `backend`.

    model: a model directory or file (see ffs_ros.contract), 'fast' / 'accurate' (the shipped
    tiers), or None for the default tier ('fast' on a CPU, 'accurate' on a GPU).
    backend: 'auto', 'sgbm' (needs no model), 'onnxruntime', 'torch' or 'tensorrt'. 'auto' with no
    model given and none installed falls back to sgbm (logged); every other failure raises. device:
    None (best available), 'cpu', 'cuda', 'cuda:N'. options: see ffs_ros.inference.options
    (resize_mode, net_size, cuda_graph, precision, plugin_library, confidence_source, lr_check,
    ...). Raises ValueError /
    RuntimeError with a message naming what to change.
    """
    if backend not in BACKENDS:
        raise ValueError(f'unknown backend {backend!r}; choose one of {", ".join(BACKENDS)}')
    if backend == 'auto' and model in (None, ''):
        try:
            resolve_model_path(None)
        except NoModelInstalled as exc:
            log.warning("backend 'auto': %s; using '%s'", exc, AUTO_FALLBACK_BACKEND)
            backend = AUTO_FALLBACK_BACKEND
            options = {k: v for k, v in options.items() if k in _SGBM_ONLY + _ANY_BACKEND}
    matcher = _make_matcher(model, backend, device, options)
    lr = {k: options[k] for k in _ANY_BACKEND if k in options}
    if lr.get('lr_check'):
        from .confidence import LRCheckMatcher

        matcher = LRCheckMatcher(matcher, float(lr.get('lr_max_diff', 1.0)))
    return matcher


def _make_matcher(model, backend, device, options) -> StereoMatcher:
    if backend == 'sgbm':
        from .sgbm import SGBMMatcher

        opts = check_options('sgbm', options)
        return SGBMMatcher(**{k: v for k, v in opts.items() if k not in _ANY_BACKEND})
    from ..contract import detect_model

    path = resolve_model_path(
        model, runs_on_gpu(backend, device) if model in (None, '') else False
    )
    source = detect_model(path)
    if backend == 'auto':
        backend = choose_backend(source)
    options = check_options(backend, {k: v for k, v in options.items() if k not in _SGBM_ONLY})
    for k in _ANY_BACKEND:
        options.pop(k, None)
    common = {
        k: options.pop(k)
        for k in (
            'resize_mode',
            'net_size',
            'allow_upscale',
            'remove_invisible',
            'cuda_graph',
            'confidence_source',
        )
        if k in options
    }
    if backend == 'onnxruntime':
        from .onnx_backend import ort_graphs

        graphs = ort_graphs(source, device=device, **options)
    elif backend == 'torch':
        from .torch_backend import torch_graphs

        graphs = torch_graphs(source, device=device, **options)
    else:
        from .tensorrt_run import tensorrt_graphs

        if not options.get('workspace_gb'):
            options.pop('workspace_gb', None)
        graphs = tensorrt_graphs(source, device=device, **options)
    from .network import NetworkMatcher

    return NetworkMatcher(source, graphs, **common)


__all__ = [
    'AUTO_FALLBACK_BACKEND',
    'BACKENDS',
    'MatcherInfo',
    'NETWORK_BACKENDS',
    'NoModelInstalled',
    'OPTIONS',
    'StereoMatcher',
    'choose_backend',
    'load_matcher',
    'options_for',
    'resolve_model_path',
    'runs_on_gpu',
]
