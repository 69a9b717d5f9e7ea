"""`ffs-ros demo`: stereo_node and a camera player in one process over real rclpy.

Plays a sequence of generated scenes (ffs_ros.synth: textured planes and objects at known depth,
with CameraInfo; no downloads) as a best-effort camera stream, collects the node's outputs, writes
disparity.png (colour-mapped), depth.png (colour-mapped, near = red) and cloud.ply of the last
frame into --out, and prints pairs in/out/dropped, per-stage times, end-to-end latency, depth error
against the generator's ground truth and the process RSS (a flat RSS over --frames 2000 shows
there is no leak). Uses the shipped Fast DDS SHM profile unless FASTDDS_DEFAULT_PROFILES_FILE is
set, and keeps discovery inside this process unless ROS_AUTOMATIC_DISCOVERY_RANGE is set (set it
to LOCALHOST to watch with RViz: ffs_ros/config/stereo.rviz, namespace /ffs_demo).
"""

from __future__ import annotations

from dataclasses import dataclass
import os
from pathlib import Path
import sys
import threading
import time

import numpy as np

from .common import MODEL_HELP

NAMESPACE = '/ffs_demo'
WARMUP_PAIRS = 50


def add_arguments(p) -> None:
    p.add_argument('--frames', type=int, default=40, help='stereo pairs to play (default 40)')
    p.add_argument('--out', default='out/demo', help='output directory (default out/demo)')
    p.add_argument(
        '--backend',
        default=None,
        help="stereo backend (default: the node's default, 'auto' = shipped model, else sgbm)",
    )
    p.add_argument(
        '--model', default='', help=MODEL_HELP
    )
    p.add_argument('--size', default='640x480', help='image size WxH (default 640x480)')
    p.add_argument('--rate', type=float, default=10.0, help='camera rate in Hz (default 10)')
    p.add_argument(
        '--scenes', type=int, default=6, help='distinct generated scenes, played in a loop'
    )
    p.add_argument(
        '--max-disparity', type=float, default=128.0, help='max disparity (px) of node and scenes'
    )
    p.add_argument('--seed', type=int, default=0)
    p.add_argument(
        '--record',
        default=None,
        metavar='BAG',
        help='also write the played stereo topics (/left/image_rect, /right/image_rect, '
        '/left/camera_info, /right/camera_info) to this new MCAP rosbag2 directory: a sample bag '
        'for `ffs-ros bag` without a camera',
    )


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def make_scenes(n: int, h: int, w: int, max_disp: float, seed: int):
    from ..synth import render_scene

    rng = np.random.default_rng(seed)
    return [
        render_scene(rng, h, w, max_disparity=max_disp * 0.75, min_disparity=4.0) for _ in range(n)
    ]


def cloud_left_image(cloud, h: int, w: int):
    """Return the left image (HxWx3 RGB) kept in an organized colour cloud, or None.

    Every point of an organized cloud keeps its pixel's colour, NaN points included.
    """
    off = {f.name: f.offset for f in cloud.fields}
    if (cloud.height, cloud.width) != (h, w) or 'rgb' not in off:
        return None
    raw = np.frombuffer(bytes(cloud.data), np.uint8).reshape(h, w, cloud.point_step)
    order = '>u4' if cloud.is_bigendian else '<u4'
    packed = raw[..., off['rgb']: off['rgb'] + 4].copy().view(order)[..., 0]
    return np.stack([(packed >> s) & 255 for s in (16, 8, 0)], axis=-1).astype(np.uint8)


def write_pngs(out: Path, disparity_msg, depth_msg, max_disp: float, cloud_msg=None) -> str:
    """Write left.png, disparity.png, depth.png and overview.png of the last frame.

    Disparity colours span [0, the disparity range the node reports] px, depth colours a fixed
    range from 0 m (ffs_ros.overview.depth_range); the left image comes from the organized colour
    cloud (none with a dense or colourless one). Returns a description of what was written.
    """
    from ..convert import image_to_numpy
    from ..overview import depth_range, write_images

    disp = np.array(image_to_numpy(disparity_msg.image), dtype=np.float32)
    dmax = float(disparity_msg.max_disparity) if disparity_msg.max_disparity > 0 else max_disp
    z = np.array(image_to_numpy(depth_msg), dtype=np.float32)
    if depth_msg.encoding == '16UC1':
        z = np.where(z > 0, z / 1000.0, np.nan)
    lo_hi = depth_range(disparity_msg.f * disparity_msg.t, dmax)
    h, w = disp.shape
    left = None if cloud_msg is None else cloud_left_image(cloud_msg, h, w)
    written = write_images(out, left, disp, dmax, z, lo_hi)
    return (
        ', '.join(p.name for p in written)
        + f' (colours: disparity 0-{dmax:g} px, depth {lo_hi[0]:g}-{lo_hi[1]:g} m)'
    )


class Recorder:
    """Output callbacks: keeps the last messages and per-frame latency / depth error (bounded)."""

    def __init__(self, player_clock, gt_depth_for_stamp) -> None:
        self.lock = threading.Lock()
        self.clock = player_clock
        self.gt = gt_depth_for_stamp
        self.last = {}
        self.latency_ms = []  # bounded below
        self.errors = []  # (median rel err, within 5 %, valid fraction) per depth frame
        self.counts = {'disparity': 0, 'depth': 0, 'points2': 0}
        self.last_stamp = None

    def cb(self, name):
        def f(msg):
            now = self.clock.now().nanoseconds
            st = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            with self.lock:
                self.last[name] = msg
                self.counts[name] += 1
                if name == 'disparity':
                    self.latency_ms.append((now - st) / 1e6)
                    del self.latency_ms[:-4096]
                    self.last_stamp = st
            if name == 'depth':
                self._depth_error(msg, st)

        return f

    def _depth_error(self, msg, st) -> None:
        from ..convert import image_to_numpy

        gt = self.gt(st)
        if gt is None:
            return
        z = np.asarray(image_to_numpy(msg), dtype=np.float32)
        if msg.encoding == '16UC1':
            z = np.where(z > 0, z / 1000.0, np.nan)
        gt_z, mask = gt
        ok = mask & np.isfinite(z)
        valid_frac = float(ok.sum()) / max(int(mask.sum()), 1)
        if ok.any():
            rel = np.abs(z[ok] - gt_z[ok]) / gt_z[ok]
            with self.lock:
                self.errors.append((float(np.median(rel)), float(np.mean(rel < 0.05)), valid_frac))
                del self.errors[:-4096]


class BagRecorder:
    """The demo's camera topics into an MCAP rosbag2 (rosbags; rclpy's CDR serialisation)."""

    def __init__(self, path) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self.typestore = get_typestore(Stores.ROS2_JAZZY)
        self.writer = Writer(Path(path), version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.path = path
        self.conns: dict = {}

    def write(self, topic: str, msg, log_ns: int) -> None:
        from rclpy.serialization import serialize_message

        if topic not in self.conns:
            msgtype = (
                'sensor_msgs/msg/CameraInfo'
                if topic.endswith('camera_info')
                else 'sensor_msgs/msg/Image'
            )
            self.conns[topic] = self.writer.add_connection(
                topic, msgtype, typestore=self.typestore
            )
        self.writer.write(self.conns[topic], log_ns, serialize_message(msg))

    def close(self) -> None:
        self.writer.close()


@dataclass
class PlayResult:
    seconds: float
    warmup: int
    rss_warm: float | None
    rss_end: float


class Player:
    """The demo's camera.

    Publishes generated scenes (with their CameraInfo) at a fixed rate as a best-effort stream,
    optionally recording them to a bag, and remembers which scene each stamp showed (for the
    truth).
    """

    def __init__(self, ctx, scenes, w: int, h: int, fx: float, baseline: float) -> None:
        from rclpy.node import Node
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image

        from ..convert import make_camera_infos, numpy_to_image

        self.frames = []
        for sc in scenes:
            left, right = numpy_to_image(sc.left, 'rgb8'), numpy_to_image(sc.right, 'rgb8')
            left.header.frame_id = right.header.frame_id = 'left_optical'
            with np.errstate(divide='ignore'):
                gt_z = (fx * baseline / sc.disparity).astype(np.float32)
            xs = np.arange(w)[None,:]
            mask = (~sc.occluded) & (sc.disparity > 0) & (xs - sc.disparity >= 0)
            self.frames.append((left, right, gt_z, mask))
        self.li, self.ri = make_camera_infos(w, h, fx, baseline, frame_id='left_optical')
        self.stamp_scene: dict = {}  # stamp -> scene index (bounded)
        self.node = Node('demo_camera', namespace=NAMESPACE, context=ctx)
        self.pubs = {
            t: self.node.create_publisher(c, t, qos_profile_sensor_data)
            for t, c in (
                ('left/image_rect', Image),
                ('right/image_rect', Image),
                ('left/camera_info', CameraInfo),
                ('right/camera_info', CameraInfo),
            )
        }
        self.last_stamp = None

    def truth(self, st):
        i = self.stamp_scene.get(st)
        return None if i is None else self.frames[i][2:]

    def connect(self, node, timeout: float = 10.0) -> None:
        """Wait until both ends matched, then send the camera infos once ahead.

        The node skips pairs nobody subscribes to, hence the wait; the camera infos go out once
        ahead so the first pair is not refused for want of them.
        """
        deadline = time.monotonic() + timeout
        outs = (node.pub_disparity, node.pub_depth, node.pub_points)
        while time.monotonic() < deadline and not (
            all(p.get_subscription_count() for p in self.pubs.values())
            and all(p.get_subscription_count() for p in outs)
        ):
            time.sleep(0.01)
        self.pubs['left/camera_info'].publish(self.li)
        self.pubs['right/camera_info'].publish(self.ri)
        while time.monotonic() < deadline and not node.has_camera_infos():
            time.sleep(0.01)

    def play(self, node, frames: int, rate: float, record=None) -> PlayResult:
        """Publish `frames` pairs at `rate` Hz.

        RSS is sampled after a warm-up (first-use buffers settle there).
        """
        recorder = BagRecorder(record) if record else None
        period = 1.0 / rate
        warmup = min(frames, WARMUP_PAIRS)
        rss_warm = None
        t_next = t0 = time.monotonic()
        for i in range(frames):
            k = i % len(self.frames)
            left, right, _, _ = self.frames[k]
            stamp = self.node.get_clock().now().to_msg()
            st = stamp.sec * 10**9 + stamp.nanosec
            self.stamp_scene[st] = k
            if len(self.stamp_scene) > 64:
                self.stamp_scene.pop(next(iter(self.stamp_scene)))
            for m in (self.li, self.ri, left, right):
                m.header.stamp = stamp
            for topic, m in (
                ('left/camera_info', self.li),
                ('right/camera_info', self.ri),
                ('left/image_rect', left),
                ('right/image_rect', right),
            ):
                self.pubs[topic].publish(m)
                if recorder is not None:
                    recorder.write('/' + topic, m, st)
            self.last_stamp = st
            if i + 1 == warmup:
                node.wait_idle(30)
                rss_warm = rss_mb()
            if frames >= 200 and (i + 1) % 200 == 0:
                print(f'  {i + 1}/{frames} pairs, RSS {rss_mb():.1f} MB', flush=True)
            t_next += period
            time.sleep(max(0.0, t_next - time.monotonic()))
        seconds = time.monotonic() - t0
        if recorder is not None:
            recorder.close()
            print(f'recorded the played topics to {record} (try: ffs-ros bag {record} --out OUT)')
        return PlayResult(seconds, warmup, rss_warm, 0.0)


def report(
    args,
    node,
    rec,
    played: PlayResult,
    rss_start: float,
    out: Path,
    size,
    fx: float,
    baseline: float,
) -> int:
    """Write the last frame's outputs and print the run's table; 1 when nothing came out."""
    w, h = size
    with rec.lock:
        last = dict(rec.last)
        lat = list(rec.latency_ms)
        errs = list(rec.errors)
    if 'disparity' not in last or 'depth' not in last or 'points2' not in last:
        print(
            'ffs-ros demo: no output received from stereo_node (see its log above)',
            file=sys.stderr,
        )
        return 1
    out.mkdir(parents=True, exist_ok=True)
    images = write_pngs(
        out, last['disparity'], last['depth'], args.max_disparity, last['points2']
    )
    from ..messages import cloud_points
    from ..ply import write_ply

    npts = write_ply(
        out / 'cloud.ply', *cloud_points(last['points2']), comment='ffs_ros demo, last frame'
    )
    summary = node.health.run_summary()
    rows = [
        ('pairs in (played)', f'{args.frames} in {played.seconds:.1f} s'),
        ('pairs synchronized', str(node.health.pairs_total)),
        ('pairs out (published)', str(node.health.published_total)),
        ('dropped (worker busy, latest wins)', str(node.dropped)),
        ('sync failures / bad input', f'{node._sync.sync_failures} / {node.bad_frames}'),
    ]
    for stage, (p50, p95) in summary['stages'].items():
        rows.append((f'{stage} ms p50 / p95', f'{p50:.2f} / {p95:.2f}'))
    if lat:
        l50, l95 = np.percentile(lat, [50, 95])
        rows.append(('end-to-end latency ms p50 / p95', f'{l50:.1f} / {l95:.1f}'))
    if errs:
        e = np.asarray(errs)
        rows.append(('depth error: median |dZ|/Z', f'{100 * np.median(e[:, 0]):.2f} %'))
        rows.append(('depth within 5 % of truth', f'{100 * np.mean(e[:, 1]):.1f} % of valid px'))
        rows.append(('valid px (of matchable truth)', f'{100 * np.mean(e[:, 2]):.1f} %'))
    rows.append(
        (
            f'RSS start / after {played.warmup} pairs / end',
            f'{rss_start:.1f} / {played.rss_warm or float("nan"):.1f} / {played.rss_end:.1f} MB',
        )
    )
    if played.rss_warm is not None and args.frames > played.warmup:
        rows.append(
            (
                f'RSS growth over the last {args.frames - played.warmup} pairs',
                f'{played.rss_end - played.rss_warm:+.1f} MB',
            )
        )
    rows.append(('outputs', f'{out}/ {images}'))
    rows.append(('', f'{out}/cloud.ply ({npts} points)'))
    width = max(len(r[0]) for r in rows)
    info = node.matcher.info
    print(
        f'\nffs_ros demo: {w}x{h}, fx {fx:g} px, baseline {baseline} m, backend {info.backend} '
        f'({info.model})'
    )
    print('-' * (width + 30))
    for k, v in rows:
        print(f'{k:<{width}}  {v}')
    sys.stdout.flush()
    return 0


def run(args) -> int:
    """Start stereo_node and the camera player in one process, play, wait for the outputs, report.

    The wait is for the last outputs.
    """
    from ..node.transport import use_shm_profile

    profile = use_shm_profile()  # before the first DDS participant exists
    from ..pipeline import tune_allocator

    tune_allocator()
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'OFF')
    try:
        w, h = (int(v) for v in args.size.lower().split('x'))
    except ValueError:
        print(f'ffs-ros demo: --size must look like 640x480, got {args.size!r}', file=sys.stderr)
        return 2
    if args.frames < 1 or args.rate <= 0 or args.scenes < 1:
        print('ffs-ros demo: --frames and --scenes must be >= 1 and --rate > 0', file=sys.stderr)
        return 2
    rss_start = rss_mb()

    import rclpy
    from rclpy.context import Context
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image, PointCloud2
    from stereo_msgs.msg import DisparityImage

    from ..node.params import ParamError
    from ..node.stereo_node import StereoNode

    fx, baseline = 0.8 * w, 0.12
    ctx = Context()
    rclpy.init(context=ctx)
    executor = None
    nodes = []
    try:
        overrides = [
            Parameter('max_disparity', value=float(args.max_disparity)),
            Parameter('expected_rate', value=float(args.rate)),
            Parameter('model', value=args.model),
        ]
        if args.backend:
            overrides.append(Parameter('backend', value=args.backend))
        try:
            node = StereoNode(context=ctx, namespace=NAMESPACE, parameter_overrides=overrides)
        except ParamError as e:
            print(f'ffs-ros demo: {e}', file=sys.stderr)
            return 2
        finally:
            sys.stdout.flush()
        nodes.append(node)
        print(f'generating {args.scenes} scenes at {w}x{h} ...', flush=True)
        player = Player(
            ctx, make_scenes(args.scenes, h, w, args.max_disparity, args.seed), w, h, fx, baseline
        )
        nodes.append(player.node)
        rec = Recorder(player.node.get_clock(), player.truth)
        rq = QoSProfile(depth=2)
        player.node.create_subscription(DisparityImage, 'disparity', rec.cb('disparity'), rq)
        player.node.create_subscription(Image, 'depth/image_rect', rec.cb('depth'), rq)
        player.node.create_subscription(PointCloud2, 'points2', rec.cb('points2'), rq)
        executor = MultiThreadedExecutor(num_threads=2, context=ctx)
        spin = threading.Thread(target=executor.spin, daemon=True)
        for n in nodes:
            executor.add_node(n)
        spin.start()
        player.connect(node)
        info = node.matcher.info
        print(
            f'playing {args.frames} pairs at {args.rate:g} Hz through stereo_node '
            f'({info.backend} on {info.device}); Fast DDS profile {profile}',
            flush=True,
        )
        played = player.play(node, args.frames, args.rate, args.record)
        node.wait_idle(60)
        deadline = time.monotonic() + 5
        while (
            time.monotonic() < deadline
            and rec.last_stamp != player.last_stamp
            and node.health.published_total
        ):
            time.sleep(0.01)
        time.sleep(0.1)
        played.rss_end = rss_mb()
        return report(args, node, rec, played, rss_start, Path(args.out), (w, h), fx, baseline)
    finally:
        if executor is not None:
            executor.shutdown(timeout_sec=5)
            spin.join(timeout=10)
        for n in reversed(nodes):
            n.destroy_node()
        rclpy.try_shutdown(context=ctx)
