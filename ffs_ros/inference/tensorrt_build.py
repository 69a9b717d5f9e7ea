"""TensorRT, process-wide state and engine building (the running side is :mod:`.tensorrt_run`).

Written against the TensorRT Python bindings of 10.3 (JetPack 6) through 11.x (x86), using only
what both have
(../shared/docs/tensorrt-python-facts.md, section 0):

* one logger per process (:func:`trt_logger`, a ``trt.ILogger`` routed to Python logging) and one
``Runtime``;
* :func:`init_tensorrt` once, before any parse or deserialise: the user's plugin libraries
  (``ctypes.CDLL(..., RTLD_GLOBAL)`` after ``import tensorrt``), then
  ``init_libnvinfer_plugins(logger, "")``;
* network flags by enum name only; TensorRT 11 has no weak typing (``BuilderFlag.FP16`` is gone),
so an fp16
  engine there is built strongly typed from an fp16 copy of the ONNX (fp32 inputs/outputs kept),
  converted once with
  onnxconverter-common and cached; TensorRT 10 keeps ``BuilderFlag.FP16``;
* ``build_serialized_network`` returns None on failure (errors go to the logger): turned into one
clear error;
* a timing cache beside the engine cache (faster rebuilds);
* engines cached per (ONNX bytes, TensorRT version, GPU, compute capability, precision, shapes)
and written through
  a temporary name unique to the process and thread, then renamed (two nodes starting together
  never clash).
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import logging
import os
from pathlib import Path
import threading

from . import engine_cache

log = logging.getLogger('ffs_ros.tensorrt')

ALTERNATIVES = (
    'use backend onnxruntime (CPU, or onnxruntime-gpu on CUDA), backend torch (our own '
    'checkpoint), or '
    'backend sgbm'
)

_STATE_LOCK = threading.RLock()
_STATE: dict = {}  # id(trt module) -> {'logger', 'runtime', 'plugins_ready', 'libraries'}


class TensorRTUnavailable(RuntimeError):
    """TensorRT or a CUDA device is missing (message names the alternatives)."""


class EngineBuildError(RuntimeError):
    """Building an engine failed; the message says why and what to try."""


BUILD_WHERE = ('build engines on the machine that will run them (engines do not move between '
               'TensorRT versions or GPUs)')


def import_tensorrt(purpose: str = 'backend tensorrt'):
    """Import tensorrt and check for a CUDA device.

    Raises TensorRTUnavailable naming what to do otherwise: the other backends for `backend
    tensorrt`, where to build for `ffs-ros build-engine` (sgbm is no answer to a build request).
    """
    advice = ALTERNATIVES if purpose == 'backend tensorrt' else BUILD_WHERE
    try:
        import tensorrt as trt  # noqa: F401
    except ImportError as exc:
        raise TensorRTUnavailable(
            f'{purpose} needs the TensorRT Python package (JetPack, or pip install '
            f'tensorrt on an x86 CUDA machine), which is not installed; {advice}'
        ) from exc
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    if not cuda:
        raise TensorRTUnavailable(
            f'{purpose} needs a CUDA GPU visible to torch (used for device buffers and '
            f'the correlation volume); none found. {advice}'
        )
    return trt


def tensorrt_usable() -> bool:
    try:
        import_tensorrt()
        return True
    except TensorRTUnavailable:
        return False


def trt_major(trt) -> int:
    return int(str(trt.__version__).split('.')[0])


def strongly_typed_only(trt) -> bool:
    """Return True on TensorRT 11+ (weak typing and BuilderFlag.FP16 removed)."""
    return trt_major(trt) >= 11 or not hasattr(trt.BuilderFlag, 'FP16')


def _state(trt) -> dict:
    with _STATE_LOCK:
        return _STATE.setdefault(
            id(trt),
            {'trt': trt, 'logger': None, 'runtime': None, 'plugins_ready': False, 'libraries': {}},
        )


def trt_logger(trt):
    """Return the process's one TensorRT logger.

    Its messages go to the 'ffs_ros.tensorrt' Python logger.
    """
    st = _state(trt)
    with _STATE_LOCK:
        if st['logger'] is None:
            levels = {}
            sev = getattr(trt.ILogger, 'Severity', trt.ILogger)
            for name, level in (
                ('INTERNAL_ERROR', logging.CRITICAL),
                ('ERROR', logging.ERROR),
                ('WARNING', logging.WARNING),
                ('INFO', logging.DEBUG),
                ('VERBOSE', logging.DEBUG),
            ):
                if hasattr(sev, name):
                    levels[getattr(sev, name)] = level

            # TensorRT takes the GIL for every message it hands to a Python logger (also VERBOSE
            # ones, before we
            # can filter): acceptable, builds log little at our level, and it keeps TensorRT's
            # lines in the node's
            # log instead of on a bare stderr
            class RoutedLogger(trt.ILogger):
                def __init__(self):
                    trt.ILogger.__init__(self)

                def log(self, severity, msg):
                    log.log(levels.get(severity, logging.WARNING), 'TensorRT: %s', msg)

            st['logger'] = RoutedLogger()
        return st['logger']


def init_tensorrt(trt, plugin_library=None) -> None:
    """Load `plugin_library`, then register TensorRT's standard plugins (once).

    `plugin_library` is a path or list of paths; each is loaded once per process. Call before any
    parse or deserialise.
    """
    st = _state(trt)
    libs = (
        [plugin_library]
        if isinstance(plugin_library, (str, os.PathLike))
        else list(plugin_library or [])
    )
    with _STATE_LOCK:
        for lib in libs:
            path = str(Path(lib).expanduser())
            if path in st['libraries']:
                continue
            if not Path(path).is_file():
                raise ValueError(
                    f'plugin_library {path} does not exist; give the path of the TensorRT plugin '
                    'library (e.g. libffs_gwc_plugin.so built for this TensorRT '
                    f'{trt.__version__})'
                )
            try:
                st['libraries'][path] = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError as exc:
                raise ValueError(
                    f'cannot load plugin_library {path} ({exc}); it must be built for this '
                    'TensorRT '
                    f'({trt.__version__}) and CUDA'
                ) from exc
            log.info('loaded TensorRT plugin library %s', path)
        if not st['plugins_ready']:
            if not trt.init_libnvinfer_plugins(trt_logger(trt), ''):
                log.warning(
                    'TensorRT: init_libnvinfer_plugins failed; engines with standard plugin '
                    'layers will '
                    'not load'
                )
            st['plugins_ready'] = True


def trt_runtime(trt):
    """Return the process's one ``trt.Runtime`` (with the one logger)."""
    st = _state(trt)
    with _STATE_LOCK:
        if st['runtime'] is None:
            st['runtime'] = trt.Runtime(trt_logger(trt))
        return st['runtime']


def plugin_registered(trt, name: str, version: str = '1', namespace: str = '') -> bool:
    """Return whether a plugin creator is registered.

    Uses ``IPluginRegistry.get_creator`` (TensorRT 10 and 11).
    """
    return trt.get_plugin_registry().get_creator(name, version, namespace) is not None


# -------------------------------------------------------------------------------------------------
# fp16 on strongly typed TensorRT


def fp16_onnx(onnx_path, cache=None) -> Path:
    """Return an fp16 copy of `onnx_path`, converted once and cached under the source's hash.

    Weights and activations are fp16, inputs/outputs as they were; the conversion is done with
    onnxconverter-common.
    """
    onnx_path = Path(onnx_path)
    try:
        import onnx
        import onnxconverter_common
        from onnxconverter_common import float16
    except ImportError as exc:
        raise EngineBuildError(
            'precision fp16 on TensorRT 11+ needs the model in fp16 (strong typing); converting '
            'it needs onnxconverter-common (pip install onnxconverter-common), which is not '
            'installed. Install it, or use precision fp32'
        ) from exc
    # keep_io_types: fp32 graph inputs/outputs stay fp32 (Cast nodes inside); check_fp16_ready off
    # because a
    # post graph may already take an fp16 volume input; max_finite_val: clamp weights to fp16's
    # real range (the
    # converter's default, 1e4, would silently change large constants)
    options = {'keep_io_types': True, 'check_fp16_ready': False, 'max_finite_val': 65504.0}
    tag = (
        engine_cache.file_sha256(onnx_path)[:16]
        + '-'
        + hashlib.sha256(
            f'{onnxconverter_common.__version__}|{sorted(options.items())}'.encode()
        ).hexdigest()[:8]
    )
    out = Path(cache or engine_cache.cache_dir()) / 'fp16-onnx' / f'{onnx_path.stem}-{tag}.onnx'
    if out.is_file() and out.stat().st_size > 0:
        return out
    model = onnx.load(str(onnx_path))
    converted = float16.convert_float_to_float16(model, **options)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f'{out.name}.{os.getpid()}-{threading.get_ident()}.tmp')
    onnx.save(converted, str(tmp))
    os.replace(tmp, out)
    return out


# -------------------------------------------------------------------------------------------------
# building


def network_flags(trt) -> int:
    """Creation flags for the network.

    Strongly typed on TensorRT 11+ (always, by enum name), none on 10.x (explicit batch is implied
    since 10.0; EXPLICIT_BATCH is gone in 11).
    """
    if strongly_typed_only(trt):
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def build_engine(
    onnx_path,
    out_path,
    input_shapes: dict,
    precision: str = 'fp16',
    workspace_gb: float = 4.0,
    opt_level: int = 3,
    trt=None,
    timing_cache=None,
    cache=None,
) -> Path:
    """Parse `onnx_path`, build an engine for exactly `input_shapes`, write it to `out_path`.

    The engine is serialized. Raises EngineBuildError with the reason (parser errors, TensorRT's
    last error lines, the version) on failure.
    """
    trt = trt or import_tensorrt()
    if precision not in engine_cache.PRECISIONS:
        raise ValueError(
            f'precision must be one of {", ".join(engine_cache.PRECISIONS)}, got {precision!r}'
        )
    init_tensorrt(trt)
    logger = trt_logger(trt)
    strong = strongly_typed_only(trt)
    source = Path(onnx_path)
    if strong and precision == 'fp16':
        source = fp16_onnx(onnx_path, cache)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(source)):
        errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(
            f'TensorRT {trt.__version__} could not parse {source}: {errors or "no details"}'
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    config.builder_optimization_level = int(opt_level)
    if precision == 'fp16' and not strong:
        config.set_flag(trt.BuilderFlag.FP16)
    tc = None
    if timing_cache is not None:
        tc_path = Path(timing_cache)
        data = tc_path.read_bytes() if tc_path.is_file() else b''
        tc = config.create_timing_cache(data)
        if tc is None or not config.set_timing_cache(tc, False):
            log.warning(
                'TensorRT timing cache %s does not fit this TensorRT/GPU; building without it',
                tc_path,
            )
            tc = None
    profile = builder.create_optimization_profile()
    dynamic = False
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if tensor.name not in input_shapes:
            raise EngineBuildError(f'{onnx_path}: no shape given for input {tensor.name!r}')
        shape = tuple(int(d) for d in input_shapes[tensor.name])
        if any(int(d) == -1 for d in tensor.shape):
            dynamic = True
            profile.set_shape(tensor.name, shape, shape, shape)
    if dynamic and config.add_optimization_profile(profile) < 0:
        raise EngineBuildError(
            f'TensorRT rejected the optimisation profile {input_shapes} for {onnx_path}'
        )
    kind = 'strongly typed fp16 copy' if strong and precision == 'fp16' else precision
    log.info(
        'building TensorRT %s engine from %s (%s, %s); this can take minutes',
        trt.__version__,
        onnx_path,
        kind,
        input_shapes,
    )
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(
            f'TensorRT {trt.__version__} failed to build an engine from {onnx_path} ({kind}; see '
            'the TensorRT log lines above); try precision fp32, a larger workspace_gb, or '
            'backend '
            f'onnxruntime'
        )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, 'wb') as f:
        f.write(serialized)
    if tc is not None:
        _write_atomic(Path(timing_cache), bytes(config.get_timing_cache().serialize()))
    return out_path


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'{path.name}.{os.getpid()}-{threading.get_ident()}.tmp')
    tmp.write_bytes(data)
    os.replace(tmp, path)


def gpu_identity(device=None) -> tuple[str, tuple[int, int]]:
    import torch

    dev = torch.device(device or 'cuda')
    idx = dev.index or 0
    return torch.cuda.get_device_name(idx), tuple(torch.cuda.get_device_capability(idx))


_TMP_SEQ = itertools.count()


def ensure_engine(
    onnx_path,
    input_shapes: dict,
    precision: str = 'fp16',
    force: bool = False,
    cache=None,
    workspace_gb: float = 4.0,
    opt_level: int = 3,
    device=None,
    trt=None,
) -> Path:
    """Path of the cached engine for this key, built first when missing or forced."""
    trt = trt or import_tensorrt()
    name, cc = gpu_identity(device)
    key = engine_cache.make_key(onnx_path, trt.__version__, name, cc, precision, input_shapes)
    path = engine_cache.cached_engine_path(onnx_path, key, cache)
    if engine_cache.needs_build(path, force):
        # pid + thread + a process-wide sequence number: thread idents are reused once a thread
        # has ended
        seq = next(_TMP_SEQ)
        tmp = path.with_name(f'{path.name}.building-{os.getpid()}-{threading.get_ident()}-{seq}')
        try:
            build_engine(
                onnx_path,
                tmp,
                input_shapes,
                precision,
                workspace_gb,
                opt_level,
                trt=trt,
                timing_cache=engine_cache.timing_cache_path(cache, trt.__version__, name, cc),
                cache=cache,
            )
            engine_cache.install_engine(tmp, path, key)
        finally:
            tmp.unlink(missing_ok=True)
    return path


def build_engines_for(
    source,
    out=None,
    precision: str = 'fp16',
    net_size=None,
    workspace_gb=4.0,
    opt_level=3,
    force=True,
    plugin_library=None,
    cache=None,
    trt=None,
) -> dict:
    """Build every engine of `source` (for `ffs-ros build-engine`); role -> engine path."""
    from ..contract import graph_input_shapes

    trt = tensorrt_for(source, plugin_library, trt, purpose='ffs-ros build-engine')
    net_hw = source.network_size or net_size
    if net_hw is None:
        raise ValueError(
            f'{source.describe()} has symbolic height/width; pass --size WxH (multiples of 32) '
            'to fix '
            f'the engine size'
        )
    result = {}
    for role in source.roles:
        shapes = graph_input_shapes(source, role, net_hw)
        onnx_path = source.onnx_files[role]
        if out is not None:
            target = Path(out)
            if len(source.roles) > 1:  # --out names a directory for two engines
                target = target / Path(onnx_path).with_suffix('.engine').name
            result[role] = build_engine(
                onnx_path, target, shapes, precision, workspace_gb, opt_level, trt=trt, cache=cache
            )
        else:
            result[role] = ensure_engine(
                onnx_path,
                shapes,
                precision,
                force=force,
                cache=cache,
                workspace_gb=workspace_gb,
                opt_level=opt_level,
                trt=trt,
            )
    return result


def tensorrt_for(source, plugin_library=None, trt=None, purpose: str = 'backend tensorrt'):
    """Get TensorRT ready for `source`; return the tensorrt module.

    Ready means: imported, plugin libraries and standard plugins registered, the model an ONNX
    export (and, for the plugin export, its plugin registered).
    """
    trt = trt or import_tensorrt(purpose)
    if source.kind not in ('two_stage', 'single', 'plugin'):
        raise ValueError(
            f'TensorRT builds engines from ONNX; {source.describe()} is not ONNX. Export it with '
            f'`ffs-ros export`, or use backend torch'
        )
    init_tensorrt(trt, plugin_library)
    check_plugin(trt, source, plugin_library)
    return trt


def check_plugin(trt, source, plugin_library) -> None:
    """Check the plugin export's FFSGWCVolume creator is registered (from `plugin_library`)."""
    from ..contract import PLUGIN_OP

    if source.kind == 'plugin' and not plugin_registered(trt, PLUGIN_OP):
        given = (
            f'plugin_library {plugin_library} does not register it'
            if plugin_library
            else 'no plugin_library was given'
        )
        raise ValueError(
            f'{source.describe()} uses the TensorRT plugin {PLUGIN_OP!r} (version 1), which is '
            'not '
            f'registered: {given}. Pass plugin_library:=/path/to/libffs_gwc_plugin.so (built for '
            f'TensorRT {trt.__version__}), or use the two-stage export (feature_runner.onnx + '
            f'post_runner.onnx), which needs no plugin'
        )
