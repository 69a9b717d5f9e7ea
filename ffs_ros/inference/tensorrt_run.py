"""TensorRT: how an engine runs inside :class:`~.network.NetworkMatcher`.

Building is :mod:`.tensorrt_build`.

Per graph role and network size: an engine (prebuilt beside the ONNX, else from the cache, built on
first use), one execution context, I/O tensors allocated once as contiguous torch tensors on the
matcher's device and bound by name; the post engine adopts the feature engine's output tensors as
inputs where name, dtype and shape agree (no copy). Every call whose failure TensorRT reports only
through a return value is checked: ``deserialize_cuda_engine`` and ``create_execution_context``
(None), ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3`` (False). Tensor formats
must be linear (prebuilt engines may use vectorised layouts our buffers cannot feed). The contexts
share one activation-memory block (``USER_MANAGED``; they run strictly one after the other on the
matcher's stream), which matters on an 8 GB Orin. Enqueues go to the matcher's own stream, never to
stream 0.
"""

from __future__ import annotations

from dataclasses import dataclass
import logging
from pathlib import Path

from ..contract import ModelSource, graph_input_shapes
from .device import Device
from .network import Graphs
from .tensorrt_build import (
    ALTERNATIVES,
    TensorRTUnavailable,
    ensure_engine,
    tensorrt_for,
    trt_runtime,
)

log = logging.getLogger('ffs_ros.tensorrt')

# TensorRT DataType member name -> numpy dtype name (names keep this table testable without
# TensorRT)
TRT_DTYPES = {
    'FLOAT': 'float32',
    'HALF': 'float16',
    'BF16': 'bfloat16',
    'INT32': 'int32',
    'INT64': 'int64',
    'INT8': 'int8',
    'UINT8': 'uint8',
    'BOOL': 'bool',
}
_WARNED: set = set()


class EngineLoadError(RuntimeError):
    """An engine file cannot be used by this TensorRT/GPU.

    The message names the file, the version and the fix.
    """


@dataclass(frozen=True)
class IOTensor:
    """One engine I/O tensor as TensorRT describes it (-1 = dimension set at run time)."""

    name: str
    is_input: bool
    dtype: str  # numpy dtype name
    shape: tuple


@dataclass(frozen=True)
class BindingPlan:
    set_shapes: dict  # input name -> shape to pass to set_input_shape (dynamic inputs only)
    inputs: dict  # input name -> (shape, dtype name)
    outputs: tuple  # output names


def binding_plan(io: list, shapes: dict) -> BindingPlan:
    """Check `shapes` (input name -> shape) against the engine I/O and decide what to set.

    Every engine input must be given, fixed dimensions must match, and no unknown name may be
    passed; errors say which tensor and what the engine expects.
    """
    names = {t.name for t in io if t.is_input}
    unknown = sorted(set(shapes) - names)
    if unknown:
        raise ValueError(
            f'tensors {unknown} are not inputs of the engine (inputs: {sorted(names)})'
        )
    set_shapes, inputs = {}, {}
    for t in io:
        if not t.is_input:
            continue
        if t.name not in shapes:
            raise ValueError(
                f'engine input {t.name!r} {list(t.shape)} has no value; the engine and the ONNX '
                f'contract disagree (rebuild the engine from this ONNX)'
            )
        want = tuple(int(d) for d in shapes[t.name])
        if len(want) != len(t.shape) or any(e not in (-1, g) for e, g in zip(t.shape, want)):
            raise ValueError(
                f'engine input {t.name!r} has shape {list(t.shape)}, cannot take {list(want)}; '
                'rebuild '
                f'the engine for this size (force_engine_update) or use the matching network size'
            )
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


class SharedActivationMemory:
    """One device block for the activations of every context of a matcher.

    The contexts never run concurrently. Contexts register their need when their shapes are set
    (:meth:`request`); the block is allocated at the first run (:meth:`ensure`), at the largest
    need, and given to every context, so the feature and post engines of a size share max(need)
    instead of needing the sum. A later, larger need (another network size) gets a new block for
    every context; earlier blocks are kept, since a CUDA graph captured before keeps their
    addresses.
    """

    def __init__(self, device: Device) -> None:
        self.device = device
        self.blocks: list = []
        self.contexts: list = []  # [context, need, block it was given or None]

    def request(self, context, nbytes: int) -> None:
        self.contexts.append([context, max(int(nbytes), 1), None])

    def ensure(self) -> None:
        """Give every context a block large enough for all of them (cheap when nothing changed)."""
        need = max((c[1] for c in self.contexts), default=0)
        if not need or all(c[2] is not None and c[2].numel() >= need for c in self.contexts):
            return
        if not self.blocks or self.blocks[-1].numel() < need:
            self.blocks.append(
                self.device.torch.empty(
                    need, dtype=self.device.torch.uint8, device=self.device.device
                )
            )
        block = self.blocks[-1]
        for c in self.contexts:
            if c[2] is not block:
                c[0].set_device_memory(int(block.data_ptr()), int(block.numel()))
                c[2] = block


class EngineRunner:
    """One deserialized engine + execution context.

    Its tensors are bound to caller-owned torch buffers.
    """

    def __init__(self, engine_path, trt, memory: SharedActivationMemory | None = None) -> None:
        self.trt = trt
        self.path = Path(engine_path)
        self.engine = trt_runtime(trt).deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise EngineLoadError(
                f'{self.path} cannot be loaded by TensorRT {trt.__version__} on this GPU (built '
                'by '
                f'another TensorRT/JetPack version or GPU, a missing plugin, or a damaged file; '
                f'see the TensorRT log line above)'
            )
        self.io = [self._io(i) for i in range(self.engine.num_io_tensors)]
        self._check_formats()
        shared = (
            memory is not None
            and hasattr(self.engine, 'device_memory_size_v2')
            and hasattr(trt, 'ExecutionContextAllocationStrategy')
        )
        if shared:
            self.context = self.engine.create_execution_context(
                trt.ExecutionContextAllocationStrategy.USER_MANAGED
            )
        else:
            self.context = self.engine.create_execution_context()
        if self.context is None:
            raise RuntimeError(
                f'TensorRT could not create an execution context for {self.path} (usually out of '
                'GPU '
                f'memory: close other GPU processes, use a smaller network size or precision fp16)'
            )
        self.memory = memory if shared else None

    def _io(self, i: int) -> IOTensor:
        name = self.engine.get_tensor_name(i)
        is_input = self.engine.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT
        return IOTensor(
            name,
            is_input,
            dtype_name(self.engine.get_tensor_dtype(name)),
            tuple(int(d) for d in self.engine.get_tensor_shape(name)),
        )

    def _check_formats(self) -> None:
        for t in self.io:
            fmt = self.engine.get_tensor_format(t.name)
            if fmt != self.trt.TensorFormat.LINEAR:
                raise EngineLoadError(
                    f'{self.path}: tensor {t.name!r} uses the '
                    f'{self.engine.get_tensor_format_desc(t.name)!r} layout; '
                    'ffs_ros feeds linear (row-major) tensors only. Rebuild the engine without '
                    'I/O format options '
                    '(`ffs-ros build-engine`, or trtexec without '
                    '--inputIOFormats/--outputIOFormats)'
                )

    def prepare(self, shapes: dict) -> dict:
        """Set input shapes; return output name -> (shape, dtype name) resolved by the context."""
        self.plan = binding_plan(self.io, shapes)
        for name, shape in self.plan.set_shapes.items():
            if not self.context.set_input_shape(name, shape):
                raise RuntimeError(
                    f'{self.path}: TensorRT rejected shape {list(shape)} for {name!r} (outside '
                    'the '
                    "engine's optimisation profile); pass net_size matching the engine, or "
                    'rebuild '
                    f'it for this size (force_engine_update / ffs-ros build-engine --size)'
                )
        missing = self.context.infer_shapes()
        if missing:
            raise RuntimeError(
                f'{self.path}: TensorRT cannot infer the shapes of {list(missing)}; the engine '
                'needs '
                f'inputs ffs_ros does not provide'
            )
        outs = {}
        for t in self.io:
            if not t.is_input:
                shape = tuple(int(d) for d in self.context.get_tensor_shape(t.name))
                if any(d < 0 for d in shape):
                    raise RuntimeError(
                        f'{self.path}: output {t.name!r} has a data-dependent shape '
                        f'{list(shape)}; '
                        f'not supported'
                    )
                outs[t.name] = (shape, t.dtype)
        if (
            self.memory is not None
        ):  # 0 from update_device_memory_size_for_shapes means an error: take the max
            need = max(
                int(self.context.update_device_memory_size_for_shapes() or 0),
                int(self.engine.device_memory_size_v2),
            )
            self.memory.request(self.context, need)
        return outs

    def bind(self, tensors: dict) -> None:
        """Bind every I/O tensor to the given (contiguous, correctly typed) torch tensors, once."""
        for t in self.io:
            buf = tensors.get(t.name)
            if buf is None:
                raise ValueError(f'{self.path}: no buffer for engine tensor {t.name!r}')
            if str(buf.dtype).replace('torch.', '') != t.dtype:
                raise ValueError(
                    f'{self.path}: buffer for {t.name!r} is {buf.dtype}, the engine wants '
                    f'{t.dtype}'
                )
            if not buf.is_contiguous():
                raise ValueError(f'{self.path}: buffer for {t.name!r} is not contiguous')
            if not self.context.set_tensor_address(t.name, int(buf.data_ptr())):
                raise RuntimeError(
                    f'{self.path}: TensorRT refused the address of {t.name!r} (not an I/O tensor '
                    'of '
                    f'this engine, or not 256-byte aligned)'
                )

    def run(self, stream_handle: int) -> None:
        if self.memory is not None:
            self.memory.ensure()
        if not stream_handle:
            raise RuntimeError(
                'internal error: TensorRT must not be enqueued on the CUDA default stream'
            )
        if not self.context.execute_async_v3(stream_handle):
            raise RuntimeError(
                f'{self.path}: TensorRT execute_async_v3 failed (see the TensorRT log line above)'
            )


class TrtGraph:
    """One graph role of a model as TensorRT engines on the matcher's device.

    One engine per network size.
    """

    def __init__(
        self,
        role: str,
        source: ModelSource,
        device: Device,
        trt,
        memory: SharedActivationMemory,
        build_options: dict,
    ) -> None:
        self.role, self.source, self.device, self.trt = role, source, device, trt
        self.memory = memory
        self.build_options = build_options
        self._sized: dict = {}  # net_hw -> (runner, {name: tensor}, output names)

    def _runner(self, shapes: dict) -> EngineRunner:
        onnx_path = self.source.onnx_files[self.role]
        prebuilt = self.source.engines.get(self.role)
        if prebuilt is not None and not self.build_options.get('force'):
            try:
                return EngineRunner(prebuilt, self.trt, self.memory)
            except EngineLoadError as exc:
                if str(prebuilt) not in _WARNED:
                    _WARNED.add(str(prebuilt))
                    log.warning(
                        'prebuilt engine %s is not usable with TensorRT %s (%s); using the '
                        'engine cache '
                        'instead (built once, then reused). Delete or rebuild the prebuilt file '
                        'to silence '
                        'this.',
                        prebuilt,
                        self.trt.__version__,
                        exc,
                    )
        path = ensure_engine(
            onnx_path, shapes, trt=self.trt, device=str(self.device.device), **self.build_options
        )
        try:
            return EngineRunner(path, self.trt, self.memory)
        except EngineLoadError:
            log.warning('cached engine %s could not be loaded; rebuilding it', path)
            opts = dict(self.build_options, force=True)
            path = ensure_engine(
                onnx_path, shapes, trt=self.trt, device=str(self.device.device), **opts
            )
            return EngineRunner(path, self.trt, self.memory)

    def prepare(self, net_hw, shared: dict) -> dict:
        if net_hw in self._sized:
            return dict(self._sized[net_hw][1])
        torch = self.device.torch
        shapes = graph_input_shapes(self.source, self.role, net_hw)
        with self.device.scope():
            runner = self._runner(shapes)
            outs = runner.prepare(shapes)
            bufs = {}
            for name, shape in shapes.items():
                dt = getattr(torch, runner.plan.inputs[name][1])
                t = shared.get(name)
                ok = (
                    t is not None
                    and t.dtype == dt
                    and tuple(t.shape) == tuple(shape)
                    and t.is_contiguous()
                )
                bufs[name] = (
                    t if ok else torch.empty(tuple(shape), dtype=dt, device=self.device.device)
                )
            for name, (shape, dt) in outs.items():
                bufs[name] = torch.empty(
                    tuple(shape), dtype=getattr(torch, dt), device=self.device.device
                )
            runner.bind(bufs)
        self._sized[net_hw] = (runner, bufs, tuple(outs))
        return dict(bufs)

    def run(self, feeds: dict, net_hw) -> dict:
        self.prepare(net_hw, {})
        runner, bufs, outputs = self._sized[net_hw]
        for name, t in feeds.items():
            if bufs[name].data_ptr() != t.data_ptr():
                bufs[name].copy_(t)  # on the current (matcher's) stream
        runner.run(self.device.stream_handle)
        return {n: bufs[n] for n in outputs}


def _require_cuda(device: Device) -> None:
    if not device.is_cuda:
        raise TensorRTUnavailable(f'backend tensorrt runs on CUDA, not {device}; {ALTERNATIVES}')


def tensorrt_graphs(
    source: ModelSource,
    device=None,
    precision: str = 'fp16',
    workspace_gb: float = 4.0,
    opt_level: int = 3,
    force_engine_update: bool = False,
    engine_cache_dir=None,
    plugin_library=None,
    trt=None,
    stream=None,
) -> Graphs:
    """Return the graphs of `source` as TensorRT engines.

    The engines are built/cached on first use per network size, or in prepare().
    """
    trt = tensorrt_for(source, plugin_library, trt)
    dev = Device(device or 'cuda', stream=stream)
    _require_cuda(dev)
    memory = SharedActivationMemory(dev)
    opts = {
        'precision': precision,
        'workspace_gb': workspace_gb,
        'opt_level': opt_level,
        'force': force_engine_update,
        'cache': engine_cache_dir,
    }
    graphs = {role: TrtGraph(role, source, dev, trt, memory, opts) for role in source.roles}
    details = {'precision': precision, 'tensorrt': str(trt.__version__)}
    if plugin_library:
        details['plugin_library'] = str(plugin_library)
    return Graphs('tensorrt', graphs, device=dev, details=details)
