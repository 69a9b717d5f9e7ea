"""`ffs-ros prune`: structured pruning of a checkpoint's inner channels (then fine-tune it).

Writes a checkpoint whose model config records the pruned widths; continue with
`ffs-ros train --config ... --init PRUNED.pt` (distillation from the unpruned model recovers the
accuracy) and export as usual. `--list` shows the inner widths of a checkpoint.
"""

from __future__ import annotations


def add_arguments(parser):
    parser.add_argument('--checkpoint', required=True, help='.pt written by ffs-ros train')
    parser.add_argument(
        '--keep', type=float, default=0.5, help='share of channels kept per inner width (0..1]'
    )
    parser.add_argument(
        '--only', default=None, help='comma list of inner widths to prune (default: all; --list)'
    )
    parser.add_argument('--out', default=None, help='pruned checkpoint to write')
    parser.add_argument('--list', action='store_true', help='list the inner widths and exit')


def run(args) -> int:
    import torch

    from ffs_ros.model import count_parameters, load_model
    from ffs_ros.model.widths import prunable_pairs, width_of
    from ffs_ros.training.prune import prune

    try:
        model = load_model(args.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        print(f'ffs-ros prune: error: {e}')
        return 2
    if args.list:
        for first, second in prunable_pairs(model).items():
            print(f'{first:<40} {width_of(model, first):4d} ch -> {second}')
        return 0
    if not args.out:
        print('ffs-ros prune: error: --out PRUNED.pt is required (or --list)')
        return 2
    before = count_parameters(model)
    only = [s.strip() for s in args.only.split(',')] if args.only else None
    try:
        report = prune(model, args.keep, only)
    except ValueError as e:
        print(f'ffs-ros prune: error: {e}')
        return 2
    for first, (a, b) in report.items():
        print(f'{first:<40} {a:4d} -> {b:4d} ch')
    print(f'parameters {before} -> {count_parameters(model)}')
    torch.save(
        {'config': model.config, 'state_dict': model.state_dict(), 'step': model.step},
        args.out,
    )
    print(f'wrote {args.out}; fine-tune: ffs-ros train --config ... --init {args.out}')
    return 0
