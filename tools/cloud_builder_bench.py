#!/usr/bin/env python3
"""Our PointCloud2 builder against ROS 2's reference, side by side in one run.

Issue: >= 5x faster.

Builds the same 640x480 organized XYZRGB cloud of a textured scene (a) with ffs_ros
(CloudBuffer.fill + messages.point_cloud, what the node publishes) and (b) with
sensor_msgs_py.point_cloud2.create_cloud from an (N, 4) float32 array of the same points (the
reference way in Python; sensor_msgs_py comes from ../shared/wheels/sensor-msgs-py). Prints a table
and one JSON line: p50/p95 ms of each and the ratio.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--size', default='640x480', help='WxH')
    p.add_argument('--iters', type=int, default=30)
    args = p.parse_args(argv)
    from sensor_msgs.msg import PointField
    from sensor_msgs_py import point_cloud2 as pc2
    from std_msgs.msg import Header

    from ffs_ros.geometry import StereoCamera, depth_to_points
    from ffs_ros.messages import CloudBuffer, point_cloud

    w, h = (int(v) for v in args.size.lower().split('x'))
    rng = np.random.default_rng(0)
    cam = StereoCamera(
        fx=0.8 * w,
        fy=0.8 * w,
        cx_left=w / 2,
        cy=h / 2,
        cx_right=w / 2,
        baseline=0.12,
        width=w,
        height=h,
    )
    depth = rng.uniform(0.5, 8.0, (h, w)).astype(np.float32)
    depth[rng.random((h, w)) < 0.1] = np.nan
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    header = Header(frame_id='left_optical')
    buf = CloudBuffer(use_color=True)

    def ours():
        data, ch, cw = buf.fill(depth, cam, rgb, True)
        return point_cloud(buf, data, ch, cw, header)

    fields = [
        PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
        for i, n in enumerate(('x', 'y', 'z', 'rgb'))
    ]

    def reference():
        pts = depth_to_points(depth, cam).reshape(-1, 3)
        packed = (
            (
                (rgb[..., 0].astype(np.uint32) << 16)
                | (rgb[..., 1].astype(np.uint32) << 8)
                | rgb[..., 2]
            )
            .reshape(-1, 1)
            .view(np.float32)
        )
        cloud = pc2.create_cloud(header, fields, np.hstack([pts, packed]))
        cloud.height, cloud.width = h, w  # organized, like ours
        cloud.row_step = cloud.point_step * w
        return cloud

    a, b = ours(), reference()
    assert bytes(a.data) == bytes(b.data), 'the two builders disagree'
    times = {}
    for name, fn in (('ffs_ros', ours), ('sensor_msgs_py.create_cloud', reference)):
        t = []
        for _ in range(args.iters):
            t0 = time.perf_counter()
            fn()
            t.append((time.perf_counter() - t0) * 1e3)
        times[name] = (float(np.percentile(t, 50)), float(np.percentile(t, 95)))
    ratio = times['sensor_msgs_py.create_cloud'][0] / times['ffs_ros'][0]
    print(
        f'{w}x{h} organized XYZRGB cloud, {args.iters} iterations, '
        f'{platform.processor() or platform.machine()}'
    )
    for name, (p50, p95) in times.items():
        print(f'  {name:30s} p50 {p50:8.2f} ms   p95 {p95:8.2f} ms')
    print(
        f'  ratio (reference / ours, p50)  {ratio:.1f}x   goal >= 5x: '
        f'{"met" if ratio >= 5 else "NOT met"}'
    )
    print(
        json.dumps(
            {
                'size': f'{w}x{h}',
                'ours_ms': times['ffs_ros'],
                'reference_ms': times['sensor_msgs_py.create_cloud'],
                'ratio': round(ratio, 2),
            }
        )
    )
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
