"""TensorRT backend: engines built from the contract ONNX files, run with execute_async_v3 on one CUDA stream.

Written against the TensorRT (>= 8.6 / 10.x) Python API: ``Builder``, ``OnnxParser``, ``BuilderConfig``
(``set_memory_pool_limit(MemoryPoolType.WORKSPACE, ...)``, ``builder_optimization_level``, ``BuilderFlag.FP16``),
optimisation profiles for symbolic shapes, ``Runtime.deserialize_cuda_engine``, the named-tensor API
(``num_io_tensors``, ``get_tensor_name/mode/dtype/shape``) and ``IExecutionContext.set_input_shape /
set_tensor_address / execute_async_v3``. Device buffers are preallocated torch CUDA tensors; the correlation volume is
built on the GPU between the engines (torch), on the same stream, and the image pair goes up in one copy and the
disparity comes down in one (see :class:`DevicePipelineMatcher`). The module is thin: everything that can be decided
without TensorRT (cache keys, input shapes, binding plans, messages) lives in pure functions tested on CPU.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from . import engine_cache
from .contracts import GWC_INPUT, GWC_SOURCES, SINGLE_INPUTS, SINGLE_OUTPUT, ModelSource
from .device_pipeline import DevicePipelineMatcher
from .gwc import gwc_volume_torch
from .two_stage import feature_output_shapes, stage_plan

log = logging.getLogger(__name__)

ALTERNATIVES = ('use backend onnxruntime (CPU, or onnxruntime-gpu on CUDA), backend torch (our own checkpoint), or '
                'backend sgbm')

# TensorRT DataType member name -> numpy dtype name (names keep this table testable without TensorRT)
TRT_DTYPES = {'FLOAT': 'float32', 'HALF': 'float16', 'BF16': 'bfloat16', 'INT32': 'int32', 'INT64': 'int64',
              'INT8': 'int8', 'UINT8': 'uint8', 'BOOL': 'bool'}


class TensorRTUnavailable(RuntimeError):
    """TensorRT or a CUDA device is missing (message names the alternatives)."""


def import_tensorrt():
    """Import tensorrt and check for a CUDA device; raise TensorRTUnavailable naming the alternatives otherwise."""
    try:
        import tensorrt as trt  # noqa: F401
    except ImportError as exc:
        raise TensorRTUnavailable(f'backend tensorrt needs the TensorRT Python package (JetPack, or pip install '
                                  f'tensorrt on an x86 CUDA machine), which is not installed; {ALTERNATIVES}') from exc
    try:
        import torch
        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    if not cuda:
        raise TensorRTUnavailable(f'backend tensorrt needs a CUDA GPU visible to torch (used for device buffers and '
                                  f'the correlation volume); none found. {ALTERNATIVES}')
    return trt


def tensorrt_usable() -> bool:
    try:
        import_tensorrt()
        return True
    except TensorRTUnavailable:
        return False


# ------------------------------------------------------------------------------------------------------------------
# pure planning

def engine_input_shapes(source: ModelSource, role: str, net_hw) -> dict:
    """Input name -> concrete shape of engine `role` ('feature', 'post' or 'single') at network size `net_hw`."""
    h, w = int(net_hw[0]), int(net_hw[1])
    if h % 32 or w % 32:
        raise ValueError(f'network size {w}x{h} must be multiples of 32')
    if role == 'feature':
        return {'left': (1, 3, h, w), 'right': (1, 3, h, w)}
    if role == 'single':
        return {SINGLE_INPUTS[0]: (1, 3, h, w), SINGLE_INPUTS[1]: (1, 3, h, w)}
    if role == 'post':
        feats = feature_output_shapes(source, (h, w))
        plan = stage_plan(source, (h, w))
        shapes = {n: feats[n] for n in plan.post_feeds}
        shapes[GWC_INPUT] = plan.gwc_shape
        return shapes
    raise ValueError(f'unknown engine role {role!r}')


@dataclass(frozen=True)
class IOTensor:
    """One engine I/O tensor as TensorRT describes it (-1 = dimension set at run time)."""
    name: str
    is_input: bool
    dtype: str          # numpy dtype name
    shape: tuple


@dataclass(frozen=True)
class BindingPlan:
    set_shapes: dict    # input name -> shape to pass to set_input_shape (dynamic inputs only)
    inputs: dict        # input name -> (shape, dtype name)
    outputs: tuple      # output names


def binding_plan(io: list, shapes: dict) -> BindingPlan:
    """Check `shapes` (input name -> shape) against the engine I/O and decide what to set.

    Every engine input must be given, fixed dimensions must match, and no unknown name may be passed; errors say
    which tensor and what the engine expects.
    """
    names = {t.name for t in io if t.is_input}
    unknown = sorted(set(shapes) - names)
    if unknown:
        raise ValueError(f'tensors {unknown} are not inputs of the engine (inputs: {sorted(names)})')
    set_shapes, inputs = {}, {}
    for t in io:
        if not t.is_input:
            continue
        if t.name not in shapes:
            raise ValueError(f'engine input {t.name!r} {list(t.shape)} has no value; the engine and the ONNX '
                             f'contract disagree (rebuild the engine from this ONNX)')
        want = tuple(int(d) for d in shapes[t.name])
        if len(want) != len(t.shape) or any(e not in (-1, g) for e, g in zip(t.shape, want)):
            raise ValueError(f'engine input {t.name!r} has shape {list(t.shape)}, cannot take {list(want)}; rebuild '
                             f'the engine for this size (force_engine_update) or use the matching network size')
        if any(e == -1 for e in t.shape):
            set_shapes[t.name] = want
        inputs[t.name] = (want, t.dtype)
    outputs = tuple(t.name for t in io if not t.is_input)
    return BindingPlan(set_shapes, inputs, outputs)


def dtype_name(trt_dtype) -> str:
    """TensorRT DataType -> numpy dtype name."""
    key = getattr(trt_dtype, 'name', None) or str(trt_dtype).rsplit('.', 1)[-1]
    if key not in TRT_DTYPES:
        raise ValueError(f'unsupported TensorRT data type {trt_dtype}')
    return TRT_DTYPES[key]


# ------------------------------------------------------------------------------------------------------------------
# building and caching

def build_engine(onnx_path, out_path, input_shapes: dict, precision: str = 'fp16', workspace_gb: float = 4.0,
                 opt_level: int = 3, trt=None) -> Path:
    """Parse `onnx_path`, build a serialized engine for exactly `input_shapes`, write it to `out_path`."""
    trt = trt or import_tensorrt()
    if precision not in engine_cache.PRECISIONS:
        raise ValueError(f'precision must be one of {", ".join(engine_cache.PRECISIONS)}, got {precision!r}')
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    explicit = getattr(trt.NetworkDefinitionCreationFlag, 'EXPLICIT_BATCH', None)
    if explicit is not None and int(trt.__version__.split('.')[0]) < 10:
        flags |= 1 << int(explicit)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f'TensorRT could not parse {onnx_path}: {errors}')
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if hasattr(config, 'builder_optimization_level'):
        config.builder_optimization_level = int(opt_level)
    if precision == 'fp16':
        config.set_flag(trt.BuilderFlag.FP16)
    dynamic = False
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if tensor.name not in input_shapes:
            raise ValueError(f'{onnx_path}: no shape given for input {tensor.name!r}')
        shape = tuple(int(d) for d in input_shapes[tensor.name])
        if any(d == -1 for d in tensor.shape):
            dynamic = True
            profile.set_shape(tensor.name, shape, shape, shape)
    if dynamic:
        config.add_optimization_profile(profile)
    log.info('building TensorRT engine from %s (%s, %s); this can take minutes', onnx_path, precision, input_shapes)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f'TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above); try '
                           f'precision fp32, a larger workspace, or backend onnxruntime')
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(bytes(serialized))
    return out_path


def gpu_identity(device=None) -> tuple[str, tuple[int, int]]:
    import torch
    idx = torch.device(device or 'cuda').index or 0
    return torch.cuda.get_device_name(idx), tuple(torch.cuda.get_device_capability(idx))


def ensure_engine(onnx_path, input_shapes: dict, precision: str = 'fp16', prebuilt=None, force: bool = False,
                  cache=None, workspace_gb: float = 4.0, opt_level: int = 3, device=None, trt=None) -> Path:
    """Path of a usable engine: `prebuilt` if given, else the cache entry for this key (built when missing/forced)."""
    if prebuilt is not None and not force:
        return Path(prebuilt)
    trt = trt or import_tensorrt()
    name, cc = gpu_identity(device)
    key = engine_cache.make_key(onnx_path, trt.__version__, name, cc, precision, input_shapes)
    path = engine_cache.cached_engine_path(onnx_path, key, cache)
    if engine_cache.needs_build(path, force):
        tmp = path.with_suffix('.building')
        build_engine(onnx_path, tmp, input_shapes, precision, workspace_gb, opt_level, trt=trt)
        engine_cache.write_engine(path, tmp.read_bytes(), key)
        tmp.unlink(missing_ok=True)
    return path


# ------------------------------------------------------------------------------------------------------------------
# running

class EngineRunner:
    """One deserialized engine + execution context with tensors bound to caller-owned torch buffers."""

    def __init__(self, engine_path, trt=None) -> None:
        self.trt = trt or import_tensorrt()
        self.path = Path(engine_path)
        runtime = self.trt.Runtime(self.trt.Logger(self.trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f'{self.path} is not an engine for this TensorRT/GPU ({self.trt.__version__}); rebuild '
                               f'it (force_engine_update, or `ffs-ros build-engine`)')
        self.context = self.engine.create_execution_context()
        self.io = [self._io(i) for i in range(self.engine.num_io_tensors)]
        self._runtime = runtime

    def _io(self, i: int) -> IOTensor:
        name = self.engine.get_tensor_name(i)
        is_input = self.engine.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT
        return IOTensor(name, is_input, dtype_name(self.engine.get_tensor_dtype(name)),
                        tuple(int(d) for d in self.engine.get_tensor_shape(name)))

    def prepare(self, shapes: dict) -> dict:
        """Set input shapes; return output name -> (shape, dtype name) resolved by the context."""
        self.plan = binding_plan(self.io, shapes)
        for name, shape in self.plan.set_shapes.items():
            if not self.context.set_input_shape(name, shape):
                raise RuntimeError(f'{self.path}: TensorRT rejected shape {list(shape)} for {name!r} (outside the '
                                   f'engine\'s optimisation profile); pass net_size matching the engine, or rebuild '
                                   f'it for this size (force_engine_update / ffs-ros build-engine --size)')
        outs = {}
        for t in self.io:
            if not t.is_input:
                outs[t.name] = (tuple(int(d) for d in self.context.get_tensor_shape(t.name)), t.dtype)
        return outs

    def bind(self, tensors: dict) -> None:
        """Bind every I/O tensor to the given (contiguous, correctly typed) torch tensors, once."""
        for t in self.io:
            buf = tensors.get(t.name)
            if buf is None:
                raise ValueError(f'{self.path}: no buffer for engine tensor {t.name!r}')
            if str(buf.dtype).replace('torch.', '') != t.dtype:
                raise ValueError(f'{self.path}: buffer for {t.name!r} is {buf.dtype}, the engine wants {t.dtype}')
            self.context.set_tensor_address(t.name, int(buf.data_ptr()))

    def run(self, stream_handle: int) -> None:
        if not self.context.execute_async_v3(stream_handle):
            raise RuntimeError(f'{self.path}: execute_async_v3 failed')


def _require_cuda(device) -> None:
    if device.type != 'cuda':
        raise TensorRTUnavailable(f'backend tensorrt runs on CUDA, not {device}; {ALTERNATIVES}')


class TensorRTMatcher(DevicePipelineMatcher):
    """Two-stage or single-engine contract on TensorRT (engines built/cached on first use per network size)."""

    def __init__(self, source: ModelSource, device=None, precision: str = 'fp16', workspace_gb: float = 4.0,
                 opt_level: int = 3, force_engine_update: bool = False, engine_cache_dir=None, trt=None,
                 **options) -> None:
        self.trt = trt or import_tensorrt()
        if source.kind not in ('two_stage', 'single'):
            raise ValueError(f'backend tensorrt builds engines from ONNX; {source.describe()} is not ONNX. Export '
                             f'it with `ffs-ros export`, or use backend torch')
        super().__init__(source, device=device or 'cuda', **options)
        _require_cuda(self.device)
        self.prenormalise = source.kind == 'single'
        self.precision = precision
        self.build_options = dict(precision=precision, workspace_gb=workspace_gb, opt_level=opt_level,
                                  force=force_engine_update, cache=engine_cache_dir, device=str(self.device))
        self._backend = 'tensorrt'
        self._sized: dict = {}

    def _describe(self) -> dict:
        extra = {'precision': self.precision}
        if self.source.kind == 'two_stage':
            extra.update(normalize=self.source.config.normalize, num_groups=self.source.num_groups,
                         max_disp=4 * self.source.num_disparities)
        return extra

    def _engine(self, role: str, net_hw):
        shapes = engine_input_shapes(self.source, role, net_hw)
        prebuilt = self.source.engines.get(role)
        path = ensure_engine(self.source.onnx_files[role], shapes, prebuilt=prebuilt, trt=self.trt,
                             **self.build_options)
        runner = EngineRunner(path, self.trt)
        outs = runner.prepare(shapes)
        return runner, shapes, outs

    def _alloc(self, net_hw):
        if net_hw in self._sized:
            return self._sized[net_hw]
        torch = self.torch

        def empty(shape, dtype):
            return torch.empty(tuple(shape), dtype=getattr(torch, dtype), device=self.device)

        if self.source.kind == 'single':
            runner, shapes, outs = self._engine('single', net_hw)
            bufs = {n: empty(s, runner.plan.inputs[n][1]) for n, s in shapes.items()}
            bufs.update({n: empty(s, dt) for n, (s, dt) in outs.items()})
            runner.bind(bufs)
            state = ('single', runner, bufs)
        else:
            f_runner, f_shapes, f_outs = self._engine('feature', net_hw)
            p_runner, p_shapes, p_outs = self._engine('post', net_hw)
            plan = stage_plan(self.source, net_hw)
            f_bufs = {n: empty(s, f_runner.plan.inputs[n][1]) for n, s in f_shapes.items()}
            f_bufs.update({n: empty(s, dt) for n, (s, dt) in f_outs.items()})
            p_bufs = {}
            for n, s in p_shapes.items():
                dt = p_runner.plan.inputs[n][1]
                same = n in f_bufs and f_bufs[n].dtype == getattr(torch, dt) and tuple(f_bufs[n].shape) == tuple(s)
                p_bufs[n] = f_bufs[n] if same else empty(s, dt)   # share feature outputs when types agree
            p_bufs.update({n: empty(s, dt) for n, (s, dt) in p_outs.items()})
            f_runner.bind(f_bufs)
            p_runner.bind(p_bufs)
            state = ('two_stage', (f_runner, p_runner, plan), (f_bufs, p_bufs))
        self._sized[net_hw] = state
        return state

    def _stages(self, left, right, timings):
        torch = self.torch
        kind, runners, bufs = self._alloc(tuple(left.shape[2:]))
        stream = torch.cuda.current_stream(self.device).cuda_stream if self.device.type == 'cuda' else 0
        if kind == 'single':
            with self.stage(timings, 'feature'):
                bufs[SINGLE_INPUTS[0]].copy_(left)
                bufs[SINGLE_INPUTS[1]].copy_(right)
                runners.run(stream)
            return bufs[SINGLE_OUTPUT]
        f_runner, p_runner, plan = runners
        f_bufs, p_bufs = bufs
        with self.stage(timings, 'feature'):
            f_bufs['left'].copy_(left)
            f_bufs['right'].copy_(right)
            f_runner.run(stream)
        with self.stage(timings, 'gwc'):
            vol = gwc_volume_torch(f_bufs[GWC_SOURCES[0]], f_bufs[GWC_SOURCES[1]], plan.num_groups,
                                   plan.num_disparities, plan.normalize)
            p_bufs[GWC_INPUT].copy_(vol)
            for n in plan.post_feeds:
                if p_bufs[n] is not f_bufs[n]:
                    p_bufs[n].copy_(f_bufs[n])
        with self.stage(timings, 'post'):
            p_runner.run(stream)
        return p_bufs[plan.post_output]


def build_engines_for(source: ModelSource, out=None, precision: str = 'fp16', net_size=None, workspace_gb=4.0,
                      opt_level=3, force=True) -> dict:
    """Build every engine of `source` (for `ffs-ros build-engine`); role -> engine path."""
    trt = import_tensorrt()
    if source.kind not in ('two_stage', 'single'):
        raise ValueError(f'build-engine needs an ONNX model; {source.describe()} is not. Export it first '
                         f'(`ffs-ros export`)')
    net_hw = source.network_size or net_size
    if net_hw is None:
        raise ValueError(f'{source.describe()} has symbolic height/width; pass --size WxH (multiples of 32) to fix '
                         f'the engine size')
    roles = ['feature', 'post'] if source.kind == 'two_stage' else ['single']
    result = {}
    for role in roles:
        shapes = engine_input_shapes(source, role, net_hw)
        onnx_path = source.onnx_files[role]
        if out is not None:
            target = Path(out)
            if len(roles) > 1:  # --out names a directory for two engines
                target = target / Path(onnx_path).with_suffix('.engine').name
            result[role] = build_engine(onnx_path, target, shapes, precision, workspace_gb, opt_level, trt=trt)
        else:
            result[role] = ensure_engine(onnx_path, shapes, precision, force=force, workspace_gb=workspace_gb,
                                         opt_level=opt_level, trt=trt)
    return result


__all__ = ['TensorRTMatcher', 'TensorRTUnavailable', 'binding_plan', 'build_engine', 'build_engines_for',
           'engine_input_shapes', 'ensure_engine', 'import_tensorrt', 'tensorrt_usable', 'IOTensor']
