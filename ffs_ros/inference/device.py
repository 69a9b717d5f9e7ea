"""Where a network matcher's device work runs: one torch device, one non-default stream.

Timing is by events.

Every build, load and run of a device-resident network goes through :meth:`Device.scope`, which
makes the matcher's GPU the current CUDA device (TensorRT binds engines and contexts to the device
current when they are created) and its own stream the current torch stream (TensorRT adds
device-wide synchronisations on stream 0, and stream 0 cannot be graph-captured). On a CPU the
scope only records which device is active (tests check it).

Stage times come from a :class:`StageClock`: CUDA events recorded on the stream and read once,
after the result has been downloaded (no synchronisation per stage), or ``perf_counter`` on the
host.
"""

from __future__ import annotations

import contextlib
import threading
import time

_ACTIVE = threading.local()


def resolve_torch_device(device):
    """Return the torch.device for 'cuda', 'cuda:1', 'cpu' or None (CUDA if available).

    A clear error is raised if CUDA is absent.
    """
    import torch

    if device is None or device in ('', 'auto'):
        return torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(
            f'device {device!r} is not a device name; use cpu, cuda or cuda:N'
        ) from exc
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise RuntimeError(
                f'device {device!r} requested but torch sees no CUDA GPU (torch '
                f'{torch.__version__}); '
                f'use device cpu, or install a CUDA build of torch'
            )
        index = 0 if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise RuntimeError(
                f'device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) '
                f'are visible (CUDA_VISIBLE_DEVICES?); use cuda:0 .. '
                f'cuda:{torch.cuda.device_count() - 1}'
            )
        dev = torch.device('cuda', index)
    elif dev.type != 'cpu':
        raise ValueError(f'device {device!r} is not supported; use cpu, cuda or cuda:N')
    return dev


def active_device():
    """Return the Device whose scope the calling thread is in (None outside any scope)."""
    return getattr(_ACTIVE, 'device', None)


class Device:
    """A torch device with the matcher's own stream.

    `stream`: normally None (a new non-default ``torch.cuda.Stream`` on CUDA, none on CPU); tests
    pass a stand-in with a ``cuda_stream`` handle to exercise code that hands the stream to
    TensorRT without a GPU.
    """

    def __init__(self, spec=None, stream=None) -> None:
        import torch

        self.torch = torch
        self.device = resolve_torch_device(spec)
        self.is_cuda = self.device.type == 'cuda'
        if stream is None and self.is_cuda:
            with torch.cuda.device(self.device):
                stream = torch.cuda.Stream(self.device)
        self.stream = stream

    def __str__(self) -> str:
        return str(self.device)

    @property
    def stream_handle(self) -> int:
        """cudaStream_t of the matcher's stream as an int; 0 on CPU.

        It is what TensorRT's execute_async_v3 takes.
        """
        return int(self.stream.cuda_stream) if self.stream is not None else 0

    @contextlib.contextmanager
    def scope(self):
        """Make this device current and its stream the current stream for the block.

        Re-entrant.
        """
        previous = active_device()
        _ACTIVE.device = self
        try:
            if self.is_cuda:
                with self.torch.cuda.device(self.device), self.torch.cuda.stream(self.stream):
                    yield self
            else:
                yield self
        finally:
            _ACTIVE.device = previous

    def synchronize(self) -> None:
        """Wait for the matcher's stream (only where the host needs a result)."""
        if self.is_cuda:
            self.stream.synchronize()

    def clock(self) -> 'StageClock':
        return EventClock(self.torch, self.stream) if self.is_cuda else HostClock()


class StageClock:
    """Splits a frame into named stages.

    ``mark(stage)`` ends the current stage; ``read()`` -> {stage: ms}.
    """

    def mark(self, stage: str) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def read(self) -> dict:  # pragma: no cover - interface
        raise NotImplementedError


class HostClock(StageClock):
    def __init__(self) -> None:
        self.t = time.perf_counter()
        self.times: dict = {}

    def mark(self, stage: str) -> None:
        now = time.perf_counter()
        self.times[stage] = self.times.get(stage, 0.0) + (now - self.t) * 1e3
        self.t = now

    def read(self) -> dict:
        return dict(self.times)


class EventClock(StageClock):
    """CUDA events recorded on the stream; read only after the stream has been synchronised.

    Reading earlier fails (elapsed_time on an unfinished event raises); timing adds no
    synchronisation of its own.
    """

    def __init__(self, torch, stream) -> None:
        self.torch, self.stream = torch, stream
        start = torch.cuda.Event(enable_timing=True)
        start.record(stream)
        self.events = [('', start)]

    def mark(self, stage: str) -> None:
        ev = self.torch.cuda.Event(enable_timing=True)
        ev.record(self.stream)
        self.events.append((stage, ev))

    def read(self) -> dict:
        times: dict = {}
        for (_, a), (stage, b) in zip(self.events, self.events[1:]):
            times[stage] = times.get(stage, 0.0) + a.elapsed_time(b)
        return times
