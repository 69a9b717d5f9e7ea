"""A stand-in for the `tensorrt` Python module (no GPU needed).

It is as strict as the real bindings on what bit us. Modelled on the TensorRT 10.3 and 11.x
bindings (python/src/infer/pyCore.cpp, pyPlugin.cpp, parsers/pyOnnx.cpp;
../shared/docs/tensorrt-python-facts.md):

* version modes: '10.3.0' (BuilderFlag.FP16, EXPLICIT_BATCH exist) and '11.1.0' (both gone:
  AttributeError);
* calls that fail by return value do so here too:
  ``parse_from_file``/``set_input_shape``/``set_tensor_address``/``execute_async_v3`` -> False,
  ``build_serialized_network``/``deserialize_cuda_engine``/``create_execution_context`` -> None;
* it records every logger instance handed to it, and whether ``init_libnvinfer_plugins`` ran before
  any parse or deserialise (an engine "with plugin layers" -- here: every engine -- does not
  deserialise before it);
* engines are bound to a TensorRT version: a plan from another version does not deserialise;
* enqueueing on stream 0 is refused (the real one adds device-wide syncs and warns), every engine
  call records which ffs_ros device scope was active, and USER_MANAGED contexts must get device
  memory before they run;
* engines really compute: their ONNX runs with ONNX Runtime on the bound CPU tensors (read from the
  raw addresses).
"""

from __future__ import annotations

import ctypes
import json
import types

import numpy as np
import onnxruntime as ort

from ffs_ros.contract import PLUGIN_OP, read_graph
from ffs_ros.inference.device import active_device

NP_BY_TRT = {'FLOAT': np.float32, 'HALF': np.float16, 'INT32': np.int32}
TRT_BY_NP = {'float32': 'FLOAT', 'float16': 'HALF', 'int32': 'INT32'}


class _Enum:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f'<{self.name}>'


def make_trt(version: str = '10.3.0', executor=None, **behaviour):
    """Return a fresh stand-in module.

    `behaviour`: fail_build, fail_context, non_linear (tensor name), reject_address.

    `executor(context, stream_handle) -> bool` replaces how an engine computes (default: its ONNX
    through ONNX Runtime on the CPU buffers at the bound addresses); tools/gpu_check.py runs torch
    modules on CUDA with it.
    """
    major = int(version.split('.')[0])
    trt = types.ModuleType('tensorrt')
    trt.__version__ = version
    rec = {
        'loggers': [],
        'plugins_ready': False,
        'plugin_init_calls': 0,
        'parsed': [],
        'builds': [],
        'executions': [],
        'scopes': [],
        'device_memory': [],
        'contexts': [],
        'flags': [],
        'network_flags': [],
        'creators': set(),
        'timing_caches_set': 0,
    }
    trt.rec = rec
    trt.behaviour = behaviour

    class ILogger:
        Severity = types.SimpleNamespace(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4)

        def __init__(self):
            self._initialised = True

        def log(self, severity, msg):  # pragma: no cover - overridden
            raise NotImplementedError

    trt.ILogger = ILogger

    def use_logger(logger):
        if not isinstance(logger, ILogger) or not getattr(logger, '_initialised', False):
            raise TypeError('logger must be a tensorrt.ILogger whose __init__ ran')
        rec['loggers'].append(logger)

    def init_libnvinfer_plugins(logger, namespace):
        use_logger(logger)
        rec['plugin_init_calls'] += 1
        rec['plugins_ready'] = True
        return True

    trt.init_libnvinfer_plugins = init_libnvinfer_plugins
    registry = types.SimpleNamespace(
        get_creator=lambda name, version, ns='': (
            (name, version, ns) if (name, version, ns) in rec['creators'] else None
        )
    )
    trt.get_plugin_registry = lambda: registry

    def note_scope(what):
        rec['scopes'].append((what, active_device()))

    if major >= 11:
        trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(
            STRONGLY_TYPED=0, PREFER_JIT_PYTHON_PLUGINS=1
        )
        trt.BuilderFlag = types.SimpleNamespace(TF32=6, VERSION_COMPATIBLE=12)
    else:
        trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(
            EXPLICIT_BATCH=0, STRONGLY_TYPED=1
        )
        trt.BuilderFlag = types.SimpleNamespace(FP16=0, TF32=6, VERSION_COMPATIBLE=13)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=_Enum('WORKSPACE'))
    trt.TensorIOMode = types.SimpleNamespace(INPUT=_Enum('INPUT'), OUTPUT=_Enum('OUTPUT'))
    trt.TensorFormat = types.SimpleNamespace(LINEAR=_Enum('LINEAR'), CHW32=_Enum('CHW32'))
    trt.ExecutionContextAllocationStrategy = types.SimpleNamespace(
        STATIC=_Enum('STATIC'), USER_MANAGED=_Enum('USER_MANAGED')
    )
    trt.DataType = types.SimpleNamespace(**{k: _Enum(k) for k in NP_BY_TRT})

    class Network:
        def __init__(self, flags):
            self.flags, self.inputs, self.path = flags, [], None

        num_inputs = property(lambda self: len(self.inputs))

        def get_input(self, i):
            return self.inputs[i]

    class OnnxParser:
        def __init__(self, network, logger):
            use_logger(logger)
            self.network, self.errors = network, []

        num_errors = property(lambda self: len(self.errors))

        def get_error(self, i):
            return self.errors[i]

        def parse_from_file(self, path):
            note_scope('parse')
            if not rec['plugins_ready']:
                raise AssertionError('stand-in: parse before init_libnvinfer_plugins')
            g = read_graph(path)
            if PLUGIN_OP in g.op_types and (PLUGIN_OP, '1', '') not in rec['creators']:
                self.errors.append(
                    'In node 0 (importFallbackPluginImporter): UNSUPPORTED_NODE: Assertion '
                    'failed: '
                    f'creator && "Plugin not found, are the plugin name, version, and namespace '
                    f'correct?" ({PLUGIN_OP})'
                )
                return False
            rec['parsed'].append(str(path))
            self.network.path = str(path)
            self.network.inputs = [
                types.SimpleNamespace(
                    name=t.name, shape=tuple(d if isinstance(d, int) else -1 for d in t.shape)
                )
                for t in g.inputs
            ]
            return True

    class TimingCache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return memoryview(b'TIMING:' + trt.__version__.encode())

    class Config:
        def __init__(self):
            self.flags, self.pool, self.profiles, self.timing = [], {}, [], None
            self.builder_optimization_level = 3

        def set_memory_pool_limit(self, pool, size):
            self.pool[pool.name] = size

        def set_flag(self, flag):
            self.flags.append(flag)

        def add_optimization_profile(self, p):
            self.profiles.append(p)
            return len(self.profiles) - 1

        def create_timing_cache(self, data):
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.timing = cache
            rec['timing_caches_set'] += 1
            return True

        def get_timing_cache(self):
            return self.timing

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class Builder:
        def __init__(self, logger):
            use_logger(logger)

        def create_network(self, flags=0):
            rec['network_flags'].append(flags)
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            note_scope('build')
            rec['builds'].append(
                {
                    'path': network.path,
                    'flags': list(config.flags),
                    'pool': dict(config.pool),
                    'opt_level': config.builder_optimization_level,
                    'profiles': [p.shapes for p in config.profiles],
                    'network_flags': network.flags,
                }
            )
            if behaviour.get('fail_build'):
                return None
            return memoryview(
                b'ENGINE' + json.dumps({'onnx': network.path, 'version': trt.__version__}).encode()
            )

    class Context:
        def __init__(self, engine, strategy):
            self.engine, self.strategy = engine, strategy
            self.addr, self.shapes, self.memory = {}, {}, None
            self._out_key, self._out = None, {}
            rec['contexts'].append(self)

        def set_input_shape(self, name, shape):
            spec = self.engine.graph.input(name)
            if spec is None or len(shape) != len(spec.shape):
                return False
            if any(isinstance(e, int) and e != g for e, g in zip(spec.shape, shape)):
                return False
            self.shapes[name] = tuple(shape)
            return True

        def infer_shapes(self):
            return [
                t.name
                for t in self.engine.graph.inputs
                if not t.fixed and t.name not in self.shapes
            ]

        def get_tensor_shape(self, name):
            key = tuple(sorted(self.shapes.items()))
            if self._out_key != key:  # run the graph once on zeros to learn every output shape
                feeds = {
                    t.name: np.zeros(self.shapes.get(t.name, t.shape), t.dtype)
                    for t in self.engine.graph.inputs
                }
                names = [t.name for t in self.engine.graph.outputs]
                self._out = {
                    n: v.shape for n, v in zip(names, self.engine.session.run(names, feeds))
                }
                self._out_key = key
            return self._out[name]

        def get_output_shape(self, name):
            """(stand-in only) the shape get_tensor_shape resolved for an output."""
            return self._out[name]

        def update_device_memory_size_for_shapes(self):
            return (1 + len(self.engine.graph.inputs)) << 18  # engines differ in their needs

        def set_device_memory(self, ptr, size):
            rec['device_memory'].append((self.engine.role, int(ptr), int(size)))
            self.memory = (int(ptr), int(size))

        def set_tensor_address(self, name, ptr):
            if name not in self.engine.names or behaviour.get('reject_address') == name:
                return False
            self.addr[name] = int(ptr)
            return True

        def execute_async_v3(self, stream_handle):
            note_scope('execute')
            rec['executions'].append((self.engine.role, stream_handle))
            if stream_handle == 0:
                return False  # stand-in: the default stream is refused
            if (
                self.strategy is trt.ExecutionContextAllocationStrategy.USER_MANAGED
                and self.memory is None
            ):
                return False
            if executor is not None:
                return executor(self, stream_handle)
            g = self.engine.graph
            feeds = {
                t.name: _read(self.addr[t.name], self.shapes.get(t.name, t.shape), t.dtype)
                for t in g.inputs
            }
            names = [t.name for t in g.outputs]
            for n, v in zip(names, self.engine.session.run(names, feeds)):
                _read(self.addr[n], v.shape, v.dtype)[...] = v
            return True

    class Engine:
        def __init__(self, path):
            self.graph = read_graph(path)
            self.role = path
            self.session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
            self.io = list(self.graph.inputs) + list(self.graph.outputs)
            self.names = {t.name for t in self.io}
            self.num_io_tensors = len(self.io)
            self.device_memory_size_v2 = 1 << 16

        def get_tensor_name(self, i):
            return self.io[i].name

        def get_tensor_mode(self, name):
            return (
                trt.TensorIOMode.INPUT
                if self.graph.input(name) is not None
                else trt.TensorIOMode.OUTPUT
            )

        def _spec(self, name):
            return self.graph.input(name) or self.graph.output(name)

        def get_tensor_dtype(self, name):
            return getattr(trt.DataType, TRT_BY_NP[self._spec(name).dtype.name])

        def get_tensor_shape(self, name):
            return tuple(d if isinstance(d, int) else -1 for d in self._spec(name).shape)

        def get_tensor_format(self, name):
            return (
                trt.TensorFormat.CHW32
                if behaviour.get('non_linear') == name
                else trt.TensorFormat.LINEAR
            )

        def get_tensor_format_desc(self, name):
            return (
                'Thirty-two wide channel vectorized row major FP16 format'
                if behaviour.get('non_linear') == name
                else 'Row major linear FP32 format'
            )

        def create_execution_context(self, strategy=trt.ExecutionContextAllocationStrategy.STATIC):
            note_scope('context')
            if behaviour.get('fail_context'):
                return None
            return Context(self, strategy)

    class Runtime:
        def __init__(self, logger):
            use_logger(logger)

        def deserialize_cuda_engine(self, data):
            note_scope('deserialize')
            data = bytes(data)
            if not rec['plugins_ready'] or not data.startswith(b'ENGINE'):
                return None
            meta = json.loads(data[len(b'ENGINE'):])
            if meta['version'] != trt.__version__:
                return (
                    None  # "The engine plan file is not compatible with this version of TensorRT"
                )
            return Engine(meta['onnx'])

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt


def _read(ptr: int, shape, dtype) -> np.ndarray:
    """Return a numpy view of `shape` x `dtype` at the raw (CPU) address `ptr`."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    buf = (ctypes.c_byte * n).from_address(ptr)
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


def engine_bytes(onnx_path, version: str) -> bytes:
    """Return what the stand-in's builder writes for `onnx_path` under TensorRT `version`.

    E.g. a prebuilt engine.
    """
    return b'ENGINE' + json.dumps({'onnx': str(onnx_path), 'version': version}).encode()


class FakeStream:
    """A non-default CUDA stream stand-in (only its handle is used on a CPU)."""

    cuda_stream = 0x5EED
