"""`ffs-ros` command-line tools.

Each subcommand lives in its own module with `add_arguments(parser)` and `run(args) -> int`; they
are imported lazily so that `ffs-ros --help` stays fast and a tool's heavy imports (torch, rclpy)
load only when used.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
COMMANDS = {
    'demo': (
        'ffs_ros.cli.demo',
        'play a generated stereo sequence through stereo_node and report',
    ),
    'bench': ('ffs_ros.cli.bench', 'per-stage timings of the processing path (no DDS)'),
    'infer': ('ffs_ros.cli.infer', 'disparity/depth/cloud for one stereo pair from image files'),
    'build-engine': ('ffs_ros.cli.build_engine', 'build a TensorRT engine from a model'),
    'bag': (
        'ffs_ros.cli.bag',
        'process a recorded rosbag2 (sqlite3 or MCAP) offline, every pair, into a new bag',
    ),
    'export': ('ffs_ros.cli.export', 'export a trained checkpoint to the two-stage ONNX contract'),
    'train': ('ffs_ros.cli.train', 'train our own FFS-family model on generated scenes'),
    'prune': ('ffs_ros.cli.prune', 'structured pruning of a checkpoint (then fine-tune it)'),
    'eval': ('ffs_ros.cli.eval', 'accuracy (EPE, bad-1/2, D1) against ground truth, beside SGBM'),
}


def _available():
    out = {}
    for name, (mod, help_) in COMMANDS.items():
        if importlib.util.find_spec(mod) is not None:
            out[name] = (mod, help_)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='ffs-ros', description=__doc__.split('.')[0])
    sub = parser.add_subparsers(dest='command', required=True)
    commands = _available()
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((a for a in argv if not a.startswith('-')), None)
    for name, (mod, help_) in commands.items():
        p = sub.add_parser(name, help=help_)
        if name == chosen:  # import only the module that will run
            importlib.import_module(mod).add_arguments(p)
    args = parser.parse_args(argv)
    module = importlib.import_module(commands[args.command][0])
    return int(module.run(args) or 0)


if __name__ == '__main__':
    sys.exit(main())
