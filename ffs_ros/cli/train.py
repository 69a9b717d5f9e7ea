"""`ffs-ros train`: train our own FFS-family model on generated scenes.

See ffs_ros/training/train.py.
"""

from __future__ import annotations


def add_arguments(parser):
    parser.add_argument(
        '--config', required=True, help='YAML with model/data/train sections (config/train.yaml)'
    )
    parser.add_argument('--out', required=True, help='run directory (checkpoints, log.jsonl)')
    parser.add_argument('--resume', action='store_true', help='continue from OUT/latest.pt')
    parser.add_argument(
        '--init',
        default=None,
        help='start a new run from these weights (e.g. models/ffs_small/ffs_small.pt), fresh '
        'schedule',
    )
    parser.add_argument(
        '--max-steps', type=int, default=None, help='stop after this many steps in this call'
    )
    parser.add_argument(
        '--device', default=None, help="torch device, e.g. 'cuda' (overrides the config)"
    )
    parser.add_argument(
        '--threads', type=int, default=None, help='torch threads (overrides the config)'
    )


def run(args) -> int:
    from pathlib import Path

    import yaml

    path = Path(args.config)
    if not path.is_file():
        print(f'error: config {path} not found; pass e.g. --config config/train.yaml')
        return 2
    cfg = yaml.safe_load(path.read_text()) or {}
    if args.device:
        cfg.setdefault('train', {})['device'] = args.device
    if args.threads:
        cfg.setdefault('train', {})['threads'] = args.threads
    from ffs_ros.training.train import train

    try:
        train(
            cfg,
            args.out,
            resume=args.resume,
            log=lambda m: print(m, flush=True),
            max_steps=args.max_steps,
            init=args.init,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f'error: {e}')
        return 2
    return 0
