"""One worker thread that always processes the newest item ("latest pair wins").

The executor's callbacks only call `submit()`, which stores the item in a single slot and
returns at once: inference never blocks the executor. If the worker is still busy with the
previous pair, a newer submission replaces the waiting one and the replaced item is counted as
dropped, so nothing queues up when the camera outruns the matcher (memory stays flat).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional


class LatestWorker:
    """Run `process(item)` on a background thread for the newest submitted item.

    `on_error(exc, item)` is called (on the worker thread) if `process` raises; the worker
    keeps running. Counters: `submitted`, `processed`, `dropped` (replaced before processing),
    `failed` (process raised).
    """

    def __init__(
        self,
        process: Callable[[Any], None],
        on_error: Optional[Callable[[BaseException, Any], None]] = None,
        name: str = 'ffs_ros-worker',
    ) -> None:
        self._process = process
        self._on_error = on_error
        self._cond = threading.Condition()
        self._slot: Any = None
        self._has_item = False
        self._stopping = False
        self._busy = False
        self.submitted = 0
        self.processed = 0
        self.dropped = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> bool:
        """Hand over `item`; returns True if a waiting older item was dropped for it."""
        with self._cond:
            replaced = self._has_item
            if replaced:
                self.dropped += 1
            self._slot = item
            self._has_item = True
            self.submitted += 1
            self._cond.notify()
        return replaced

    @property
    def busy(self) -> bool:
        """True while an item is being processed or waiting."""
        with self._cond:
            return self._busy or self._has_item

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is waiting or running (tests, shutdown); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not (self._busy or self._has_item), timeout)

    def stop(self, timeout: float = 5.0) -> bool:
        """Finish the item in progress, drop a waiting one, and join the thread."""
        with self._cond:
            self._stopping = True
            if self._has_item:
                self._has_item = False
                self._slot = None
                self.dropped += 1
            self._cond.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._has_item or self._stopping)
                if self._stopping:
                    return
                item, self._slot, self._has_item = self._slot, None, False
                self._busy = True
            try:
                self._process(item)
                ok = True
            except BaseException as exc:  # noqa: BLE001 - the worker must survive any frame
                ok = False
                if self._on_error is not None:
                    try:
                        self._on_error(exc, item)
                    except Exception:  # noqa: BLE001
                        pass
            finally:
                item = None
            with self._cond:
                self._busy = False
                if ok:
                    self.processed += 1
                else:
                    self.failed += 1
                self._cond.notify_all()
