"""The TensorRT backend without TensorRT.

Messages, cache keys, shapes, binding plans, and every API call of the builder and runner against a
stand-in as strict as the real bindings (test/trt_standin.py), with engines that really compute
(their ONNX through ONNX Runtime on the bound buffers).
"""

import json
import types

import numpy as np
import pytest
from test_inference_models import make_two_stage, shifted_pair
import torch
from trt_standin import FakeStream, engine_bytes, make_trt

from ffs_ros.contract import detect_model, graph_input_shapes, read_graph
from ffs_ros.inference import engine_cache, load_matcher
from ffs_ros.inference import tensorrt_build as tb
from ffs_ros.inference import tensorrt_run as tr
from ffs_ros.inference.tensorrt_build import (
    TensorRTUnavailable,
    build_engine,
    ensure_engine,
    import_tensorrt,
)
from ffs_ros.inference.tensorrt_run import (
    EngineLoadError,
    EngineRunner,
    IOTensor,
    binding_plan,
    dtype_name,
)


@pytest.fixture(scope='module')
def export(tmp_path_factory):
    _, _, d = make_two_stage(tmp_path_factory.mktemp('trt'), 64, 128, 32, use_16=False)
    return d


@pytest.fixture(scope='module')
def dynamic_export(tmp_path_factory):
    _, _, d = make_two_stage(tmp_path_factory.mktemp('trtdyn'), 64, 128, 32, dynamic=True)
    return d


def test_missing_tensorrt_names_the_alternatives(export):
    try:
        import tensorrt  # noqa: F401

        pytest.skip('TensorRT is installed here')  # CI and dev machines have none
    except ImportError:
        pass
    with pytest.raises(
        TensorRTUnavailable, match='TensorRT Python package.*use backend onnxruntime'
    ):
        import_tensorrt()
    with pytest.raises(TensorRTUnavailable, match='backend torch .*backend sgbm'):
        load_matcher(export, 'tensorrt')


def test_cache_key_changes_with_every_ingredient(export, tmp_path):
    onnx_p = export / 'post_runner.onnx'
    base = {
        'trt_version': '10.3.0',
        'gpu_name': 'Orin',
        'compute_capability': (8, 7),
        'precision': 'fp16',
        'input_shapes': {'gwc_volume': (1, 8, 8, 16, 32)},
    }
    k0 = engine_cache.make_key(onnx_p, **base)
    assert engine_cache.make_key(onnx_p, **base).digest() == k0.digest()
    variants = [
        {'trt_version': '10.4.0'},
        {'gpu_name': 'RTX 3090'},
        {'compute_capability': (8, 6)},
        {'precision': 'fp32'},
        {'input_shapes': {'gwc_volume': (1, 8, 8, 16, 40)}},
    ]
    digests = {engine_cache.make_key(onnx_p, **{**base, **v}).digest() for v in variants}
    assert k0.digest() not in digests and len(digests) == len(variants)
    other = tmp_path / 'post_runner.onnx'
    other.write_bytes(onnx_p.read_bytes() + b'\0')
    assert engine_cache.make_key(other, **base).digest() != k0.digest()
    with pytest.raises(ValueError, match="precision must be one of fp16, fp32, got 'int8'"):
        engine_cache.make_key(onnx_p, **{**base, 'precision': 'int8'})


def test_cache_location_and_rebuild_rules(export, tmp_path, monkeypatch):
    monkeypatch.delenv('FFS_ROS_ENGINE_CACHE', raising=False)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    assert engine_cache.cache_dir() == tmp_path / 'xdg' / 'ffs_ros' / 'engines'
    monkeypatch.delenv('XDG_CACHE_HOME')
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    assert engine_cache.cache_dir() == tmp_path / 'home' / '.cache' / 'ffs_ros' / 'engines'
    key = engine_cache.make_key(
        export / 'feature_runner.onnx', '10.3', 'gpu', (8, 9), 'fp16', {'left': (1, 3, 64, 128)}
    )
    path = engine_cache.cached_engine_path(export / 'feature_runner.onnx', key, tmp_path / 'c')
    assert path.name.startswith('feature_runner-fp16-') and path.suffix == '.engine'
    assert engine_cache.needs_build(path)
    built = tmp_path / 'built.tmp'
    built.write_bytes(b'bytes')
    engine_cache.install_engine(built, path, key)
    assert not built.exists() and path.read_bytes() == b'bytes'
    assert not engine_cache.needs_build(path) and engine_cache.needs_build(path, force=True)
    assert json.loads(path.with_suffix('.json').read_text())['compute_capability'] == [8, 9]


def test_engine_input_shapes_follow_the_graphs(export, dynamic_export):
    src = detect_model(export)
    post = graph_input_shapes(src, 'post', (64, 128))
    assert 'features_left_16' not in post  # dropped from the graph -> not bound
    assert post['gwc_volume'] == (1, 8, 8, 16, 32) and post['stem_2x'] == (1, 16, 32, 64)
    assert graph_input_shapes(src, 'feature', (64, 128)) == {
        'left': (1, 3, 64, 128),
        'right': (1, 3, 64, 128),
    }
    dyn = detect_model(dynamic_export)
    shapes = graph_input_shapes(dyn, 'post', (96, 160))
    assert shapes['features_left_04'] == (1, 48, 24, 40) and shapes['features_left_32'] == (
        1,
        8,
        3,
        5,
    )
    with pytest.raises(ValueError, match='must be positive multiples of 32'):
        graph_input_shapes(dyn, 'feature', (100, 160))


def test_binding_plan():
    io = [
        IOTensor('left', True, 'float32', (1, 3, -1, -1)),
        IOTensor('gwc_volume', True, 'float16', (1, 8, 8, 16, 32)),
        IOTensor('disp', False, 'float32', (1, 1, -1, -1)),
    ]
    plan = binding_plan(io, {'left': (1, 3, 64, 128), 'gwc_volume': (1, 8, 8, 16, 32)})
    assert plan.set_shapes == {'left': (1, 3, 64, 128)}
    assert plan.inputs['gwc_volume'] == ((1, 8, 8, 16, 32), 'float16') and plan.outputs == (
        'disp',
    )
    with pytest.raises(
        ValueError, match=r"engine input 'gwc_volume' has shape \[1, 8, 8, 16, 32\], cannot take"
    ):
        binding_plan(io, {'left': (1, 3, 64, 128), 'gwc_volume': (1, 8, 12, 16, 32)})
    with pytest.raises(ValueError, match="engine input 'gwc_volume' .* has no value"):
        binding_plan(io, {'left': (1, 3, 64, 128)})
    with pytest.raises(
        ValueError, match=r"tensors \['features_left_16'\] are not inputs of the engine"
    ):
        binding_plan(
            io,
            {'left': (1, 3, 64, 128), 'gwc_volume': (1, 8, 8, 16, 32), 'features_left_16': (1,)},
        )


# -- against the strict stand-in ------------------------------------------------------------------


@pytest.fixture
def fake_gpu(monkeypatch):
    """Engines 'on' the CPU.

    The GPU identity for cache keys, and CPU devices accepted by the TensorRT graphs.
    """
    monkeypatch.setattr(tb, 'gpu_identity', lambda device=None: ('FakeGPU', (8, 9)))
    monkeypatch.setattr(tr, '_require_cuda', lambda device: None)


def trt_matcher(model_dir, trt, tmp_path, **options):
    from ffs_ros.inference.network import NetworkMatcher

    src = detect_model(model_dir)
    common = {k: options.pop(k) for k in ('resize_mode', 'net_size') if k in options}
    graphs = tr.tensorrt_graphs(
        src,
        device='cpu',
        trt=trt,
        stream=FakeStream(),
        engine_cache_dir=tmp_path / 'cache',
        **options,
    )
    return NetworkMatcher(src, graphs, **common)


@pytest.fixture(scope='module')
def random_export(tmp_path_factory):
    _, _, d = make_two_stage(
        tmp_path_factory.mktemp('trtrand'), 64, 128, 32, use_16=False, random=True
    )
    return d


def test_whole_matcher_on_the_standin_gives_the_onnxruntime_result(
    random_export, tmp_path, fake_gpu
):
    """The engine path on the stand-in gives the ONNX Runtime result, on our stream and device.

    Engine cache, buffer planning and sharing, the volume written into the post engine's fp16
    input, letterbox: together they give the ONNX Runtime result; every enqueue is on the matcher's
    own (non-default) stream and every engine call happens inside the matcher's device scope
    (defects 1, 7, 13).
    """
    trt = make_trt('10.3.0')
    m = trt_matcher(random_export, trt, tmp_path)
    left, right = shifted_pair(60, 120, 8, seed=3)  # padded onto 64x128
    out = m(left, right)
    ref = load_matcher(random_export, 'onnxruntime')(left, right)
    np.testing.assert_allclose(out, ref, atol=0.05, equal_nan=True)
    rec = trt.rec
    assert (
        len(rec['builds']) == 2
        and [e[1] for e in rec['executions']] == [FakeStream.cuda_stream] * 2
    )
    assert {what for what, _ in rec['scopes']} >= {
        'parse',
        'build',
        'deserialize',
        'context',
        'execute',
    }
    assert all(dev is m.device for _, dev in rec['scopes']), rec['scopes']
    assert sorted(p.name.split('-')[0] for p in (tmp_path / 'cache').glob('*.engine')) == [
        'feature_runner',
        'post_runner',
    ]
    feature, post = m.graphs.graphs['feature'], m.graphs.graphs['post']
    f_bufs, p_bufs = feature._sized[(64, 128)][1], post._sized[(64, 128)][1]
    assert (
        'features_left_16' in f_bufs and 'features_left_16' not in p_bufs
    )  # dropped input: never bound
    assert p_bufs['features_left_08'] is f_bufs['features_left_08']  # shared, no copy
    assert m._sized[(64, 128)].volume is p_bufs['gwc_volume']  # volume written in place ...
    assert p_bufs['gwc_volume'].dtype == torch.float16  # ... in the engine's dtype
    assert set(m.last_timings) == {'preprocess', 'feature', 'gwc', 'post', 'postprocess'}
    # one activation block shared by both contexts (USER_MANAGED), the larger need of the two
    assert {c.strategy.name for c in rec['contexts']} == {'USER_MANAGED'}
    need = {c.engine.role: c.update_device_memory_size_for_shapes() for c in rec['contexts']}
    assert len(set(need.values())) == 2  # post needs more than feature
    assert len(rec['device_memory']) == 2 and len({ptr for _, ptr, _ in rec['device_memory']}) == 1
    assert {size for _, _, size in rec['device_memory']} == {
        max(need.values())
    }  # max(need), not the sum
    # one logger everywhere, plugins registered once before the first parse
    assert len({id(lg) for lg in rec['loggers']}) == 1 and rec['plugin_init_calls'] == 1
    m2 = trt_matcher(random_export, trt, tmp_path)
    m2(left, right)
    assert len(rec['builds']) == 2  # cached engines reused
    assert len({id(lg) for lg in rec['loggers']}) == 1 and rec['plugin_init_calls'] == 1


def test_the_standin_refuses_the_default_stream(random_export, tmp_path, fake_gpu):
    """What the old code did (enqueue on torch's current stream = stream 0) fails loudly here."""
    trt = make_trt('10.3.0')
    m = trt_matcher(random_export, trt, tmp_path)
    m.prepare((64, 128))
    runner = m.graphs.graphs['feature']._sized[(64, 128)][0]
    with pytest.raises(RuntimeError, match='must not be enqueued on the CUDA default stream'):
        runner.run(0)
    assert not runner.context.execute_async_v3(0)


def test_prepare_builds_the_engines_before_the_first_frame(random_export, tmp_path, fake_gpu):
    trt = make_trt('10.3.0')
    m = trt_matcher(random_export, trt, tmp_path)
    m.prepare((60, 120))  # the camera's size: the network size 64x128 follows from it
    assert len(trt.rec['builds']) == 2 and not trt.rec['executions']
    m(*shifted_pair(60, 120, 8, seed=1))
    assert len(trt.rec['builds']) == 2


def test_tensorrt_11_builds_strongly_typed_from_an_fp16_onnx(export, tmp_path, fake_gpu):
    """TensorRT 11 has no BuilderFlag.FP16 (defect 2).

    fp16 = strongly typed network from an fp16 copy of the ONNX with fp32 inputs/outputs, cached;
    fp32 builds the original; 10.3 keeps the FP16 flag on a weakly typed net.
    """
    onnx_p = export / 'feature_runner.onnx'
    shapes = {'left': (1, 3, 64, 128), 'right': (1, 3, 64, 128)}
    trt11 = make_trt('11.1.0')
    assert not hasattr(trt11.BuilderFlag, 'FP16')
    build_engine(onnx_p, tmp_path / 'a.engine', shapes, 'fp16', trt=trt11, cache=tmp_path / 'c')
    b = trt11.rec['builds'][-1]
    assert b['flags'] == [] and b['network_flags'] == 1 << 0  # STRONGLY_TYPED is bit 0 on 11.x
    g = read_graph(b['path'])
    assert b['path'] != str(onnx_p) and [t.dtype for t in g.inputs] == [np.float32, np.float32]
    import onnx

    inits = onnx.load(b['path']).graph.initializer
    assert inits and all(
        t.data_type == onnx.TensorProto.FLOAT16 for t in inits if t.data_type in (1, 10)
    )
    build_engine(onnx_p, tmp_path / 'b.engine', shapes, 'fp16', trt=trt11, cache=tmp_path / 'c')
    assert trt11.rec['builds'][-1]['path'] == b['path']  # the conversion is cached
    build_engine(onnx_p, tmp_path / 'c.engine', shapes, 'fp32', trt=trt11, cache=tmp_path / 'c')
    assert trt11.rec['builds'][-1]['path'] == str(onnx_p)
    trt10 = make_trt('10.3.0')
    build_engine(
        onnx_p, tmp_path / 'd.engine', shapes, 'fp16', workspace_gb=2, opt_level=5, trt=trt10
    )
    b = trt10.rec['builds'][-1]
    assert (
        b['flags'] == [trt10.BuilderFlag.FP16]
        and b['network_flags'] == 0
        and b['path'] == str(onnx_p)
    )
    assert b['pool'] == {'WORKSPACE': 2 << 30} and b['opt_level'] == 5


def test_dynamic_inputs_get_one_exact_profile(dynamic_export, tmp_path):
    trt = make_trt('10.3.0')
    shapes = {'left': (1, 3, 64, 128), 'right': (1, 3, 64, 128)}
    build_engine(
        dynamic_export / 'feature_runner.onnx', tmp_path / 'f.engine', shapes, 'fp32', trt=trt
    )
    assert trt.rec['builds'][-1]['profiles'] == [{n: (s, s, s) for n, s in shapes.items()}]


def test_a_failed_build_is_one_clear_error(export, tmp_path, fake_gpu):
    trt = make_trt('10.3.0', fail_build=True)
    with pytest.raises(
        tb.EngineBuildError,
        match=r'TensorRT 10\.3\.0 failed to build an engine from .*precision '
        r'fp32',
    ):
        ensure_engine(
            export / 'feature_runner.onnx',
            {'left': (1, 3, 64, 128), 'right': (1, 3, 64, 128)},
            cache=tmp_path / 'c',
            trt=trt,
        )
    assert not list((tmp_path / 'c').glob('*.building*'))  # no temporary left behind


def test_build_engine_cli_turns_every_failure_into_one_line(
    export, tmp_path, monkeypatch, capsys, fake_gpu
):
    from ffs_ros.cli import main

    monkeypatch.setattr(tb, 'import_tensorrt', lambda *a: make_trt('10.3.0', fail_build=True))
    assert main(['build-engine', '--model', str(export), '--cache-dir', str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        'ffs-ros build-engine: error: TensorRT 10.3.0 failed to build'
    )

    def broken(*a):  # e.g. an API this TensorRT lacks
        raise AttributeError("type object 'tensorrt.BuilderFlag' has no attribute 'FP16'")

    monkeypatch.setattr(tb, 'import_tensorrt', broken)
    assert main(['build-engine', '--model', str(export)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "ffs-ros build-engine: error: AttributeError: type object 'tensorrt.BuilderFlag' has no "
        "attribute 'FP16'"
    ]
    monkeypatch.setattr(tb, 'import_tensorrt', lambda *a: make_trt('11.1.0'))
    assert main(['build-engine', '--model', str(export), '--cache-dir', str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert 'feature: ' in out and 'post: ' in out


def test_a_stale_prebuilt_engine_warns_once_and_falls_back_to_the_cache(
    random_export, tmp_path, fake_gpu, caplog
):
    """An engine beside the ONNX built by another TensorRT (defect 3).

    It must not send the user into a rebuild loop.
    """
    import shutil

    d = tmp_path / 'model'
    shutil.copytree(random_export, d)
    for role in ('feature_runner', 'post_runner'):
        (d / f'{role}.engine').write_bytes(
            engine_bytes(d / f'{role}.onnx', '8.6.2')
        )  # e.g. JetPack 6.0
    trt = make_trt('10.3.0')
    tr._WARNED.clear()
    with caplog.at_level('WARNING', logger='ffs_ros.tensorrt'):
        m = trt_matcher(d, trt, tmp_path)
        out = m(*shifted_pair(64, 128, 8, seed=2))
        trt_matcher(d, trt, tmp_path)(*shifted_pair(64, 128, 8, seed=2))
    warnings = [r.getMessage() for r in caplog.records if 'prebuilt engine' in r.getMessage()]
    assert len(warnings) == 2  # once per file, not per matcher or frame
    assert 'feature_runner.engine is not usable with TensorRT 10.3.0' in warnings[0]
    assert np.isfinite(out).mean() > 0.5 and len(trt.rec['builds']) == 2
    # a prebuilt engine of this TensorRT is used as it is (no build)
    for role in ('feature_runner', 'post_runner'):
        (d / f'{role}.engine').write_bytes(engine_bytes(d / f'{role}.onnx', '10.3.0'))
    trt2 = make_trt('10.3.0')
    trt_matcher(d, trt2, tmp_path / 'other')(*shifted_pair(64, 128, 8, seed=2))
    assert trt2.rec['builds'] == []


def test_engine_runner_checks_what_tensorrt_reports_by_return_value(export, tmp_path, fake_gpu):
    """None contexts, refused addresses and vectorised formats become clear errors (defect 6)."""
    from ffs_ros.inference.device import Device

    onnx_p = export / 'feature_runner.onnx'
    eng = tmp_path / 'f.engine'
    eng.write_bytes(engine_bytes(onnx_p, '10.3.0'))
    dev = Device('cpu')
    trt = make_trt('10.3.0', fail_context=True)
    tb.init_tensorrt(trt)
    with pytest.raises(
        RuntimeError, match='could not create an execution context .*out of GPU memory'
    ):
        EngineRunner(eng, trt, tr.SharedActivationMemory(dev))
    trt = make_trt('10.3.0', non_linear='left')
    tb.init_tensorrt(trt)
    with pytest.raises(
        EngineLoadError, match="tensor 'left' uses the 'Thirty-two wide .* layout.*linear"
    ):
        EngineRunner(eng, trt)
    trt = make_trt('10.3.0', reject_address='stem_2x')
    tb.init_tensorrt(trt)
    r = EngineRunner(eng, trt)
    outs = r.prepare({'left': (1, 3, 64, 128), 'right': (1, 3, 64, 128)})
    bufs = {'left': torch.zeros(1, 3, 64, 128), 'right': torch.zeros(1, 3, 64, 128)}
    bufs.update({n: torch.zeros(s) for n, (s, _) in outs.items()})
    with pytest.raises(RuntimeError, match="refused the address of 'stem_2x'"):
        r.bind(bufs)
    with pytest.raises(
        ValueError, match="buffer for 'right' is torch.float16, the engine wants float32"
    ):
        r.bind({**bufs, 'right': bufs['right'].half()})
    eng.write_bytes(b'junk')
    with pytest.raises(EngineLoadError, match=r'cannot be loaded by TensorRT 10\.3\.0'):
        EngineRunner(eng, trt)
    assert dtype_name(types.SimpleNamespace(name='HALF')) == 'float16'
    assert np.dtype(dtype_name(types.SimpleNamespace(name='INT32'))) == np.int32


def test_one_logger_routed_to_python_logging(caplog):
    trt = make_trt('11.1.0')
    lg = tb.trt_logger(trt)
    assert tb.trt_logger(trt) is lg and tb.trt_runtime(trt) is tb.trt_runtime(trt)
    with caplog.at_level('WARNING', logger='ffs_ros.tensorrt'):
        lg.log(trt.ILogger.Severity.ERROR, 'engine deserialization failed')
    assert (
        caplog.records[-1].levelname == 'ERROR'
        and 'TensorRT: engine deserialization failed' in caplog.text
    )


def make_plugin_export(path):
    """Write a tiny single-graph export with an FFSGWCVolume node.

    As the fork's make_plugin_onnx writes it.
    """
    import onnx
    from onnx import TensorProto, helper

    left = helper.make_tensor_value_info('left', TensorProto.FLOAT, [1, 3, 64, 128])
    right = helper.make_tensor_value_info('right', TensorProto.FLOAT, [1, 3, 64, 128])
    disp = helper.make_tensor_value_info('disp', TensorProto.FLOAT, [1, 1, 64, 128])
    nodes = [
        helper.make_node(
            'FFSGWCVolume', ['left', 'right'], ['vol'], max_disp=8, cv_group=1, normalize=1
        ),
        helper.make_node('ReduceMean', ['vol'], ['disp'], axes=[1], keepdims=1),
    ]
    graph = helper.make_graph(nodes, 'ffs_plugin', [left, right], [disp])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)]), str(path))
    return path


def test_plugin_export_is_its_own_contract_and_needs_its_library(tmp_path, monkeypatch, fake_gpu):
    """Defect 4: the FFSGWCVolume export is its own contract and needs its library.

    The export is recognised, refused by ONNX Runtime, and on TensorRT needs plugin_library, which
    is loaded (RTLD_GLOBAL) before init_libnvinfer_plugins and any parse.
    """
    p = make_plugin_export(tmp_path / 'ffs_plugin.onnx')
    src = detect_model(p)
    assert src.kind == 'plugin' and src.network_size == (64, 128) and src.roles == ('single',)
    with pytest.raises(ValueError, match='needs TensorRT with its plugin library'):
        load_matcher(p, 'onnxruntime')
    trt = make_trt('10.3.0')
    with pytest.raises(
        ValueError, match="uses the TensorRT plugin 'FFSGWCVolume' .* no plugin_library was given"
    ):
        tr.tensorrt_graphs(src, device='cpu', trt=trt, stream=FakeStream())
    lib = tmp_path / 'libffs_gwc_plugin.so'
    lib.write_bytes(b'')
    loaded = []

    def fake_cdll(path, mode=0):
        loaded.append((path, mode))
        trt.rec['creators'].add(('FFSGWCVolume', '1', ''))  # REGISTER_TENSORRT_PLUGIN at load time
        return object()

    monkeypatch.setattr(tb.ctypes, 'CDLL', fake_cdll)
    graphs = tr.tensorrt_graphs(
        src, device='cpu', trt=trt, stream=FakeStream(), plugin_library=str(lib)
    )
    assert loaded == [(str(lib), tb.ctypes.RTLD_GLOBAL)] and graphs.details[
        'plugin_library'
    ] == str(lib)
    tr.tensorrt_graphs(src, device='cpu', trt=trt, stream=FakeStream(), plugin_library=str(lib))
    assert len(loaded) == 1  # each library once per process
    with pytest.raises(ValueError, match='plugin_library .*missing.so does not exist'):
        tb.init_tensorrt(trt, str(tmp_path / 'missing.so'))


def test_engine_temporaries_are_unique_per_builder(export, tmp_path, monkeypatch, fake_gpu):
    """Two nodes starting together never write the same temporary (defect 11).

    Each build writes its own file, then one atomic rename.
    """
    import threading

    trt = make_trt('10.3.0')
    seen = []
    real = tb.build_engine

    def recording(onnx_path, out_path, *a, **k):
        seen.append(str(out_path))
        return real(onnx_path, out_path, *a, **k)

    monkeypatch.setattr(tb, 'build_engine', recording)
    shapes = {'left': (1, 3, 64, 128), 'right': (1, 3, 64, 128)}
    results = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                ensure_engine(
                    export / 'feature_runner.onnx',
                    shapes,
                    cache=tmp_path / 'c',
                    trt=trt,
                    force=True,
                )
            )
        )
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 2 and all(f'building-{__import__("os").getpid()}-' in s for s in seen)
    assert len(set(results)) == 1 and results[0].read_bytes().startswith(b'ENGINE')
    assert not list((tmp_path / 'c').glob('*.building*'))
    assert list(
        (tmp_path / 'c').glob('timing-*.cache')
    )  # the timing cache is kept beside the engines



def test_confidence_through_the_engine_path(random_export, tmp_path, fake_gpu):
    """Both confidence sources on the device path match the ONNX Runtime host path.

    Our export's own `confidence` output comes out of the post engine; a post graph without one
    gets the feature confidence computed on the device from the volume the engine reads.
    """
    from test_export import TINY

    from ffs_ros.model import build_model
    from ffs_ros.model.export import export_two_stage

    torch.manual_seed(0)
    own = export_two_stage(build_model(TINY).eval(), tmp_path / 'own', 64, 128)
    left, right = shifted_pair(64, 128, 6, seed=4)
    for model, source in ((own, 'network'), (random_export, 'features')):
        m = trt_matcher(model, make_trt('10.3.0'), tmp_path / source)
        assert m.info.confidence == source
        got = m.match_full(left, right)
        ref = load_matcher(model, 'onnxruntime').match_full(left, right)
        np.testing.assert_allclose(got.disparity, ref.disparity, atol=0.05, equal_nan=True)
        np.testing.assert_allclose(got.confidence, ref.confidence, atol=0.02, equal_nan=True)
        assert np.isfinite(got.confidence).any()
