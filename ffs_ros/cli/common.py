"""What several `ffs-ros` tools share: `--help` that shows defaults, and the size flags.

Every tool that takes an image or network size reads it as width x height: `--width W --height H`
or `--size WxH` (`640x480` is 640 wide, 480 high). `ffs-ros export --size` used to be HxW; that
reading is kept for now with a deprecation warning (use `--width/--height` there).
"""

from __future__ import annotations

import argparse
import sys

SIZE_GROUP = 'size (width x height, the same order in every ffs-ros tool)'
MODEL_HELP = (
    "'fast' or 'accurate' (the shipped tiers) or a model directory / file; default: the tier for "
    'the device (fast on a CPU, accurate on a GPU)'
)


class HelpFormatter(argparse.HelpFormatter):
    """Append '(default: X)' to an option's help unless the default is None/False or stated."""

    def _get_help_string(self, action):
        text = action.help or ''
        if (
            not action.option_strings
            or action.default is None
            or action.default is False
            or action.default == argparse.SUPPRESS
            or '%(default)' in text
            or 'default' in text
        ):
            return text
        return text + ' (default: %(default)s)'


def show_defaults(parser) -> None:
    """Make `parser --help` list the defaults (the subparsers are created in ffs_ros.cli)."""
    parser.formatter_class = HelpFormatter


def add_size_arguments(parser, what: str, default=None, legacy_hxw: bool = False) -> None:
    """Add --width/--height and --size WxH (or export's deprecated --size HxW).

    `default` is (width, height) or None; it is only stated in the help here, resolve_size()
    applies it.
    """
    g = parser.add_argument_group(SIZE_GROUP)
    stated = f' (default: {default[0]})' if default else ''
    g.add_argument('--width', type=int, metavar='W', help=f'{what}: width in px{stated}')
    stated = f' (default: {default[1]})' if default else ''
    g.add_argument('--height', type=int, metavar='H', help=f'{what}: height in px{stated}')
    if legacy_hxw:
        g.add_argument(
            '--size',
            metavar='HxW',
            help='deprecated: height x width (the reverse of every other ffs-ros tool); use '
            '--width/--height',
        )
    else:
        stated = f' (default: {default[0]}x{default[1]})' if default else ''
        g.add_argument(
            '--size',
            metavar='WxH',
            help=f'{what} as width x height, e.g. 640x480 (= --width 640 --height 480){stated}',
        )


def _two_ints(text: str, form: str, example: str) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise ValueError(f'--size must look like {example} ({form}), got {text!r}') from None
    return a, b


def resolve_size(args, tool: str, default=None, legacy_hxw: bool = False, err=None):
    """(width, height) from --width/--height or --size; `default` when none was given.

    ValueError names the problem. With legacy_hxw (export), --size is read as HxW and a
    deprecation warning naming the equivalent --width/--height goes to `err` (stderr).
    """
    width, height = getattr(args, 'width', None), getattr(args, 'height', None)
    size = getattr(args, 'size', None)
    if (width is None) != (height is None):
        raise ValueError('--width and --height go together: give both (or --size)')
    if width is not None and size is not None:
        raise ValueError('give either --size or --width/--height, not both')
    if width is None and size is None:
        return default
    if size is not None and legacy_hxw:
        height, width = _two_ints(size, 'HxW', '256x320')
        print(
            f'ffs-ros {tool}: warning: --size {size} is read as height x width here (H={height}, '
            f'W={width}), the reverse of every other ffs-ros tool; this --size is deprecated, '
            f'use --width {width} --height {height}',
            file=err or sys.stderr,
        )
    elif size is not None:
        width, height = _two_ints(size, 'WxH', '640x480')
    if width <= 0 or height <= 0:
        raise ValueError(f'width and height must be positive, got {width}x{height} (WxH)')
    return width, height


def add_option_argument(parser) -> None:
    """Add the repeatable `-o KEY=VALUE` (a load_matcher option) of bench and eval."""
    parser.add_argument(
        '-o',
        '--option',
        action='append',
        default=[],
        metavar='KEY=VALUE',
        help='extra load_matcher option (YAML value), repeatable, e.g. -o fp16=true or '
        '-o net_size=[256,320]',
    )


def parse_options(items) -> dict:
    """['k=v', ...] -> {k: YAML value}; ValueError naming the form for anything else."""
    import yaml

    opts = {}
    for item in items:
        if '=' not in item:
            raise ValueError(f'--option must be KEY=VALUE, got {item!r}')
        k, v = item.split('=', 1)
        opts[k.strip()] = yaml.safe_load(v)
    return opts
