"""POST /v1/banners: valid banners with exact propensities, logged before they are returned."""

from __future__ import annotations

import math
import time

import pytest
import torch
from fastapi.testclient import TestClient

from recsys_rl import slate
from recsys_rl.records import HISTORY_LEN, PAD
from serving.app import create_app
from serving.model_holder import ModelHolder
from tests.serving.helpers import N_PRODUCTS, config, fields, serve_banner, tiny_holder, tiny_policy


def _logits(viewed: int, history: list[int]) -> torch.Tensor:
    h = torch.full((1, HISTORY_LEN), PAD, dtype=torch.long)
    h[0, : len(history)] = torch.tensor(history)
    with torch.no_grad():
        return tiny_policy()(torch.tensor([viewed]), h)


def test_banner_has_five_distinct_catalogue_products_and_the_exact_log_propensity(client):
    got = serve_banner(client, viewed=7, history=[1, 2, 3])
    assert set(got) == {"impression_id", "model_version", "items", "propensity", "log_propensity", "mode"}
    items = got["items"]
    assert len(items) == 5 and len(set(items)) == 5
    assert all(0 <= i < N_PRODUCTS for i in items)
    expected = slate.log_prob(_logits(7, [1, 2, 3]).double(), torch.tensor([items]), 1.0).item()
    assert got["log_propensity"] == pytest.approx(expected, abs=1e-9)
    assert got["propensity"] == pytest.approx(math.exp(expected), rel=1e-9)
    assert got["model_version"] == "v-test" and got["mode"] == "explore"


def test_log_propensity_uses_the_configured_temperature(tmp_path, store):
    app = create_app(config(tmp_path, temperature=0.5), store=store, holder=tiny_holder())
    with TestClient(app) as c:
        got = serve_banner(c, viewed=2, history=[9])
    items = torch.tensor([got["items"]])
    logits = _logits(2, [9]).double()
    assert got["log_propensity"] == pytest.approx(slate.log_prob(logits, items, 0.5).item(), abs=1e-9)
    assert got["log_propensity"] != pytest.approx(slate.log_prob(logits, items, 1.0).item(), abs=1e-6)


def test_explore_mode_samples_different_banners_for_the_same_context(client):
    banners = {tuple(serve_banner(client, viewed=4, history=[])["items"]) for _ in range(20)}
    assert len(banners) > 1


def test_deterministic_mode_returns_the_greedy_banner_with_propensity_one(client):
    got = serve_banner(client, viewed=7, history=[1, 2, 3], mode="deterministic")
    assert got["items"] == slate.greedy(_logits(7, [1, 2, 3]), 5)[0].tolist()
    assert got["propensity"] == 1.0 and got["log_propensity"] == 0.0 and got["mode"] == "deterministic"


def test_the_impression_is_in_the_store_when_the_banner_is_returned(client, store):
    got = serve_banner(client, user_id=11, viewed=7, history=[1, 2])
    imp = store.get_impression(got["impression_id"])
    assert imp is not None
    assert (imp.user_id, imp.viewed, imp.history, imp.items) == (11, 7, (1, 2), tuple(got["items"]))
    assert imp.log_propensity == pytest.approx(got["log_propensity"]) and imp.policy_version == "v-test"
    assert abs(imp.timestamp - time.time()) < 60


def test_impression_ids_are_fresh_and_unguessable(client):
    ids = [serve_banner(client)["impression_id"] for _ in range(10)]
    assert len(set(ids)) == 10
    assert all(len(i) == 65 and i[32] == "." for i in ids)  # 128-bit token + 128-bit HMAC tag


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": 1, "viewed": 3, "history": [4, 5, 6, 200]}, "history[3]"),
        ({"user_id": 1, "viewed": 50, "history": []}, "viewed"),
        ({"user_id": 1, "viewed": 3, "history": [4, 5, 4]}, "history[2]"),
        ({"user_id": 1, "viewed": 3, "history": list(range(11))}, "history"),
        ({"user_id": 1, "viewed": "3"}, "viewed"),
        ({"user_id": -1, "viewed": 3}, "user_id"),
        ({"user_id": 1, "viewed": 3, "history": [1.5]}, "history[0]"),
        ({"user_id": 1, "viewed": 3, "mode": "greedy"}, "mode"),
        ({"user_id": 1, "viewed": 3, "k": 6}, "k"),  # more than the served model's K = 5
        ({"user_id": 1, "viewed": 3, "k": 11}, "k"),
        ({"user_id": 1, "viewed": 3, "k": 2.5}, "k"),
        ({"user_id": 1, "viewed": 3, "colour": "red"}, "colour"),
        ({"viewed": 3}, "user_id"),
        ({"user_id": 1, "viewed": 3, "user_features": [1.0, "x"]}, "user_features[1]"),
    ],
)
def test_bad_banner_requests_get_422_naming_the_field(client, body, field):
    r = client.post("/v1/banners", json=body)
    assert r.status_code == 422, r.text
    assert field in fields(r)
    assert all(d["message"] for d in r.json()["detail"])


def test_malformed_json_is_a_422_about_the_body(client):
    r = client.post("/v1/banners", content=b'{"user_id": 1,', headers={"content-type": "application/json"})
    assert r.status_code == 422 and fields(r) == ["body"]
    assert "invalid JSON" in r.json()["detail"][0]["message"]


def test_oversize_body_gets_413_before_the_app_reads_it(client):
    r = client.post("/v1/banners", content=b" " * 1_000_001, headers={"content-type": "application/json"})
    assert r.status_code == 413 and fields(r) == ["body"]


def test_oversize_chunked_body_without_length_gets_413(client):
    def chunks():
        for _ in range(20):
            yield b" " * 100_000

    r = client.post("/v1/banners", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_a_model_with_user_features_requires_them(tmp_path, store):
    from recsys_rl.policy import BannerPolicy
    from serving.model_holder import from_policy

    torch.manual_seed(0)
    holder = ModelHolder(model=from_policy(BannerPolicy(N_PRODUCTS, 8, 16, n_user_features=3), "uf"))
    with TestClient(create_app(config(tmp_path), store=store, holder=holder)) as c:
        missing = c.post("/v1/banners", json={"user_id": 1, "viewed": 2})
        ok = serve_banner(c, user_features=[0.1, 0.2, 0.3])
    assert missing.status_code == 422 and fields(missing) == ["user_features"]
    assert len(ok["items"]) == 5


def test_not_ready_until_a_model_is_loaded(tmp_path, store):
    holder = ModelHolder()
    with TestClient(create_app(config(tmp_path), store=store, holder=holder)) as c:
        not_ready = c.get("/readyz")
        no_banner = c.post("/v1/banners", json={"user_id": 1, "viewed": 3})
        alive = c.get("/healthz")
        holder.swap(tiny_holder().current)
        ready = c.get("/readyz")
    assert not_ready.status_code == 503 and "no model loaded" in not_ready.json()["detail"][0]["message"]
    assert no_banner.status_code == 503
    assert alive.status_code == 200
    assert ready.status_code == 200 and ready.json()["n_products"] == N_PRODUCTS


def test_serving_from_a_policy_file(tmp_path, store, policy_file):
    app = create_app(config(tmp_path, policy_path=policy_file), store=store)
    with TestClient(app) as c:
        deadline = time.monotonic() + 10
        while c.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        got = serve_banner(c, mode="deterministic")
    assert got["model_version"].startswith("file:policy.pt@")
    assert got["items"] == slate.greedy(_logits(3, [4, 5, 6]), 5)[0].tolist()


def test_metrics_count_requests_banners_and_impressions(client):
    serve_banner(client)
    serve_banner(client, mode="deterministic")
    client.post("/v1/banners", json={"user_id": "x"})
    text = client.get("/metrics").text
    assert 'recsys_http_requests_total{endpoint="/v1/banners",method="POST",status="200"} 2.0' in text
    assert 'recsys_http_requests_total{endpoint="/v1/banners",method="POST",status="422"} 1.0' in text
    assert 'recsys_banners_served_total{mode="explore"} 1.0' in text
    assert 'recsys_banners_served_total{mode="deterministic"} 1.0' in text
    assert "recsys_impressions_written_total 2.0" in text
    assert 'recsys_model_info{n_products="50",source="",version="v-test"} 1.0' in text
    assert "recsys_exploration_temperature 1.0" in text
    assert 'recsys_http_request_duration_seconds_count{endpoint="/v1/banners"} 3.0' in text


def test_two_apps_in_one_process_keep_separate_metrics(tmp_path, store):
    a = create_app(config(tmp_path), store=store, holder=tiny_holder())
    b = create_app(config(tmp_path), store=store, holder=tiny_holder())
    with TestClient(a) as ca, TestClient(b) as cb:
        serve_banner(ca)
        assert "recsys_impressions_written_total 1.0" in ca.get("/metrics").text
        assert "recsys_impressions_written_total 0.0" in cb.get("/metrics").text


def test_openapi_documents_the_bodies_with_examples(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert {"BannerRequest", "BannerResponse", "FeedbackRequest", "FeedbackEvent", "FeedbackResponse"} <= set(
        schemas
    )
    assert schemas["BannerRequest"]["examples"]
    body = spec["paths"]["/v1/banners"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/BannerRequest"}


@pytest.mark.parametrize("k_model", [3, 8])
def test_banner_size_follows_the_model_and_the_request_k_is_bounded_by_it(tmp_path, store, k_model):
    from recsys_rl.policy import BannerPolicy
    from serving.model_holder import from_policy

    torch.manual_seed(0)
    policy = BannerPolicy(N_PRODUCTS, 8, 16, banner_size=k_model).eval()
    holder = ModelHolder(model=from_policy(policy, f"k{k_model}"))
    with TestClient(create_app(config(tmp_path), store=store, holder=holder)) as c:
        full = serve_banner(c, viewed=7, history=[1, 2, 3])
        short = serve_banner(c, viewed=7, history=[1, 2, 3], k=2)
        top = serve_banner(c, viewed=7, history=[1, 2, 3], k=2, mode="deterministic")
        too_big = c.post("/v1/banners", json={"user_id": 1, "viewed": 3, "k": k_model + 1})
        zero = c.post("/v1/banners", json={"user_id": 1, "viewed": 3, "k": 0})
        clicked = c.post(
            "/v1/feedback",
            json={
                "events": [
                    {
                        "event_id": "e1",
                        "impression_id": short["impression_id"],
                        "type": "click",
                        "product_id": short["items"][1],
                    }
                ]
            },
        )
    h = torch.full((1, HISTORY_LEN), PAD, dtype=torch.long)
    h[0, :3] = torch.tensor([1, 2, 3])
    with torch.no_grad():
        logits = policy(torch.tensor([7]), h).double()
    assert len(full["items"]) == k_model == len(set(full["items"]))
    assert full["log_propensity"] == pytest.approx(
        slate.log_prob(logits, torch.tensor([full["items"]])).item()
    )
    # k < K: the first k products of a Plackett-Luce draw, with the exact propensity of that k-prefix
    assert len(short["items"]) == 2
    assert short["log_propensity"] == pytest.approx(
        slate.log_prob(logits, torch.tensor([short["items"]])).item()
    )
    assert top["items"] == logits.topk(2).indices[0].tolist() and top["log_propensity"] == 0
    assert too_big.status_code == 422 and fields(too_big) == ["k"]
    assert f"at most {k_model} products" in too_big.json()["detail"][0]["message"]
    assert zero.status_code == 422 and fields(zero) == ["k"]
    assert clicked.status_code == 200, clicked.text
    stored = {i.impression_id: i for i in store.read_ready("t", time.time() + 60, 100).impressions}
    assert (
        len(stored[short["impression_id"]].items) == 2 and len(stored[full["impression_id"]].items) == k_model
    )


def test_a_feature_only_context_with_categories_is_served_under_the_models_vocabulary(tmp_path, store):
    """No viewed product, no history: categorical user features (raw values) encoded by the model's
    saved vocabulary, numeric features beside them; a value the model never saw is 'unknown', not an error."""
    from recsys_rl.policy import BannerPolicy
    from recsys_rl.records import ContextBatch
    from serving.model_holder import from_policy

    torch.manual_seed(0)
    vocab = [["f", "m"], ["a1", "b2", "c3"]]
    policy = BannerPolicy(N_PRODUCTS, 8, 16, n_user_features=2, banner_size=3, categorical_vocab=vocab).eval()
    holder = ModelHolder(model=from_policy(policy, "cat"))
    with TestClient(create_app(config(tmp_path), store=store, holder=holder)) as c:
        body = {
            "user_id": 1,
            "user_features": [0.5, -1.0],
            "user_categories": ["m", "b2"],
            "mode": "deterministic",
        }
        got = c.post("/v1/banners", json=body)
        unseen = c.post("/v1/banners", json={**body, "user_categories": ["x", "b2"]})
        missing = c.post("/v1/banners", json={"user_id": 1, "user_features": [0.5, -1.0]})
    assert got.status_code == 200, got.text
    ctx = ContextBatch(
        torch.tensor([-1]),
        torch.full((1, HISTORY_LEN), PAD),
        torch.tensor([[0.5, -1.0]]),
        torch.tensor([[2, 2]]),
    )
    with torch.no_grad():
        assert got.json()["items"] == policy.greedy(ctx)[0].tolist()
        ctx.user_categories = torch.tensor([[0, 2]])
        assert unseen.json()["items"] == policy.greedy(ctx)[0].tolist()
    assert missing.status_code == 422 and fields(missing) == ["user_categories"]


def _gauge(text: str, name: str) -> float:
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))


def test_metrics_show_how_concentrated_served_exposure_is(client):
    assert _gauge(client.get("/metrics").text, "recsys_served_exposure_products") == 0.0
    for _ in range(3):
        serve_banner(client, mode="deterministic")  # the same five products each time
    text = client.get("/metrics").text
    assert _gauge(text, "recsys_served_exposure_products") == 5.0
    # five of 50 products hold all exposure: Gini at least 1 - 5/50 of the maximum
    assert _gauge(text, "recsys_served_exposure_gini") > 0.85
    assert 0 < _gauge(text, "recsys_served_exposure_top_share") <= 1
