"""Health bookkeeping for the stereo node and its /diagnostics statuses.

`NodeHealth` is fed from the executor thread (pairs in, sync failures, bad input) and from the
worker thread (per-stage times, age at publish); `report()` turns the last window into three
statuses named after the node, following diagnostic_updater's conventions:

- "<node>: input"      pair rate vs expected_rate, sync failures, drops, bad input.
                       ERROR: no pairs for `no_pairs_timeout` s, or bad input in the window.
                       WARN:  pair rate below expected_rate * (1 - rate_tolerance).
- "<node>: processing" per-stage p50/p95 ms and age (publish time - header stamp).
                       WARN: output rate below expected (slow) or age p95 above `stale_age`
                       (stale).
                       ERROR: processing raised in the window (internal error, see the log).
- "<node>: model"      backend, model, device, network and input resolution.

Pure Python (no rclpy); `to_msg()` converts to diagnostic_msgs when it is importable.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
import threading
import time
from typing import Optional

import numpy as np

OK, WARN, ERROR, STALE = 0, 1, 2, 3
LEVEL_NAMES = {OK: 'OK', WARN: 'WARN', ERROR: 'ERROR', STALE: 'STALE'}
STAGES = ('convert', 'match', 'depth', 'cloud', 'publish')


@dataclass
class Status:
    """One diagnostic status, independent of ROS message types."""

    level: int
    name: str
    message: str
    hardware_id: str = ''
    values: dict = field(default_factory=dict)


@dataclass
class HealthConfig:
    node_name: str = 'stereo_node'
    hardware_id: str = ''
    expected_rate: float = 0.0  # Hz; 0 disables the rate checks
    rate_tolerance: float = 0.5  # WARN below expected_rate * (1 - tolerance)
    window: float = 5.0  # s: rates, percentiles and bad input are judged over this
    no_pairs_timeout: float = 3.0  # s without a synchronized pair -> ERROR
    stale_age: float = 0.0  # s: age p95 above this -> WARN; 0 = max(0.5 s, 3 x match p50)


class _Stamped:
    """(monotonic time, value) samples kept for `window` seconds and at most `maxlen` entries."""

    def __init__(self, maxlen: int = 4096) -> None:
        self._d: deque = deque(maxlen=maxlen)

    def add(self, t: float, value=None) -> None:
        self._d.append((t, value))

    def prune(self, now: float, window: float) -> None:
        while self._d and self._d[0][0] < now - window:
            self._d.popleft()

    def values(self) -> list:
        return [v for _, v in self._d]

    def __len__(self) -> int:
        return len(self._d)

    def last(self):
        return self._d[-1] if self._d else None


def percentiles(samples, qs=(50, 95)) -> tuple:
    """p-th percentiles of `samples` (NaN when empty)."""
    if len(samples) == 0:
        return tuple(float('nan') for _ in qs)
    return tuple(float(v) for v in np.percentile(np.asarray(samples, dtype=np.float64), qs))


class NodeHealth:
    """Thread-safe counters and windows behind the node's diagnostics."""

    RUN_SAMPLES = 4096

    def __init__(self, config: HealthConfig, clock=time.monotonic) -> None:
        self.cfg = config
        self._clock = clock
        self._lock = threading.Lock()
        self._start = clock()
        self._pairs = _Stamped()
        self._published = _Stamped()
        self._ages = _Stamped()
        self._stages: dict[str, _Stamped] = {s: _Stamped(maxlen=512) for s in STAGES}
        self._bad = _Stamped(maxlen=256)
        self._errors = _Stamped(maxlen=256)
        self._confidence = _Stamped(maxlen=512)  # (mean confidence, masked share) per frame
        self.pairs_total = 0
        self.published_total = 0
        self.bad_total = 0
        self.errors_total = 0
        self.last_pair_time: Optional[float] = None
        self.last_bad: Optional[str] = None
        self.model_values: dict = {}
        # whole-run samples (last RUN_SAMPLES frames, never pruned by the window) for tools/reports
        self._run_stages: dict[str, deque] = {}
        self._run_ages: deque = deque(maxlen=self.RUN_SAMPLES)
        self.input_resolution: Optional[tuple] = None

    def seconds_without_pairs(self) -> float:
        """Return the time since the last synchronized pair (since start-up when none came yet)."""
        with self._lock:
            return self._clock() - (
                self.last_pair_time if self.last_pair_time is not None else self._start
            )

    # ---- feeding (any thread) ----
    def pair_received(self) -> None:
        now = self._clock()
        with self._lock:
            self._pairs.add(now)
            self.pairs_total += 1
            self.last_pair_time = now

    def bad_input(self, problem: str) -> None:
        now = self._clock()
        with self._lock:
            self._bad.add(now, problem)
            self.bad_total += 1
            self.last_bad = problem

    def processing_error(self, problem: str) -> None:
        now = self._clock()
        with self._lock:
            self._errors.add(now, problem)
            self.errors_total += 1

    def published(
        self,
        timings_ms: dict,
        age_s: float,
        resolution: Optional[tuple] = None,
        confidence: Optional[tuple] = None,
    ) -> None:
        """Record a published frame; confidence: (mean confidence, share masked) if any."""
        now = self._clock()
        with self._lock:
            self._published.add(now)
            if confidence is not None and confidence[0] is not None:
                self._confidence.add(now, (float(confidence[0]), float(confidence[1])))
            self.published_total += 1
            self._ages.add(now, age_s)
            self._run_ages.append(age_s)
            for stage, ms in timings_ms.items():
                self._stages.setdefault(stage, _Stamped(maxlen=512)).add(now, float(ms))
                self._run_stages.setdefault(stage, deque(maxlen=self.RUN_SAMPLES)).append(
                    float(ms)
                )
            if resolution is not None:
                self.input_resolution = tuple(resolution)

    # ---- reporting ----
    def run_summary(self) -> dict:
        """Return per-stage and age percentiles over the last RUN_SAMPLES frames.

        The result: {'stages': {stage: (p50_ms, p95_ms)}, 'age': (p50_s, p95_s)}.
        """
        with self._lock:
            stages = {k: percentiles(list(v)) for k, v in self._run_stages.items()}
            age = percentiles(list(self._run_ages))
        return {'stages': stages, 'age': age}

    def report(self, sync_failures: int = 0, dropped: int = 0) -> list[Status]:
        """Statuses for the current window (call ~1 Hz)."""
        now = self._clock()
        c = self.cfg
        with self._lock:
            for s in (
                self._pairs,
                self._published,
                self._ages,
                self._bad,
                self._errors,
                self._confidence,
                *self._stages.values(),
            ):
                s.prune(now, c.window)
            span = max(1e-3, min(c.window, now - self._start))
            pair_rate = len(self._pairs) / span
            out_rate = len(self._published) / span
            bad_recent = self._bad.values()
            err_recent = self._errors.values()
            since_pair = now - (
                self.last_pair_time if self.last_pair_time is not None else self._start
            )
            stage_pct = {s: percentiles(v.values()) for s, v in self._stages.items()}
            age_p50, age_p95 = percentiles(self._ages.values())
            pairs_total, published_total = self.pairs_total, self.published_total
            bad_total, last_bad = self.bad_total, self.last_bad
            model_values = dict(self.model_values)
            in_res = self.input_resolution
            conf = self._confidence.values()
        hw = c.hardware_id or c.node_name
        return [
            self._input_status(
                hw,
                pair_rate,
                since_pair,
                sync_failures,
                dropped,
                bad_recent,
                bad_total,
                last_bad,
                pairs_total,
            ),
            self._processing_status(
                hw, out_rate, stage_pct, age_p50, age_p95, err_recent, published_total, conf
            ),
            self._model_status(hw, model_values, in_res),
        ]

    def _input_status(
        self,
        hw,
        rate,
        since_pair,
        sync_failures,
        dropped,
        bad_recent,
        bad_total,
        last_bad,
        pairs_total,
    ) -> Status:
        c = self.cfg
        values = {
            'pair rate (Hz)': f'{rate:.2f}',
            'expected rate (Hz)': f'{c.expected_rate:.2f}',
            'pairs received': str(pairs_total),
            'sync failures': str(sync_failures),
            'dropped (worker busy)': str(dropped),
            'bad input (window)': str(len(bad_recent)),
            'bad input (total)': str(bad_total),
            'last bad input': last_bad or '',
            'seconds since last pair': f'{since_pair:.1f}',
        }
        if bad_recent:
            return Status(
                ERROR, f'{c.node_name}: input', f'bad input: {bad_recent[-1]}', hw, values
            )
        if since_pair > c.no_pairs_timeout:
            hint = (
                f'; {sync_failures} images found no partner: stamps differ? try approximate_sync'
                if sync_failures
                else '; check the topic names, remaps and QoS'
            )
            return Status(
                ERROR,
                f'{c.node_name}: input',
                f'no synchronized pairs for {since_pair:.1f} s{hint}',
                hw,
                values,
            )
        if c.expected_rate > 0 and rate < c.expected_rate * (1.0 - c.rate_tolerance):
            return Status(
                WARN,
                f'{c.node_name}: input',
                f'pair rate {rate:.1f} Hz below expected {c.expected_rate:.1f} Hz',
                hw,
                values,
            )
        return Status(OK, f'{c.node_name}: input', f'{rate:.1f} Hz', hw, values)

    def _processing_status(
        self, hw, out_rate, stage_pct, age_p50, age_p95, err_recent, published_total, conf=()
    ) -> Status:
        c = self.cfg
        values = {'output rate (Hz)': f'{out_rate:.2f}', 'frames published': str(published_total)}
        if conf:
            means = [m for m, _ in conf if m == m]
            values['mean confidence'] = f'{np.mean(means):.3f}' if means else 'nan'
            values['masked by confidence_threshold (%)'] = (
                f'{100.0 * np.mean([f for _, f in conf]):.1f}'
            )
        for stage, (p50, p95) in stage_pct.items():
            values[f'{stage} p50 (ms)'] = f'{p50:.2f}'
            values[f'{stage} p95 (ms)'] = f'{p95:.2f}'
        values['age p50 (ms)'] = f'{age_p50 * 1e3:.1f}'
        values['age p95 (ms)'] = f'{age_p95 * 1e3:.1f}'
        name = f'{c.node_name}: processing'
        if err_recent:
            return Status(ERROR, name, f'processing failed: {err_recent[-1]}', hw, values)
        if (
            c.expected_rate > 0
            and published_total
            and out_rate < c.expected_rate * (1.0 - c.rate_tolerance)
        ):
            m50 = stage_pct.get('match', (float('nan'),))[0]
            return Status(
                WARN,
                name,
                f'slow: {out_rate:.1f} Hz of expected {c.expected_rate:.1f} Hz '
                f'(match p50 {m50:.0f} ms)',
                hw,
                values,
            )
        # stale_age 0 = automatic: a few times what the matcher itself takes (a CPU model that
        # needs 0.9 s per pair is not "stale" at 1 s; a frame waiting behind others is)
        m50 = stage_pct.get('match', (float('nan'),))[0]
        auto = max(0.5, 3e-3 * m50) if m50 == m50 else 0.5
        limit = c.stale_age if c.stale_age > 0 else auto
        if age_p95 == age_p95 and age_p95 > limit:
            return Status(
                WARN,
                name,
                f'stale: outputs are {age_p95 * 1e3:.0f} ms old (p95) '
                f'> {limit * 1e3:.0f} ms',
                hw,
                values,
            )
        if not published_total:
            return Status(OK, name, 'waiting for pairs (or no subscribers)', hw, values)
        return Status(OK, name, f'{out_rate:.1f} Hz, age p50 {age_p50 * 1e3:.0f} ms', hw, values)

    def _model_status(self, hw, model_values, in_res) -> Status:
        values = dict(model_values)
        if in_res:
            values['input resolution'] = f'{in_res[1]}x{in_res[0]}'
        msg = f'{values.get("backend", "?")} on {values.get("device", "?")}'
        return Status(OK, f'{self.cfg.node_name}: model', msg, hw, values)


def to_msg(statuses: list[Status], stamp=None):
    """Convert to diagnostic_msgs/DiagnosticArray (imports the message package lazily)."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    arr = DiagnosticArray()
    if stamp is not None:
        arr.header.stamp = stamp
    for s in statuses:
        m = DiagnosticStatus()
        m.level = bytes([s.level])
        m.name = s.name
        m.message = s.message
        m.hardware_id = s.hardware_id
        m.values = [KeyValue(key=str(k), value=str(v)) for k, v in s.values.items()]
        arr.status.append(m)
    return arr
