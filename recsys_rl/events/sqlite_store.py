"""SQLite event store: the embedded default, one file, no server.

WAL mode lets the trainer process read while the server process writes. Durability is
``synchronous=FULL``: in WAL mode that fsyncs the log on every commit, so an acknowledged event
survives a power loss or OS crash, not only a process crash (which is all ``NORMAL`` promises: it
defers the fsync to checkpoints and may lose the last commits on power loss). Group commit makes the
fsync cost per batch of callers, not per call, so FULL stays cheap under load; ``synchronous="normal"``
remains available for throwaway runs. Checkpoints (copying the WAL into the database file, with
their own fsyncs) run on a thread of their own, never inside a commit that callers wait on.

A full or unwritable disk (SQLITE_FULL, SQLITE_IOERR, SQLITE_READONLY, SQLITE_CANTOPEN) or a lock
held past the busy timeout fails the batch's transaction as a whole (SQLite rolls it back: nothing is
half-written) with ``StoreUnavailable`` naming the file; the writer thread goes on, so the next batch
succeeds as soon as space returns, with no restart.

Impressions get an AUTOINCREMENT ``seq`` (never reused), which is the consumer offset; writes are
serialised by SQLite, so seqs become visible in increasing order and an offset never passes an
impression that was still uncommitted.
"""

from __future__ import annotations

import contextlib
import functools
import json
import secrets
import sqlite3
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np

from recsys_rl.events.base import EventStore, Feedback, Impression, ReadBatch, StoreUnavailable
from recsys_rl.events.group_commit import GroupCommitter

BUSY_TIMEOUT_MS = 10_000
CHECKPOINT_EVERY_S = 0.2  # how often the checkpointer looks for committed writes to checkpoint
SECRET_KEY = "impression_id_secret"
SYNCHRONOUS = ("full", "normal")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS impressions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    impression_id TEXT NOT NULL UNIQUE,
    timestamp REAL NOT NULL,
    user_id INTEGER NOT NULL,
    viewed INTEGER NOT NULL,
    history TEXT NOT NULL,
    items TEXT NOT NULL,
    propensity REAL NOT NULL,
    log_propensity REAL NOT NULL,
    policy_version TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
    event_id TEXT PRIMARY KEY,
    impression_id TEXT NOT NULL,
    timestamp REAL NOT NULL,
    type TEXT NOT NULL,
    product_id INTEGER NOT NULL,
    position INTEGER NOT NULL,
    units INTEGER NOT NULL,
    price REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS feedback_by_impression ON feedback (impression_id);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS consumers (
    consumer TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
) WITHOUT ROWID;
"""

_IMP_COLS = (
    "impression_id, timestamp, user_id, viewed, history, items, propensity, log_propensity, policy_version"
)
_FB_COLS = "event_id, impression_id, timestamp, type, product_id, position, units, price"
_INSERT_IMP = f"INSERT OR IGNORE INTO impressions ({_IMP_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_FB = f"INSERT OR IGNORE INTO feedback ({_FB_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_UPSERT_CONSUMER = "INSERT OR REPLACE INTO consumers (consumer, seq) VALUES (?, ?)"
_SELECT_READY = f"SELECT seq, {_IMP_COLS} FROM impressions WHERE seq > ? ORDER BY seq LIMIT ?"
_SELECT_FB = (
    f"SELECT {', '.join('f.' + c for c in _FB_COLS.split(', '))} FROM feedback f "
    "JOIN impressions i ON i.impression_id = f.impression_id "
    "WHERE i.seq > ? AND i.seq <= ? ORDER BY i.seq, f.timestamp, f.event_id"
)


# SQLite result codes that say "the disk or the lock, not this call": transient, retry later
_UNAVAILABLE = {
    "SQLITE_FULL": "disk full",
    "SQLITE_IOERR": "disk I/O error",
    "SQLITE_READONLY": "file or disk not writable",
    "SQLITE_CANTOPEN": "cannot open the database file",
    "SQLITE_BUSY": "database locked by another process past the busy timeout",
    "SQLITE_LOCKED": "database locked",
}


def _unavailable(method):
    """Turn a full / unwritable disk or a held lock into ``StoreUnavailable`` naming the file."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.OperationalError as exc:
            name = getattr(exc, "sqlite_errorname", "") or ""
            reason = next((r for code, r in _UNAVAILABLE.items() if name.startswith(code)), None)
            if reason is None and "disk is full" in str(exc):
                reason = _UNAVAILABLE["SQLITE_FULL"]
            if reason is None:
                raise
            raise StoreUnavailable(
                f"event store sqlite:///{self.path}: {reason} ({exc}); nothing of this write was stored"
            ) from exc

    return wrapper


def _impression_row(i: Impression) -> tuple:
    return (
        i.impression_id,
        i.timestamp,
        i.user_id,
        i.viewed,
        json.dumps(i.history),
        json.dumps(i.items),
        i.propensity,
        i.log_propensity,
        i.policy_version,
    )


def _impression(row: Sequence) -> Impression:
    iid, ts, user, viewed, history, items, prop, logp, version = row
    return Impression(iid, ts, user, viewed, json.loads(history), json.loads(items), prop, logp, version)


_feedback_fields = attrgetter(*Feedback.__slots__)  # record -> tuple of its fields, in column order


def _check_offset(offset: object) -> int:
    if isinstance(offset, bool) or not isinstance(offset, int | np.integer) or offset < 0:
        raise ValueError(
            f"commit.offset: must be a SQLite event-store offset (an integer >= 0), got {offset!r}"
        )
    return int(offset)


class SqliteEventStore(EventStore):
    """Event store in one SQLite file; safe to share between threads and between processes."""

    def __init__(self, path: str | Path, *, synchronous: str = "full") -> None:
        path = Path(path)
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous: must be one of {SYNCHRONOUS}, got {synchronous!r}")
        if not path.parent.is_dir():
            raise ValueError(f"event store path {str(path)!r}: directory {str(path.parent)!r} does not exist")
        self.path = path
        self._synchronous = synchronous.upper()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._conn = self._connect()
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    self._conn.execute(stmt)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            self._conn.close()
            raise
        self._conn.execute("PRAGMA wal_autocheckpoint=0")
        self._written = threading.Event()  # set by the writer after a commit; cleared by a checkpoint
        self._closing = threading.Event()
        self._writer = GroupCommitter(self._flush, name=f"sqlite-writer:{path.name}")
        self._checkpointer = threading.Thread(
            target=self._checkpoint_forever, name=f"sqlite-checkpointer:{path.name}", daemon=True
        )
        self._checkpointer.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        return conn

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection: WAL readers see the last commit without blocking the writer."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    @_unavailable
    def _flush(self, ops: Sequence[tuple[str, Any]]) -> list[Any]:
        """One IMMEDIATE transaction for the whole batch; runs on the writer thread only."""
        conn = self._conn
        results: list[Any] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for kind, payload in ops:
                before = conn.total_changes
                if kind == "impressions":
                    conn.executemany(_INSERT_IMP, payload)
                    results.append(conn.total_changes - before)
                elif kind == "feedback":
                    conn.executemany(_INSERT_FB, payload)
                    results.append(conn.total_changes - before)
                elif kind == "secret":
                    conn.execute(
                        "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (SECRET_KEY, payload)
                    )
                    results.append(
                        conn.execute("SELECT value FROM meta WHERE key = ?", (SECRET_KEY,)).fetchone()[0]
                    )
                else:
                    results.append(self._commit_in_tx(*payload))
            conn.execute("COMMIT")
            self._written.set()
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already
                    conn.execute("ROLLBACK")
            raise
        return results

    def _checkpoint_forever(self) -> None:
        """Copy committed WAL frames into the database file, off the writer thread.

        SQLite's automatic checkpoint runs inside the commit that crosses 1,000 WAL pages, on the
        writer, so every request waiting on that commit also waits for the checkpoint's fsyncs of the
        log and the database file (tens of ms when the disk stalls). A PASSIVE checkpoint on its own
        connection never blocks the writer, which goes on appending to the WAL meanwhile; durability
        is unchanged (a commit is durable once in the WAL, per ``synchronous``). Several processes on
        one file each run one: SQLite lets one checkpoint at a time, the others get SQLITE_BUSY and
        try again on the next round. Errors (a full disk) are left to the next round too: the WAL
        keeps every commit until a checkpoint succeeds.
        """
        conn: sqlite3.Connection | None = None
        while not self._closing.is_set():
            if not self._written.wait(CHECKPOINT_EVERY_S) or self._closing.wait(CHECKPOINT_EVERY_S):
                continue
            self._written.clear()
            try:
                conn = conn or self._connect()
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error:
                self._written.set()
        if conn is not None:
            conn.close()

    def _commit_in_tx(self, consumer: str, seq: int) -> ValueError | None:
        row = self._conn.execute("SELECT seq FROM consumers WHERE consumer = ?", (consumer,)).fetchone()
        if row is not None and seq < row[0]:
            return ValueError(
                f"commit.offset: {seq} is before the committed offset {row[0]} of consumer {consumer!r}"
            )
        self._conn.execute(_UPSERT_CONSUMER, (consumer, seq))
        return None

    def _append_impressions(self, items: Sequence[Impression]) -> Future:
        return self._writer.submit_nowait("impressions", [_impression_row(i) for i in items], len(items))

    def _append_feedback(self, events: Sequence[Feedback]) -> int:
        return self._writer.submit("feedback", [_feedback_fields(f) for f in events], len(events))

    def _signing_secret(self) -> bytes:
        return bytes(self._writer.submit("secret", secrets.token_bytes(32)))

    @_unavailable
    def _get_impression(self, impression_id: str) -> Impression | None:
        row = (
            self._reader()
            .execute(f"SELECT {_IMP_COLS} FROM impressions WHERE impression_id = ?", (impression_id,))
            .fetchone()
        )
        return None if row is None else _impression(row)

    @_unavailable
    def _read_ready(self, consumer: str, until_ts: float, limit: int) -> ReadBatch:
        conn = self._reader()
        conn.execute("BEGIN")  # one snapshot for offset, impressions and feedback
        try:
            row = conn.execute("SELECT seq FROM consumers WHERE consumer = ?", (consumer,)).fetchone()
            start = 0 if row is None else row[0]
            rows = conn.execute(_SELECT_READY, (start, limit)).fetchall()
            ts = np.fromiter((r[2] for r in rows), np.float64, len(rows))
            late = ts > until_ts
            rows = rows[: int(late.argmax()) if late.any() else len(rows)]
            end = rows[-1][0] if rows else start
            fb = conn.execute(_SELECT_FB, (start, end)).fetchall() if rows else []
        finally:
            conn.execute("COMMIT")
        return ReadBatch([_impression(r[1:]) for r in rows], [Feedback(*r) for r in fb], end)

    def _commit(self, consumer: str, offset: object) -> None:
        self._writer.submit("commit", (consumer, _check_offset(offset)))

    @_unavailable
    def _committed(self, consumer: str) -> int | None:
        row = self._reader().execute("SELECT seq FROM consumers WHERE consumer = ?", (consumer,)).fetchone()
        return None if row is None else row[0]

    @_unavailable
    def _count_impressions(self) -> int:
        return self._reader().execute("SELECT COUNT(*) FROM impressions").fetchone()[0]

    @_unavailable
    def _count_feedback(self) -> int:
        return self._reader().execute("SELECT COUNT(*) FROM feedback").fetchone()[0]

    def _close(self) -> None:
        self._writer.close()
        self._closing.set()
        self._checkpointer.join()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self._conn.close()

    def __repr__(self) -> str:
        return f"SqliteEventStore({str(self.path)!r}, synchronous={self._synchronous.lower()!r})"
