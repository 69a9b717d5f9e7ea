"""`ffs-ros infer`: disparity (and depth + point cloud) for one stereo pair from image files.

Writes into --out: left.png, disparity.npy (float32, input resolution, NaN invalid), disparity.png
(colours on [0, the matcher's max disparity] px) and overview.png (left | disparity | depth with
colour bars in px and m, see ffs_ros.overview); when the matcher gives a confidence, confidence.npy
(float32 in [0, 1], input resolution, NaN where the disparity is invalid) and confidence.png
(VIRIDIS: dark = unsure, bright = sure, black = invalid). Depth and point cloud need a calibration:
--calib K.txt (upstream format: line 1 the 3x3 K row-major, line 2 the baseline in metres) or
--camera-info (ROS camera_calibration YAML: image_width/height, camera_matrix.data,
projection_matrix.data); with one also depth.npy (metres, NaN invalid), depth.png (colours on a
stated range) and cloud.ply (binary little-endian, x y z float + red green blue uchar); without, a
note says they were skipped. As in stereo_node, the depth image is not range-filtered: only the
cloud keeps [--min-depth, --max-depth]. stdout is one JSON line (summary, files written); stderr
lists the files written, notes and warnings (e.g. left and right that look swapped).
"""

from __future__ import annotations

import json
from pathlib import Path
import sys
import time

import numpy as np

from .common import MODEL_HELP

# the swapped-pair check runs a second, swapped pass only when the first looks poor: fewer valid
# pixels than SWAP_CHECK_VALID or a match error (match_error()) above SWAP_CHECK_ERROR
SWAP_CHECK_VALID = 0.5
SWAP_CHECK_ERROR = 0.6


def add_arguments(p) -> None:
    from .common import show_defaults

    show_defaults(p)
    p.add_argument('--left', required=True, help='left (reference) rectified image file')
    p.add_argument('--right', required=True, help='right rectified image file')
    p.add_argument(
        '--model', default=None, help=MODEL_HELP
    )
    p.add_argument(
        '--backend', default='auto', help='auto, onnxruntime, torch, tensorrt or sgbm'
    )
    p.add_argument('--device', default=None, help='cpu, cuda, cuda:N (default: best available)')
    p.add_argument(
        '--resize-mode',
        default='letterbox',
        choices=('letterbox', 'stretch'),
        help='how a network of fixed size takes the images',
    )
    cal = p.add_mutually_exclusive_group()
    cal.add_argument(
        '--calib', help='K.txt: line 1 = 3x3 K flattened, line 2 = baseline in metres'
    )
    cal.add_argument(
        '--camera-info',
        nargs='+',
        metavar='YAML',
        help='ROS camera_calibration YAML of the left camera (and optionally the right one)',
    )
    p.add_argument(
        '--baseline', type=float, help='baseline in metres (when the camera-info YAML has no Tx)'
    )
    p.add_argument(
        '--min-depth',
        type=float,
        default=0.0,
        help='cloud.ply: drop points closer than this (m); depth.npy is not cut (as the node)',
    )
    p.add_argument(
        '--max-depth',
        type=float,
        default=100.0,
        help='cloud.ply: drop points farther than this (m); depth.npy is not cut (as the node)',
    )
    p.add_argument(
        '--depth-range',
        type=float,
        nargs=2,
        metavar=('NEAR', 'FAR'),
        help='colour range of depth.png and the overview in m (default: --min-depth to 16x the '
        'nearest measurable depth fx*B/max disparity, rounded up, at most --max-depth)',
    )
    p.add_argument(
        '--confidence-source',
        default='auto',
        choices=('auto', 'network', 'features', 'off'),
        help="model backends: where confidence.npy comes from: the model's own output "
        "('network'), the correlation volume ('features'), 'auto' (the first available) or "
        "'off' (default: %(default)s)",
    )
    p.add_argument(
        '--lr-check',
        action='store_true',
        help='left-right consistency check: match the mirrored pair too and drop pixels whose '
        'two disparities differ by more than 1 px (about twice the time)',
    )
    p.add_argument('--out', required=True, help='output directory')


class CliError(ValueError):
    """A user-facing problem with the arguments or input files."""


def read_rgb(path) -> np.ndarray:
    import cv2

    p = Path(path)
    if not p.is_file():
        raise CliError(f'image {p} does not exist')
    img = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if img is None:
        raise CliError(f'{p} is not a readable image (png/jpg/...)')
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def camera_from_k_txt(path, width: int, height: int):
    """StereoCamera from the upstream K.txt (cx_right = cx_left)."""
    from ffs_ros.geometry import StereoCamera

    lines = [ln.split() for ln in Path(path).read_text().splitlines() if ln.strip()]
    try:
        k = np.array([float(v) for v in lines[0]], np.float64)
        baseline = float(lines[1][0])
    except (IndexError, ValueError) as exc:
        raise CliError(
            f'{path}: expected line 1 = 9 numbers (K row-major), line 2 = baseline in metres'
        ) from exc
    if k.size != 9:
        raise CliError(f'{path}: line 1 has {k.size} numbers, expected the 9 of the 3x3 K')
    if not (k[0] > 0 and k[4] > 0) or not baseline > 0:
        raise CliError(
            f'{path}: need fx, fy > 0 and baseline > 0 (got fx={k[0]:g}, fy={k[4]:g}, '
            f'baseline={baseline:g})'
        )
    return StereoCamera(
        fx=k[0],
        fy=k[4],
        cx_left=k[2],
        cy=k[5],
        cx_right=k[2],
        baseline=baseline,
        width=width,
        height=height,
    )


def _yaml_matrix(data, key, n, path):
    try:
        vals = np.array(data[key]['data'], np.float64)
    except (KeyError, TypeError) as exc:
        raise CliError(f'{path}: missing {key}.data (ROS camera_calibration format)') from exc
    if vals.size != n:
        raise CliError(f'{path}: {key}.data has {vals.size} numbers, expected {n}')
    return vals


def camera_from_infos(paths, width: int, height: int, baseline=None):
    """StereoCamera from one or two ROS camera_calibration YAML files (left first)."""
    import yaml

    from ffs_ros.geometry import StereoCamera

    infos = []
    for path in paths[:2]:
        if not Path(path).is_file():
            raise CliError(f'camera-info file {path} does not exist')
        data = yaml.safe_load(Path(path).read_text()) or {}
        w, h = data.get('image_width'), data.get('image_height')
        if (w, h) != (None, None) and (int(w), int(h)) != (width, height):
            raise CliError(
                f'{path} is calibrated for {w}x{h} but the images are {width}x{height}; pass '
                'images at '
                f'the calibration resolution (or scale the calibration)'
            )
        p = _yaml_matrix(data, 'projection_matrix', 12, path).reshape(3, 4)
        infos.append(p)
    # the same construction as for CameraInfo messages (StereoCamera.from_projection): the right P
    # carries
    # Tx = -fx * baseline; a single file is used for both, --baseline overrides Tx
    pl, pr = infos[0], infos[-1].copy()
    if baseline is not None:
        pr[0, 3] = -pr[0, 0] * float(baseline)
    elif pr[0, 3] == 0:
        raise CliError(
            "no baseline: the camera-info has Tx = 0 (a left camera); pass the right camera's "
            'YAML '
            'as the second --camera-info file, or --baseline METRES'
        )
    return StereoCamera.from_projection(pl, pr, width, height)


def _local_contrast(rgb: np.ndarray, sigma: float = 4.0) -> np.ndarray:
    """Grey image with the local mean removed and the local contrast divided out (gain-free)."""
    import cv2

    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    mu = cv2.GaussianBlur(g, (0, 0), sigma)
    var = cv2.GaussianBlur(g * g, (0, 0), sigma) - mu * mu
    return (g - mu) / np.sqrt(np.maximum(var, 0) + 4.0)


def match_error(left: np.ndarray, right: np.ndarray, disp: np.ndarray) -> float:
    """How badly a disparity map explains a pair: 0 = perfectly, about 1 or more = not at all.

    Median |left - right warped by disp| over median |left - right| on the same pixels (the
    valid ones whose match lies inside the right image), on locally contrast-normalised grey
    images so that a gain or exposure difference between the cameras does not count (measured:
    0.2-0.4 for good matches of generated scenes and Middlebury Motorcycle, 0.9-1.1 for a
    network's output on the same pairs swapped). NaN when no pixel qualifies.
    """
    import cv2

    gl, gr = _local_contrast(left), _local_contrast(right)
    h, w = gl.shape
    xs = np.arange(w, dtype=np.float32)[None, :] - np.nan_to_num(disp, nan=0.0)
    ys = np.broadcast_to(np.arange(h, dtype=np.float32)[:, None], (h, w))
    warped = cv2.remap(
        gr, np.ascontiguousarray(xs, np.float32), np.ascontiguousarray(ys), cv2.INTER_LINEAR
    )
    ok = np.isfinite(disp) & (xs >= 0)
    if not ok.any():
        return float('nan')
    e0 = float(np.median(np.abs(gr - gl)[ok]))
    if e0 < 1e-3:
        return float('nan')  # identical images: nothing to compare
    return float(np.median(np.abs(warped - gl)[ok])) / e0


def _valid_in(disp: np.ndarray, window) -> float:
    """Fraction of finite disparities inside the matcher's valid window (x, y, w, h) or all."""
    if window is not None:
        x, y, w, h = window
        disp = disp[y: y + h, x: x + w]
    return float(np.isfinite(disp).mean()) if disp.size else 0.0


def swap_check(matcher, left, right, disp, window=None) -> dict:
    """Measure how well `disp` matches; when poorly, match the swapped pair too.

    The matchers turn negative disparities (what a swapped pair has) into NaN, or, for networks,
    into garbage, so a swapped pair shows as few valid pixels or a high match_error(). Only then
    is right, left matched too; 'looks_swapped' says whether that order matches much better.
    Valid fractions count inside `window`, the matcher's valid window (e.g. sgbm's, which leaves
    out the left max_disparity columns).
    """
    res = {
        'valid_fraction': _valid_in(disp, window),
        'match_error': match_error(left, right, disp),
    }
    v, e = res['valid_fraction'], res['match_error']
    if v >= SWAP_CHECK_VALID and not e > SWAP_CHECK_ERROR:
        return res
    other = matcher.match(right, left)
    v2, e2 = _valid_in(other, window), match_error(right, left, other)
    res['swapped'] = {'valid_fraction': v2, 'match_error': e2}
    res['looks_swapped'] = bool(
        v2 >= max(1.5 * v, v + 0.2) or (e2 < 0.6 * e and v2 >= 0.5 * v)
    )
    return res


def report_swap(check: dict, err) -> None:
    """Warn about a pair that looks swapped, or that matches poorly either way."""
    if 'swapped' not in check:
        return
    v, e = check['valid_fraction'], check['match_error']
    v2, e2 = check['swapped']['valid_fraction'], check['swapped']['match_error']
    if check['looks_swapped']:
        print(
            f'ffs-ros infer: warning: left and right look swapped: as given {v:.0%} of the pixels '
            f'match (match error {e:.2f}), with --left and --right exchanged {v2:.0%} '
            f'(match error {e2:.2f}; 0 = perfect, 1 = none). The outputs are from the order '
            "given; pass the left camera's image as --left (a near object sits farther right "
            'in the left image than in the right one); on a robot, check the camera topics.',
            file=err,
        )
    elif v < SWAP_CHECK_VALID:
        print(
            f'ffs-ros infer: warning: only {v:.0%} of the pixels match, and no better with left '
            'and right exchanged: check that the images are a rectified pair (a scene point on '
            'the same row in both) of the same moment.',
            file=err,
        )


def run(args) -> int:
    try:
        return _run(args)
    except (CliError, ValueError, RuntimeError) as exc:
        print(f'ffs-ros infer: error: {exc}', file=sys.stderr)
        return 2


def _rounded(x: float):
    return None if np.isnan(x) else round(x, 3)


def _run(args) -> int:
    from ffs_ros.geometry import depth_to_points, disparity_to_depth
    from ffs_ros.inference import load_matcher
    from ffs_ros.overview import depth_range, write_images

    err = sys.stderr
    if args.depth_range is not None and not 0 <= args.depth_range[0] < args.depth_range[1]:
        raise CliError(f'--depth-range needs 0 <= NEAR < FAR, got {args.depth_range}')
    if not 0 <= args.min_depth < args.max_depth:
        raise CliError(
            f'need 0 <= --min-depth < --max-depth, got {args.min_depth:g} and {args.max_depth:g}'
        )
    left, right = read_rgb(args.left), read_rgb(args.right)
    if left.shape != right.shape:
        raise CliError(
            f'left {left.shape[1]}x{left.shape[0]} and right {right.shape[1]}x{right.shape[0]} '
            'images '
            f'differ in size; pass a rectified pair'
        )
    h, w = left.shape[:2]
    cam = None
    if args.calib:
        if not Path(args.calib).is_file():
            raise CliError(f'calibration file {args.calib} does not exist')
        cam = camera_from_k_txt(args.calib, w, h)
    elif args.camera_info:
        cam = camera_from_infos(args.camera_info, w, h, args.baseline)
    options = {} if args.backend == 'sgbm' else {
        'resize_mode': args.resize_mode,
        'confidence_source': args.confidence_source,
    }
    if args.lr_check:
        options['lr_check'] = True
    matcher = load_matcher(args.model, args.backend, args.device, **options)
    try:
        t0 = time.perf_counter()
        result = matcher.match_full(left, right)
        disp, conf = result.disparity, result.confidence
        elapsed = (time.perf_counter() - t0) * 1e3
        timings = dict(matcher.last_timings)
        check = swap_check(matcher, left, right, disp, matcher.info.valid_window)
        info = matcher.info
    finally:
        matcher.close()
    report_swap(check, err)
    finite = disp[np.isfinite(disp)]
    max_disp = info.max_disparity or (
        float(np.ceil(finite.max() / 16) * 16) if finite.size and finite.max() > 0 else 16.0
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / 'disparity.npy', disp.astype(np.float32))
    written = [out / 'disparity.npy']
    if conf is not None:
        np.save(out / 'confidence.npy', conf.astype(np.float32))
        written.append(out / 'confidence.npy')
    summary = {
        'backend': info.backend,
        'model': info.model,
        'size': [w, h],
        'valid_fraction': float(np.isfinite(disp).mean()),
        'match_error': _rounded(check['match_error']),
        'ms': round(elapsed, 1),
        'stages_ms': {k: round(v, 2) for k, v in timings.items()},
        'max_disparity': max_disp,
        'confidence': info.confidence or None,
        'mean_confidence': (
            _rounded(float(np.nanmean(conf))) if conf is not None and finite.size else None
        ),
    }
    if 'swapped' in check:
        summary['swap_check'] = {
            'valid_fraction': check['swapped']['valid_fraction'],
            'match_error': _rounded(check['swapped']['match_error']),
            'looks_swapped': check['looks_swapped'],
        }
    depth = lo_hi = None
    if cam is not None:
        # as the node's depth image: every valid disparity, not range-filtered
        depth = disparity_to_depth(disp, cam)
        np.save(out / 'depth.npy', depth.astype(np.float32))
        written.append(out / 'depth.npy')
        # as the node's points2: [min_depth, max_depth] (float32 bounds, as CloudBuffer.fill)
        with np.errstate(invalid='ignore'):
            keep = (depth >= np.float32(args.min_depth)) & (depth <= np.float32(args.max_depth))
        from ffs_ros.ply import write_ply

        write_ply(out / 'cloud.ply', depth_to_points(depth, cam)[keep], left[keep])
        written.append(out / 'cloud.ply')
        summary['points'] = int(keep.sum())
        lo_hi = tuple(args.depth_range) if args.depth_range else depth_range(
            cam.fx_baseline, max_disp, args.min_depth, args.max_depth
        )
        summary['depth_colors_m'] = list(lo_hi)
    else:
        print(
            'ffs-ros infer: note: no calibration given, so depth.npy, depth.png and cloud.ply '
            'were skipped (they need fx and the baseline): pass --calib K.txt or --camera-info '
            'LEFT.yaml [RIGHT.yaml]',
            file=err,
        )
    written += write_images(out, left, disp, max_disp, depth, lo_hi, confidence=conf)
    order = ['left.png', 'disparity.npy', 'disparity.png', 'confidence.npy', 'confidence.png',
             'depth.npy', 'depth.png', 'cloud.ply', 'overview.png']
    names = sorted((p.name for p in written), key=order.index)
    summary['outputs'] = names
    colors = f'disparity colours 0-{max_disp:g} px'
    if lo_hi:
        colors += f', depth colours {lo_hi[0]:g}-{lo_hi[1]:g} m'
    print(f'ffs-ros infer: wrote {out}/ {", ".join(names)} ({colors})', file=err)
    print(json.dumps(summary))
    return 0
