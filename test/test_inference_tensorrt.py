"""TensorRT backend parts that need no TensorRT: messages, cache keys, shapes, binding plans, and the API calls
made by the builder and runner (against a minimal stand-in of the documented `tensorrt` module)."""
import json
import types

import numpy as np
import pytest
import torch

from ffs_ros.inference import engine_cache, load_matcher
from ffs_ros.inference.contracts import detect_model, read_graph
from ffs_ros.inference.tensorrt_backend import (EngineRunner, IOTensor, TensorRTUnavailable, binding_plan,
                                                build_engine, dtype_name, engine_input_shapes, ensure_engine,
                                                import_tensorrt)
from test_inference_models import make_two_stage


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
    with pytest.raises(TensorRTUnavailable, match='TensorRT Python package.*use backend onnxruntime'):
        import_tensorrt()
    with pytest.raises(TensorRTUnavailable, match='backend torch .*backend sgbm'):
        load_matcher(export, 'tensorrt')


def test_cache_key_changes_with_every_ingredient(export, tmp_path):
    onnx_p = export / 'post_runner.onnx'
    base = dict(trt_version='10.3.0', gpu_name='Orin', compute_capability=(8, 7), precision='fp16',
                input_shapes={'gwc_volume': (1, 8, 8, 16, 32)})
    k0 = engine_cache.make_key(onnx_p, **base)
    assert engine_cache.make_key(onnx_p, **base).digest() == k0.digest()
    variants = [dict(trt_version='10.4.0'), dict(gpu_name='RTX 3090'), dict(compute_capability=(8, 6)),
                dict(precision='fp32'), dict(input_shapes={'gwc_volume': (1, 8, 8, 16, 40)})]
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
    key = engine_cache.make_key(export / 'feature_runner.onnx', '10.3', 'gpu', (8, 9), 'fp16',
                                {'left': (1, 3, 64, 128)})
    path = engine_cache.cached_engine_path(export / 'feature_runner.onnx', key, tmp_path / 'c')
    assert path.name.startswith('feature_runner-fp16-') and path.suffix == '.engine'
    assert engine_cache.needs_build(path)
    engine_cache.write_engine(path, b'bytes', key)
    assert not engine_cache.needs_build(path) and engine_cache.needs_build(path, force=True)
    assert json.loads(path.with_suffix('.json').read_text())['compute_capability'] == [8, 9]


def test_engine_input_shapes_follow_the_graphs(export, dynamic_export):
    src = detect_model(export)
    post = engine_input_shapes(src, 'post', (64, 128))
    assert 'features_left_16' not in post                      # dropped from the graph -> not bound
    assert post['gwc_volume'] == (1, 8, 8, 16, 32) and post['stem_2x'] == (1, 16, 32, 64)
    assert engine_input_shapes(src, 'feature', (64, 128)) == {'left': (1, 3, 64, 128), 'right': (1, 3, 64, 128)}
    dyn = detect_model(dynamic_export)
    shapes = engine_input_shapes(dyn, 'post', (96, 160))
    assert shapes['features_left_04'] == (1, 48, 24, 40) and shapes['features_left_32'] == (1, 8, 3, 5)
    with pytest.raises(ValueError, match='must be multiples of 32'):
        engine_input_shapes(dyn, 'feature', (100, 160))


def test_binding_plan():
    io = [IOTensor('left', True, 'float32', (1, 3, -1, -1)), IOTensor('gwc_volume', True, 'float16', (1, 8, 8, 16, 32)),
          IOTensor('disp', False, 'float32', (1, 1, -1, -1))]
    plan = binding_plan(io, {'left': (1, 3, 64, 128), 'gwc_volume': (1, 8, 8, 16, 32)})
    assert plan.set_shapes == {'left': (1, 3, 64, 128)}
    assert plan.inputs['gwc_volume'] == ((1, 8, 8, 16, 32), 'float16') and plan.outputs == ('disp',)
    with pytest.raises(ValueError, match=r"engine input 'gwc_volume' has shape \[1, 8, 8, 16, 32\], cannot take"):
        binding_plan(io, {'left': (1, 3, 64, 128), 'gwc_volume': (1, 8, 12, 16, 32)})
    with pytest.raises(ValueError, match="engine input 'gwc_volume' .* has no value"):
        binding_plan(io, {'left': (1, 3, 64, 128)})
    with pytest.raises(ValueError, match=r"tensors \['features_left_16'\] are not inputs of the engine"):
        binding_plan(io, {'left': (1, 3, 64, 128), 'gwc_volume': (1, 8, 8, 16, 32), 'features_left_16': (1,)})


# -- a stand-in for the documented tensorrt module, recording the calls ------------------------------------------

def fake_trt(calls):
    trt = types.SimpleNamespace(__version__='10.3.0')
    trt.Logger = type('Logger', (), {'WARNING': 2, '__init__': lambda self, level=2: None})
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE='WORKSPACE')
    trt.BuilderFlag = types.SimpleNamespace(FP16='FP16')
    trt.TensorIOMode = types.SimpleNamespace(INPUT='INPUT', OUTPUT='OUTPUT')
    dt = {'float32': types.SimpleNamespace(name='FLOAT'), 'float16': types.SimpleNamespace(name='HALF')}

    class Network:
        def __init__(self):
            self.inputs = []

        num_inputs = property(lambda self: len(self.inputs))

        def get_input(self, i):
            return self.inputs[i]

    class Parser:
        def __init__(self, network, logger):
            self.network, self.num_errors = network, 0

        def parse_from_file(self, path):
            g = read_graph(path)
            self.network.inputs = [types.SimpleNamespace(name=t.name, shape=tuple(d if isinstance(d, int) else -1
                                                                                  for d in t.shape))
                                   for t in g.inputs]
            return True

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            calls.setdefault('profile', {})[name] = (lo, opt, hi)

    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls['workspace'] = (pool, size)

        def set_flag(self, flag):
            calls.setdefault('flags', []).append(flag)

        def add_optimization_profile(self, p):
            calls['profiles_added'] = calls.get('profiles_added', 0) + 1

        def __setattr__(self, k, v):
            calls[k] = v

        builder_optimization_level = 3

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls['network_flags'] = flags
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return b'ENGINE:' + ','.join(t.name for t in network.inputs).encode()

    class Context:
        def __init__(self, engine):
            self.engine = engine

        def set_input_shape(self, name, shape):
            calls.setdefault('set_input_shape', {})[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            return self.engine.resolved[name]

        def set_tensor_address(self, name, ptr):
            calls.setdefault('addresses', {})[name] = ptr

        def execute_async_v3(self, stream):
            calls['executed_on'] = stream
            return True

    class Engine:
        io = [('left', 'INPUT', 'float32', (1, 3, -1, -1)), ('disp', 'OUTPUT', 'float32', (1, 1, -1, -1))]
        resolved = {'disp': (1, 1, 64, 128)}
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return self.io[i][0]

        def _row(self, name):
            return next(r for r in self.io if r[0] == name)

        def get_tensor_mode(self, name):
            return self._row(name)[1]

        def get_tensor_dtype(self, name):
            return dt[self._row(name)[2]]

        def get_tensor_shape(self, name):
            return self._row(name)[3]

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            calls['deserialized'] = bytes(data)
            return Engine() if data.startswith(b'ENGINE') else None

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, Parser, Runtime
    return trt


@pytest.mark.parametrize('precision', ['fp16', 'fp32'])
def test_build_engine_api_calls(dynamic_export, tmp_path, precision):
    calls = {}
    shapes = {'left': (1, 3, 64, 128), 'right': (1, 3, 64, 128)}
    out = build_engine(dynamic_export / 'feature_runner.onnx', tmp_path / 'f.engine', shapes, precision,
                       workspace_gb=2, opt_level=5, trt=fake_trt(calls))
    assert out.read_bytes() == b'ENGINE:left,right'
    assert calls['workspace'] == ('WORKSPACE', 2 << 30) and calls['builder_optimization_level'] == 5
    assert calls.get('flags', []) == (['FP16'] if precision == 'fp16' else [])
    assert calls['profile']['left'] == ((1, 3, 64, 128),) * 3 and calls['profiles_added'] == 1
    assert calls['network_flags'] == 0        # TensorRT 10: explicit batch is implicit


def test_ensure_engine_uses_prebuilt_then_cache(export, tmp_path, monkeypatch):
    calls = {}
    trt = fake_trt(calls)
    monkeypatch.setattr('ffs_ros.inference.tensorrt_backend.gpu_identity', lambda device=None: ('FakeGPU', (8, 9)))
    shapes = {'left': (1, 3, 64, 128), 'right': (1, 3, 64, 128)}
    onnx_p = export / 'feature_runner.onnx'
    assert ensure_engine(onnx_p, shapes, prebuilt=tmp_path / 'given.engine', trt=trt) == tmp_path / 'given.engine'
    p1 = ensure_engine(onnx_p, shapes, cache=tmp_path / 'c', trt=trt)
    assert p1.parent == tmp_path / 'c' and p1.read_bytes().startswith(b'ENGINE')
    p1.write_bytes(b'ENGINE:cached')
    assert ensure_engine(onnx_p, shapes, cache=tmp_path / 'c', trt=trt).read_bytes() == b'ENGINE:cached'
    ensure_engine(onnx_p, shapes, cache=tmp_path / 'c', trt=trt, force=True)
    assert p1.read_bytes() == b'ENGINE:left,right'     # force_engine_update rebuilt it
    assert ensure_engine(onnx_p, shapes, precision='fp32', cache=tmp_path / 'c', trt=trt) != p1


def test_runner_sets_shapes_and_binds_by_name(tmp_path):
    calls = {}
    trt = fake_trt(calls)
    eng = tmp_path / 'e.engine'
    eng.write_bytes(b'ENGINE:x')
    r = EngineRunner(eng, trt)
    outs = r.prepare({'left': (1, 3, 64, 128)})
    assert calls['set_input_shape'] == {'left': (1, 3, 64, 128)} and outs == {'disp': ((1, 1, 64, 128), 'float32')}
    left, disp = torch.zeros(1, 3, 64, 128), torch.zeros(1, 1, 64, 128)
    r.bind({'left': left, 'disp': disp})
    assert calls['addresses'] == {'left': left.data_ptr(), 'disp': disp.data_ptr()}
    with pytest.raises(ValueError, match="buffer for 'left' is torch.float16, the engine wants float32"):
        r.bind({'left': left.half(), 'disp': disp})
    r.run(1234)
    assert calls['executed_on'] == 1234
    eng.write_bytes(b'junk')
    with pytest.raises(RuntimeError, match='is not an engine for this TensorRT/GPU .*rebuild'):
        EngineRunner(eng, trt)
    assert dtype_name(types.SimpleNamespace(name='HALF')) == 'float16'
    assert np.dtype(dtype_name(types.SimpleNamespace(name='INT32'))) == np.int32


# -- the whole TensorRT matcher, simulated on CPU: engines "built" from the ONNX run it with ONNX Runtime ---------

def simulated_trt(calls, registry):
    """A stand-in whose engines execute their ONNX with ONNX Runtime, reading/writing the bound buffers."""
    import onnxruntime as ort
    trt = fake_trt(calls)
    np_to_trt = {'float32': 'FLOAT', 'float16': 'HALF'}

    class Builder(trt.Builder):
        def build_serialized_network(self, network, config):
            calls['builds'] = calls.get('builds', 0) + 1
            return b'ENGINE:' + calls['parsed'].encode()

    class Parser(trt.OnnxParser):
        def parse_from_file(self, path):
            calls['parsed'] = str(path)
            return super().parse_from_file(path)

    class Context:
        def __init__(self, engine):
            self.engine, self.addr, self.shapes = engine, {}, {}

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            feeds = {t.name: np.zeros(self.shapes.get(t.name, t.shape), t.dtype) for t in self.engine.graph.inputs}
            out = self.engine.session.run([name], feeds)[0]
            return out.shape

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr

        def execute_async_v3(self, stream):
            feeds = {t.name: registry[self.addr[t.name]].cpu().numpy() for t in self.engine.graph.inputs}
            names = [t.name for t in self.engine.graph.outputs]
            for n, v in zip(names, self.engine.session.run(names, feeds)):
                registry[self.addr[n]].copy_(torch.from_numpy(v))
            calls['executions'] = calls.get('executions', 0) + 1
            return True

    class Engine:
        def __init__(self, path):
            self.graph = read_graph(path)
            self.session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
            self.io = [t for t in self.graph.inputs] + [t for t in self.graph.outputs]
            self.num_io_tensors = len(self.io)

        def get_tensor_name(self, i):
            return self.io[i].name

        def get_tensor_mode(self, name):
            return 'INPUT' if self.graph.input(name) is not None else 'OUTPUT'

        def get_tensor_dtype(self, name):
            t = self.graph.input(name) or self.graph.output(name)
            return types.SimpleNamespace(name=np_to_trt[t.dtype.name])

        def get_tensor_shape(self, name):
            t = self.graph.input(name) or self.graph.output(name)
            return tuple(d if isinstance(d, int) else -1 for d in t.shape)

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine(bytes(data)[len(b'ENGINE:'):].decode())

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, Parser, Runtime
    return trt


def test_tensorrt_matcher_pipeline_simulated_on_cpu(tmp_path, monkeypatch):
    """Engine cache, buffer planning/sharing, the volume between the engines and the letterbox all work together
    and give the ONNX Runtime result (engines simulated; the real ones need a GPU)."""
    from ffs_ros.inference import tensorrt_backend as tb
    from ffs_ros.inference.tensorrt_backend import TensorRTMatcher
    from test_inference_models import shifted_pair
    _, _, d = make_two_stage(tmp_path / 'm', 64, 128, 32, use_16=False, random=True)
    calls, registry = {}, {}
    trt = simulated_trt(calls, registry)
    monkeypatch.setattr(tb, '_require_cuda', lambda device: None)
    monkeypatch.setattr(tb, 'gpu_identity', lambda device=None: ('FakeGPU', (8, 9)))
    bind = EngineRunner.bind

    def registering_bind(self, tensors):
        registry.update({t.data_ptr(): t for t in tensors.values()})
        bind(self, tensors)
    monkeypatch.setattr(EngineRunner, 'bind', registering_bind)
    src = detect_model(d)
    m = TensorRTMatcher(src, device='cpu', trt=trt, engine_cache_dir=tmp_path / 'cache')
    left, right = shifted_pair(60, 120, 8, seed=3)       # padded onto 64x128
    out = m(left, right)
    ref = load_matcher(d, 'onnxruntime')(left, right)
    np.testing.assert_allclose(out, ref, atol=0.05, equal_nan=True)
    assert calls['builds'] == 2 and calls['executions'] == 2
    assert sorted(p.name.split('-')[0] for p in (tmp_path / 'cache').glob('*.engine')) == ['feature_runner',
                                                                                         'post_runner']
    _, (f_runner, p_runner, plan), (f_bufs, p_bufs) = m._sized[(64, 128)]
    assert 'features_left_16' in f_bufs and 'features_left_16' not in p_bufs   # dropped input: never bound
    assert p_bufs['features_left_08'] is f_bufs['features_left_08']             # shared, no copy
    assert p_bufs['gwc_volume'].dtype == torch.float16
    assert set(m.last_timings) == {'preprocess', 'feature', 'gwc', 'post', 'postprocess'}
    m2 = TensorRTMatcher(src, device='cpu', trt=trt, engine_cache_dir=tmp_path / 'cache')
    m2(left, right)
    assert calls['builds'] == 2                                                   # cached engines reused
