"""Model versions: following the registry alias, pin and rollback (admin), hot swaps without failures."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.model_holder import FileSource, ModelHolder, RegistrySource, UnknownVersion, from_policy
from tests.serving.helpers import TOKEN, config, fields, running_server, serve_banner, set_alias, tiny_policy

ADMIN = {"X-Admin-Token": TOKEN}


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


@pytest.fixture
def registry_app(tmp_path, store, registry):
    """The app following banner-policy@champion (champion -> 1 at start) in the test registry."""
    set_alias(registry, "1")
    uri, name = registry
    cfg = config(tmp_path, registered_model=name, tracking_uri=uri, reload_interval_s=0.1)
    with TestClient(create_app(cfg, store=store)) as c:
        wait_for(lambda: c.get("/readyz").status_code == 200)
        yield c


@pytest.mark.parametrize("headers", [{}, {"X-Admin-Token": "wrong-token"}])
def test_admin_endpoints_need_the_token(client, headers):
    for method, path in [("get", "/admin/versions"), ("post", "/admin/rollback"), ("post", "/admin/unpin")]:
        r = getattr(client, method)(path, headers=headers)
        assert r.status_code == 401 and fields(r) == ["X-Admin-Token"]
    r = client.post("/admin/pin", json={"bad": "body"}, headers=headers)
    assert r.status_code == 401  # refused before the body is even looked at


def test_admin_is_disabled_without_a_configured_token(tmp_path, store, monkeypatch):
    from tests.serving.helpers import tiny_holder

    monkeypatch.delenv("RECSYS_RL_ADMIN_TOKEN", raising=False)
    app = create_app(config(tmp_path, admin_token=None), store=store, holder=tiny_holder())
    with TestClient(app) as c:
        r = c.get("/admin/versions", headers={"X-Admin-Token": ""})
    assert r.status_code == 401 and "disabled" in r.json()["detail"][0]["message"]


def test_admin_token_can_come_from_the_environment(tmp_path, store, monkeypatch):
    from tests.serving.helpers import tiny_holder

    monkeypatch.setenv("RECSYS_RL_ADMIN_TOKEN", "from-the-environment")
    app = create_app(config(tmp_path, admin_token=None), store=store, holder=tiny_holder())
    with TestClient(app) as c:
        assert c.get("/admin/versions", headers={"X-Admin-Token": "from-the-environment"}).status_code == 200


def test_server_follows_the_alias_and_pin_and_rollback_change_the_served_version(registry_app, registry):
    c = registry_app
    assert serve_banner(c)["model_version"] == "banner-policy/1"
    versions = c.get("/admin/versions", headers=ADMIN).json()
    assert versions["current"] == "banner-policy/1" and versions["available"] == [
        "banner-policy/2",
        "banner-policy/1",
    ]

    set_alias(registry, "2")  # a new champion: the poller swaps it in
    wait_for(lambda: serve_banner(c)["model_version"] == "banner-policy/2")

    pinned = c.post("/admin/pin", json={"version": "1"}, headers=ADMIN)
    assert pinned.status_code == 200 and pinned.json()["pinned"] is True
    assert serve_banner(c)["model_version"] == "banner-policy/1"
    time.sleep(0.3)  # pinned: the poller must not go back to the alias's version
    assert serve_banner(c)["model_version"] == "banner-policy/1"

    rolled = c.post("/admin/rollback", headers=ADMIN)
    assert rolled.status_code == 200 and rolled.json()["current"] == "banner-policy/2"
    assert serve_banner(c)["model_version"] == "banner-policy/2"

    set_alias(registry, "1")
    unpinned = c.post("/admin/unpin", headers=ADMIN)
    assert unpinned.json()["current"] == "banner-policy/1" and unpinned.json()["pinned"] is False


def test_pin_of_a_missing_version_is_404_and_rollback_with_no_history_is_409(registry_app):
    r = registry_app.post("/admin/pin", json={"version": "99"}, headers=ADMIN)
    assert r.status_code == 404 and fields(r) == ["version"]
    r = registry_app.post("/admin/pin", json={"version": "latest"}, headers=ADMIN)
    assert r.status_code == 404
    r = registry_app.post("/admin/rollback", headers=ADMIN)
    assert r.status_code == 409


def test_registry_models_give_the_same_logits_as_the_policy_they_were_logged_from(registry):
    import torch

    uri, name = registry
    loaded = RegistrySource(name, version="2", tracking_uri=uri).load("2")
    viewed, history = torch.tensor([3, 4]), torch.tensor([[1, 2] + [-1] * 8, [-1] * 10])
    with torch.no_grad():
        expected = tiny_policy(2)(viewed, history)
    assert loaded.version == "banner-policy/2" and loaded.n_products == 50
    torch.testing.assert_close(loaded.logits(viewed, history, None), expected)


def test_a_failed_reload_keeps_the_current_model(tmp_path):
    from recsys_rl.policy import save_policy

    path = tmp_path / "p.pt"
    save_policy(tiny_policy(0), path)
    holder = ModelHolder(FileSource(path))
    assert holder.refresh() and holder.current.version.startswith("file:p.pt@")
    before = holder.current
    path.write_bytes(b"not a policy")
    with pytest.raises(Exception):  # noqa: B017 - whatever torch raises for a corrupt file
        holder.refresh()
    assert holder.current is before
    save_policy(tiny_policy(1), path)
    assert holder.refresh() and holder.current is not before


def test_poller_keeps_serving_and_counts_failures_when_the_source_breaks(tmp_path):
    from recsys_rl.policy import save_policy

    path = tmp_path / "p.pt"
    save_policy(tiny_policy(0), path)
    holder = ModelHolder(FileSource(path), reload_interval_s=0.05)
    holder.start()
    try:
        wait_for(lambda: holder.current is not None)
        served = holder.current
        path.unlink()
        wait_for(lambda: holder.reload_failures >= 2)
        assert holder.current is served and "FileNotFoundError" in holder.last_error
    finally:
        holder.stop()


def test_rollback_walks_back_through_history():
    holder = ModelHolder(model=from_policy(tiny_policy(0), "a"))
    for v, seed in (("b", 1), ("c", 2)):
        holder.swap(from_policy(tiny_policy(seed), v))
    assert holder.history() == ["b", "a"]
    assert holder.rollback().version == "b"
    assert holder.rollback().version == "a"
    with pytest.raises(UnknownVersion):
        holder.rollback()


def test_hot_swaps_under_load_fail_no_request_and_serve_both_versions(tmp_path, store):
    """Threads hammer /v1/banners over real HTTP while the holder swaps between two models; after each
    swap at least one more banner is served before the next (counted, not timed: a loaded machine is slow)."""
    models = [from_policy(tiny_policy(0), "v-a"), from_policy(tiny_policy(1), "v-b")]
    holder = ModelHolder(model=models[0])
    app = create_app(config(tmp_path), store=store, holder=holder)
    stop = threading.Event()
    seen: list[set] = [set() for _ in range(4)]
    failures: list[str] = []
    served: list[int] = []

    def hammer(k: int, url: str) -> None:
        with httpx.Client(base_url=url) as http:
            while not stop.is_set():
                r = http.post("/v1/banners", json={"user_id": k, "viewed": k, "history": [10, 11]})
                if r.status_code != 200:
                    failures.append(r.text)
                else:
                    seen[k].add(r.json()["model_version"])
                    served.append(k)

    with running_server(app) as url:
        threads = [threading.Thread(target=hammer, args=(k, url)) for k in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        for i in range(40):
            before = len(served)
            holder.swap(models[i % 2])
            while len(served) <= before and time.monotonic() < deadline:
                time.sleep(0.005)
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert set().union(*seen) == {"v-a", "v-b"}
    assert store.count_impressions() > 40
