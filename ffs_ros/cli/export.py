"""`ffs-ros export`: a trained checkpoint -> the upstream two-stage ONNX contract.

A trained checkpoint -> feature_runner.onnx, post_runner.onnx, onnx.yaml (upstream two-stage
contract), optionally with symbolic H/W (--dynamic) and a single-graph model.onnx (--single).
"""

from __future__ import annotations


def _size(text):
    try:
        h, w = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise ValueError(f'--size {text!r}: expected HxW, e.g. 256x320') from None
    return h, w


def add_arguments(parser):
    parser.add_argument(
        '--checkpoint', required=True, help='.pt written by ffs-ros train (or models/ffs_small.pt)'
    )
    parser.add_argument(
        '--size',
        default='256x320',
        help='HxW traced (fixed size unless --dynamic); multiples of 32',
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
        h, w = _size(args.size)
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
