"""The single-writer group commit: concurrent callers share one transaction, errors reach the right caller."""

from __future__ import annotations

import threading
import time

import pytest

from recsys_rl.events.group_commit import GroupCommitter


class RecordingFlush:
    """A flush that records each batch and can hold the writer inside the first one."""

    def __init__(self) -> None:
        self.batches: list[list] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, ops):
        self.batches.append(list(ops))
        self.entered.set()
        self.release.wait(10)
        return [ValueError(f"bad {p}") if kind == "fail" else p * 10 for kind, p in ops]


def test_callers_waiting_during_a_commit_share_the_next_one():
    flush = RecordingFlush()
    writer = GroupCommitter(flush, name="test")
    results = {}
    first = threading.Thread(target=lambda: results.setdefault(0, writer.submit("w", 0)))
    first.start()
    assert flush.entered.wait(5)  # the writer is now busy committing batch [0]
    others = [
        threading.Thread(target=lambda k=k: results.setdefault(k, writer.submit("w", k))) for k in range(1, 7)
    ]
    for t in others:
        t.start()
    time.sleep(0.2)  # let all six queue up behind the busy writer
    flush.release.set()
    for t in [first, *others]:
        t.join(5)
    writer.close()
    assert results == {k: k * 10 for k in range(7)}
    assert [sorted(p for _, p in b) for b in flush.batches] == [[0], [1, 2, 3, 4, 5, 6]]
    assert writer.batches == 2


def test_an_error_result_fails_only_its_caller_and_a_raising_flush_fails_all():
    flush = RecordingFlush()
    flush.release.set()
    writer = GroupCommitter(flush, name="test")
    assert writer.submit("w", 1) == 10
    with pytest.raises(ValueError, match="bad 2"):
        writer.submit("fail", 2)
    writer.close()

    def boom(ops):
        raise OSError("disk full")

    broken = GroupCommitter(boom, name="broken")
    with pytest.raises(OSError, match="disk full"):
        broken.submit("w", 1)
    broken.close()


def test_close_writes_what_was_submitted_then_refuses_more():
    flush = RecordingFlush()
    flush.release.set()
    writer = GroupCommitter(flush, name="test")
    done = []
    threads = [threading.Thread(target=lambda k=k: done.append(writer.submit("w", k))) for k in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    writer.close()
    assert sorted(done) == [0, 10, 20, 30, 40]
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit("w", 9)
