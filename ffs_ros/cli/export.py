"""`ffs-ros export`: a trained checkpoint -> the upstream two-stage ONNX contract.

A trained checkpoint -> feature_runner.onnx, post_runner.onnx, onnx.yaml (upstream two-stage
contract), optionally with symbolic H/W (--dynamic) and a single-graph model.onnx (--single).
The traced size is --width W --height H (default 320 x 256); the old --size HxW (height first,
unlike every other tool's WxH --size) still works, with a deprecation warning.
"""

from __future__ import annotations

from .common import add_size_arguments, resolve_size, show_defaults

DEFAULT_SIZE = (320, 256)  # (width, height)


def add_arguments(parser):
    show_defaults(parser)
    parser.add_argument(
        '--checkpoint',
        required=True,
        help='.pt written by ffs-ros train (or models/ffs_small/ffs_small.pt)',
    )
    add_size_arguments(
        parser,
        'size traced (fixed unless --dynamic), multiples of 32',
        DEFAULT_SIZE,
        legacy_hxw=True,
    )
    parser.add_argument(
        '--iters', type=int, default=None, help='refinement iterations unrolled (default: model)'
    )
    parser.add_argument(
        '--max-disp',
        type=int,
        default=None,
        help='export with a larger disparity range than trained (multiple of 32)',
    )
    parser.add_argument('--dynamic', action='store_true', help='symbolic H and W axes')
    parser.add_argument(
        '--single', action='store_true', help='also write model.onnx (left_image/right_image)'
    )
    parser.add_argument('--out', required=True, help='output directory')


def run(args) -> int:
    try:
        w, h = resolve_size(args, 'export', DEFAULT_SIZE, legacy_hxw=True)
        from ffs_ros.model import load_model
        from ffs_ros.model.export import export_two_stage

        model = load_model(args.checkpoint)
        if args.max_disp:
            from ffs_ros.model.net import FFSSmall

            cfg = dict(model.config, max_disp=int(args.max_disp))
            wider = FFSSmall(cfg)
            wider.load_state_dict(model.state_dict())
            model = wider.eval()
        out = export_two_stage(
            model, args.out, h, w, iters=args.iters, dynamic=args.dynamic, single=args.single
        )
    except (FileNotFoundError, ValueError) as e:
        print(f'error: {e}')
        return 2
    print(
        f'wrote {out}/feature_runner.onnx, post_runner.onnx, onnx.yaml'
        + (', model.onnx' if args.single else '')
    )
    return 0
