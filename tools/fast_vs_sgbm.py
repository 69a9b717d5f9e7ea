#!/usr/bin/env python3
"""The fast tier's speed target, measured: `ffs-ros bench` of a model beside `--backend sgbm`.

Issue 12: `ffs-ros bench --backend onnxruntime --model models/ffs_fast --size 640x480` match p50 at
most 2x the `--backend sgbm` match p50 measured in the same minutes. On a shared, noisy machine one
pair of runs says little, so this runs the exact CLI commands in alternation (SGBM, each model,
SGBM, each model, ...) for a few rounds and reports every match p50, the median per method and the
ratios to the SGBM runs around them. SGBM is timed with the models' disparity range
(`--max-disparity`, default 96, the fast tier's; SGBM's own default, 192, is slower and would
flatter the models).

    python tools/fast_vs_sgbm.py [--models models/ffs_fast models/ffs_small] [--rounds 3] \
        [--json out/fast_vs_sgbm.json]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FFS_ROS = 'import sys; from ffs_ros.cli import main; sys.exit(main())'  # `ffs-ros` of this Python


def bench(args, backend, model=None, iters=None) -> float:
    """Run one `ffs-ros bench` in a fresh process; return its match p50 in ms."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / 'bench.json'
        cmd = [
            sys.executable, '-c', FFS_ROS, 'bench', '--backend', backend,
            '--size', args.size, '--max-disparity', str(args.max_disparity),
            '--iters', str(iters or args.iters), '--json', str(out),
        ]  # fmt: skip
        if model:
            cmd += ['--model', model]
        subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        return float(json.loads(out.read_text())['stages']['match']['p50_ms'])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--models', nargs='+', default=['models/ffs_fast'])
    p.add_argument('--size', default='640x480')
    p.add_argument('--max-disparity', type=int, default=96)
    p.add_argument('--rounds', type=int, default=3)
    p.add_argument('--iters', type=int, default=50, help='timed iterations per bench run')
    p.add_argument(
        '--slow-iters', type=int, default=15, help='timed iterations for models over 400 ms'
    )
    p.add_argument('--json', default=None)
    args = p.parse_args(argv)

    runs = {'sgbm': []} | {m: [] for m in args.models}
    ratios = {}
    slow = set()
    for r in range(args.rounds):
        runs['sgbm'].append(bench(args, 'sgbm'))
        for m in args.models:
            ms = bench(args, 'onnxruntime', m, args.slow_iters if m in slow else None)
            if ms > 400:
                slow.add(m)
            runs[m].append(ms)
        print(f'round {r + 1}: ' + ', '.join(f'{k} {v[-1]:.1f} ms' for k, v in runs.items()))
    runs['sgbm'].append(bench(args, 'sgbm'))  # closing SGBM run: every model run is between two
    for m in args.models:
        ratios[m] = [ms / np.mean(runs['sgbm'][i : i + 2]) for i, ms in enumerate(runs[m])]

    print(f'\nmatch p50 at {args.size}, {args.rounds} rounds, {os.cpu_count()} CPUs, '
          f'load average {os.getloadavg()[0]:.1f}')  # fmt: skip
    print(f'{"method":<28}{"runs (ms)":<34}{"median ms":>10}{"x SGBM":>10}')
    for k, v in runs.items():
        rr = '' if k == 'sgbm' else f'{np.median(ratios[k]):>10.2f}'
        print(f'{k:<28}{", ".join(f"{x:.0f}" for x in v):<34}{np.median(v):>10.1f}{rr}')
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(
                {
                    'size': args.size,
                    'sgbm_max_disparity': args.max_disparity,
                    'match_p50_ms': runs,
                    'ratio_to_sgbm': ratios,
                    'date_utc': time.strftime('%Y-%m-%d %H:%M', time.gmtime()),
                    'machine': {'cpus': os.cpu_count(), 'processor': platform.processor()},
                },
                indent=2,
            )
            + '\n'
        )
        print(f'wrote {path}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
