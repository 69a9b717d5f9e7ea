"""`ffs-ros bag`: process a recorded rosbag2 (sqlite3 or MCAP) offline, every pair, into a new bag.

Reads the stereo topics, pairs left/right images by stamp as the node does (exact, or within
--approximate seconds), gives each pair the camera_info of its stamp (or the latest one before it:
drivers often publish the info just after the image), runs the node's own ``StereoPipeline`` on
**every** pair (no drops: deterministic), and writes the outputs under the node's topic names
(/disparity, /depth/image_rect, /depth/camera_info, /points2, /disparity/color, /confidence) with
the left image's log time, plus the input topics unless --no-inputs. The output plays with `ros2
bag play` and opens in Foxglove. sensor_msgs/CompressedImage inputs (jpeg/png) are decoded. Bad
pairs are counted and reported with their reason, never fatal.

rosbags (pure Python, PyPI) reads and writes the bags; rclpy's own CDR (de)serialisation turns
records into the message objects the pipeline takes, so no message conversion is hand-written here.
"""

from __future__ import annotations

import collections
from pathlib import Path
import sys
import time

import numpy as np

from .common import MODEL_HELP

OUTPUT_TOPICS = {
    'disparity': ('/disparity', 'stereo_msgs/msg/DisparityImage'),
    'depth': ('/depth/image_rect', 'sensor_msgs/msg/Image'),
    'depth_info': ('/depth/camera_info', 'sensor_msgs/msg/CameraInfo'),
    'cloud': ('/points2', 'sensor_msgs/msg/PointCloud2'),
    'color': ('/disparity/color', 'sensor_msgs/msg/Image'),
    'confidence': ('/confidence', 'sensor_msgs/msg/Image'),
}
OUTPUT_NAMES = ('disparity', 'depth', 'cloud', 'color', 'confidence')
INFO_WAIT_NS = 500_000_000  # how long (bag time) a pair waits for the camera_info of its own stamp


class BagError(ValueError):
    """The bag or the arguments cannot be used (message names the fix)."""


def add_arguments(p) -> None:
    p.add_argument('bag', help='input rosbag2 directory (or .mcap / .db3 file)')
    p.add_argument('--out', required=True, help='output bag directory (must not exist)')
    p.add_argument('--left-image', default='/left/image_rect')
    p.add_argument('--right-image', default='/right/image_rect')
    p.add_argument('--left-info', default='/left/camera_info')
    p.add_argument('--right-info', default='/right/camera_info')
    p.add_argument(
        '--backend', default='auto', help='matcher backend (default auto: the shipped model)'
    )
    p.add_argument('--model', default=None, help=MODEL_HELP)
    p.add_argument('--device', default=None)
    p.add_argument(
        '--outputs',
        default='disparity,depth,cloud',
        help='comma list of disparity, depth, cloud, color, confidence (32FC1 0..1; model '
        'backends)',
    )
    p.add_argument(
        '--confidence-threshold',
        type=float,
        default=0.0,
        help='drop pixels less sure than this from disparity, depth and cloud (0 = off; as the '
        "node's confidence_threshold)",
    )
    p.add_argument(
        '--start',
        type=float,
        default=None,
        help='skip pairs before this many seconds into the bag',
    )
    p.add_argument(
        '--end', type=float, default=None, help='stop after this many seconds into the bag'
    )
    p.add_argument('--every', type=int, default=1, help='process every N-th pair (default 1: all)')
    p.add_argument(
        '--approximate',
        type=float,
        default=0.0,
        metavar='SECONDS',
        help='pair images whose stamps differ by up to this (default 0: identical stamps)',
    )
    p.add_argument(
        '--max-disparity',
        type=float,
        default=256.0,
        help='valid disparity range / sgbm search (px)',
    )
    p.add_argument(
        '--max-depth', type=float, default=100.0, help='cloud: drop points beyond this (m)'
    )
    p.add_argument(
        '--storage',
        default='mcap',
        choices=('mcap', 'sqlite3'),
        help='output storage (default mcap)',
    )
    p.add_argument(
        '--no-inputs', action='store_true', help='do not copy the input topics into the output'
    )
    p.add_argument('--quiet', action='store_true', help='no progress line')


def stamp_ns(msg) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def decode_compressed(msg):
    """sensor_msgs/CompressedImage (jpeg/png) -> sensor_msgs/Image with the same header."""
    import cv2

    from ffs_ros.convert import numpy_to_image

    arr = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError(f'compressed image ({msg.format!r}) could not be decoded')
    if arr.ndim == 2:
        enc = 'mono16' if arr.dtype == np.uint16 else 'mono8'
    else:
        enc = {3: 'bgr8', 4: 'bgra8'}[arr.shape[2]]
        if arr.dtype != np.uint8:
            arr = (arr >> 8).astype(np.uint8)
    return numpy_to_image(np.ascontiguousarray(arr), enc, msg.header)


class Pairer:
    """Pair left/right images and match their camera infos, by stamp.

    Images are paired by stamp (exact or within a tolerance); camera infos are matched by stamp.
    Pairs are released in order once both camera infos of their stamp are known, or when the bag
    has moved INFO_WAIT_NS past them (then the latest info at or before the stamp is used, else the
    first one after).
    """

    def __init__(self, tolerance_ns: int, window: int = 64) -> None:
        self.tol = tolerance_ns
        self.images = [collections.OrderedDict(), collections.OrderedDict()]
        self.infos = [collections.OrderedDict(), collections.OrderedDict()]
        self.waiting: collections.deque = collections.deque()  # (left, right, log time)
        self.window = window
        self.unpaired = 0

    def add_image(self, side: int, msg, log_ns: int) -> None:
        t = stamp_ns(msg)
        other = self.images[1 - side]
        match = None
        if t in other:
            match = t
        elif self.tol:
            near = [s for s in other if abs(s - t) <= self.tol]
            match = min(near, key=lambda s: abs(s - t)) if near else None
        if match is None:
            self.images[side][t] = (msg, log_ns)
            while len(self.images[side]) > self.window:
                self.images[side].popitem(last=False)
                self.unpaired += 1
            return
        partner, partner_log = other.pop(match)
        # older unmatched images of the other side will never pair now
        for s in [s for s in other if s < match]:
            del other[s]
            self.unpaired += 1
        left, right = (msg, partner) if side == 0 else (partner, msg)
        self.waiting.append((left, right, max(log_ns, partner_log)))

    def add_info(self, side: int, msg) -> None:
        self.infos[side][stamp_ns(msg)] = msg
        while len(self.infos[side]) > self.window:
            self.infos[side].popitem(last=False)

    def _info(self, side: int, t: int, final: bool):
        infos = self.infos[side]
        if t in infos:
            return infos[t]
        if not final:
            return None
        before = [s for s in infos if s <= t]
        if before:
            return infos[max(before)]
        return infos[min(infos)] if infos else None

    def ready(self, now_ns: int | None):
        """Pairs whose infos are known (now_ns None: the bag ended; release everything)."""
        while self.waiting:
            left, right, log_ns = self.waiting[0]
            final = now_ns is None or now_ns - log_ns > INFO_WAIT_NS
            li, ri = self._info(0, stamp_ns(left), final), self._info(1, stamp_ns(right), final)
            if (li is None or ri is None) and not final:
                return
            self.waiting.popleft()
            yield left, right, li, ri, log_ns

    @property
    def leftover(self) -> int:
        return self.unpaired + sum(len(d) for d in self.images)


class Progress:
    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.quiet = total, quiet
        self.t0 = self.last = time.monotonic()

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if self.quiet or (not force and now - self.last < 0.5):
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        eta = (self.total - done) / rate if rate > 0 and self.total else 0.0
        print(
            f'\rffs-ros bag: {done}/{self.total} pairs  {rate:.2f} pairs/s  ETA {eta:.0f} s   ',
            end='',
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if not self.quiet:
            print(file=sys.stderr)


def _open_reader(path: Path):
    from rosbags.rosbag2 import Reader

    if path.is_file():
        path = path.parent
    if not (path / 'metadata.yaml').is_file():
        raise BagError(
            f'{path} is not a rosbag2 directory (no metadata.yaml); give the directory `ros2 bag '
            'record` '
            f'wrote'
        )
    return Reader(path)


def process_bag(args, matcher) -> dict:
    """Run the pipeline over every pair of `args.bag`; write `args.out`; return the report."""
    from rclpy.serialization import deserialize_message, serialize_message
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    from ffs_ros.pipeline import InputError, PipelineConfig, StereoPipeline, Wanted

    names = {s.strip() for s in args.outputs.split(',') if s.strip()}
    unknown = names - set(OUTPUT_NAMES)
    if unknown:
        raise BagError(
            f'unknown --outputs {sorted(unknown)}; choose from {", ".join(OUTPUT_NAMES)}'
        )
    if args.every < 1:
        raise BagError('--every must be >= 1')
    out_path = Path(args.out)
    if out_path.exists():
        raise BagError(
            f'{out_path} exists; choose a new --out directory (rosbag2 writers never overwrite)'
        )
    if 'confidence' in names and not matcher.info.confidence:
        raise BagError(
            f'--outputs confidence: backend {matcher.info.backend} gives no confidence; use a '
            'model backend or drop confidence from --outputs'
        )
    wanted = Wanted(**{k: k in names for k in OUTPUT_NAMES})
    pipe = StereoPipeline(
        matcher,
        PipelineConfig(
            max_disparity=args.max_disparity,
            max_depth=args.max_depth,
            confidence_threshold=args.confidence_threshold,
        ).validate(),
    )
    typestore = get_typestore(Stores.ROS2_JAZZY)
    topics = {
        args.left_image: ('image', 0),
        args.right_image: ('image', 1),
        args.left_info: ('info', 0),
        args.right_info: ('info', 1),
    }
    report = {
        'images_read': [0, 0],
        'infos_read': [0, 0],
        'pairs': 0,
        'processed': 0,
        'skipped': 0,
        'refused': collections.Counter(),
        'stages': collections.defaultdict(list),
        'valid': [],
    }
    with _open_reader(Path(args.bag)) as reader:
        present = {c.topic: c for c in reader.connections}
        for topic in (args.left_image, args.right_image, args.left_info, args.right_info):
            if topic not in present:
                raise BagError(
                    f'topic {topic} is not in {args.bag} (it has: {", ".join(sorted(present))}); '
                    'name '
                    f'the stereo topics with --left-image/--right-image/--left-info/--right-info'
                )
        for topic in (args.left_image, args.right_image):
            if present[topic].msgtype not in (
                'sensor_msgs/msg/Image',
                'sensor_msgs/msg/CompressedImage',
            ):
                raise BagError(
                    f'{topic} is {present[topic].msgtype}, not sensor_msgs/msg/Image or '
                    'CompressedImage'
                )
        t_begin = reader.start_time
        start = None if args.start is None else t_begin + int(args.start * 1e9)
        stop = None if args.end is None else t_begin + int(args.end * 1e9)
        pairer = Pairer(int(args.approximate * 1e9))
        progress = Progress(present[args.left_image].msgcount // args.every, args.quiet)
        storage = StoragePlugin.MCAP if args.storage == 'mcap' else StoragePlugin.SQLITE3
        with Writer(out_path, version=9, storage_plugin=storage) as writer:
            out_conns, in_conns = {}, {}

            def write(key, msg, log_ns):
                if key not in out_conns:
                    topic, msgtype = OUTPUT_TOPICS[key]
                    out_conns[key] = writer.add_connection(topic, msgtype, typestore=typestore)
                writer.write(out_conns[key], log_ns, serialize_message(msg))

            def handle(pair_index, left, right, li, ri, log_ns):
                report['pairs'] += 1
                if pair_index % args.every:
                    report['skipped'] += 1
                    return
                if li is None or ri is None:
                    report['refused']['no camera_info for this stamp or before it'] += 1
                    return
                try:
                    out = pipe.process(left, right, li, ri, wanted)
                except InputError as e:
                    report['refused'][e.problem] += 1
                    return
                report['processed'] += 1
                report['valid'].append(out.valid_fraction)
                for k, v in out.timings.items():
                    report['stages'][k].append(v)
                for key, msg in (
                    ('disparity', out.disparity),
                    ('depth', out.depth),
                    ('depth_info', out.depth_info),
                    ('cloud', out.cloud),
                    ('color', out.disparity_color),
                    ('confidence', out.confidence),
                ):
                    if msg is not None:
                        write(key, msg, log_ns)
                progress.update(report['processed'])

            for conn, log_ns, raw in reader.messages(
                connections=[present[t] for t in topics], stop=stop
            ):
                if not args.no_inputs:
                    if conn.topic not in in_conns:
                        in_conns[conn.topic] = writer.add_connection(
                            conn.topic, conn.msgtype, typestore=typestore
                        )
                    writer.write(in_conns[conn.topic], log_ns, raw)
                kind, side = topics[conn.topic]
                if kind == 'info':
                    report['infos_read'][side] += 1
                    pairer.add_info(side, deserialize_message(raw, CameraInfo))
                else:
                    report['images_read'][side] += 1
                    if start is not None and log_ns < start:
                        continue
                    if conn.msgtype.endswith('CompressedImage'):
                        cmsg = deserialize_message(raw, CompressedImage)
                        try:
                            msg = decode_compressed(cmsg)
                        except ValueError as e:
                            report['refused'][str(e)] += 1
                            continue
                    else:
                        msg = deserialize_message(raw, Image)
                    pairer.add_image(side, msg, log_ns)
                for item in list(pairer.ready(log_ns)):
                    handle(report['pairs'], *item)
            for item in list(pairer.ready(None)):
                handle(report['pairs'], *item)
        progress.update(report['processed'], force=True)
        progress.close()
    report['unpaired_images'] = pairer.leftover
    return report


def format_report(rep: dict, seconds: float, out: str) -> str:
    refused = sum(rep['refused'].values())
    lines = [
        '',
        f'ffs-ros bag -> {out}',
        '-' * 60,
        f'{"images read (left / right)":40s} {rep["images_read"][0]} / {rep["images_read"][1]}',
        f'{"camera infos read (left / right)":40s} {rep["infos_read"][0]} / '
        f'{rep["infos_read"][1]}',
        f'{"pairs (by stamp)":40s} {rep["pairs"]}',
        f'{"processed":40s} {rep["processed"]} ({rep["processed"] / max(seconds, 1e-9):.2f} '
        'pairs/s)',
        f'{"skipped (--every)":40s} {rep["skipped"]}',
        f'{"refused":40s} {refused}',
        f'{"images without a partner":40s} {rep["unpaired_images"]}',
    ]
    for reason, n in rep['refused'].most_common():
        lines.append(f'  {n:5d} x {reason}')
    for stage in ('convert', 'match', 'depth', 'cloud', 'color'):
        if rep['stages'].get(stage):
            v = rep['stages'][stage]
            lines.append(
                f'{stage + " ms p50 / p95":40s} {np.percentile(v, 50):.2f} / '
                f'{np.percentile(v, 95):.2f}'
            )
    if rep['valid']:
        lines.append(
            f'{"valid disparity (mean share of pixels)":40s} '
            f'{100 * float(np.mean(rep["valid"])):.1f} %'
        )
    return '\n'.join(lines)


def run(args) -> int:
    from ffs_ros.inference import load_matcher
    from ffs_ros.pipeline import tune_allocator

    tune_allocator()
    try:
        options = (
            {'max_disparity': int(args.max_disparity)} if args.backend in ('sgbm', 'auto') else {}
        )
        matcher = load_matcher(args.model, backend=args.backend, device=args.device, **options)
    except (ValueError, RuntimeError) as e:
        print(f'ffs-ros bag: error: {e}', file=sys.stderr)
        return 2
    t0 = time.monotonic()
    try:
        rep = process_bag(args, matcher)
    except (BagError, FileNotFoundError) as e:
        print(f'ffs-ros bag: error: {e}', file=sys.stderr)
        return 2
    finally:
        matcher.close()
    print(format_report(rep, time.monotonic() - t0, args.out))
    return 0
