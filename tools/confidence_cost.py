#!/usr/bin/env python3
"""What confidence costs: match time of the shipped model with and without it, side by side.

Exports the shipped checkpoint twice into a temporary directory -- as shipped (post graph outputs
disp + confidence) and like an official export (disp only) -- and times, interleaved in one run
through ONNX Runtime on this machine's CPU:

* ``off``: the disp-only export, no confidence (the reference);
* ``network``: the shipped export, the model's own confidence output;
* ``features``: the disp-only export with the model-agnostic feature confidence;
* ``lr_check``: the shipped export with the left-right check (a second, mirrored match).

Prints a table (p50 match ms, cost in % of the reference) and writes JSON with --json.
Usage: PYTHONPATH=. python3 tools/confidence_cost.py [--width 640 --height 480 --runs 7]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np


def export_variants(out_dir):
    """Write the shipped model with and without the confidence output -> (with, without) dirs."""
    from pathlib import Path
    import shutil

    import onnx.utils

    from ffs_ros.model import export as ex
    from ffs_ros.model import load_model
    from ffs_ros.paths import default_model_dir

    model = load_model(default_model_dir() / 'ffs_small.pt')
    with_dir, without_dir = Path(out_dir) / 'with', Path(out_dir) / 'without'
    ex.export_two_stage(model, with_dir, 256, 320, dynamic=True)
    shutil.copytree(with_dir, without_dir)
    # the post graph cut down to what the disparity needs (like an official export: disp only)
    post = str(with_dir / 'post_runner.onnx')
    names = [i.name for i in onnx.load(post, load_external_data=False).graph.input]
    onnx.utils.extract_model(post, str(without_dir / 'post_runner.onnx'), names, ['disp'])
    return with_dir, without_dir


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--width', type=int, default=640)
    ap.add_argument('--height', type=int, default=480)
    ap.add_argument('--runs', type=int, default=7)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--json', default=None)
    args = ap.parse_args(argv)

    from ffs_ros.inference import load_matcher
    from ffs_ros.synth import render_scene

    s = render_scene(np.random.default_rng(5), args.height, args.width, 64.0)
    with tempfile.TemporaryDirectory() as tmp:
        with_dir, without_dir = export_variants(tmp)
        common = {'backend': 'onnxruntime', 'threads': args.threads}
        variants = {
            'off': load_matcher(without_dir, confidence_source='off', **common),
            'network': load_matcher(with_dir, confidence_source='network', **common),
            'features': load_matcher(without_dir, confidence_source='features', **common),
            'lr_check': load_matcher(with_dir, lr_check=True, **common),
        }
        times = {k: [] for k in variants}
        for m in variants.values():
            m.match_full(s.left, s.right)  # warm-up
        for _ in range(args.runs):  # interleaved: the machine's load hits every variant alike
            for k, m in variants.items():
                t = time.perf_counter()
                m.match_full(s.left, s.right)
                times[k].append((time.perf_counter() - t) * 1e3)
    ref = float(np.median(times['off']))
    rows = {
        k: {'p50_ms': float(np.median(v)), 'cost_pct': 100.0 * (float(np.median(v)) / ref - 1)}
        for k, v in times.items()
    }
    print(f'confidence cost, shipped model, {args.width}x{args.height}, onnxruntime CPU, '
          f'{args.runs} interleaved runs')
    print(f'{"confidence":<10} {"match p50 ms":>13} {"cost":>8}')
    for k, r in rows.items():
        print(f'{k:<10} {r["p50_ms"]:13.0f} {r["cost_pct"]:+7.1f}%')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'size': [args.width, args.height], 'rows': rows}, f, indent=1)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
