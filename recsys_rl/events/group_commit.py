"""Group commit: many threads' writes become one transaction, written by a single thread.

A durable commit costs one fsync (SQLite) or one round trip (Redis) whatever its size, so while the
writer is busy committing one batch, new callers queue up and all go into the next. Each caller blocks
on a future until the batch holding its write is durable; throughput then grows with concurrency
instead of being capped at one fsync per request.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

Flush = Callable[[Sequence[tuple[str, Any]]], list[Any]]


@dataclass(slots=True)
class _Op:
    kind: str
    payload: Any
    size: int
    future: Future = field(default_factory=Future)


_STOP = object()


class GroupCommitter:
    """Single writer thread over ``flush``.

    ``flush(ops)`` receives a batch of ``(kind, payload)`` in arrival order, must write them all in one
    transaction and return one result per op; a result that is an Exception instance fails only that
    op's caller. If ``flush`` raises, nothing of the batch may be stored and every caller gets the error.
    """

    def __init__(
        self,
        flush: Flush,
        *,
        name: str,
        max_batch: int = 8192,
        linger_step_s: float = 50e-6,
        max_linger_s: float = 1e-3,
    ) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._linger_step_s = linger_step_s
        self._max_linger_s = max_linger_s
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self.batches = 0  # transactions written so far (for benchmarks and tests)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, kind: str, payload: Any, size: int = 1) -> Any:
        """Queue one write and wait until the transaction holding it is durable; returns its result."""
        return self.submit_nowait(kind, payload, size).result()

    def submit_nowait(self, kind: str, payload: Any, size: int = 1) -> Future:
        """Queue one write; the future resolves (on the writer thread) once it is durable. Writes are
        committed in submission order, so futures resolve in that order too."""
        op = _Op(kind, payload, size)
        with self._lock:
            if self._closed:
                raise RuntimeError("event store writer is closed")
            self._queue.put(op)
        return op.future

    def close(self) -> None:
        """Write everything already submitted, then stop the writer thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        busy = False
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stop = self._gather(first, linger=busy)
            self._write(batch)
            if stop:
                return
            busy = len(batch) > 1

    def _gather(self, first: _Op, linger: bool) -> tuple[list[_Op], bool]:
        """``first`` plus everything queued behind it. Under load (``linger``), also wait briefly for the
        callers the last commit just released: without that pause they miss this batch and concurrent
        callers settle into two half-size groups committing alternately, halving throughput."""
        batch, size = [first], first.size
        deadline = time.monotonic() + self._max_linger_s
        while size < self._max_batch:
            try:
                op = self._queue.get_nowait()
            except queue.Empty:
                if not linger or time.monotonic() >= deadline:
                    break
                time.sleep(self._linger_step_s)
                linger = not self._queue.empty()  # keep waiting only while callers keep arriving
                continue
            if op is _STOP:
                return batch, True
            batch.append(op)
            size += op.size
        return batch, False

    def _write(self, batch: list[_Op]) -> None:
        try:
            results = self._flush([(op.kind, op.payload) for op in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"flush returned {len(results)} results for {len(batch)} writes")
        except BaseException as exc:  # noqa: BLE001 - every waiting caller must be woken with the error
            for op in batch:
                op.future.set_exception(exc)
            return
        self.batches += 1
        for op, res in zip(batch, results, strict=True):
            if isinstance(res, BaseException):
                op.future.set_exception(res)
            else:
                op.future.set_result(res)
