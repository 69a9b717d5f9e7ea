"""`ffs-ros build-engine`: build TensorRT engine(s) from a model's ONNX (for deployment images).

Without --out the engines go to the cache (~/.cache/ffs_ros/engines/, keyed by ONNX sha256,
TensorRT version, GPU, compute capability, precision and shapes), where the tensorrt backend finds
them. With --out, a two-stage model's engines are written as OUT/feature_runner.engine and
OUT/post_runner.engine (put them next to their ONNX to use them as prebuilt engines); a
single-engine model's engine is written to the file OUT. Every failure is one line on stderr and
exit code 2.
"""

from __future__ import annotations

import logging
import sys

from .common import MODEL_HELP, add_size_arguments, resolve_size, show_defaults


def add_arguments(p) -> None:
    show_defaults(p)
    p.add_argument(
        '--model', default=None, help=MODEL_HELP
    )
    p.add_argument('--precision', default='fp16', choices=('fp16', 'fp32'))
    p.add_argument(
        '--out',
        default=None,
        help='output file (single) or directory (two-stage); default: the cache',
    )
    add_size_arguments(
        p, 'network size for ONNX with symbolic height/width, multiples of 32'
    )
    p.add_argument('--workspace-gb', type=float, default=4.0, help='builder workspace limit (GiB)')
    p.add_argument(
        '--opt-level',
        type=int,
        default=3,
        choices=range(0, 6),
        help='builder optimisation level 0-5',
    )
    p.add_argument(
        '--plugin-library',
        default=None,
        help='TensorRT plugin library (.so) to load first, e.g. '
        'libffs_gwc_plugin.so for the FFSGWCVolume export',
    )
    p.add_argument(
        '--cache-dir',
        default=None,
        help='engine cache directory (default: ~/.cache/ffs_ros/engines)',
    )


def parse_size(text):
    """'640x448' -> (448, 640) (H, W); None -> None."""
    if text is None:
        return None
    try:
        w, h = (int(v) for v in text.lower().split('x'))
    except ValueError as exc:
        raise ValueError(f'--size must look like 640x448 (WxH), got {text!r}') from exc
    if w % 32 or h % 32 or w <= 0 or h <= 0:
        raise ValueError(f'--size {text}: width and height must be positive multiples of 32')
    return h, w


def net_size(args):
    """(H, W) from --width/--height or --size WxH (multiples of 32); None when not given."""
    wh = resolve_size(args, 'build-engine')
    return None if wh is None else parse_size(f'{wh[0]}x{wh[1]}')


def error_text(exc) -> str:
    """Return one line for a failure (TensorRT-missing errors already say where to build)."""
    if isinstance(exc, (ValueError, RuntimeError)):
        return str(exc)
    return f'{type(exc).__name__}: {exc}'


def run(args) -> int:
    from ffs_ros.contract import detect_model
    from ffs_ros.inference import resolve_model_path
    from ffs_ros.inference.tensorrt_build import build_engines_for

    logging.basicConfig(
        level=logging.INFO, format='%(message)s', stream=sys.stdout
    )  # progress; errors: stderr
    try:
        source = detect_model(resolve_model_path(args.model, on_gpu=True))
        paths = build_engines_for(
            source,
            out=args.out,
            precision=args.precision,
            net_size=net_size(args),
            workspace_gb=args.workspace_gb,
            opt_level=args.opt_level,
            force=True,
            plugin_library=args.plugin_library,
            cache=args.cache_dir,
        )
    # every failure (TensorRT API, I/O, contract) is one line + exit 2
    except Exception as exc:
        print(f'ffs-ros build-engine: error: {error_text(exc)}', file=sys.stderr)
        return 2
    for role, path in paths.items():
        print(f'{role}: {path}')
        prebuilt = source.engines.get(role)
        if args.out is None and prebuilt is not None:
            print(
                f'note: the prebuilt engine {prebuilt} beside the ONNX is tried first; the cache '
                'entry above is '
                f'used when that one cannot be loaded (delete it to always use the cache)'
            )
    return 0
