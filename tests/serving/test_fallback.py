"""A model that fails at inference (raises, NaN logits, wrong shape) does not turn banner requests into
5xx: the batch is scored by the last good model, logged with that model's version and propensity, and
/metrics counts the fallback by failed and serving version."""

from __future__ import annotations

import math
import time

import pytest
import torch
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.model_holder import LoadedModel, ModelHolder, from_policy
from tests.serving.helpers import N_PRODUCTS, config, serve_banner, tiny_policy


def raising(viewed, history, user_features):
    raise RuntimeError("CUDA error: device-side assert triggered")


def nan_logits(viewed, history, user_features):
    return torch.full((len(viewed), N_PRODUCTS), math.nan)


def one_posinf(viewed, history, user_features):
    out = torch.zeros(len(viewed), N_PRODUCTS)
    out[-1, 7] = math.inf
    return out


def all_neginf_row(viewed, history, user_features):
    out = torch.zeros(len(viewed), N_PRODUCTS)
    out[0] = -math.inf
    return out


def wrong_shape(viewed, history, user_features):
    return torch.zeros(len(viewed), N_PRODUCTS + 1)


def holder_with_broken_current(broken) -> ModelHolder:
    holder = ModelHolder(model=from_policy(tiny_policy(1), "v-good"))
    holder.swap(LoadedModel("v-broken", N_PRODUCTS, broken))
    return holder


@pytest.mark.parametrize("broken", [raising, nan_logits, one_posinf, all_neginf_row, wrong_shape])
def test_a_failing_model_falls_back_to_the_previous_version(tmp_path, store, broken):
    app = create_app(config(tmp_path), store=store, holder=holder_with_broken_current(broken))
    with TestClient(app) as c:
        banners = [serve_banner(c, user_id=u) for u in range(3)]
        det = serve_banner(c, mode="deterministic")
        metrics = c.get("/metrics").text
    assert {b["model_version"] for b in banners + [det]} == {"v-good"}
    stored = store.get_impression(banners[0]["impression_id"])
    assert stored.policy_version == "v-good"
    assert stored.log_propensity == pytest.approx(banners[0]["log_propensity"])
    assert math.isfinite(banners[0]["log_propensity"]) and det["propensity"] == 1.0
    line = 'recsys_banner_fallbacks_total{failed_version="v-broken",served_version="v-good"} 4.0'
    assert line in metrics
    assert 'recsys_model_info{n_products="50",source="",version="v-broken"} 1.0' in metrics


def test_the_propensity_is_the_fallback_models_own(tmp_path, store):
    """The logged propensity must be the one of the model that chose the banner (for OPE)."""
    from recsys_rl import slate
    from recsys_rl.records import HISTORY_LEN, PAD

    good = tiny_policy(1)
    app = create_app(config(tmp_path), store=store, holder=holder_with_broken_current(raising))
    with TestClient(app) as c:
        b = serve_banner(c, viewed=3, history=[4, 5, 6])
    history = torch.full((1, HISTORY_LEN), PAD)
    history[0, :3] = torch.tensor([4, 5, 6])
    with torch.no_grad():
        logits = good(torch.tensor([3]), history).double()
    expected = slate.log_prob(logits, torch.tensor([b["items"]]), 1.0).item()
    assert b["log_propensity"] == pytest.approx(expected, rel=1e-5)


def test_without_any_good_model_the_request_is_refused_not_served_unlogged(tmp_path, store):
    holder = ModelHolder(model=LoadedModel("v-broken", N_PRODUCTS, raising))
    with TestClient(create_app(config(tmp_path), store=store, holder=holder)) as c:
        r = c.post("/v1/banners", json={"user_id": 1, "viewed": 3})
    assert r.status_code == 503 and "CUDA error" in r.json()["detail"][0]["message"]
    assert store.count_impressions() == 0


def test_a_fallback_must_have_the_same_catalogue(tmp_path, store):
    from recsys_rl.policy import BannerPolicy

    small = from_policy(BannerPolicy(N_PRODUCTS - 10, 8, 16).eval(), "v-small")  # works, other catalogue
    holder = ModelHolder(model=small)
    holder.swap(LoadedModel("v-broken", N_PRODUCTS, raising))
    with TestClient(create_app(config(tmp_path), store=store, holder=holder)) as c:
        r = c.post("/v1/banners", json={"user_id": 1, "viewed": 45})
    assert r.status_code == 503


def test_after_recovery_the_served_model_is_used_again(tmp_path, store):
    holder = holder_with_broken_current(raising)
    with TestClient(create_app(config(tmp_path), store=store, holder=holder)) as c:
        assert serve_banner(c)["model_version"] == "v-good"
        holder.swap(from_policy(tiny_policy(2), "v-new"))
        assert serve_banner(c)["model_version"] == "v-new"


def test_a_model_that_keeps_failing_is_rolled_back_and_pinned(tmp_path, store):
    """After auto_rollback_after failed batches in a row the stand-in becomes the served version (pinned,
    so a poll does not bring the broken one back), and /metrics records the rollback."""
    holder = holder_with_broken_current(nan_logits)
    app = create_app(config(tmp_path, auto_rollback_after=3), store=store, holder=holder)
    with TestClient(app) as c:
        for u in range(2):
            assert serve_banner(c, user_id=u)["model_version"] == "v-good"
        assert holder.current.version == "v-broken"  # two failures: not yet
        serve_banner(c, user_id=2)
        deadline = time.monotonic() + 10
        while holder.current.version != "v-good" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert holder.current.version == "v-good" and holder.pinned
        assert "v-broken" not in holder.history()
        assert serve_banner(c, user_id=3)["model_version"] == "v-good"
        metrics = c.get("/metrics").text
    line = 'recsys_model_auto_rollbacks_total{failed_version="v-broken",served_version="v-good"} 1.0'
    assert line in metrics


def test_a_failure_streak_is_broken_by_a_good_batch(tmp_path, store):
    flaky = {"fail": True}

    def sometimes(viewed, history, user_features):
        if flaky["fail"]:
            raise RuntimeError("transient")
        return torch.zeros(len(viewed), N_PRODUCTS)

    holder = holder_with_broken_current(sometimes)
    app = create_app(config(tmp_path, auto_rollback_after=2), store=store, holder=holder)
    with TestClient(app) as c:
        serve_banner(c, user_id=0)  # failure 1
        flaky["fail"] = False
        assert serve_banner(c, user_id=1)["model_version"] == "v-broken"  # streak reset
        flaky["fail"] = True
        serve_banner(c, user_id=2)  # failure 1 again
        time.sleep(0.2)
    assert holder.current.version == "v-broken" and not holder.pinned
