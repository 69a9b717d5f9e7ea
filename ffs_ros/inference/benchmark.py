"""Where the time of a network matcher goes, per stage (``python -m ffs_ros.inference.benchmark``).

Runs a matcher on a generated textured pair at the given size and prints, per stage, the median and
the minimum wall-clock ms over the timed iterations, and the share of everything that is not the
two graphs (preprocess + GWC + postprocess + glue) in the whole ``match`` call (median per call,
and from the per-stage minima, which is robust to other processes on a shared machine). ``ffs-ros
bench`` covers the full node path; this is the model-only view used for the README tables.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def measure(matcher, left, right, iters: int = 5, warmup: int = 1) -> dict:
    for _ in range(warmup):
        matcher.match(left, right)
    rows = []
    for _ in range(iters):
        t0 = time.perf_counter()
        matcher.match(left, right)
        total = (time.perf_counter() - t0) * 1e3
        rows.append(dict(matcher.last_timings, total=total))
    keys = list(rows[0])
    res = {k: float(np.median([r.get(k, 0.0) for r in rows])) for k in keys}
    res.update({f'min_{k}': float(np.min([r.get(k, 0.0) for r in rows])) for k in keys})
    graphs = [r.get('feature', 0.0) + r.get('post', 0.0) for r in rows]
    shares = [(r['total'] - g) / r['total'] for r, g in zip(rows, graphs)]
    res['not_graphs_share'] = float(np.median(shares))
    # from the per-stage minima: robust to other processes on a shared machine
    mins = {k: res[f'min_{k}'] for k in keys}
    rest = sum(v for k, v in mins.items() if k not in ('feature', 'post', 'total'))
    res['not_graphs_share_min'] = rest / (rest + mins.get('feature', 0.0) + mins.get('post', 0.0))
    return res


def main(argv=None) -> int:
    from ffs_ros.inference import load_matcher

    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--model', required=True)
    p.add_argument('--backend', default='onnxruntime')
    p.add_argument('--device', default=None)
    p.add_argument('--size', default='640x448', help='WxH')
    p.add_argument('--iters', type=int, default=5)
    p.add_argument('--warmup', type=int, default=1)
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split('x'))
    rng = np.random.default_rng(0)
    tex = (rng.random((h, w + 32, 3)) * 255).astype(np.uint8)
    left, right = np.ascontiguousarray(tex[:,:w]), np.ascontiguousarray(tex[:, 32:])
    m = load_matcher(args.model, args.backend, args.device)
    res = measure(m, left, right, args.iters, args.warmup)
    res.update(backend=m.info.backend, device=m.info.device, size=f'{w}x{h}', model=m.info.model)
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in res.items()}))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
