"""Small record factories shared by the event-store tests."""

from __future__ import annotations

import math

from recsys_rl.events import Feedback, Impression


def imp(
    k: int | str, ts: float = 100.0, history=(7, 8), items=(10, 11, 12, 13, 14), log_p=-2.0
) -> Impression:
    return Impression(
        f"imp-{k}",
        ts,
        user_id=3,
        viewed=1,
        history=history,
        items=items,
        propensity=math.exp(log_p),
        log_propensity=log_p,
        policy_version="v1",
    )


def click(k: int | str, impression: Impression, position: int, ts: float = 101.0) -> Feedback:
    return Feedback(
        f"ev-{k}", impression.impression_id, ts, "click", impression.items[position], position, 0, 0.0
    )


def buy(
    k: int | str, impression: Impression, position: int, units: int, price: float, ts: float = 102.0
) -> Feedback:
    product = impression.items[position]
    return Feedback(f"ev-{k}", impression.impression_id, ts, "purchase", product, position, units, price)
