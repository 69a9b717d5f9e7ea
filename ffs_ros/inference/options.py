"""Every option a matcher backend takes, in ONE table.

`load_matcher` checks options against it and the node derives its matcher parameters from it
(``ffs_ros.node.params``), so the two cannot drift.

An option whose ``param`` is set is also a stereo_node parameter of that name; its ``default`` is
the parameter's default and means "the backend's own default" (the option is then not passed to the
backend).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

NETWORK_BACKENDS = ('onnxruntime', 'torch', 'tensorrt')
BACKENDS = ('auto', 'sgbm') + NETWORK_BACKENDS


@dataclass(frozen=True)
class BackendOption:
    """One load_matcher option: which backends take it, and (param) whether the node exposes it."""

    name: str
    backends: tuple
    description: str
    default: Any = None
    param: Optional[str] = None
    lo: Optional[float] = None
    hi: Optional[float] = None
    choices: Optional[tuple] = None


OPTIONS: tuple[BackendOption, ...] = (
    BackendOption(
        'resize_mode',
        NETWORK_BACKENDS,
        "model backends: how images are fitted to the network size: 'letterbox' (keep aspect, "
        'pad) or '
        "'stretch'; empty = the backend's default (letterbox)",
        '',
        'resize_mode',
        choices=('', 'letterbox', 'stretch'),
    ),
    BackendOption(
        'net_size',
        NETWORK_BACKENDS,
        'model backends: (H, W) network size for graphs with symbolic '
        'height/width (node parameters net_width/net_height)',
    ),
    BackendOption(
        'allow_upscale',
        NETWORK_BACKENDS,
        'model backends: enlarge small images to a fixed network size',
    ),
    BackendOption(
        'remove_invisible',
        NETWORK_BACKENDS,
        'model backends: NaN where x - d < 0 (no match possible)',
    ),
    BackendOption(
        'cuda_graph',
        ('torch', 'tensorrt', 'onnxruntime'),
        "backends 'tensorrt' / 'torch' on CUDA: capture the network once per size into a CUDA "
        'graph and '
        'replay it (less launch overhead; sizes that cannot be captured run without)',
        False,
        'cuda_graph',
    ),
    BackendOption(
        'threads',
        ('onnxruntime', 'torch'),
        "backends 'onnxruntime' / 'torch' on CPU: intra-op CPU threads; 0 = one per core (use 1 "
        'on a CPU '
        'shared with other busy processes)',
        0,
        'threads',
        0,
        1024,
    ),
    BackendOption(
        'gwc_threads', ('onnxruntime',), 'onnxruntime on CPU: threads of the correlation volume'
    ),
    BackendOption(
        'io_binding',
        ('onnxruntime',),
        'onnxruntime: run graphs on device tensors (default: on GPUs)',
    ),
    BackendOption('fp16', ('torch',), 'torch on CUDA: fp16 autocast (default on)'),
    BackendOption(
        'precision',
        ('tensorrt',),
        "backend 'tensorrt': engine precision 'fp16' or 'fp32'; empty = fp16",
        '',
        'precision',
        choices=('', 'fp16', 'fp32'),
    ),
    BackendOption(
        'workspace_gb',
        ('tensorrt',),
        "backend 'tensorrt': builder workspace limit (GiB); 0 = 4 GiB",
        0.0,
        'workspace_gb',
        0.0,
        1024.0,
    ),
    BackendOption(
        'opt_level',
        ('tensorrt',),
        "backend 'tensorrt': builder optimisation level 0-5 (default 3)",
    ),
    BackendOption(
        'force_engine_update',
        ('tensorrt',),
        "backend 'tensorrt': rebuild the engine from the ONNX model even if a cached one matches",
        False,
        'force_engine_update',
    ),
    BackendOption(
        'engine_cache_dir',
        ('tensorrt',),
        "backend 'tensorrt': where built engines (and the timing "
        'cache) are kept; empty = the default cache directory',
        '',
        'engine_cache_dir',
    ),
    BackendOption(
        'plugin_library',
        ('tensorrt',),
        "backend 'tensorrt': a TensorRT plugin library (.so) to load "
        'before any engine, e.g. libffs_gwc_plugin.so for the FFSGWCVolume plugin export',
        '',
        'plugin_library',
    ),
    BackendOption(
        'confidence_source',
        NETWORK_BACKENDS,
        "model backends: where the confidence comes from: 'auto' (the model's own confidence "
        "output if it has one, else 'features'), 'network', 'features' (from the correlation "
        "volume; any two-stage model), 'off'; empty = auto. sgbm gives none",
        '',
        'confidence_source',
        choices=('', 'auto', 'network', 'features', 'off'),
    ),
    BackendOption(
        'lr_check',
        ('sgbm',) + NETWORK_BACKENDS,
        'left-right consistency check: match the mirrored pair too (about twice the match time) '
        'and drop pixels whose two disparities differ by more than lr_max_diff',
        False,
        'lr_check',
    ),
    BackendOption(
        'lr_max_diff',
        ('sgbm',) + NETWORK_BACKENDS,
        'lr_check: largest accepted |d_left - d_right| (px)',
        1.0,
        'lr_max_diff',
        0.01,
        1000.0,
    ),
    BackendOption('max_disparity', ('sgbm',), 'sgbm: disparity search range (px)'),
    BackendOption('block_size', ('sgbm',), 'sgbm: matching block size (odd)'),
)

OPTION_BY_NAME = {o.name: o for o in OPTIONS}


def options_for(backend: str) -> tuple[str, ...]:
    """Names of the options `backend` takes."""
    return tuple(o.name for o in OPTIONS if backend in o.backends)


def check_options(backend: str, options: dict) -> dict:
    """Drop options left at their "backend default" value.

    Raises ValueError for names `backend` does not take.
    """
    allowed = options_for(backend)
    unknown = sorted(k for k in options if k not in OPTION_BY_NAME)
    wrong = sorted(k for k in options if k in OPTION_BY_NAME and k not in allowed)
    if unknown or wrong:
        raise ValueError(
            f'option(s) {unknown + wrong} are not for backend {backend}; it takes: '
            f'{", ".join(allowed)}'
        )
    return {
        k: v
        for k, v in options.items()
        if not (OPTION_BY_NAME[k].param and v == OPTION_BY_NAME[k].default)
    }
