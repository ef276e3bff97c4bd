"""Checking feedback against the impressions it refers to, and storing it.

A batch is all or nothing: if any event is wrong, nothing is stored and the response lists every
wrong event by its path (``events[3].product_id``), so the client can fix and resend the whole batch
(resending is safe: events are idempotent by ``event_id``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence

from recsys_rl.events import EventStore, Feedback, Impression
from serving.errors import ApiError
from serving.models import FeedbackEvent

NOT_FOUND = frozenset(("forged", "unknown"))


class FeedbackRejected(ApiError):
    """Events that are well formed but do not match what was served: 404 when every problem is an
    impression this service did not serve (forged or unknown id), else 409 (the event conflicts with
    its impression: product not in the banner, or past the attribution window)."""

    def __init__(self, problems: list[dict], reasons: Counter) -> None:
        super().__init__(404 if NOT_FOUND.issuperset(reasons) else 409, problems)
        self.reasons = reasons


def check_signatures(
    events: Sequence[FeedbackEvent], verify: Callable[[str], bool], prefix: str = "events"
) -> None:
    """Refuse the batch if any event quotes an impression id the server did not issue (forged or
    tampered, or signed under another secret). Runs before any store lookup, so forged ids cost no
    store reads and reveal nothing about which ids exist."""
    valid = {i: verify(i) for i in {e.impression_id for e in events}}  # each distinct id once
    problems = []
    for i, e in enumerate(events):
        if not valid[e.impression_id]:
            where = f"{prefix}[{i}]." if prefix else ""
            problems.append(
                {
                    "field": f"{where}impression_id",
                    "message": f"impression id {e.impression_id!r} was not issued by this service "
                    "(bad signature)",
                }
            )
    if problems:
        raise FeedbackRejected(problems, Counter(forged=len(problems)))


def ingest(
    store: EventStore,
    events: Sequence[FeedbackEvent],
    attribution_window_s: float,
    prefix: str = "events",
    verify: Callable[[str], bool] | None = None,
) -> tuple[int, int]:
    """Validate ``events`` against their impressions and append them durably (blocking: call from a
    worker thread). With ``verify``, impression ids are first checked by signature (``check_signatures``).
    Returns (new events stored, duplicates acknowledged). Raises ``FeedbackRejected`` (404/409) naming
    every bad event, with the count of each reason (forged, unknown, too_late, not_in_banner)."""
    if verify is not None:
        check_signatures(events, verify, prefix)
    now = time.time()
    impressions: dict[str, Impression | None] = {}
    for e in events:
        if e.impression_id not in impressions:
            impressions[e.impression_id] = store.get_impression(e.impression_id)
    records, problems, reasons = [], [], Counter()
    for i, e in enumerate(events):
        where = f"{prefix}[{i}]." if prefix else ""
        imp = impressions[e.impression_id]
        if imp is None:
            reasons["unknown"] += 1
            problems.append(
                {"field": f"{where}impression_id", "message": f"unknown impression {e.impression_id!r}"}
            )
            continue
        if now - imp.timestamp > attribution_window_s:
            reasons["too_late"] += 1
            problems.append(
                {
                    "field": f"{where}impression_id",
                    "message": f"impression {e.impression_id!r} was served {now - imp.timestamp:.0f} s ago, "
                    f"past the attribution window of {attribution_window_s:g} s",
                }
            )
            continue
        try:
            position = imp.items.index(e.product_id)
        except ValueError:
            reasons["not_in_banner"] += 1
            problems.append(
                {
                    "field": f"{where}product_id",
                    "message": f"product {e.product_id} is not in the banner of impression "
                    f"{e.impression_id!r} ({list(imp.items)})",
                }
            )
            continue
        records.append(
            Feedback(e.event_id, e.impression_id, now, e.type, e.product_id, position, e.units, e.price)
        )
    if problems:
        raise FeedbackRejected(problems, reasons)
    new = store.append_feedback(records)
    return new, len(records) - new
