"""`ffs-ros bench`: per-stage timings of the stereo node's processing path, without DDS.

Builds synthetic rectified Image/CameraInfo messages (our own scene generator), runs them through
StereoPipeline exactly as the node's worker does (convert, match, depth, cloud) and serialises the
outputs with rclpy (what publishing costs before the transport: 'serialize'). Stages that the
matcher reports in `last_timings` are listed as 'match/<name>'. `overhead` is everything except the
matcher, per iteration: convert + depth + cloud + serialize (wall clock; `overhead_cpu_p50_ms` is
the same in CPU time of the calling thread, which stays meaningful on a shared, busy machine).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import platform
import time

import numpy as np

from .common import (
    MODEL_HELP,
    add_option_argument,
    add_size_arguments,
    parse_options,
    resolve_size,
    show_defaults,
)

OVERHEAD_STAGES = ('convert', 'depth', 'cloud', 'color', 'serialize')
DEFAULT_SIZE = (640, 480)  # (width, height)


def add_arguments(p) -> None:
    show_defaults(p)
    p.add_argument('--backend', default='sgbm', help='matcher backend (default sgbm)')
    p.add_argument(
        '--model', default=None, help=MODEL_HELP
    )
    p.add_argument(
        '--device', default=None, help="device for network backends ('cpu', 'cuda:0', ...)"
    )
    add_size_arguments(p, 'image size', DEFAULT_SIZE)
    p.add_argument('--iters', type=int, default=50, help='timed iterations (default 50)')
    p.add_argument('--warmup', type=int, default=5, help='untimed iterations first (default 5)')
    p.add_argument(
        '--encoding',
        default='rgb8',
        choices=('rgb8', 'bgr8', 'mono8'),
        help='input image encoding (default rgb8)',
    )
    p.add_argument(
        '--max-disparity', type=float, default=192.0, help='max disparity in px (default 192)'
    )
    p.add_argument('--no-color', action='store_true', help='XYZ cloud without packed rgb')
    p.add_argument(
        '--dense', action='store_true', help='dense (1xN) cloud instead of organized HxW'
    )
    p.add_argument('--depth-encoding', default='32FC1', choices=('32FC1', '16UC1'))
    p.add_argument(
        '--outputs',
        default='disparity,depth,cloud',
        help='comma list of outputs to compute: disparity, depth, cloud, color',
    )
    add_option_argument(p)
    p.add_argument('--json', default=None, help='write the results as JSON to this path')
    p.add_argument('--seed', type=int, default=0)


def parse_size(text: str) -> tuple[int, int]:
    """'640x480' -> (640, 480); ValueError with the expected form otherwise."""
    try:
        w, h = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise ValueError(f'--size must look like 640x480 (WxH), got {text!r}') from None
    if w < 16 or h < 16:
        raise ValueError(f'--size must be at least 16x16, got {text!r}')
    return w, h


def synthetic_pair(width: int, height: int, max_disparity: float, seed: int = 0):
    """Return (left RGB, right RGB, description) of a synthetic pair.

    The pair is a generated scene, or a shifted random texture when the generator is unavailable.
    """
    rng = np.random.default_rng(seed)
    try:
        from ffs_ros.synth import render_scene

        s = render_scene(rng, height, width, max_disparity=min(max_disparity, width / 4))
        return s.left, s.right, 'synth.render_scene'
    except ImportError:
        shift = int(min(max_disparity, width / 4) // 2)
        tex = rng.integers(0, 256, (height, width + shift, 3), dtype=np.uint8)
        return tex[:, shift:].copy(), tex[:,:-shift].copy(), f'random texture shifted {shift} px'


def build_messages(
    left_rgb, right_rgb, encoding: str = 'rgb8', fx: float | None = None, baseline: float = 0.12
):
    """(left Image, right Image, left CameraInfo, right CameraInfo) in `encoding`."""
    import cv2

    from ffs_ros.convert import make_camera_infos, numpy_to_image

    h, w = left_rgb.shape[:2]
    fx = 0.8 * w if fx is None else fx
    li, ri = make_camera_infos(w, h, fx, baseline)
    msgs = []
    for rgb in (left_rgb, right_rgb):
        if encoding == 'bgr8':
            arr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        elif encoding == 'mono8':
            arr = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        else:
            arr = rgb
        m = numpy_to_image(arr, encoding, li.header)
        m.header.stamp.sec = 1
        msgs.append(m)
    return msgs[0], msgs[1], li, ri


def _percentiles(values) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return {
        'p50_ms': round(float(np.percentile(a, 50)), 3),
        'p95_ms': round(float(np.percentile(a, 95)), 3),
    }


class _CpuTimedMatcher:
    """Delegates to a matcher and records the calling thread's CPU time spent in match()."""

    def __init__(self, matcher) -> None:
        self._m = matcher
        self.last_cpu_ms = 0.0

    def __getattr__(self, name):
        return getattr(self._m, name)

    @property
    def info(self):
        return self._m.info

    def match(self, left, right):
        c0 = time.thread_time()
        try:
            return self._m.match(left, right)
        finally:
            self.last_cpu_ms = (time.thread_time() - c0) * 1e3


def run_bench(
    matcher,
    width: int,
    height: int,
    iters: int = 50,
    warmup: int = 5,
    config=None,
    wanted=None,
    encoding: str = 'rgb8',
    seed: int = 0,
    max_disparity: float = 192.0,
) -> dict:
    """Time the processing path; returns the result dict written as JSON (see module doc)."""
    from ffs_ros.pipeline import PipelineConfig, StereoPipeline, Wanted

    try:
        from rclpy.serialization import serialize_message
    except ImportError:  # a ROS install without rclpy's serialization: report it, time the rest
        serialize_message = None
    config = config or PipelineConfig(max_disparity=max_disparity)
    wanted = wanted or Wanted()
    left_rgb, right_rgb, scene = synthetic_pair(width, height, max_disparity, seed)
    left, right, li, ri = build_messages(left_rgb, right_rgb, encoding)
    timed = _CpuTimedMatcher(matcher)
    pipe = StereoPipeline(timed, config)
    stages: dict[str, list[float]] = {}
    overhead, overhead_cpu, total, valid = [], [], [], []
    for i in range(warmup + iters):
        c0 = time.thread_time()
        t0 = time.perf_counter()
        out = pipe.process(left, right, li, ri, wanted)
        if serialize_message is not None:
            t1 = time.perf_counter()
            for msg in (out.disparity, out.depth, out.depth_info, out.cloud, out.disparity_color):
                if msg is not None:
                    serialize_message(msg)
            out.timings['serialize'] = (time.perf_counter() - t1) * 1e3
        elapsed = (time.perf_counter() - t0) * 1e3
        cpu = (time.thread_time() - c0) * 1e3
        if i < warmup:
            continue
        for name, ms in out.timings.items():
            stages.setdefault(name, []).append(ms)
        total.append(elapsed)
        overhead.append(elapsed - out.timings['match'])
        overhead_cpu.append(cpu - timed.last_cpu_ms)
        valid.append(out.valid_fraction)
    info = matcher.info
    return {
        'backend': info.backend,
        'device': info.device,
        'model': info.model,
        'size': [width, height],
        'iters': iters,
        'encoding': encoding,
        'scene': scene,
        'outputs': {k: bool(v) for k, v in vars(wanted).items()},
        'config': dict(vars(config)),
        'machine': {
            'cpus': os.cpu_count(),
            'processor': platform.processor() or platform.machine(),
            'python': platform.python_version(),
        },
        'stages': {name: _percentiles(v) for name, v in stages.items()},
        'overhead_p50_ms': _percentiles(overhead)['p50_ms'],
        'overhead_p95_ms': _percentiles(overhead)['p95_ms'],
        # CPU time of the calling thread outside the matcher: what the overhead costs when the
        # machine is shared (wall-clock stages include time spent waiting for a core)
        'overhead_cpu_p50_ms': _percentiles(overhead_cpu)['p50_ms'],
        # sum of the non-matcher stage medians: robust to preemption on a loaded machine, where
        # a per-iteration total often includes a scheduler time slice spent waiting
        'overhead_stage_sum_p50_ms': round(
            sum(_percentiles(v)['p50_ms'] for k, v in stages.items() if k in OVERHEAD_STAGES), 3
        ),
        'total_p50_ms': _percentiles(total)['p50_ms'],
        'fps_p50': round(1000.0 / max(_percentiles(total)['p50_ms'], 1e-9), 2),
        'valid_fraction': round(float(np.mean(valid)), 4),
        'serialize_measured': serialize_message is not None,
    }


def format_table(res: dict) -> str:
    """Human-readable table of a run_bench result."""
    w, h = res['size']
    lines = [
        f'ffs-ros bench: backend {res["backend"]} ({res["device"]}), {w}x{h} {res["encoding"]}, '
        f'{res["iters"]} iterations, {res["machine"]["cpus"]} CPUs',
        f'{"stage":<22}{"p50 ms":>10}{"p95 ms":>10}',
    ]
    order = (
        ['convert', 'match']
        + sorted(k for k in res['stages'] if k.startswith('match/'))
        + ['depth', 'cloud', 'color', 'serialize']
    )
    for name in order + sorted(set(res['stages']) - set(order)):
        if name in res['stages']:
            s = res['stages'][name]
            label = '  ' + name if name.startswith('match/') else name
            lines.append(f'{label:<22}{s["p50_ms"]:>10.2f}{s["p95_ms"]:>10.2f}')
    lines.append(
        f'{"overhead (not match)":<22}'
        f'{res["overhead_p50_ms"]:>10.2f}{res["overhead_p95_ms"]:>10.2f}'
    )
    if 'overhead_cpu_p50_ms' in res:
        lines.append(f'{"  (CPU time)":<22}{res["overhead_cpu_p50_ms"]:>10.2f}')
    if 'overhead_stage_sum_p50_ms' in res:
        lines.append(f'{"  (sum of stage p50)":<22}{res["overhead_stage_sum_p50_ms"]:>10.2f}')
    lines.append(f'{"total":<22}{res["total_p50_ms"]:>10.2f}{"":>10}  ({res["fps_p50"]:.1f} fps)')
    lines.append(
        f'valid disparity: {100 * res["valid_fraction"]:.1f}% of pixels; scene: {res["scene"]}'
    )
    return '\n'.join(lines)


def run(args) -> int:
    from ffs_ros.inference import load_matcher
    from ffs_ros.pipeline import PipelineConfig, Wanted, tune_allocator

    tune_allocator()

    try:
        width, height = resolve_size(args, 'bench', DEFAULT_SIZE)
        parse_size(f'{width}x{height}')  # the bounds
        if args.iters < 1 or args.warmup < 0:
            raise ValueError('--iters must be >= 1 and --warmup >= 0')
        names = {s.strip() for s in args.outputs.split(',') if s.strip()}
        unknown = names - {'disparity', 'depth', 'cloud', 'color'}
        if unknown:
            raise ValueError(
                f'unknown --outputs {sorted(unknown)}; choose from disparity, depth, cloud, color'
            )
        wanted = Wanted(**{k: k in names for k in ('disparity', 'depth', 'cloud', 'color')})
        config = PipelineConfig(
            max_disparity=args.max_disparity,
            use_color=not args.no_color,
            organized_cloud=not args.dense,
            depth_encoding=args.depth_encoding,
        ).validate()
        options = parse_options(args.option)
        if args.backend == 'sgbm':
            options.setdefault('max_disparity', int(args.max_disparity))
        matcher = load_matcher(
            model=args.model, backend=args.backend, device=args.device, **options
        )
    except (ValueError, RuntimeError) as e:
        print(f'ffs-ros bench: {e}')
        return 2
    try:
        res = run_bench(
            matcher,
            width,
            height,
            args.iters,
            args.warmup,
            config,
            wanted,
            args.encoding,
            args.seed,
            args.max_disparity,
        )
    finally:
        matcher.close()
    print(format_table(res))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=2) + '\n')
        print(f'wrote {path}')
    return 0
