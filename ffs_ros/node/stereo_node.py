"""stereo_node: rectified stereo pairs in; disparity, depth and point clouds out.

ROS wiring only; the processing lives in ffs_ros.pipeline (tested without ROS):
- subscriptions (executor thread): left/right image_rect are checked for stamps going backwards
  (a jump far ahead is accepted as the new timeline only when the next image confirms it) and go
  through the synchronizer (message_filters on a distro, our StereoSynchronizer on pip installs);
  the camera infos are only cached (the last few per side, by stamp), never part of the sync. A
  synchronized pair is handed to the LatestWorker, which returns at once;
- the worker thread looks up the camera infos of the pair's stamps (waiting up to
  camera_info_wait_seconds for them: drivers usually publish each image before its info, falling
  back to the latest info), runs StereoPipeline.process for the newest pair only (older waiting
  pairs are dropped and counted) and publishes the outputs someone subscribes to;
- a timer publishes /diagnostics (~1 Hz) from NodeHealth.
Stopping (SIGINT / SIGTERM, see main()): nothing is published once shutdown begins, a frame still
in the matcher is abandoned (its result dropped), and the process exits 0 within about a second,
even while a native matcher call (ONNX Runtime, OpenCV, torch) is still running.
Bad input never crashes the node: a throttled log line naming the problem and the fix, a
diagnostics ERROR, the frame dropped, the next good pair processed.
"""

from __future__ import annotations

from collections import deque
import os
import signal
import sys
import threading
import time
import traceback
from typing import Optional

from diagnostic_msgs.msg import DiagnosticArray
import rclpy
from rclpy.node import Node
from rclpy.qos import (
    QoSProfile,
    QoSReliabilityPolicy,
    qos_profile_sensor_data,
    qos_profile_system_default,
)
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from stereo_msgs.msg import DisparityImage

from ..inference import StereoMatcher, load_matcher
from ..pipeline import InputError, StereoPipeline, Wanted
from . import params as P
from .diagnostics import HealthConfig, NodeHealth, to_msg
from .sync import LEFT, RIGHT, make_synchronizer, stamp_ns
from .worker import LatestWorker


def make_qos(kind: str, depth: int) -> QoSProfile:
    """QoS profile for a `input_qos`/`output_qos` parameter value."""
    if kind == 'sensor_data':
        q = QoSProfile(depth=depth)
        q.reliability = qos_profile_sensor_data.reliability
        q.durability = qos_profile_sensor_data.durability
        q.history = qos_profile_sensor_data.history
        return q
    if kind == 'reliable':
        return QoSProfile(depth=depth, reliability=QoSReliabilityPolicy.RELIABLE)
    if kind == 'best_effort':
        return QoSProfile(depth=depth, reliability=QoSReliabilityPolicy.BEST_EFFORT)
    if kind == 'system_default':
        return qos_profile_system_default
    raise ValueError(f'unknown QoS {kind!r}; choose one of {", ".join(P.QOS_CHOICES)}')


def build_matcher(values: dict, logger=None) -> StereoMatcher:
    """Build the matcher the parameters ask for.

    Raises ParamError with the reason when impossible. The backend policy ('auto', its sgbm
    fall-back while no model is installed) is load_matcher's.
    """
    backend = values['backend']
    model = values['model'] or None
    options = P.matcher_options(values)
    device = values['device'] or None
    try:
        return load_matcher(model, backend=backend, device=device, **options)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as e:
        raise P.ParamError(
            f'cannot load backend {backend!r}'
            + (f' with model {values["model"]!r}' if model else '')
            + f': {e}'
        ) from e


class StereoNode(Node):
    """The stereo node. `matcher` may be injected (tests, demo); otherwise built from parameters.

    Raises ParamError from the constructor when the parameters are unusable.
    """

    def __init__(
        self,
        node_name: str = 'stereo_node',
        *,
        matcher: Optional[StereoMatcher] = None,
        **node_kwargs,
    ) -> None:
        super().__init__(node_name, **node_kwargs)
        self._worker: Optional[LatestWorker] = None
        self.matcher: Optional[StereoMatcher] = None
        # shutdown: set under _publish_lock, so no publish starts (or is half-way) once it is set
        self._closing = False
        self._publish_lock = threading.Lock()
        self._info_cond = threading.Condition()  # camera infos arrived (waited on by the worker)
        self.worker_abandoned = False  # the worker was still in the matcher when the node stopped
        try:
            self._setup(matcher)
        except BaseException:
            self.destroy_node()
            raise

    def _setup(self, matcher: Optional[StereoMatcher]) -> None:
        self.values = P.declare(self)
        unknown = sorted(
            set(getattr(self, '_parameter_overrides', {})) - set(P.SPEC_BY_NAME) - {'use_sim_time'}
        )
        if unknown:
            self.get_logger().warning(
                f'ignoring unknown parameters {unknown} (typo in the params file?); '
                f'known: {", ".join(P.SPEC_BY_NAME)}'
            )
        v = self.values
        self.matcher = matcher if matcher is not None else build_matcher(v, self.get_logger())
        try:
            self.pipeline = StereoPipeline(self.matcher, P.pipeline_config(v))
        except ValueError as e:
            raise P.ParamError(str(e)) from e
        info = self.matcher.info
        self.health = NodeHealth(
            HealthConfig(
                node_name=self.get_name(),
                hardware_id=self.get_fully_qualified_name(),
                expected_rate=v['expected_rate'],
                rate_tolerance=v['rate_tolerance'],
                window=v['diagnostics_window_seconds'],
                no_pairs_timeout=v['no_pairs_timeout_seconds'],
                stale_age=v['stale_age_seconds'],
            )
        )
        self.health.model_values = {
            'backend': info.backend,
            'device': info.device,
            'model': info.model,
            'network resolution': (
                f'{info.network_size[1]}x{info.network_size[0]}'
                if info.network_size
                else 'any (native)'
            ),
            'confidence': info.confidence or 'none',
            'left-right check': 'on' if info.lr_check else 'off',
        }
        self._log_last: dict[str, float] = {}
        self._last_stamp = [None, None]  # per side: reference for "stamps going backwards"
        self._jump_stamp = [None, None]  # per side: a stamp far ahead, not yet confirmed
        self._max_jump_ns = int(round(v['max_stamp_jump_seconds'] * 1e9))
        # camera infos: latest per side, and the last INFO_CACHE per side as (stamp_ns, msg)
        self._infos: list[Optional[CameraInfo]] = [None, None]
        self._prepared: set = set()
        self._images_seen = [0, 0]
        self._near_reported = None
        self._info_cache = (deque(maxlen=INFO_CACHE), deque(maxlen=INFO_CACHE))
        self._info_by_stamp = [False, False]  # per side: infos carry their image's stamp
        self._info_wait = v['camera_info_wait_seconds']
        self._no_info_since: Optional[float] = None
        self._no_info_pairs = 0
        self._frame_id_warned = False
        self.bad_frames = 0

        qin = make_qos(v['input_qos'], v['queue_size'])
        qout = make_qos(v['output_qos'], 1)
        self._sync = make_synchronizer(
            self._on_pair,
            queue_size=v['queue_size'],
            approximate=v['approximate_sync'],
            tolerance=v['approximate_sync_tolerance_seconds'],
        )
        self.sub_left = self.create_subscription(
            Image, 'left/image_rect', lambda m: self._on_image(LEFT, m), qin
        )
        self.sub_right = self.create_subscription(
            Image, 'right/image_rect', lambda m: self._on_image(RIGHT, m), qin
        )
        self.sub_left_info = self.create_subscription(
            CameraInfo, 'left/camera_info', lambda m: self._on_info(LEFT, m), qin
        )
        self.sub_right_info = self.create_subscription(
            CameraInfo, 'right/camera_info', lambda m: self._on_info(RIGHT, m), qin
        )
        self.pub_disparity = self.create_publisher(DisparityImage, 'disparity', qout)
        self.pub_depth = self.create_publisher(Image, 'depth/image_rect', qout)
        self.pub_depth_info = self.create_publisher(CameraInfo, 'depth/camera_info', qout)
        self.pub_points = self.create_publisher(PointCloud2, 'points2', qout)
        self.pub_color = self.create_publisher(Image, 'disparity/color', qout)
        self.pub_confidence = self.create_publisher(Image, 'confidence', qout)
        self.pub_diag = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._worker = LatestWorker(
            self._process, self._on_worker_error, name=f'{self.get_name()}-worker'
        )
        self._diag_timer = self.create_timer(
            v['diagnostics_period_seconds'], self.publish_diagnostics
        )
        if v['approximate_sync']:
            sync_mode = 'approximate %.3f s' % v['approximate_sync_tolerance_seconds']
        else:
            sync_mode = 'exact'
        self.get_logger().info(
            f'{info.backend} on {info.device} ({info.model}); confidence '
            f'{info.confidence or "none"}{", left-right check" if info.lr_check else ""}; '
            f'sync {sync_mode}'
            f' ({self._sync.name})'
            f', input QoS {v["input_qos"]}, output QoS {v["output_qos"]}; listening on '
            f'{self.sub_left.topic_name}, {self.sub_right.topic_name}'
        )

    # ---------------- executor thread ----------------
    def _on_info(self, side: int, msg: CameraInfo) -> None:
        with self._info_cond:
            self._infos[side] = msg
            self._info_cache[side].append((stamp_ns(msg), msg))
            self._info_cond.notify_all()
        if side == LEFT:
            self._prepare_for((int(msg.height), int(msg.width)))

    def _prepare_for(self, hw: tuple) -> None:
        """Once per camera size, let the matcher get ready in the background.

        Getting ready: TensorRT builds its engines, for example. In the background, so the first
        pair does not block for minutes; pairs arriving meanwhile wait for it (latest pair wins).
        """
        if hw in self._prepared or hw[0] < 1 or hw[1] < 1:
            return
        self._prepared.add(hw)
        if not getattr(self.matcher, 'prepares', False):
            return
        logger = self.get_logger()

        def run():
            t0 = time.monotonic()
            try:
                self.matcher.prepare(hw)
            # the first pair reports it again through the normal path
            except Exception as e:
                logger.error(f'preparing the matcher for {hw[1]}x{hw[0]} failed: {e}')
                return
            if time.monotonic() - t0 > 1.0:
                logger.info(
                    f'matcher ready for {hw[1]}x{hw[0]} after {time.monotonic() - t0:.1f} s'
                )

        note = (
            ' (TensorRT engines are built now unless cached: this can take minutes)'
            if self.matcher.info.backend == 'tensorrt'
            else ''
        )
        logger.info(f'preparing the matcher for {hw[1]}x{hw[0]} images{note}')
        threading.Thread(target=run, name=f'{self.get_name()}-prepare', daemon=True).start()

    def _on_image(self, side: int, msg: Image) -> None:
        self._images_seen[side] += 1
        t = stamp_ns(msg)
        last = self._last_stamp[side]
        topic = (self.sub_left if side == LEFT else self.sub_right).topic_name
        if last is not None and t > last + self._max_jump_ns:
            jump = self._jump_stamp[side]
            if jump is not None and jump <= t <= jump + self._max_jump_ns:
                self._last_stamp[side] = t  # the next image confirms the new timeline
                self._jump_stamp[side] = None
                self.get_logger().info(
                    f'header stamps on {topic} continue {(t - last) / 1e9:.3f} s '
                    f'ahead of the old timeline: following the new one'
                )
            else:  # processed, but the old timeline stays the reference until this is confirmed
                self._jump_stamp[side] = t
                self._warn_throttled(
                    f'stamp_jump_{side}',
                    f'header stamp on {topic} jumped {(t - last) / 1e9:.3f} s ahead (more than '
                    f'max_stamp_jump_seconds = {self._max_jump_ns / 1e9:g}); processing it, but '
                    'it becomes '
                    'the reference for later stamps only if the next image confirms the new '
                    'timeline '
                    f'(a wrong stamp in the driver? a clock jump?)',
                )
            self._sync.add(side, msg)
            return
        self._jump_stamp[side] = None
        self._last_stamp[side] = t
        if last is not None and t < last:
            self._sync.clear(side)  # this side's waiting images belong to the old timeline
            self.report_bad_input(
                'stamps_backwards',
                f'header stamp on {topic} went backwards by {(last - t) / 1e9:.3f} s',
                'a looping bag or a restarted camera driver? (with rosbag use --clock and '
                'use_sim_time); the node resynchronizes on the new timeline',
            )
            return
        self._sync.add(side, msg)

    def _on_pair(self, left: Image, right: Image) -> None:
        self.health.pair_received()
        lf, rf = left.header.frame_id, right.header.frame_id
        if lf != rf and not self._frame_id_warned and not _left_right_names(lf, rf):
            self._frame_id_warned = True
            self.get_logger().warning(
                f'left and right images have different frame_ids ({lf!r} on '
                f'{self.sub_left.topic_name}, '
                f'{rf!r} on {self.sub_right.topic_name}): a swapped or mis-remapped camera? '
                'Outputs carry '
                f'the left frame_id {lf!r}. (Logged once; frame_ids that differ only by '
                'left/right are '
                f'expected and not reported.)'
            )
        self._worker.submit((left, right))

    def _warn_if_no_pairs(self) -> None:
        """Say on the console (not only on /diagnostics) when no pairs arrive, and why."""
        if self._closing:
            return
        idle = self.health.seconds_without_pairs()
        timeout = self.values['no_pairs_timeout_seconds']
        now = time.monotonic()
        every = max(timeout, self.values['log_throttle_seconds'])
        if idle < timeout or now - self._log_last.get('no_pairs', -1e18) < every:
            return
        self._log_last['no_pairs'] = now
        topics = []
        for sub in (self.sub_left, self.sub_right):
            infos = self.get_publishers_info_by_topic(sub.topic_name)
            kinds = sorted({str(i.qos_profile.reliability.name).lower() for i in infos})
            topics.append(
                f'{sub.topic_name}: {len(infos)} publisher(s)'
                + (f' ({", ".join(kinds)})' if kinds else '')
            )
        received = self._images_seen[LEFT] + self._images_seen[RIGHT]
        subs = (self.sub_left, self.sub_right)
        if not any(self.count_publishers(s.topic_name) for s in subs):
            cause = (
                'nobody publishes there: remap left/image_rect and right/image_rect to your '
                'camera topics (launch arguments left_image/right_image, or -r) and check the '
                'namespace'
            )
        elif not received:
            cause = (
                'publishers exist but no image arrived: large images over Fast DDS need the '
                'shared-memory profile in BOTH processes (FASTDDS_DEFAULT_PROFILES_FILE, and for '
                'Fast DDS 2.x (Humble, Jazzy) FASTRTPS_DEFAULT_PROFILES_FILE, = <ffs_ros '
                'share>/config/fastdds_shm.xml, in the camera driver too), or the QoS do not '
                'match (input_qos)'
            )
        else:
            cause = (
                'images arrive but never pair: left and right stamps differ (approximate_sync '
                'with a tolerance, or fix the driver) or one side is missing'
            )
        self.get_logger().warning(
            f'no stereo pairs for {idle:.1f} s (input QoS {self.values["input_qos"]}; '
            f'{"; ".join(topics)}; images received: {received}); likely cause: {cause}'
        )

    def _warn_throttled(self, key: str, text: str) -> None:
        now = time.monotonic()
        if now - self._log_last.get(key, -1e18) >= self.values['log_throttle_seconds']:
            self._log_last[key] = now
            self.get_logger().warning(text)

    def publish_diagnostics(self) -> None:
        try:
            self._warn_if_no_pairs()
        except Exception:  # a hint must never stop diagnostics (e.g. graph queries at shutdown)
            pass
        statuses = self.health.report(sync_failures=self._sync.sync_failures, dropped=self.dropped)
        with self._publish_lock:
            if not self._closing:
                self.pub_diag.publish(to_msg(statuses, self.get_clock().now().to_msg()))

    # ---------------- any thread ----------------
    def report_bad_input(self, key: str, problem: str, fix: str) -> None:
        """Count, mark diagnostics ERROR and log.

        Logs at most once per log_throttle_seconds per problem.
        """
        self.bad_frames += 1
        self.health.bad_input(problem)
        now = time.monotonic()
        if now - self._log_last.get(key, -1e18) >= self.values['log_throttle_seconds']:
            self._log_last[key] = now
            self.get_logger().error(f'{problem}; fix: {fix} (frame dropped)')

    # ---------------- worker thread ----------------
    def wanted(self) -> Wanted:
        """Which outputs have subscribers right now."""
        return Wanted(
            disparity=self.pub_disparity.get_subscription_count() > 0,
            depth=(
                self.pub_depth.get_subscription_count() > 0
                or self.pub_depth_info.get_subscription_count() > 0
            ),
            cloud=self.pub_points.get_subscription_count() > 0,
            color=self.pub_color.get_subscription_count() > 0,
            confidence=self.pub_confidence.get_subscription_count() > 0,
        )

    def _infos_for(self, left: Image, right: Image) -> Optional[tuple]:
        """(left, right) CameraInfo for the pair's stamps, or None (reported) when a side has none.

        Exact stamp from the per-side cache, else the latest. Waits up to camera_info_wait_seconds
        while a side has no info at all, or its infos carry image stamps and the one for this stamp
        has not arrived yet (drivers publish each image before its info).
        """
        stamps = (stamp_ns(left), stamp_ns(right))
        deadline = time.monotonic() + self._info_wait
        with self._info_cond:
            while True:
                exact = [
                    next((m for t, m in reversed(self._info_cache[s]) if t == stamps[s]), None)
                    for s in (LEFT, RIGHT)
                ]
                wait = False
                for s in (LEFT, RIGHT):
                    if exact[s] is not None:
                        self._info_by_stamp[s] = True
                    elif self._infos[s] is None or (
                        self._info_by_stamp[s] and self._info_cache[s][-1][0] < stamps[s]
                    ):
                        wait = True
                remaining = deadline - time.monotonic()
                if not wait or remaining <= 0 or self._closing:
                    break
                self._info_cond.wait(remaining)
            for s in (LEFT, RIGHT):
                if exact[s] is None and wait:
                    # it did not come in time (a driver that publishes infos less often than
                    # images?): stop waiting on every pair until an info matches a stamp again
                    self._info_by_stamp[s] = False
            infos = tuple(
                exact[s] if exact[s] is not None else self._infos[s] for s in (LEFT, RIGHT)
            )
        for s, sub in ((LEFT, self.sub_left_info), (RIGHT, self.sub_right_info)):
            if infos[s] is None:
                self._no_camera_info(s, sub.topic_name)
                return None
        self._no_info_since = None
        self._no_info_pairs = 0
        return infos

    def _no_camera_info(self, side: int, topic: str) -> None:
        """Handle a pair without any camera_info on `side`.

        Quiet at start-up (images often beat the first info by milliseconds), bad input once it
        persists.
        """
        now = time.monotonic()
        if self._no_info_since is None:
            self._no_info_since = now
        self._no_info_pairs += 1
        if (
            now - self._no_info_since < NO_INFO_GRACE_S
            and self._no_info_pairs <= NO_INFO_GRACE_PAIRS
        ):
            self.get_logger().debug(
                f'camera_info not yet received on {topic}; dropping this pair '
                f'(normal right after start-up)'
            )
            return
        self.report_bad_input(
            f'no_info_{side}',
            f'camera_info not yet received on {topic}',
            f'publish sensor_msgs/CameraInfo on {topic} (or remap '
            f"{'left' if side == LEFT else 'right'}/camera_info to your camera's info topic; "
            f'check its QoS)',
        )

    def _process(self, item) -> None:
        left, right = item
        if self._closing:
            return
        infos = self._infos_for(left, right)  # reports missing infos even when nobody listens
        if infos is None or self._closing:
            return
        linfo, rinfo = infos
        wanted = self.wanted()
        if not (
            wanted.disparity or wanted.depth or wanted.cloud or wanted.color or wanted.confidence
        ):
            return  # nobody listens: do not spend the matcher on it
        try:
            out = self.pipeline.process(left, right, linfo, rinfo, wanted)
        except InputError as e:
            if not self._closing:
                self.report_bad_input(e.problem, e.problem, e.fix)
            return
        with self._publish_lock:
            if self._closing:
                return  # shutdown began while this frame was in the matcher: abandon its result
            t0 = time.perf_counter()
            if out.disparity is not None:
                self.pub_disparity.publish(out.disparity)
            if out.depth is not None:
                self.pub_depth.publish(out.depth)
            if out.depth_info is not None:
                self.pub_depth_info.publish(out.depth_info)
            if out.cloud is not None:
                self.pub_points.publish(out.cloud)
            if out.disparity_color is not None:
                self.pub_color.publish(out.disparity_color)
            if out.confidence is not None:
                self.pub_confidence.publish(out.confidence)
        timings = dict(out.timings)
        timings['publish'] = (time.perf_counter() - t0) * 1e3
        now_ns = self.get_clock().now().nanoseconds
        age = (now_ns - stamp_ns(left)) / 1e9
        self.health.published(
            timings,
            age,
            (left.height, left.width),
            (out.mean_confidence, out.masked_fraction),
        )
        self._report_near_range()

    def _report_near_range(self) -> None:
        """Once per camera: the nearest depth the matcher can measure (fx * B / max disparity)."""
        near = self.pipeline.nearest_depth()
        if near is None or near == self._near_reported:
            return
        self._near_reported = near
        d, z = near
        self.health.model_values['max disparity searched'] = f'{d:g} px'
        self.health.model_values['nearest measurable depth'] = f'{z:.2f} m'
        self.get_logger().info(
            f'nearest measurable depth {z:.2f} m (fx * baseline / {d:g} px, the largest disparity '
            f'searched); closer objects get no or wrong depth'
        )

    def _on_worker_error(self, exc: BaseException, item) -> None:
        if self._closing:
            return  # whatever the abandoned frame ran into while the node stops is not a failure
        problem = f'{type(exc).__name__}: {exc}'
        self.health.processing_error(problem)
        now = time.monotonic()
        if now - self._log_last.get('internal', -1e18) >= self.values['log_throttle_seconds']:
            self._log_last['internal'] = now
            self.get_logger().error(
                'processing failed (frame dropped; please report this with the '
                'traceback):\n' + ''.join(traceback.format_exception(exc))
            )

    def has_camera_infos(self) -> bool:
        """Return True once both CameraInfo topics have delivered a message."""
        return self._infos[LEFT] is not None and self._infos[RIGHT] is not None

    def camera_infos(self) -> tuple:
        """Return the cached (left, right) CameraInfo (None where not yet received)."""
        return self._infos[LEFT], self._infos[RIGHT]

    # ---------------- lifecycle ----------------
    @property
    def dropped(self) -> int:
        """Pairs replaced by newer ones before the worker got to them."""
        return self._worker.dropped if self._worker is not None else 0

    def wait_idle(self, timeout: float = 5.0) -> bool:
        return self._worker.wait_idle(timeout)

    def begin_shutdown(self, reason: Optional[str] = None) -> None:
        """Stop publishing.

        From here on no output or diagnostics message is published and the frame in the matcher (if
        any) is abandoned. Waits only for a publish already under way (milliseconds). Logs `reason`
        at INFO when given (once). Idempotent.
        """
        with self._publish_lock:
            already = self._closing
            self._closing = True
        with self._info_cond:
            self._info_cond.notify_all()  # a worker waiting for a camera_info stops waiting
        if self._worker is not None:
            self._worker.stop(timeout=0.0)  # drop a waiting pair; the thread ends after its frame
        if reason and not already:
            busy = self._worker is not None and self._worker.busy
            self.get_logger().info(
                reason + ('; the frame in progress is abandoned' if busy else '')
            )

    def destroy_node(self, worker_timeout: float = 5.0) -> None:
        """Stop the worker and release the matcher.

        Waits up to `worker_timeout` s for the frame in progress. A worker still inside the matcher
        after that is left running (a daemon thread; its result is dropped) and the matcher is not
        closed under it: see main().
        """
        self.begin_shutdown()
        if self._worker is not None:
            self.worker_abandoned = not self._worker.stop(timeout=worker_timeout)
            self._worker = None
        try:
            if self.matcher is not None and not self.worker_abandoned:
                self.matcher.close()
                self.matcher = None
        finally:
            super().destroy_node()


# camera infos kept per side for the lookup by stamp
INFO_CACHE = 16
# camera_info missing at start-up: frames are dropped quietly (DEBUG) until it has been missing
# for this long or for this many pairs; then it is bad input (ERROR)
NO_INFO_GRACE_S = 1.0
NO_INFO_GRACE_PAIRS = 3


def _left_right_names(left_id: str, right_id: str) -> bool:
    """Return True when two frame_ids differ only by 'left' vs 'right' in the same place.

    E.g. 'cam_left_optical' / 'cam_right_optical': the usual naming, not worth a warning.
    """
    a, b = left_id.lower(), right_id.lower()
    return 'left' in a and a.replace('left', '\0') == b.replace('right', '\0')


# How long main() waits, after SIGINT/SIGTERM, for a frame in the matcher before abandoning it.
STOP_WORKER_TIMEOUT_S = 0.5


def main(argv=None, *, matcher: Optional[StereoMatcher] = None) -> int:
    """Entry point of `stereo_node` / `ros2 run ffs_ros stereo_node`.

    `matcher`: injected by tests.

    SIGINT and SIGTERM are handled here, not by rclpy: rclpy's handlers invalidate the context at
    once, while the worker may be about to publish (RCLError "publisher's context is invalid").
    Ours only end the spin loop; then publishing stops (StereoNode.begin_shutdown, one INFO line),
    the worker gets STOP_WORKER_TIMEOUT_S to finish its frame (its result is dropped), and the node
    and the context are shut down. Returns 0 after a signal, 2 for bad parameters. When the worker
    is still inside the matcher (a native call cannot be interrupted), the process ends with
    os._exit(0) instead of returning: see _exit_now().
    """
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from ..pipeline import tune_allocator

    tune_allocator()
    received: list[int] = []

    def on_signal(signum, _frame) -> None:
        received.append(signum)

    # before anything slow (rclpy.init, loading the model): Ctrl-C at start-up stops cleanly too
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    args = sys.argv if argv is None else argv
    problem = _params_file_problem(args)
    if problem is not None:
        print(f'stereo_node: {problem}', file=sys.stderr)
        for s, handler in previous.items():
            signal.signal(s, handler)
        return 2
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except Exception as e:  # RCLError: the arguments cannot be used (one line, not a traceback)
        print(f'stereo_node: cannot start: {e}', file=sys.stderr)
        for s, handler in previous.items():
            signal.signal(s, handler)
        return 2
    try:
        node = StereoNode(matcher=matcher)
    except P.ParamError as e:
        print(f'stereo_node: {e}', file=sys.stderr)
        rclpy.try_shutdown()
        for s, handler in previous.items():
            signal.signal(s, handler)
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        # Python runs signal handlers between bytecodes of the main thread, i.e. when spin_once
        # returns: the timeout bounds the reaction time to a signal
        while not received and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        why = signal.Signals(received[0]).name if received else 'shutdown'
        node.begin_shutdown(f'stopping on {why}')
        executor.shutdown()
        node.destroy_node(worker_timeout=STOP_WORKER_TIMEOUT_S)
        rclpy.try_shutdown()  # also flushes and closes the ROS log files
        for s, handler in previous.items():
            signal.signal(s, handler)
    if node.worker_abandoned:
        _exit_now(0)
    return 0


def _params_file_problem(args) -> Optional[str]:
    """Name a --params-file that is missing or not valid YAML (rcl only says 'Couldn't parse')."""
    import yaml

    for i, a in enumerate(args):
        if a == '--params-file' and i + 1 < len(args):
            path = args[i + 1]
            try:
                with open(path) as f:
                    yaml.safe_load(f)
            except OSError as e:
                return f'params file {path} cannot be read ({e.strerror}); fix the path'
            except yaml.YAMLError as e:
                where = getattr(e, 'problem_mark', None)
                line = f' at line {where.line + 1}' if where is not None else ''
                return f'params file {path} is not valid YAML{line}; fix the file'
    return None


def _exit_now(code: int) -> None:
    """End the process at once, without interpreter finalisation and C++ static destructors.

    Used only when the worker thread is still inside the matcher at exit. A normal exit then
    aborts: measured with the default ONNX Runtime model at 1600x1200, a frame still running
    when main() returned ended the process with "terminate called without an active exception"
    (SIGABRT, exit -6): the exit-time teardown destroys native threading state (a joinable
    std::thread) that the running native call still owns. The call cannot be interrupted, and a
    daemon Python thread alone does not help because the thread is inside native code, so we
    skip the teardown. Everything worth keeping is done by now: outputs stopped, rclpy shut down
    (which flushes the ROS log files); the Python streams are flushed here.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed pipe must not end a clean stop in a traceback
            pass
    os._exit(code)


if __name__ == '__main__':
    sys.exit(main())
