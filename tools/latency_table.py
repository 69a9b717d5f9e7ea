#!/usr/bin/env python3
"""Latency lookup table of candidate fast models, each beside OpenCV SGBM in the same minutes.

Issue 12 (the fast tier): the ONNX Runtime match at 640x480 within about 2x SGBM's. For every
candidate model config (block choices of ffs_ros/model/net.py; random weights: latency does not
depend on them) this builds the model, exports it to the two-stage contract with symbolic H and W
(as `ffs-ros export --dynamic`), loads it with ONNX Runtime (2 intra-op threads) and times
`matcher.match` on a textured pair: p50 and min of the whole call and of each stage
(`last_timings`). SGBM with the candidate's disparity range is timed right before and after it, so
the ratio compares measurements taken side by side on this shared, noisy machine.

    PYTHONPATH=. python tools/latency_table.py --json models/latency_table.json \
        --markdown docs/fast_tier_latency.md [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np

# The fast-tier block choices on top of ffs_small's defaults; every candidate is BASE + changes.
BASE = {
    'enc': [16, 24, 32, 48, 64],
    'enc_stem': 1,
    'enc_depth': 1,
    'feat': [32, 48, 64, 64],
    'stem_ch': 16,
    'shared_stem': True,
    'light_decoder': True,
    'max_disp': 96,
    'cv_group': 4,
    'aggregation': '2d',
    'agg2d': [32, 48, 64],
    'corr_skip': True,
    'context': 'agg',
    'valid_iters': 0,
    'train_iters': 0,
    'upsampler': 'convex4',
    'up_mid': 32,
    'guide_ch': 0,
}

CANDIDATES = {
    # the shipped model, for scale
    'ffs_small': {'__ffs_small__': True},
    # the cheapest stack: narrow encoder with a 1-conv shared stem, light decoder, 4 GWC groups,
    # 2D aggregation, no GRU, convex weights at 1/4
    'fast_base': {},
    # one block changed at a time
    'fast_no_corr_skip': {'corr_skip': False},
    'fast_g8': {'cv_group': 8},
    'fast_d128': {'max_disp': 128},
    'fast_stem2': {'enc_stem': 2},
    'fast_enc2': {'enc_depth': 2},
    'fast_heavy_dec': {'light_decoder': False},
    'fast_sep_stem': {'shared_stem': False, 'enc_stem': 2},
    'fast_wide_enc': {'enc': [24, 32, 48, 64, 96], 'stem_ch': 24},
    'fast_wide_coarse': {'enc': [16, 24, 48, 64, 96], 'feat': [32, 64, 96, 96]},
    'fast_wide_agg': {'agg2d': [48, 64, 96]},
    'fast_wide_agg_coarse': {'agg2d': [32, 64, 128]},
    'fast_up48': {'up_mid': 48},
    'fast_wide_coarse_up48': {
        'enc': [16, 24, 48, 64, 96],
        'feat': [32, 64, 96, 96],
        'up_mid': 48,
    },
    'fast_wide_coarse_stem2': {
        'enc': [16, 24, 48, 64, 96],
        'feat': [32, 64, 96, 96],
        'enc_stem': 2,
    },
    'fast_guided_up': {'upsampler': 'guided'},
    # one correction of the 1/4 disparity from the bins around it (refine_local.py): no GRU
    'fast_refine16': {'local_refine': 16},
    'fast_refine32': {'local_refine': 32},
    # refinement: ContextNet + 1 or 2 ConvGRU iterations on the 2D logits
    'fast_it1': {
        'context': 'net',
        'valid_iters': 1,
        'train_iters': 1,
        'hidden': 32,
        'ctx': 32,
        'ctx_mid': 32,
    },
    'fast_it2': {
        'context': 'net',
        'valid_iters': 2,
        'train_iters': 2,
        'hidden': 32,
        'ctx': 32,
        'ctx_mid': 32,
    },
    # the 3D axial hourglass (narrow, concat volume of 4 ch) instead of the 2D aggregation
    'fast_axial3d': {
        'aggregation': 'axial3d',
        'context': 'net',
        'hidden': 32,
        'ctx_mid': 32,
        'vol': [8, 16, 24, 32],
        'concat_ch': 4,
    },
    # the cheap-resolution widenings together
    'fast_wide_coarse_agg': {
        'enc': [16, 24, 48, 64, 96],
        'feat': [32, 64, 96, 96],
        'agg2d': [32, 64, 128],
    },
}


def candidate_config(name):
    over = CANDIDATES[name]
    if over.get('__ffs_small__'):
        return None
    return dict(BASE, **over)


def textured_pair(w, h, shift=24, seed=0):
    rng = np.random.default_rng(seed)
    tex = (rng.random((h, w + shift, 3)) * 255).astype(np.uint8)
    return np.ascontiguousarray(tex[:, shift:]), np.ascontiguousarray(tex[:, :w])


def time_matcher(matcher, left, right, iters, warmup):
    """Return p50 and min of the match call and of each stage (ffs_ros.inference.benchmark)."""
    from ffs_ros.inference.benchmark import measure

    return {k: round(v, 2) for k, v in measure(matcher, left, right, iters, warmup).items()}


def measure_candidate(name, w, h, iters, warmup, threads):
    import torch

    from ffs_ros.inference import load_matcher
    from ffs_ros.model import build_model, count_parameters, load_model
    from ffs_ros.model.export import export_two_stage
    from ffs_ros.paths import default_model_dir

    cfg = candidate_config(name)
    torch.manual_seed(0)
    if cfg is None:
        model = load_model(default_model_dir() / 'ffs_small.pt')
    else:
        model = build_model(cfg)
    left, right = textured_pair(w, h)
    with tempfile.TemporaryDirectory() as tmp:
        export_two_stage(model, tmp, 256, 320, dynamic=True)
        matcher = load_matcher(tmp, backend='onnxruntime', threads=threads)
        sgbm = load_matcher(backend='sgbm', max_disparity=model.max_disp)
        before = time_matcher(sgbm, left, right, iters, warmup)
        net = time_matcher(matcher, left, right, iters, warmup)
        after = time_matcher(sgbm, left, right, iters, warmup)
    sgbm_p50 = 0.5 * (before['total'] + after['total'])
    sgbm_min = min(before['min_total'], after['min_total'])
    return {
        'name': name,
        'config': model.config,
        'params': count_parameters(model),
        'max_disp': int(model.max_disp),
        'match': net,
        'sgbm_p50': round(sgbm_p50, 2),
        'sgbm_before_after': [before['total'], after['total']],
        'ratio': round(net['total'] / sgbm_p50, 2),
        # from the minima: less sensitive to other processes on a shared machine
        'sgbm_min': round(sgbm_min, 2),
        'ratio_min': round(net['min_total'] / sgbm_min, 2),
    }


def markdown(rows, size):
    lines = [
        f'| candidate | params | D | match p50 ms ({size}) | feature | gwc | post | '
        'SGBM p50 ms (same range) | ratio p50 | ratio min |',
        '|---|---|---|---|---|---|---|---|---|---|',
    ]
    for r in rows:
        m = r['match']
        lines.append(
            f"| {r['name']} | {r['params']:,} | {r['max_disp']} | {m['total']:.0f} | "
            f"{m.get('feature', 0):.0f} | {m.get('gwc', 0):.0f} | {m.get('post', 0):.0f} | "
            f"{r['sgbm_p50']:.0f} | {r['ratio']:.2f} | {r['ratio_min']:.2f} |"
        )
    return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--size', default='640x480', help='WxH')
    p.add_argument('--iters', type=int, default=10, help='timed calls per matcher')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--threads', type=int, default=2, help='ONNX Runtime intra-op threads')
    p.add_argument('--only', nargs='*', default=None, help='candidate names (default: all)')
    p.add_argument('--json', default=None, help='write the results here')
    p.add_argument('--markdown', default=None, help='write the markdown table here')
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    w, h = (int(v) for v in args.size.lower().split('x'))
    names = args.only or list(CANDIDATES)
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        p.error(f'unknown candidates {unknown}; known: {", ".join(CANDIDATES)}')
    load_start = os.getloadavg()[0]
    rows = []
    for name in names:
        r = measure_candidate(name, w, h, args.iters, args.warmup, args.threads)
        rows.append(r)
        m = r['match']
        print(
            f"{name:16s} match p50 {m['total']:7.1f} ms (feature {m.get('feature', 0):.0f}, "
            f"gwc {m.get('gwc', 0):.0f}, post {m.get('post', 0):.0f})  "
            f"SGBM {r['sgbm_p50']:.1f} ms  ratio {r['ratio']:.2f} (minima: {r['ratio_min']:.2f})",
            flush=True,
        )
    table = markdown(rows, args.size)
    print(table)
    meta = {
        'size': args.size,
        'iters': args.iters,
        'warmup': args.warmup,
        'ort_threads': args.threads,
        'machine': f'{platform.machine()} {platform.processor() or ""}'.strip(),
        'date_utc': time.strftime('%Y-%m-%d %H:%M', time.gmtime()),
        # 1-minute load average before and after: other processes on the 2 cores
        'loadavg_1min': [round(load_start, 2), round(os.getloadavg()[0], 2)],
        'base': BASE,
    }
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'meta': meta, 'candidates': rows}, f, indent=1)
            f.write('\n')
    if args.markdown:
        with open(args.markdown, 'w') as f:
            f.write(table)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
