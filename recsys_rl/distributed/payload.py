"""A policy as bytes for Ray's object store: a live ``BannerPolicy`` holds locks (its candidate index)
that do not pickle, so workers get its saved form (``policy.save_policy``) and rebuild it."""

from __future__ import annotations

import io

from recsys_rl.policy import BannerPolicy, load_policy, save_policy


def policy_bytes(policy: BannerPolicy) -> bytes:
    buf = io.BytesIO()
    save_policy(policy, buf)
    return buf.getvalue()


def policy_from_bytes(blob: bytes) -> BannerPolicy:
    """The frozen policy ``policy_bytes`` saved (a reference: no gradients)."""
    return load_policy(io.BytesIO(blob)).frozen_copy()
