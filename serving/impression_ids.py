"""Signed, unguessable impression ids: ``<token>.<tag>``.

``token`` is 128 random bits (32 hex), ``tag`` the first 128 bits of HMAC-SHA256(secret, token)
(32 hex; RFC 2104 allows truncation to half the hash). A client cannot make up an id the server
accepts without the secret, so feedback quoting a forged id is refused from the id alone, before any
store lookup: forged traffic costs no store reads and cannot probe which ids exist.

The secret comes from the config's ``secret``, else ``$RECSYS_RL_SECRET``, else the event store's own
(``EventStore.signing_secret``: 32 random bytes made on first use and kept in the store). The last is
the default because the alternatives fail quietly: a random secret per process made every feedback
event on a banner served before a restart, or by another server sharing the store, be refused as
forged. Keeping the key beside the events exposes nothing new: whoever can read or write the store
can already read or write the events themselves. Only without any store (unit tests) is a random
secret drawn, with a warning.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from recsys_rl.events import EventStore

log = logging.getLogger("serving.ids")

SECRET_ENV = "RECSYS_RL_SECRET"
TOKEN_BYTES = 16
TAG_BYTES = 16
ID_LENGTH = 2 * TOKEN_BYTES + 1 + 2 * TAG_BYTES
_HEX = frozenset("0123456789abcdef")


class ImpressionIds:
    """Makes and checks impression ids under one secret (thread-safe: no mutable state)."""

    def __init__(self, secret: str | bytes) -> None:
        key = secret.encode() if isinstance(secret, str) else bytes(secret)
        if len(key) < 16:
            raise ValueError(f"secret: at least 16 bytes, got {len(key)}")
        self._mac = hmac.new(key, digestmod=hashlib.sha256)  # keyed once; copied per id

    @classmethod
    def resolve(cls, configured: str | None, store: EventStore | None = None) -> ImpressionIds:
        """The configured secret, else the environment's, else the event store's own (made once and kept
        in the store, so servers sharing it and restarts agree), else a random one (with a warning)."""
        secret = configured or os.environ.get(SECRET_ENV)
        if not secret and store is not None:
            log.info("impression ids are signed with the event store's secret")
            secret = store.signing_secret()
        if not secret:
            log.warning(
                "no secret configured (ServeConfig.secret or $%s) and no event store: using a random one; "
                "impression ids will not verify after a restart",
                SECRET_ENV,
            )
            secret = secrets.token_bytes(32)
        return cls(secret)

    def _tag(self, token: str) -> str:
        mac = self._mac.copy()
        mac.update(token.encode())
        return mac.digest()[:TAG_BYTES].hex()

    def new(self) -> str:
        return self.new_many(1)[0]

    def new_many(self, n: int) -> list[str]:
        """``n`` fresh ids (one read of the OS random source for all of them; a few µs an id)."""
        raw = os.urandom(TOKEN_BYTES * n).hex()
        tokens = [raw[i : i + 2 * TOKEN_BYTES] for i in range(0, len(raw), 2 * TOKEN_BYTES)]
        return [f"{t}.{self._tag(t)}" for t in tokens]

    def verify(self, impression_id: str) -> bool:
        """Whether the server under this secret issued ``impression_id`` (constant time in the tag)."""
        if len(impression_id) != ID_LENGTH or impression_id[2 * TOKEN_BYTES] != ".":
            return False
        token, tag = impression_id[: 2 * TOKEN_BYTES], impression_id[2 * TOKEN_BYTES + 1 :]
        if not _HEX.issuperset(token):
            return False
        return hmac.compare_digest(tag, self._tag(token))
