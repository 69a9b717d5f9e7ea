"""`ffs-ros infer`: disparity (and depth + point cloud) for one stereo pair from image files.

Depth and point cloud need a calibration. Writes DIR/disparity.npy (float32, input resolution, NaN
invalid) and DIR/disparity.png (colour-mapped); with --calib K.txt (upstream format: line 1 the 3x3
K row-major, line 2 the baseline in metres) or --camera-info (ROS camera_calibration YAML:
image_width/height, camera_matrix.data, projection_matrix.data) also DIR/depth.npy (metres, NaN
invalid) and DIR/cloud.ply (binary little-endian, x y z float + red green blue uchar).
"""

from __future__ import annotations

import json
from pathlib import Path
import sys
import time

import numpy as np


def add_arguments(p) -> None:
    p.add_argument('--left', required=True, help='left (reference) rectified image file')
    p.add_argument('--right', required=True, help='right rectified image file')
    p.add_argument(
        '--model', default=None, help='model directory/file (default: the shipped model)'
    )
    p.add_argument('--backend', default='auto', help='auto, onnxruntime, torch, tensorrt or sgbm')
    p.add_argument('--device', default=None, help='cpu, cuda, cuda:N (default: best available)')
    p.add_argument('--resize-mode', default='letterbox', choices=('letterbox', 'stretch'))
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
        '--max-depth', type=float, default=100.0, help='drop points farther than this (m)'
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


def run(args) -> int:
    try:
        return _run(args)
    except (CliError, ValueError, RuntimeError) as exc:
        print(f'ffs-ros infer: error: {exc}', file=sys.stderr)
        return 2


def _run(args) -> int:
    import cv2

    from ffs_ros.geometry import color_map_disparity, depth_to_points, disparity_to_depth
    from ffs_ros.inference import load_matcher

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
    options = {} if args.backend == 'sgbm' else {'resize_mode': args.resize_mode}
    matcher = load_matcher(args.model, args.backend, args.device, **options)
    t0 = time.perf_counter()
    disp = matcher.match(left, right)
    elapsed = (time.perf_counter() - t0) * 1e3
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / 'disparity.npy', disp.astype(np.float32))
    finite = disp[np.isfinite(disp)]
    vmax = float(np.percentile(finite, 99)) if finite.size else 1.0
    cv2.imwrite(
        str(out / 'disparity.png'),
        cv2.cvtColor(color_map_disparity(disp, vmax), cv2.COLOR_RGB2BGR),
    )
    summary = {
        'backend': matcher.info.backend,
        'model': matcher.info.model,
        'size': [w, h],
        'valid_fraction': float(np.isfinite(disp).mean()),
        'ms': round(elapsed, 1),
        'stages_ms': {k: round(v, 2) for k, v in matcher.last_timings.items()},
    }
    if cam is not None:
        depth = disparity_to_depth(disp, cam)
        with np.errstate(invalid='ignore'):
            depth[~(depth <= args.max_depth)] = np.nan
        np.save(out / 'depth.npy', depth.astype(np.float32))
        pts = depth_to_points(depth, cam)
        keep = np.isfinite(depth)
        from ffs_ros.ply import write_ply

        write_ply(out / 'cloud.ply', pts[keep], left[keep])
        summary['points'] = int(keep.sum())
    matcher.close()
    print(json.dumps(summary))
    return 0
