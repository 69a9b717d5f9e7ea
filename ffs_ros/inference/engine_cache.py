"""Where built TensorRT engines are kept and when they must be rebuilt (pure; no TensorRT needed).

An engine is valid only for the exact ONNX bytes, TensorRT version, GPU model and compute
capability, precision and input shapes it was built for; all of these go into the cache key, so any
change selects another file and the engine is rebuilt. Default directory:
``~/.cache/ffs_ros/engines/`` (``$XDG_CACHE_HOME/ffs_ros/engines`` when set;
``FFS_ROS_ENGINE_CACHE`` overrides both).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
import hashlib
import json
import os
from pathlib import Path
import threading

PRECISIONS = ('fp16', 'fp32')


def cache_dir() -> Path:
    env = os.environ.get('FFS_ROS_ENGINE_CACHE')
    if env:
        return Path(env).expanduser()
    base = os.environ.get('XDG_CACHE_HOME') or str(Path.home() / '.cache')
    return Path(base) / 'ffs_ros' / 'engines'


def file_sha256(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine's validity depends on."""

    onnx_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: tuple
    precision: str
    shapes: tuple  # ((input name, (dims...)), ...) sorted by name

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(
                f'precision must be one of {", ".join(PRECISIONS)}, got {self.precision!r}'
            )

    def digest(self) -> str:
        payload = json.dumps(asdict(self), sort_keys=True, default=list)
        return hashlib.sha256(payload.encode()).hexdigest()

    def filename(self, stem: str) -> str:
        return f'{stem}-{self.precision}-{self.digest()[:16]}.engine'


def make_key(
    onnx_path,
    trt_version: str,
    gpu_name: str,
    compute_capability,
    precision: str,
    input_shapes: dict,
) -> EngineKey:
    shapes = tuple(sorted((str(n), tuple(int(d) for d in s)) for n, s in input_shapes.items()))
    return EngineKey(
        file_sha256(onnx_path),
        str(trt_version),
        str(gpu_name),
        tuple(int(c) for c in compute_capability),
        precision,
        shapes,
    )


def cached_engine_path(onnx_path, key: EngineKey, directory=None) -> Path:
    return Path(directory or cache_dir()) / key.filename(Path(onnx_path).stem)


def needs_build(engine_path, force: bool = False) -> bool:
    """Return True when the cached engine is missing or empty, or a rebuild is forced."""
    p = Path(engine_path)
    return force or not p.is_file() or p.stat().st_size == 0


def install_engine(built, engine_path, key: EngineKey) -> Path:
    """Atomically move a freshly built engine file into place, plus a JSON sidecar.

    The engine file has a name unique to its builder; the sidecar describes the key (for humans and
    tooling). Two processes building the same key both succeed; the last rename wins, and both
    files are the same engine.
    """
    p = Path(engine_path)
    p.parent.mkdir(parents=True, exist_ok=True)
    os.replace(built, p)
    side = p.with_suffix('.json')
    tmp = side.with_name(f'{side.name}.{os.getpid()}-{threading.get_ident()}.tmp')
    tmp.write_text(json.dumps(asdict(key), indent=1, default=list) + '\n')
    os.replace(tmp, side)
    return p


def timing_cache_path(directory, trt_version: str, gpu_name: str, compute_capability) -> Path:
    """Return the TensorRT timing cache for one TensorRT version and GPU, beside the engines."""
    tag = hashlib.sha256(
        f'{trt_version}|{gpu_name}|{tuple(compute_capability)}'.encode()
    ).hexdigest()[:16]
    return Path(directory or cache_dir()) / f'timing-{tag}.cache'
