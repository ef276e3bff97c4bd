"""Would a Redis server keep what it acknowledged across a restart? Read off its own settings.

The SQLite backend acknowledges an append once it is fsynced (``synchronous=FULL``). The Redis
backend acknowledges once Redis has executed the append; that equals the SQLite guarantee only when
Redis writes every command to its append-only file and fsyncs it before replying:

- ``appendonly yes`` and ``appendfsync always``: an acknowledged write survives a Redis crash,
  restart, OS crash or power loss (each append is one Lua script, logged to the AOF as one
  MULTI/EXEC, so after a restart either all of it is there or none);
- ``appendfsync everysec``: up to about a second (two when the disk is slow) of acknowledged writes
  can be lost on a crash;
- ``appendfsync no`` or ``appendonly no`` (RDB snapshots only, or nothing on disk): everything since
  the last snapshot is lost on a restart.

Replicas do not change the verdict: replication is asynchronous, so a write acknowledged by the
primary may be on no replica when the primary dies (only a WAIT after each write would close that,
which this backend does not issue); the check reports them so an operator sees the topology.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis


@dataclass
class RedisDurability:
    """What the server said, and why acknowledged writes would not survive a restart (empty: they would)."""

    appendonly: str | None
    appendfsync: str | None
    aof_last_write_status: str | None
    role: str | None
    connected_replicas: int
    problems: list[str] = field(default_factory=list)

    @property
    def durable(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return (
            f"appendonly={self.appendonly} appendfsync={self.appendfsync} "
            f"aof_last_write_status={self.aof_last_write_status} role={self.role} "
            f"connected_replicas={self.connected_replicas}"
        )


def _config(client: redis.Redis, name: str) -> str | None:
    try:
        value = client.config_get(name).get(name)
    except redis.ResponseError:  # CONFIG renamed or disabled (managed Redis services)
        return None
    return None if value is None else str(value).lower()


def inspect(client: redis.Redis) -> RedisDurability:
    """Read ``CONFIG GET appendonly/appendfsync``, ``INFO persistence`` and ``INFO replication``."""
    persistence = client.info("persistence")
    replication = client.info("replication")
    appendonly = _config(client, "appendonly")
    if appendonly is None and "aof_enabled" in persistence:
        appendonly = "yes" if int(persistence["aof_enabled"]) else "no"
    appendfsync = _config(client, "appendfsync")
    status = persistence.get("aof_last_write_status")
    report = RedisDurability(
        appendonly,
        appendfsync,
        None if status is None else str(status),
        replication.get("role"),
        int(replication.get("connected_slaves", 0)),
    )
    p = report.problems
    if appendonly != "yes":
        p.append(
            f"appendonly is {appendonly or 'unknown'}: acknowledged writes since the last snapshot "
            "are lost when Redis restarts (needs appendonly yes)"
        )
    if appendfsync != "always":
        p.append(
            f"appendfsync is {appendfsync or 'unknown (CONFIG GET refused)'}: up to the last second of "
            "acknowledged writes can be lost on a crash (needs appendfsync always)"
        )
    if report.aof_last_write_status not in (None, "ok"):
        p.append(f"the last write to the append-only file failed (aof_last_write_status={status})")
    if report.role not in (None, "master"):
        p.append(f"this server is a {report.role}: writes go to its primary, not here")
    return report
