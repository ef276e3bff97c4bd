"""Impression ids are signed: feedback quoting an id the server did not issue is refused from the id
alone (422 naming the event's impression_id), never looked up and never stored."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from recsys_rl.events import open_store
from serving.app import create_app
from serving.impression_ids import SECRET_ENV, ImpressionIds
from tests.serving.helpers import SECRET, config, fields, serve_banner, tiny_holder


class CountingStore:
    """The real SQLite store, counting impression lookups (to show forged ids cause none)."""

    def __init__(self, store) -> None:
        self._store, self.lookups = store, 0

    def get_impression(self, impression_id):
        self.lookups += 1
        return self._store.get_impression(impression_id)

    def __getattr__(self, name):
        return getattr(self._store, name)


def click(impression_id: str, product_id: int, eid: str = "e1") -> dict:
    return {"event_id": eid, "impression_id": impression_id, "type": "click", "product_id": product_id}


def flip(hex_char: str) -> str:
    return "0" if hex_char != "0" else "1"


def test_ids_verify_under_their_secret_only():
    ids, other = ImpressionIds(SECRET), ImpressionIds("another-secret-of-16+")
    a = ids.new()
    assert ids.verify(a) and not other.verify(a)
    assert len(a) == 65 and a != ids.new()
    assert not ids.verify(a[:-1] + flip(a[-1]))  # tampered tag
    assert not ids.verify(flip(a[0]) + a[1:])  # tampered token
    assert not ids.verify(a.upper()) and not ids.verify("") and not ids.verify("x" * 65)


def test_a_short_secret_is_refused():
    with pytest.raises(ValueError, match="secret: at least 16 bytes"):
        ImpressionIds("short")


def test_the_secret_comes_from_the_environment_when_not_configured(monkeypatch, store):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    assert ImpressionIds.resolve(None, store).verify(ImpressionIds(SECRET).new())
    monkeypatch.delenv(SECRET_ENV)
    assert not ImpressionIds.resolve(None).verify(ImpressionIds(SECRET).new())  # no store: random per start


def test_without_a_configured_secret_servers_on_one_store_sign_alike(monkeypatch, store):
    monkeypatch.delenv(SECRET_ENV, raising=False)
    one, other = ImpressionIds.resolve(None, store), ImpressionIds.resolve(None, store)
    assert other.verify(one.new()) and one.verify(other.new())
    assert not ImpressionIds(SECRET).verify(one.new())


def test_feedback_on_a_banner_served_before_a_restart_is_accepted(monkeypatch, tmp_path):
    """The default config names no secret: the store's own keeps ids valid across a restart."""
    monkeypatch.delenv(SECRET_ENV, raising=False)
    cfg = config(tmp_path, secret=None, events=f"sqlite:///{tmp_path}/events.db")
    with TestClient(create_app(cfg, holder=tiny_holder())) as c:
        banner = serve_banner(c)
    with TestClient(create_app(cfg, holder=tiny_holder())) as c:  # a new process on the same store
        event = {"event_id": "e1", "impression_id": banner["impression_id"], "type": "click"}
        r = c.post("/v1/feedback", json={**event, "product_id": banner["items"][0]})
    assert r.status_code == 200, r.text


@pytest.fixture
def counting(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/events.db")
    yield CountingStore(s)
    s.close()


def forged_variants(real: str) -> dict[str, str]:
    token = real.split(".")[0]
    return {
        "made_up": "0123456789abcdef0123456789abcdef.0123456789abcdef0123456789abcdef",
        "tampered_tag": real[:-1] + flip(real[-1]),
        "other_token_same_tag": flip(token[0]) + real[1:],
        "other_secret": ImpressionIds("another-secret-of-16+").new(),
    }


@pytest.mark.parametrize("kind", list(forged_variants("0" * 32 + "." + "0" * 32)))
def test_forged_ids_are_refused_before_any_store_lookup(tmp_path, counting, kind):
    app = create_app(config(tmp_path), store=counting, holder=tiny_holder())
    with TestClient(app) as c:
        banner = serve_banner(c)
        forged = forged_variants(banner["impression_id"])[kind]
        r = c.post(
            "/v1/feedback",
            json={
                "events": [
                    click(banner["impression_id"], banner["items"][0], "ok"),
                    click(forged, banner["items"][0], "bad"),
                ]
            },
        )
        metrics = c.get("/metrics").text
    assert r.status_code == 404 and fields(r) == ["events[1].impression_id"]
    assert "bad signature" in r.json()["detail"][0]["message"]
    assert counting.lookups == 0
    assert counting.count_feedback() == 0  # all or nothing: the valid event is not stored either
    assert counting.get_impression(forged) is None
    assert 'recsys_feedback_rejected_total{reason="forged"} 1.0' in metrics


def test_valid_ids_are_accepted_and_feedback_stored(tmp_path, counting):
    app = create_app(config(tmp_path), store=counting, holder=tiny_holder())
    with TestClient(app) as c:
        banner = serve_banner(c)
        r = c.post("/v1/feedback", json=click(banner["impression_id"], banner["items"][1]))
    assert ImpressionIds(SECRET).verify(banner["impression_id"])
    assert r.status_code == 200 and r.json() == {"accepted": 1, "duplicates": 0}
    assert counting.lookups == 1 and counting.count_feedback() == 1


def test_ids_from_a_server_with_another_secret_are_refused(tmp_path, counting):
    with TestClient(
        create_app(config(tmp_path, secret="first-server-secret!"), store=counting, holder=tiny_holder())
    ) as c:
        banner = serve_banner(c)
    with TestClient(create_app(config(tmp_path), store=counting, holder=tiny_holder())) as c:
        r = c.post("/v1/feedback", json=click(banner["impression_id"], banner["items"][0]))
    assert r.status_code == 404 and fields(r) == ["impression_id"]
    assert counting.count_feedback() == 0


def test_an_id_not_shaped_like_ours_is_refused_by_the_schema(tmp_path, counting):
    """An id that is not <32 hex>.<32 hex> fails the documented pattern (422) before any check."""
    with TestClient(create_app(config(tmp_path), store=counting, holder=tiny_holder())) as c:
        banner = serve_banner(c)
        r = c.post("/v1/feedback", json=click("3f0c9a4be1d54b7f9a0e6c1d2b3a4f5e", banner["items"][0]))
    assert r.status_code == 422 and fields(r) == ["impression_id"] and "pattern" in r.text
    assert counting.lookups == 0 and counting.count_feedback() == 0
