"""Every parameter of stereo_node, declared in ONE place with its description and range.

`SPECS` is the single source of truth: the node declares exactly these (read-only, with ROS
ParameterDescriptors so `ros2 param describe` shows the description and range), config/stereo.yaml
lists exactly these (a test checks it) and `validate()` checks the cross-parameter rules at
start-up so a bad configuration stops the node with one clear message and a non-zero exit.
Pure Python apart from `declare()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ..inference.options import BACKENDS, OPTIONS
from ..pipeline import DEPTH_ENCODINGS, PipelineConfig

# The backend used when `backend` is left at its default. 'auto' = the shipped default model on the
# best runtime available (load_matcher decides, and falls back to sgbm while no model is
# installed).
DEFAULT_BACKEND = 'auto'

QOS_CHOICES = ('sensor_data', 'reliable', 'best_effort', 'system_default')


@dataclass(frozen=True)
class ParamSpec:
    """One parameter.

    Name, default (its type is the parameter type), description, and either a numeric range [lo,
    hi] or a tuple of allowed string choices.
    """

    name: str
    default: Any
    description: str
    lo: Optional[float] = None
    hi: Optional[float] = None
    choices: Optional[tuple] = None


SPECS: tuple[ParamSpec, ...] = (
    (
        # --- matcher ---
        ParamSpec(
            'backend',
            DEFAULT_BACKEND,
            "stereo matcher: 'auto' (shipped default model on the best available runtime; "
            "sgbm while no model is installed), 'sgbm' (OpenCV, CPU), "
            "'onnxruntime', 'torch', 'tensorrt'",
            choices=BACKENDS,
        ),
        ParamSpec(
            'model',
            '',
            "'fast' or 'accurate' (the shipped models), or a model file or directory; empty = "
            "'fast' when the matcher runs on a CPU, 'accurate' on a GPU (not used by sgbm)",
        ),
        ParamSpec(
            'device',
            '',
            "compute device for model backends, e.g. 'cpu' or 'cuda:0'; empty = best available",
        ),
        ParamSpec(
            'net_width',
            0,
            'model backends: run the network at this width (px, with net_height; a '
            "multiple of 32); 0 = the model's own or the input size",
            0,
            8192,
        ),
        ParamSpec(
            'net_height',
            0,
            'model backends: network height (px, with net_width); 0 = automatic',
            0,
            8192,
        ),
    )
    + tuple(
        ParamSpec(o.param, o.default, o.description, o.lo, o.hi, o.choices)
        for o in OPTIONS
        if o.param
    )
    + (
        # --- inputs ---
        ParamSpec(
            'approximate_sync',
            False,
            'pair left/right images whose stamps differ by up to '
            'approximate_sync_tolerance_seconds '
            '(false: identical stamps required)',
        ),
        ParamSpec(
            'approximate_sync_tolerance_seconds',
            0.01,
            'largest left/right stamp difference accepted when approximate_sync is true (s)',
            0.0,
            10.0,
        ),
        ParamSpec(
            'queue_size',
            5,
            'unpaired images kept per side while waiting for a partner; also the '
            'subscription depth',
            1,
            100,
        ),
        ParamSpec(
            'input_qos',
            'sensor_data',
            "QoS of the image and camera_info subscriptions: 'sensor_data' (best effort; accepts "
            "reliable and best-effort publishers), 'reliable', 'best_effort', 'system_default'",
            choices=QOS_CHOICES,
        ),
        # --- outputs (PipelineConfig) ---
        ParamSpec(
            'output_qos',
            'reliable',
            "QoS of the output topics: 'reliable' (what RViz expects), 'best_effort', "
            "'sensor_data', "
            "'system_default'",
            choices=QOS_CHOICES,
        ),
        ParamSpec(
            'min_disparity',
            0.0,
            'smallest valid disparity (px, after the principal-point correction); '
            'smaller values are invalid',
            0.0,
            10000.0,
        ),
        ParamSpec(
            'max_disparity',
            256.0,
            'largest valid disparity (px); also the search range of sgbm',
            1.0,
            10000.0,
        ),
        ParamSpec('min_depth', 0.0, 'point cloud: drop points closer than this (m)', 0.0, 1.0e6),
        ParamSpec(
            'max_depth', 100.0, 'point cloud: drop points farther than this (m, zfar)', 0.0, 1.0e6
        ),
        ParamSpec(
            'depth_encoding',
            '32FC1',
            "depth/image_rect encoding: '32FC1' (metres, NaN invalid, REP 118) or '16UC1' "
            '(millimetres, 0 invalid)',
            choices=DEPTH_ENCODINGS,
        ),
        ParamSpec('use_color', True, 'add packed rgb (from the left image) to points2'),
        ParamSpec(
            'organized_cloud',
            True,
            'points2 as HxW with NaN for invalid points (true) or a dense '
            '1xN list of valid points (false)',
        ),
        ParamSpec(
            'max_input_pixels',
            4096 * 4096,
            'larger image pairs (width x height) are refused as bad '
            'input: bounds the memory one huge frame can take',
            1,
            1 << 30,
        ),
        ParamSpec(
            'confidence_threshold',
            0.0,
            'drop disparity, depth and cloud pixels whose confidence (topic confidence, 0..1) is '
            'below this; 0 = off. Needs a model backend (sgbm gives no confidence)',
            0.0,
            0.999,
        ),
        # --- diagnostics ---
        ParamSpec(
            'expected_rate',
            0.0,
            'expected stereo pair rate (Hz) for diagnostics; 0 disables the rate checks',
            0.0,
            1000.0,
        ),
        ParamSpec(
            'rate_tolerance',
            0.5,
            'diagnostics WARN when a rate is below expected_rate*(1-rate_tolerance)',
            0.0,
            1.0,
        ),
        ParamSpec(
            'stale_age_seconds',
            0.0,
            'diagnostics WARN when outputs are older than this at publish '
            "(p95 of publish time - header stamp, s); 0 = automatic: 3 x the matcher's median "
            'time, at least 0.5 s (a CPU model is not stale for being slow)',
            0.0,
            3600.0,
        ),
        ParamSpec(
            'no_pairs_timeout_seconds',
            5.0,
            'diagnostics ERROR after this long without a synchronized pair (s)',
            0.1,
            3600.0,
        ),
        ParamSpec(
            'diagnostics_period_seconds', 1.0, 'period of /diagnostics messages (s)', 0.05, 60.0
        ),
        ParamSpec(
            'diagnostics_window_seconds',
            5.0,
            'rates, percentiles and bad input are judged over this sliding window (s)',
            0.1,
            3600.0,
        ),
        ParamSpec(
            'log_throttle_seconds',
            5.0,
            'the same bad-input problem is logged at most once per this many seconds (s)',
            0.0,
            3600.0,
        ),
        ParamSpec(
            'max_stamp_jump_seconds',
            10.0,
            'an image stamped more than this ahead of the previous one '
            'on its topic is processed with a WARN but becomes the reference for the "stamps '
            'going '
            'backwards" check only when the next image confirms the new timeline (s)',
            0.001,
            1.0e9,
        ),
        ParamSpec(
            'camera_info_wait_seconds',
            0.1,
            'how long a pair may wait for the camera_info with its '
            'stamp (drivers often publish it just after the image) before the latest camera_info '
            'is used; 0 = always the latest (s)',
            0.0,
            10.0,
        ),
    )
)

SPEC_BY_NAME = {s.name: s for s in SPECS}
PIPELINE_FIELDS = (
    'min_disparity',
    'max_disparity',
    'min_depth',
    'max_depth',
    'depth_encoding',
    'use_color',
    'organized_cloud',
    'max_input_pixels',
    'confidence_threshold',
)


class ParamError(ValueError):
    """A bad start-up configuration; the message names the parameter and a valid value."""


def defaults() -> dict:
    return {s.name: s.default for s in SPECS}


def _type_name(v) -> str:
    return {
        bool: 'a boolean (true/false)',
        int: 'an integer',
        float: 'a double (write 10.0, not 10)',
        str: 'a string',
    }[type(v)]


def validate(values: dict) -> dict:
    """Check types, ranges, choices and cross-parameter rules.

    Returns `values` or raises ParamError listing every problem.
    """
    problems = []
    bad = set()
    for name in values:
        if name not in SPEC_BY_NAME:
            problems.append(f'unknown parameter {name!r}; known: {", ".join(SPEC_BY_NAME)}')
    for s in SPECS:
        if s.name not in values:
            continue
        v = values[s.name]
        if type(v) is not type(s.default) and not (
            isinstance(s.default, float) and type(v) is int
        ):
            problems.append(f'{s.name} must be {_type_name(s.default)}, got {v!r}')
            bad.add(s.name)
            continue
        if s.choices is not None and v not in s.choices:
            problems.append(
                f'{s.name}={v!r} is not supported; choose one of {", ".join(s.choices)}'
            )
        if s.lo is not None and not (s.lo <= v <= s.hi):
            problems.append(f'{s.name}={v!r} is outside [{s.lo:g}, {s.hi:g}]')
    v = {**defaults(), **values}
    if not bad & {'net_width', 'net_height'} and (v['net_width'] > 0) != (v['net_height'] > 0):
        problems.append(
            f'set net_width and net_height together (got {v["net_width"]}x{v["net_height"]}); '
            '0 and 0 = automatic'
        )
    for lo, hi in (('min_depth', 'max_depth'), ('min_disparity', 'max_disparity')):
        if not bad & {lo, hi} and not v[lo] < v[hi]:
            problems.append(f'{lo} ({v[lo]}) must be smaller than {hi} ({v[hi]})')
    if problems:
        raise ParamError('invalid parameters: ' + '; '.join(problems))
    return values


def pipeline_config(values: dict) -> PipelineConfig:
    """Return the PipelineConfig part of the parameters."""
    v = {**defaults(), **values}
    return PipelineConfig(
        **{
            k: (float(v[k]) if isinstance(SPEC_BY_NAME[k].default, float) else v[k])
            for k in PIPELINE_FIELDS
        }
    )


def matcher_options(values: dict) -> dict:
    """Return load_matcher(**options) for the parameters.

    The options are derived from ffs_ros.inference.options.OPTIONS. Raises ParamError for an option
    the chosen backend does not take (e.g. precision without backend tensorrt).
    """
    v = {**defaults(), **values}
    backend = v['backend']
    opts = {}
    if backend in ('sgbm', 'auto'):
        opts['max_disparity'] = int(round(v['max_disparity']))
    if v['net_width'] > 0 and backend != 'sgbm':
        opts['net_size'] = (int(v['net_height']), int(v['net_width']))
    problems = []
    for o in OPTIONS:
        if not o.param or v[o.param] == o.default:
            continue
        if backend == 'sgbm' and 'sgbm' not in o.backends:  # model options mean nothing to sgbm
            continue
        if backend != 'auto' and backend not in o.backends:
            problems.append(
                f'{o.param} applies to backend {" / ".join(o.backends)}, not {backend!r}: set '
                'backend '
                f'accordingly or leave {o.param} at its default'
            )
            continue
        opts[o.name] = v[o.param]
    if problems:
        raise ParamError('invalid parameters: ' + '; '.join(problems))
    return opts


def _descriptor(s: ParamSpec):
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    d = ParameterDescriptor(description=s.description, read_only=True)
    if s.choices is not None:
        d.additional_constraints = 'one of: ' + ', '.join(s.choices)
    if s.lo is not None and isinstance(s.default, float):
        d.floating_point_range = [
            FloatingPointRange(from_value=float(s.lo), to_value=float(s.hi), step=0.0)
        ]
    elif s.lo is not None and isinstance(s.default, int):
        d.integer_range = [IntegerRange(from_value=int(s.lo), to_value=int(s.hi), step=1)]
    return d


def declare(node) -> dict:
    """Declare every parameter on `node` and return the validated values (raises ParamError)."""
    from rclpy.exceptions import ParameterException

    values = {}
    problems = []
    for s in SPECS:
        try:
            values[s.name] = node.declare_parameter(s.name, s.default, _descriptor(s)).value
        except ParameterException as e:  # wrong type or out of range in a params file / override
            problems.append(
                f'{s.name}: {e} (expected {_type_name(s.default)}'
                + (f' in [{s.lo:g}, {s.hi:g}]' if s.lo is not None else '')
                + ')'
            )
    if problems:
        raise ParamError('invalid parameters: ' + '; '.join(problems))
    return validate(values)


YAML_HEADER = """\
# stereo_node parameters (every one listed; descriptions/ranges also via `ros2 param describe`).
# Used by launch/stereo.launch.py and `stereo_node --ros-args --params-file config/stereo.yaml`.
# '/**' applies to the node under any name and namespace (a bare node name under a namespace
# would be silently ignored). Doubles must be written with a decimal point (10.0, not 10).
# Generated from ffs_ros/node/params.py (SPECS): python -m ffs_ros.node.params > config/stereo.yaml
/**:
  ros__parameters:
"""


def render_yaml() -> str:
    """Render config/stereo.yaml from SPECS.

    Every parameter at its default, its description (and range) as comment.
    """
    import textwrap

    def value(v) -> str:
        if isinstance(v, bool):
            return 'true' if v else 'false'
        if isinstance(v, str):
            return repr(v)
        return repr(v)

    lines = [YAML_HEADER.rstrip('\n')]
    for s in SPECS:
        text = s.description
        if s.lo is not None:
            text += f' [{s.lo:g} .. {s.hi:g}]'
        lines += textwrap.wrap(text, 99, initial_indent='    # ', subsequent_indent='    # ')
        lines.append(f'    {s.name}: {value(s.default)}')
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    print(render_yaml(), end='')
