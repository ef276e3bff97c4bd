"""POST /v1/feedback: checked against the banner it refers to, stored durably, idempotent by event id."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from recsys_rl.events import Impression
from serving.app import create_app
from tests.serving.helpers import config, fields, serve_banner, signed_id, tiny_holder


def event(imp: dict, eid: str, position: int = 0, kind: str = "click", **kw) -> dict:
    return {
        "event_id": eid,
        "impression_id": imp["impression_id"],
        "type": kind,
        "product_id": imp["items"][position],
        **kw,
    }


def test_clicks_and_purchases_are_stored_with_the_position_from_the_banner(client, store):
    imp = serve_banner(client)
    batch = [event(imp, "c1", 2), event(imp, "p1", 2, "purchase", units=3, price=4.5)]
    r = client.post("/v1/feedback", json={"events": batch})
    assert r.status_code == 200 and r.json() == {"accepted": 2, "duplicates": 0}
    ready = store.read_ready("check", time.time() + 1, 10)
    fb = sorted(ready.feedback, key=lambda f: f.event_id)
    assert [(f.event_id, f.type, f.product_id, f.position, f.units, f.price) for f in fb] == [
        ("c1", "click", imp["items"][2], 2, 0, 0.0),
        ("p1", "purchase", imp["items"][2], 2, 3, 4.5),
    ]
    logged = ready.to_logged()
    assert logged.outcomes.revenue[0, 2].item() == pytest.approx(13.5)


def test_a_single_event_object_is_accepted_too(client, store):
    imp = serve_banner(client)
    r = client.post("/v1/feedback", json=event(imp, "solo", 4))
    assert r.json() == {"accepted": 1, "duplicates": 0}
    assert store.count_feedback() == 1


def test_duplicate_event_ids_are_acknowledged_but_stored_once(client, store):
    imp = serve_banner(client)
    first = client.post("/v1/feedback", json={"events": [event(imp, "e1"), event(imp, "e2", 1)]})
    again = client.post("/v1/feedback", json={"events": [event(imp, "e1"), event(imp, "e3", 3)]})
    same_batch = client.post("/v1/feedback", json={"events": [event(imp, "e4"), event(imp, "e4")]})
    assert first.json() == {"accepted": 2, "duplicates": 0}
    assert again.json() == {"accepted": 1, "duplicates": 1}
    assert same_batch.json() == {"accepted": 1, "duplicates": 1}
    assert store.count_feedback() == 4


def test_unknown_impression_is_refused_naming_the_event(client, store):
    imp = serve_banner(client)
    bad = {**event(imp, "x1"), "impression_id": signed_id()}
    r = client.post("/v1/feedback", json={"events": [event(imp, "ok"), bad]})
    assert r.status_code == 404 and fields(r) == ["events[1].impression_id"]
    assert "unknown impression" in r.json()["detail"][0]["message"]
    assert store.count_feedback() == 0  # all or nothing


def test_product_not_in_the_banner_is_refused(client):
    imp = serve_banner(client)
    other = next(p for p in range(50) if p not in imp["items"])
    r = client.post("/v1/feedback", json={"events": [{**event(imp, "x"), "product_id": other}]})
    assert r.status_code == 409 and fields(r) == ["events[0].product_id"]
    assert "not in the banner" in r.json()["detail"][0]["message"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": "view"}, "events[0].type"),
        ({"type": "purchase"}, "events[0].units"),
        ({"type": "purchase", "units": 0, "price": 3.0}, "events[0].units"),
        ({"type": "click", "units": 2}, "events[0].units"),
        ({"price": -1.0}, "events[0].price"),
        ({"product_id": "7"}, "events[0].product_id"),
        ({"event_id": ""}, "events[0].event_id"),
        ({"extra": 1}, "events[0].extra"),
    ],
)
def test_inconsistent_events_get_422_naming_the_field(client, change, field):
    imp = serve_banner(client)
    r = client.post("/v1/feedback", json={"events": [{**event(imp, "x"), **change}]})
    assert r.status_code == 422, r.text
    assert field in fields(r)


def test_single_event_errors_name_the_field_without_a_prefix(client):
    imp = serve_banner(client)
    r = client.post("/v1/feedback", json={**event(imp, "x"), "type": "purchase"})
    assert r.status_code == 422 and fields(r) == ["units"]


def test_body_that_is_not_an_event_or_batch_is_refused(client):
    assert fields(client.post("/v1/feedback", json=[1, 2])) == ["body"]
    assert fields(client.post("/v1/feedback", content=b"nope")) == ["body"]
    assert fields(client.post("/v1/feedback", json={"events": []})) == ["events"]


def test_batch_over_the_limit_gets_422_and_nothing_is_stored(tmp_path, store):
    app = create_app(config(tmp_path, max_batch_events=3), store=store, holder=tiny_holder())
    with TestClient(app) as c:
        imp = serve_banner(c)
        r = c.post("/v1/feedback", json={"events": [event(imp, f"e{i}") for i in range(4)]})
        ok = c.post("/v1/feedback", json={"events": [event(imp, f"e{i}") for i in range(3)]})
        metrics = c.get("/metrics").text
    assert r.status_code == 422 and fields(r) == ["events"]  # the schema's maxItems
    assert "at most 3" in r.json()["detail"][0]["message"]
    assert ok.json() == {"accepted": 3, "duplicates": 0}
    assert 'recsys_feedback_rejected_total{reason="too_many"} 4.0' in metrics


def test_feedback_after_the_attribution_window_is_refused(tmp_path, store):
    old_id = signed_id()
    old = Impression(
        old_id, time.time() - 120, 1, 2, (3,), (10, 11, 12, 13, 14), 0.5, -0.6931471805599453, "v"
    )
    store.append_impressions([old])
    app = create_app(config(tmp_path, attribution_window_s=60), store=store, holder=tiny_holder())
    with TestClient(app) as c:
        r = c.post(
            "/v1/feedback",
            json={"event_id": "late", "impression_id": old_id, "type": "click", "product_id": 12},
        )
        metrics = c.get("/metrics").text
    assert r.status_code == 409 and fields(r) == ["impression_id"]
    assert 'recsys_feedback_rejected_total{reason="too_late"} 1.0' in metrics
    assert "attribution window" in r.json()["detail"][0]["message"]


def test_metrics_count_written_duplicate_and_rejected_feedback(client):
    imp = serve_banner(client)
    client.post("/v1/feedback", json={"events": [event(imp, "a"), event(imp, "b", 1)]})
    client.post("/v1/feedback", json=event(imp, "a"))
    client.post("/v1/feedback", json={**event(imp, "z"), "impression_id": "nope"})  # not an id: invalid
    forged = "0" * 32 + "." + "0" * 32
    client.post("/v1/feedback", json={**event(imp, "v"), "impression_id": forged})
    client.post("/v1/feedback", json={**event(imp, "y"), "impression_id": signed_id()})
    client.post("/v1/feedback", json={**event(imp, "w"), "product_id": 50})
    text = client.get("/metrics").text
    assert "recsys_feedback_events_written_total 2.0" in text
    assert "recsys_feedback_duplicates_total 1.0" in text
    assert 'recsys_feedback_rejected_total{reason="invalid"} 1.0' in text
    assert 'recsys_feedback_rejected_total{reason="forged"} 1.0' in text
    assert 'recsys_feedback_rejected_total{reason="unknown"} 1.0' in text
    assert 'recsys_feedback_rejected_total{reason="not_in_banner"} 1.0' in text
