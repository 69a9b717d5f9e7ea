"""`ffs-ros eval`: EPE, bad-1, bad-2, D1 of a model beside OpenCV SGBM, with time per pair.

The metrics are computed on Middlebury Motorcycle (bundled with scikit-image) and a fixed held-out
synthetic set, for a model beside OpenCV SGBM in the same run. Then, for every confidence source
the model offers (its own output, the feature-based one, the left-right check as a graded
|d_L - d_R| score), the sparsification curve: bad-2 of the most confident 100/90/80/50 % of the
valid pixels, its area under the curve and the oracle's (pixels ranked by their true error).
"""

from __future__ import annotations

from pathlib import Path

from .common import MODEL_HELP, add_option_argument, parse_options


def add_arguments(parser):
    parser.add_argument(
        '--model',
        default=None,
        help=MODEL_HELP + ' (--direct-torch: the accurate checkpoint)',
    )
    parser.add_argument(
        '--backend', default='auto', help='auto, onnxruntime, torch, tensorrt (model backend)'
    )
    parser.add_argument(
        '--direct-torch',
        action='store_true',
        help='run a .pt checkpoint directly (no inference pipeline), e.g. during training',
    )
    parser.add_argument(
        '--iters', type=int, default=None, help='refinement iterations (--direct-torch only)'
    )
    parser.add_argument(
        '--datasets', default='motorcycle,synthetic', help='comma list: motorcycle,synthetic'
    )
    parser.add_argument(
        '--max-size',
        type=int,
        default=None,
        help=(
            'downscale Motorcycle so its longer side is <= this (disparity scaled); '
            'default native 741'
        ),
    )
    parser.add_argument('--synthetic-n', type=int, default=12, help='held-out synthetic pairs')
    parser.add_argument(
        '--sgbm-max-disp',
        type=int,
        default=None,
        help='SGBM disparity range (default: per data set, the ground-truth maximum rounded up '
        'to 16, the fairest setting for SGBM)',
    )
    parser.add_argument('--no-sgbm', action='store_true', help='skip the SGBM baseline')
    parser.add_argument(
        '--confidence',
        default='all',
        help="comma list of confidence sources to evaluate: network, features, lr_check; 'all' "
        "(every one the model offers) or 'none'",
    )
    parser.add_argument('--threads', type=int, default=2, help='CPU threads for the model')
    add_option_argument(parser)
    parser.add_argument('--json', default=None, help='also write all rows to this JSON file')


def _model_options(args) -> dict:
    """load_matcher options of the evaluated model: every pixel with ground truth is scored."""
    opts = {'remove_invisible': False}  # SGBM keeps its own invalids
    if args.backend == 'onnxruntime':
        opts['threads'] = args.threads
    return opts | parse_options(args.option)


def _model_matcher(args):
    if args.direct_torch:
        if args.option:
            raise ValueError('--option sets inference-pipeline options; drop it or --direct-torch')
        from ffs_ros.model import load_model
        from ffs_ros.training.evaluate import TorchModelMatcher

        if not args.model:
            from ffs_ros.paths import default_model_dir

            args.model = str(default_model_dir() / 'ffs_small.pt')
        return TorchModelMatcher(
            load_model(args.model), iters=args.iters, threads=args.threads
        ), f'{Path(args.model).stem} torch ({"default" if args.iters is None else args.iters} it)'
    from ffs_ros.inference import load_matcher

    m = load_matcher(args.model, backend=args.backend, **_model_options(args))
    label = f'{m.info.backend}:{(args.model or "default")}'[-28:]
    return m, ' '.join([label, *args.option])


def run(args) -> int:
    import json

    from ffs_ros.training import evaluate as ev

    names = [d.strip() for d in args.datasets.split(',') if d.strip()]
    unknown = [d for d in names if d not in ('motorcycle', 'synthetic')]
    if unknown:
        print(f'error: unknown dataset(s) {unknown}; choose from motorcycle, synthetic')
        return 2
    try:
        matcher, label = _model_matcher(args)
        sources = _confidence_sources(args, matcher)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f'error: {e}')
        return 2
    results, rows_all = [], {}
    for ds in names:
        pairs = (
            ev.motorcycle(args.max_size) if ds == 'motorcycle' else ev.synthetic(args.synthetic_n)
        )
        methods = [(label, matcher)]
        if not args.no_sgbm:
            import numpy as np

            from ffs_ros.inference import load_matcher

            rng = args.sgbm_max_disp or int(
                np.ceil(max(float(np.max(p.gt[p.valid])) for p in pairs) / 16) * 16
            )
            methods.append(
                (f'opencv sgbm (range {rng})', load_matcher(backend='sgbm', max_disparity=rng))
            )
        for label_, m in methods:
            rows, mean = ev.evaluate_matcher(m, pairs)
            results.append((ds, label_, mean))
            rows_all[f'{ds}/{label_}'] = {'mean': mean, 'pairs': rows}
    print(ev.format_table(results))
    if sources:
        conf_results = _confidence(args, names, sources, rows_all)
        print()
        print('confidence: bad-2 of the most confident share of valid pixels (b2@80 = the 80 %')
        print("most confident), area under that curve, the oracle's, ratio = AUC / oracle")
        print(ev.format_confidence_table(conf_results))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows_all, f, indent=1)
    return 0


CONFIDENCE_SOURCES = ('network', 'features', 'lr_check')


def _confidence_sources(args, matcher) -> list:
    """Return the confidence sources to evaluate (raises ValueError for one the model lacks)."""
    want = [c.strip() for c in args.confidence.split(',') if c.strip()]
    if want == ['none'] or args.direct_torch:
        return []
    offered = ['lr_check']
    info = getattr(matcher, 'info', None)
    if info is not None and info.confidence:
        kind = info.extra.get('model_kind')
        offered = (['network'] if info.confidence == 'network' else []) + (
            ['features'] if kind in ('two_stage', 'torch') else []
        ) + offered
    if want == ['all']:
        return offered
    unknown = [c for c in want if c not in CONFIDENCE_SOURCES]
    missing = [c for c in want if c in CONFIDENCE_SOURCES and c not in offered]
    if unknown or missing:
        problems = []
        if unknown:
            problems.append(f'unknown {unknown} (choose from {", ".join(CONFIDENCE_SOURCES)})')
        if missing:
            problems.append(f'{missing} not offered; this model offers {", ".join(offered)}')
        raise ValueError(f'--confidence {args.confidence}: ' + '; '.join(problems))
    return want


def _confidence(args, names, sources, rows_all) -> list:
    """Sparsification of every source on every data set -> [(dataset, source, mean row)]."""
    import time

    from ffs_ros.inference import load_matcher
    from ffs_ros.inference.confidence import lr_difference, mirrored
    from ffs_ros.training import evaluate as ev

    opts = _model_options(args)
    results = []
    for source in sources:
        conf_source = 'auto' if source == 'lr_check' else source
        m = load_matcher(args.model, backend=args.backend, confidence_source=conf_source, **opts)

        def of(p, m=m, source=source):
            t = time.perf_counter()
            r = m.match_full(p.left, p.right)
            if source != 'lr_check':
                return r.disparity, r.confidence, (time.perf_counter() - t) * 1e3
            d_right = mirrored(m.match(mirrored(p.right), mirrored(p.left)))
            score = ev.lr_score(lr_difference(r.disparity, d_right))
            return r.disparity, score, (time.perf_counter() - t) * 1e3

        for ds in names:
            pairs = (
                ev.motorcycle(args.max_size)
                if ds == 'motorcycle'
                else ev.synthetic(args.synthetic_n)
            )
            of(pairs[0])  # warm-up
            rows, mean = ev.evaluate_confidence(of, pairs)
            results.append((ds, source, mean))
            rows_all[f'{ds}/confidence/{source}'] = {
                'mean': _jsonable(mean),
                'pairs': [_jsonable(r) for r in rows],
            }
    return results


def _jsonable(row: dict) -> dict:
    return {
        k: ({str(f): v for f, v in x.items()} if isinstance(x, dict) else x)
        for k, x in row.items()
    }
