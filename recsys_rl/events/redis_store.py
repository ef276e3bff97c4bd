"""Redis Streams event store: the distributed backend (several servers, one trainer per consumer).

Keys, all under ``<prefix>:``:

- ``impressions``: stream in append order, one entry ``{id, ts}`` per impression; the entry id
  (``ms-seq``, assigned by Redis, increasing) is the consumer offset;
- ``imp``: hash impression_id -> JSON record (lookup, and the idempotency check: HSETNX);
- ``events``: hash event_id -> impression_id (idempotency of feedback);
- ``fb:<impression_id>``: hash event_id -> JSON record, all feedback of one impression;
- ``offsets``: hash consumer -> committed stream id.

Check-and-write is one Lua script per append call, so concurrent repeats (even from different
servers) are stored and counted once; a batch of concurrent calls goes to Redis as one pipeline (one
round trip) from a single writer thread. An append returns once Redis has executed it; whether that
survives a Redis restart is the server's persistence setting, so the store reads it at start
(``recsys_rl.events.redis_durability``) and refuses to open on a server that would lose acknowledged
writes (``appendonly yes`` with ``appendfsync always`` give the SQLite backend's guarantee), unless
opened with ``durability="best-effort"`` (then it logs one warning).

Outages: every command has a socket timeout and is retried a few times with backoff on a connection
error (redis-py's ``Retry``; the pool reconnects by itself). Retrying an append whose outcome is
unknown (sent, no reply) is safe: the scripts check ``impression_id`` / ``event_id`` first (HSETNX),
so an append executed twice is stored once. When the retries are spent the call raises
``StoreUnavailable`` naming the store, and the writer thread goes on with the next batch.

Each consumer is a consumer group on the stream, read by one group member (``trainer``). ``read_ready``
first re-reads the member's pending entries (delivered, not yet committed: a restarted trainer gets
them again), then takes new ones with ``XREADGROUP >``, and returns the ready prefix; entries that are
not ready stay pending until a later read. ``commit`` XACKs everything up to the offset and stores the
offset, atomically, in one script.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import secrets
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from operator import attrgetter
from typing import Any

import numpy as np
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from recsys_rl.events import redis_durability
from recsys_rl.events.base import (
    DurabilityError,
    EventStore,
    Feedback,
    Impression,
    ReadBatch,
    StoreUnavailable,
    check_durability,
)
from recsys_rl.events.group_commit import GroupCommitter

log = logging.getLogger("recsys_rl.events")

GROUP_MEMBER = "trainer"
START = "0-0"
_STREAM_ID = re.compile(r"^\d+-\d+$")
SOCKET_TIMEOUT_S = 2.0  # a partitioned server fails a call after (1 + RETRIES) timeouts, never hangs it
CONNECT_TIMEOUT_S = 1.0
RETRIES = 3  # backoff 20, 40, 80 ms: a Redis restart shorter than ~0.2 s costs no request an error
# server replies that mean "cannot write now", not "this call is wrong"
_UNAVAILABLE_REPLIES = ("MISCONF", "READONLY", "LOADING", "OOM", "MASTERDOWN", "NOREPLICAS")

# KEYS: imp hash, stream. ARGV: (impression_id, json, timestamp) triples. Returns 1 per new impression,
# 0 per repeat.
_APPEND_IMPRESSIONS = """
local new = {}
for i = 1, #ARGV, 3 do
  new[#new + 1] = redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
  if new[#new] == 1 then
    redis.call('XADD', KEYS[2], '*', 'id', ARGV[i], 'ts', ARGV[i + 2])
  end
end
return new
"""

# KEYS: events hash, then the fb hash of each event. ARGV: (event_id, impression_id, json) triples.
# Returns 1 per new event, 0 per repeat.
_APPEND_FEEDBACK = """
local new = {}
for k = 1, #KEYS - 1 do
  local a = 3 * k - 2
  new[k] = redis.call('HSETNX', KEYS[1], ARGV[a], ARGV[a + 1])
  if new[k] == 1 then
    redis.call('HSET', KEYS[k + 1], ARGV[a], ARGV[a + 2])
  end
end
return new
"""

# KEYS: stream, offsets hash. ARGV: group (= consumer), offset.
_COMMIT = """
local function before(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
local group, offset = ARGV[1], ARGV[2]
local current = redis.call('HGET', KEYS[2], group)
if current and before(offset, current) then
  return redis.error_reply('commit.offset: ' .. offset .. ' is before the committed offset ' .. current ..
    " of consumer '" .. group .. "'")
end
while true do
  local pending = redis.call('XPENDING', KEYS[1], group, '-', offset, 1000)
  if #pending == 0 then break end
  local ids = {}
  for i, p in ipairs(pending) do ids[i] = p[1] end
  redis.call('XACK', KEYS[1], group, unpack(ids))
end
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  if info['name'] == group and before(info['last-delivered-id'], offset) then
    redis.call('XGROUP', 'SETID', KEYS[1], group, offset)
  end
end
redis.call('HSET', KEYS[2], group, offset)
return 1
"""


_impression_fields = attrgetter(*Impression.__slots__)  # record -> tuple of its fields, in order
_feedback_fields = attrgetter(*Feedback.__slots__)


def _unavailable(method):
    """Turn connection failures (and replies meaning the server cannot write now) into
    ``StoreUnavailable`` naming the store."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(f"event store {self.url}: Redis unavailable: {exc}") from exc
        except redis.ResponseError as exc:
            if str(exc).startswith(_UNAVAILABLE_REPLIES):
                raise StoreUnavailable(f"event store {self.url}: Redis cannot write: {exc}") from exc
            raise

    return wrapper


def _check_offset(offset: object) -> str:
    if not isinstance(offset, str) or not _STREAM_ID.match(offset):
        raise ValueError(f"commit.offset: must be a Redis event-store offset ('<ms>-<seq>'), got {offset!r}")
    return offset


class RedisEventStore(EventStore):
    """Event store in Redis under ``prefix``; many store objects (processes) may append concurrently."""

    def __init__(
        self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "recsys_rl", durability: str = "durable"
    ) -> None:
        if not isinstance(prefix, str) or not prefix or any(c.isspace() for c in prefix):
            raise ValueError(f"prefix: must be a non-empty string without spaces, got {prefix!r}")
        self.url, self.prefix = url, prefix
        self.durability = check_durability(durability)
        self._r = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            retry=Retry(ExponentialBackoff(cap=0.1, base=0.01), RETRIES),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )
        try:
            self._r.ping()
            self.persistence = redis_durability.inspect(self._r)
        except redis.RedisError as exc:
            self._r.close()
            raise ConnectionError(f"event store {url}: cannot reach Redis: {exc}") from exc
        if not self.persistence.durable:
            why = "; ".join(self.persistence.problems)
            if self.durability == "durable":
                self._r.close()
                raise DurabilityError(
                    f"event store {url}: acknowledged writes would not survive a Redis restart: {why}. "
                    "Configure Redis with appendonly yes and appendfsync always, or accept the loss "
                    "with durability: best-effort (?durability=best-effort in the store URI)"
                )
            log.warning(
                "event store %s: durability best-effort: acknowledged writes may be lost when Redis "
                "restarts (%s)",
                url,
                why,
            )
        self._k_stream = f"{prefix}:impressions"
        self._k_imp = f"{prefix}:imp"
        self._k_events = f"{prefix}:events"
        self._k_offsets = f"{prefix}:offsets"
        self._append_imp = self._r.register_script(_APPEND_IMPRESSIONS)
        self._append_fb = self._r.register_script(_APPEND_FEEDBACK)
        self._commit_script = self._r.register_script(_COMMIT)
        self._groups: set[str] = set()
        self._groups_lock = threading.Lock()
        self._writer = GroupCommitter(self._flush, name=f"redis-writer:{prefix}")

    def _fb_key(self, impression_id: str) -> str:
        return f"{self.prefix}:fb:{impression_id}"

    @_unavailable
    def _flush(self, ops: Sequence[tuple[str, Any]]) -> list[Any]:
        """The whole batch in one round trip: one atomic script call per kind of record (each op's
        payload is ``(extra keys, argument triples)``); the scripts report per record whether it was
        new, which is split back into one count per op."""
        base = {
            "impressions": (self._append_imp, [self._k_imp, self._k_stream]),
            "feedback": (self._append_fb, [self._k_events]),
        }
        kinds = [kind for kind in base if any(k == kind for k, _ in ops)]
        calls = []
        for kind in kinds:
            script, keys = base[kind]
            payloads = [p for k, p in ops if k == kind]
            calls.append(
                (script, keys + [x for p in payloads for x in p[0]], [x for p in payloads for x in p[1]])
            )
        flags = dict(zip(kinds, self._eval_all(calls), strict=True))
        at = dict.fromkeys(kinds, 0)
        counts = []
        for kind, (_, args) in ops:
            n = len(args) // 3
            counts.append(sum(flags[kind][at[kind] : at[kind] + n]))
            at[kind] += n
        return counts

    def _eval_all(self, calls: list[tuple[Any, list[str], list[str]]]) -> list[list[int]]:
        """EVALSHA each call in one pipeline; a script missing from the server's cache (restart, SCRIPT
        FLUSH) is loaded and only that call is run again."""
        pipe = self._r.pipeline(transaction=False)
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        replies = pipe.execute(raise_on_error=False)
        for k, (reply, (script, keys, args)) in enumerate(zip(replies, calls, strict=True)):
            if isinstance(reply, redis.exceptions.NoScriptError):
                replies[k] = script(keys=keys, args=args)
            elif isinstance(reply, Exception):
                raise reply
        return replies

    def _append_impressions(self, items: Sequence[Impression]) -> Future:
        args: list[Any] = []
        for i in items:
            args += (i.impression_id, json.dumps(_impression_fields(i)), repr(i.timestamp))
        return self._writer.submit_nowait("impressions", ((), args), len(items))

    def _append_feedback(self, events: Sequence[Feedback]) -> int:
        keys, args = [], []
        for f in events:
            keys.append(self._fb_key(f.impression_id))
            args += (f.event_id, f.impression_id, json.dumps(_feedback_fields(f)))
        return self._writer.submit("feedback", (keys, args), len(events))

    @_unavailable
    def _signing_secret(self) -> bytes:
        key = f"{self.prefix}:signing_secret"
        self._r.set(key, secrets.token_hex(32), nx=True)  # the first server to ask makes it
        return bytes.fromhex(self._r.get(key))

    @_unavailable
    def _get_impression(self, impression_id: str) -> Impression | None:
        raw = self._r.hget(self._k_imp, impression_id)
        return None if raw is None else Impression(*json.loads(raw))

    def _ensure_group(self, consumer: str, again: bool = False) -> None:
        """Create the consumer group once per store object (``again``: it vanished, e.g. a Redis
        restart without persistence)."""
        with self._groups_lock:
            if again:
                self._groups.discard(consumer)
            if consumer in self._groups:
                return
            try:
                self._r.xgroup_create(self._k_stream, consumer, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._groups.add(consumer)

    def _xread(self, consumer: str, start: str, count: int) -> list[tuple[str, dict]]:
        try:
            res = self._r.xreadgroup(consumer, GROUP_MEMBER, {self._k_stream: start}, count=count)
        except redis.ResponseError as exc:
            if not str(exc).startswith("NOGROUP"):
                raise
            self._ensure_group(consumer, again=True)
            res = self._r.xreadgroup(consumer, GROUP_MEMBER, {self._k_stream: start}, count=count)
        return list(res[0][1]) if res else []

    @_unavailable
    def _read_ready(self, consumer: str, until_ts: float, limit: int) -> ReadBatch:
        self._ensure_group(consumer)
        committed = self._r.hget(self._k_offsets, consumer) or START
        entries = self._xread(consumer, "0", limit)  # pending: read before, not committed
        if len(entries) < limit:
            entries += self._xread(consumer, ">", limit - len(entries))
        ts = np.fromiter((float(fields["ts"]) for _, fields in entries), np.float64, len(entries))
        late = ts > until_ts
        entries = entries[: int(late.argmax()) if late.any() else len(entries)]
        if not entries:
            return ReadBatch([], [], committed)
        ids = [fields["id"] for _, fields in entries]
        pipe = self._r.pipeline(transaction=False)
        pipe.hmget(self._k_imp, ids)
        for iid in ids:
            pipe.hvals(self._fb_key(iid))
        raw_imps, *raw_fbs = pipe.execute()
        impressions = [Impression(*json.loads(raw)) for raw in raw_imps]
        feedback: list[Feedback] = []
        for group in raw_fbs:  # per impression; same order as SQLite: by time, then event id
            feedback += sorted(
                (Feedback(*json.loads(r)) for r in group), key=lambda f: (f.timestamp, f.event_id)
            )
        return ReadBatch(impressions, feedback, entries[-1][0])

    @_unavailable
    def _commit(self, consumer: str, offset: object) -> None:
        offset = _check_offset(offset)
        self._ensure_group(consumer)
        try:
            self._commit_script(keys=[self._k_stream, self._k_offsets], args=[consumer, offset])
        except redis.ResponseError as exc:
            if str(exc).startswith("commit.offset:"):
                raise ValueError(str(exc)) from None
            raise

    @_unavailable
    def _committed(self, consumer: str) -> str | None:
        return self._r.hget(self._k_offsets, consumer)

    @_unavailable
    def _count_impressions(self) -> int:
        return self._r.hlen(self._k_imp)

    @_unavailable
    def _count_feedback(self) -> int:
        return self._r.hlen(self._k_events)

    def _close(self) -> None:
        self._writer.close()
        self._r.close()

    def __repr__(self) -> str:
        return f"RedisEventStore({self.url!r}, prefix={self.prefix!r}, durability={self.durability!r})"
