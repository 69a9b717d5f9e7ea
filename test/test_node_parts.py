"""Node building blocks without DDS: latest-pair-wins worker, diagnostics levels, parameters."""

import threading

import pytest

from ffs_ros.node import params as P
from ffs_ros.node.diagnostics import ERROR, OK, WARN, HealthConfig, NodeHealth, to_msg
from ffs_ros.node.worker import LatestWorker


# ---------------- worker ----------------
def test_worker_latest_wins_and_counts_drops():
    gate = threading.Event()
    started = threading.Event()
    seen = []

    def process(item):
        seen.append(item)
        started.set()
        gate.wait(5)

    w = LatestWorker(process)
    try:
        assert w.submit(0) is False
        assert started.wait(5)  # worker busy with 0
        replaced = [w.submit(i) for i in range(1, 6)]  # 1..4 are replaced by their successor
        assert replaced == [False, True, True, True, True]
        gate.set()
        assert w.wait_idle(5)
        assert seen == [0, 5]
        assert (w.submitted, w.processed, w.dropped) == (6, 2, 4)
    finally:
        gate.set()
        assert w.stop(5)


def test_worker_survives_exceptions_and_reports_them():
    errors = []
    done = []

    def process(item):
        if item == 'bad':
            raise RuntimeError('boom')
        done.append(item)

    w = LatestWorker(process, on_error=lambda e, item: errors.append((str(e), item)))
    try:
        w.submit('bad')
        assert w.wait_idle(5)
        w.submit('good')
        assert w.wait_idle(5)
        assert errors == [('boom', 'bad')] and done == ['good'] and w.failed == 1
    finally:
        assert w.stop(5)


def test_worker_submit_never_blocks_while_processing():
    gate = threading.Event()
    w = LatestWorker(lambda item: gate.wait(5))
    try:
        import time

        w.submit(1)
        t0 = time.perf_counter()
        for i in range(1000):
            w.submit(i)
        assert time.perf_counter() - t0 < 0.5
    finally:
        gate.set()
        assert w.stop(5)


# ---------------- diagnostics ----------------
class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def health(**kw):
    clock = FakeClock()
    cfg = HealthConfig(node_name='stereo', **kw)
    return NodeHealth(cfg, clock=clock), clock


def by_name(statuses):
    return {s.name.split(': ')[1]: s for s in statuses}


def test_diagnostics_ok_with_stage_percentiles_and_names():
    h, clock = health(expected_rate=10.0, window=5.0)
    h.model_values = {'backend': 'sgbm', 'device': 'cpu'}
    for i in range(50):
        clock.t += 0.1
        h.pair_received()
        h.published(
            {'convert': 1.0, 'match': 10.0 + (i % 10), 'depth': 0.5},
            age_s=0.02,
            resolution=(480, 640),
        )
    st = by_name(h.report(sync_failures=3, dropped=2))
    assert [s.name for s in h.report()] == ['stereo: input', 'stereo: processing', 'stereo: model']
    assert st['input'].level == OK and float(
        st['input'].values['pair rate (Hz)']
    ) == pytest.approx(10.0, rel=0.05)
    assert (
        st['input'].values['sync failures'] == '3'
        and st['input'].values['dropped (worker busy)'] == '2'
    )
    proc = st['processing']
    assert proc.level == OK
    assert float(proc.values['match p50 (ms)']) == pytest.approx(14.5, abs=0.6)
    assert float(proc.values['match p95 (ms)']) == pytest.approx(19.0, abs=0.6)
    assert float(proc.values['age p50 (ms)']) == pytest.approx(20.0)
    assert (
        st['model'].values['backend'] == 'sgbm'
        and st['model'].values['input resolution'] == '640x480'
    )


def test_diagnostics_error_when_no_pairs_and_after_bad_input():
    h, clock = health(no_pairs_timeout=3.0, window=2.0)
    clock.t += 4.0
    inp = by_name(h.report())['input']
    assert inp.level == ERROR and 'no synchronized pairs' in inp.message
    h.pair_received()
    assert by_name(h.report())['input'].level == OK
    h.bad_input('left and right images differ in size')
    inp = by_name(h.report())['input']
    assert inp.level == ERROR and 'differ in size' in inp.message
    clock.t += 2.5  # the bad input leaves the window; pairs keep coming
    h.pair_received()
    assert by_name(h.report())['input'].level == OK


def test_diagnostics_warn_slow_and_stale():
    h, clock = health(expected_rate=30.0, window=5.0, stale_age=0.2)
    for _ in range(10):  # 2 Hz pairs and outputs, while 30 Hz are expected
        clock.t += 0.5
        h.pair_received()
        h.published({'match': 400.0}, age_s=0.45)
    st = by_name(h.report())
    assert st['input'].level == WARN and 'below expected' in st['input'].message
    assert st['processing'].level == WARN and 'slow' in st['processing'].message
    h2, clock2 = health(expected_rate=0.0, stale_age=0.2)
    clock2.t += 0.1
    h2.pair_received()
    h2.published({'match': 1.0}, age_s=0.9)
    proc = by_name(h2.report())['processing']
    assert proc.level == WARN and 'stale' in proc.message


def test_diagnostics_to_msg():
    h, _ = health()
    arr = to_msg(h.report())
    assert len(arr.status) == 3 and arr.status[0].name == 'stereo: input'
    assert all(isinstance(kv.value, str) for kv in arr.status[1].values)


# ---------------- parameters ----------------
def test_params_defaults_are_valid_and_map_to_pipeline_config():
    v = P.validate(P.defaults())
    cfg = P.pipeline_config(v)
    assert cfg.max_depth == v['max_depth'] and cfg.depth_encoding == '32FC1'
    assert v['input_qos'] == 'sensor_data' and v['output_qos'] == 'reliable'
    assert v['backend'] == P.DEFAULT_BACKEND


@pytest.mark.parametrize(
    'bad, words',
    [
        ({'backend': 'cuda-magic'}, ['backend', 'sgbm']),
        ({'min_depth': 5.0, 'max_depth': 1.0}, ['min_depth', 'max_depth']),
        ({'min_disparity': 50.0, 'max_disparity': 10.0}, ['min_disparity']),
        ({'depth_encoding': '8UC1'}, ['depth_encoding', '16UC1']),
        ({'queue_size': 0}, ['queue_size', '[1, 100]']),
        ({'input_qos': 'fast'}, ['input_qos', 'sensor_data']),
        ({'use_color': 'yes'}, ['use_color', 'boolean']),
        ({'approximate_synk': True}, ['unknown parameter', 'approximate_synk']),
    ],
)
def test_params_bad_values_name_the_parameter_and_a_fix(bad, words):
    with pytest.raises(P.ParamError) as e:
        P.validate({**P.defaults(), **bad})
    for w in words:
        assert w in str(e.value)


def test_every_spec_has_a_description_and_a_consistent_range():
    for s in P.SPECS:
        assert len(s.description) > 15, s.name
        if s.lo is not None:
            assert s.lo <= s.default <= s.hi, s.name
        if s.choices is not None:
            assert s.default in s.choices, s.name


def test_stereo_yaml_lists_every_parameter_with_a_comment():
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parent.parent / 'config' / 'stereo.yaml'
    doc = yaml.safe_load(path.read_text())
    assert list(doc) == ['/**']  # a bare node name under a namespace would be silently ignored
    values = doc['/**']['ros__parameters']
    assert list(values) == [s.name for s in P.SPECS]
    P.validate(values)
    for (
        s
    ) in P.SPECS:  # floats written as floats (an int for a double parameter is rejected by rclpy)
        assert type(values[s.name]) is type(s.default), s.name
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith('    ') and not line.strip().startswith('#'):
            assert lines[i - 1].strip().startswith('#'), f'no comment above {line.strip()}'


def test_matcher_options_pass_only_what_the_backend_takes():
    base = P.defaults()
    assert P.matcher_options({**base, 'backend': 'sgbm', 'max_disparity': 100.0}) == {
        'max_disparity': 100
    }
    opts = P.matcher_options(
        {
            **base,
            'backend': 'onnxruntime',
            'threads': 2,
            'net_width': 640,
            'net_height': 480,
            'resize_mode': 'stretch',
        }
    )
    assert opts == {
        'threads': 2,
        'net_size': (480, 640),
        'resize_mode': 'stretch',
    }  # max_disparity: sgbm's
    assert (
        P.matcher_options(
            {**base, 'backend': 'tensorrt', 'precision': 'fp32', 'force_engine_update': True}
        )['precision']
        == 'fp32'
    )
    with pytest.raises(P.ParamError, match='precision applies to backend tensorrt'):
        P.matcher_options({**base, 'backend': 'onnxruntime', 'precision': 'fp32'})
    with pytest.raises(P.ParamError, match='net_width and net_height together'):
        P.validate({**base, 'net_width': 640})


def test_stereo_yaml_is_generated_from_the_parameter_table():
    """config/stereo.yaml cannot drift from SPECS.

    Regenerate: python -m ffs_ros.node.params > config/stereo.yaml.
    """
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / 'config' / 'stereo.yaml'
    assert path.read_text() == P.render_yaml()


def test_matcher_parameters_come_from_the_backend_option_table():
    """Every backend option with a node parameter is a parameter.

    A parameter for another backend is refused, and parameters left at their default are not passed
    (the backend's own default applies).
    """
    from ffs_ros.inference.options import OPTIONS

    names = {s.name for s in P.SPECS}
    assert {o.param for o in OPTIONS if o.param} <= names
    assert P.matcher_options({'backend': 'tensorrt'}) == {}
    opts = P.matcher_options(
        {
            'backend': 'tensorrt',
            'plugin_library': '/x/libffs_gwc_plugin.so',
            'cuda_graph': True,
            'precision': 'fp32',
        }
    )
    assert opts == {
        'plugin_library': '/x/libffs_gwc_plugin.so',
        'cuda_graph': True,
        'precision': 'fp32',
    }
    assert P.matcher_options({'backend': 'sgbm', 'max_disparity': 64.0}) == {'max_disparity': 64}
    with pytest.raises(
        P.ParamError, match="plugin_library applies to backend tensorrt, not 'onnxruntime'"
    ):
        P.matcher_options({'backend': 'onnxruntime', 'plugin_library': '/x.so'})


def test_shm_profile_is_named_for_both_fast_dds_generations():
    """Set FASTDDS_... always, FASTRTPS_... too on Fast DDS 2.x distros (Humble, Jazzy)."""
    from ffs_ros.node.transport import shm_profile_path, use_shm_profile
    path = str(shm_profile_path())
    env = {}
    assert use_shm_profile(env) == path
    # the wheels: Fast DDS 3.x, which warns about the old FASTRTPS_ name
    assert env == {'FASTDDS_DEFAULT_PROFILES_FILE': path}
    env = {'ROS_DISTRO': 'jazzy'}
    use_shm_profile(env)
    assert env['FASTDDS_DEFAULT_PROFILES_FILE'] == env['FASTRTPS_DEFAULT_PROFILES_FILE'] == path
    mine = {'ROS_DISTRO': 'humble', 'FASTRTPS_DEFAULT_PROFILES_FILE': '/robot/profile.xml'}
    assert use_shm_profile(mine) == '/robot/profile.xml'               # a user's own profile wins
    assert mine['FASTDDS_DEFAULT_PROFILES_FILE'] == '/robot/profile.xml'



def test_stale_limit_follows_the_matcher_by_default():
    """Judge staleness against the matcher's own time by default (stale_age_seconds 0, issue 14.6).

    A 900 ms CPU model publishing 1 s old outputs is not stale; outputs that waited behind it are.
    """
    for age, stale in ((1.0, False), (3.5, True)):
        h, clock = health(expected_rate=0.0, stale_age=0.0)
        clock.t += 0.1
        h.pair_received()
        h.published({'match': 900.0}, age_s=age)
        proc = by_name(h.report())['processing']
        assert (proc.level == WARN and 'stale' in proc.message) is stale, proc.message
        if stale:
            assert '> 2700 ms' in proc.message
