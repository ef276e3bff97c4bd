"""The policy's learned context features: what a candidate's place in the context adds to its logit."""

import torch

from recsys_rl.baseline import train_baseline
from recsys_rl.config import load_run
from recsys_rl.policy import BannerPolicy, load_policy, save_policy
from recsys_rl.records import PAD, BannerBatch, ContextBatch, LoggedBatch, OutcomeBatch

CTX = ContextBatch(
    torch.tensor([3, PAD, 5]),
    torch.tensor([[3, 7, 7, PAD], [9, 9, 2, 1], [PAD] * 4]),
)
WEIGHTS = torch.tensor([0.1, 0.2, -0.05, 0.3])  # in context, viewed, history count, recency


def featured(n: int = 300, full_catalogue_max: int = 20_000) -> BannerPolicy:
    torch.manual_seed(0)
    p = BannerPolicy(n, 8, 16, candidates=32, full_catalogue_max=full_catalogue_max, context_features=True)
    with torch.no_grad():
        p.context_weights.copy_(WEIGHTS)
    return p


def test_a_fresh_policy_with_context_features_scores_as_one_without():
    torch.manual_seed(0)
    plain = BannerPolicy(300, 8, 16)
    torch.manual_seed(0)
    fresh = BannerPolicy(300, 8, 16, context_features=True)
    fresh.load_state_dict(plain.state_dict())  # weights absent from the old state start at 0
    assert torch.equal(fresh.context_weights, torch.zeros(4))
    assert torch.equal(fresh.logits(CTX), plain.logits(CTX))


def test_offsets_follow_the_features_by_hand():
    p = featured()
    off = (p.logits(CTX) - p.score(p.query(CTX), torch.arange(300).expand(3, -1))) / 10.0  # scale 10
    # context 0: viewed 3 is also the latest purchase; 7 bought twice, latest at position 1 of 4
    assert torch.allclose(off[0, 3], torch.tensor(0.1 + 0.2 - 0.05 + 0.3 * 1.0), atol=1e-5)
    assert torch.allclose(off[0, 7], torch.tensor(0.1 - 0.05 * 2 + 0.3 * 0.75), atol=1e-5)
    # context 1 (no viewed product): 9 twice (latest first), 2 at position 2, 1 at position 3
    assert torch.allclose(
        off[1, [9, 2, 1]], torch.tensor([0.1 - 0.1 + 0.3, 0.1 - 0.05 + 0.15, 0.1 - 0.05 + 0.075])
    )
    outside = torch.ones(3, 300, dtype=torch.bool)
    outside[0, [3, 7]] = outside[1, [9, 2, 1]] = outside[2, 5] = False
    assert torch.allclose(off[outside], torch.zeros(()), atol=1e-5)
    assert torch.allclose(off[2, 5], torch.tensor(0.1 + 0.2), atol=1e-5)


def test_the_candidate_path_scores_its_candidates_as_the_full_path_and_holds_the_context():
    cand_path, full_path = featured(full_catalogue_max=0), featured()
    full_path.load_state_dict(cand_path.state_dict())
    ids, logits = cand_path.candidates_and_logits(CTX)
    assert torch.allclose(logits, full_path.logits(CTX).gather(1, ids), atol=1e-5)
    for row, own in enumerate([[3, 7], [9, 2, 1], [5]]):
        assert set(own) <= set(ids[row].tolist())


def test_saved_policies_keep_their_context_weights_and_old_context_bonus_files_load(tmp_path):
    p = featured()
    save_policy(p, tmp_path / "p.pt")
    assert torch.equal(load_policy(tmp_path / "p.pt").logits(CTX), p.logits(CTX))
    old = BannerPolicy(300, 8, 16, candidates=32, full_catalogue_max=0, context_bonus=True)
    state = {k: v for k, v in old.state_dict().items() if k != "context_weights"}
    state["context_bonus"] = torch.tensor(0.25)  # the scalar that files from before held
    hparams = {k: v for k, v in old.hparams().items() if k != "context_features"}
    torch.save({"hparams": hparams, "state_dict": state}, tmp_path / "old.pt")
    loaded = load_policy(tmp_path / "old.pt")
    assert torch.equal(loaded.context_weights, torch.tensor([0.25]))
    ids, logits = loaded.candidates_and_logits(CTX)
    inside = (ids.unsqueeze(2) == loaded.context_products(CTX).unsqueeze(1)).any(2)  # an indicator
    assert torch.allclose(logits - loaded.score(loaded.query(CTX), ids), 2.5 * inside, atol=1e-5)


def _logs(reshown: bool, n: int = 3000) -> LoggedBatch:
    """Banners of 5 random products, one of them the viewed product; the click goes to the viewed
    product when ``reshown``, else to another one."""
    g = torch.Generator().manual_seed(0)
    viewed = torch.randint(0, 50, (n,), generator=g)
    others = (viewed.unsqueeze(1) + 1 + torch.randint(0, 49, (n, 4), generator=g)) % 50
    items = torch.cat([viewed.unsqueeze(1), others], 1)
    clicks = torch.zeros(n, 5)
    clicks[:, 0 if reshown else 1] = 1
    ctx = ContextBatch(viewed, torch.full((n, 10), PAD))
    return LoggedBatch(
        ctx, BannerBatch(items, torch.zeros(n)), OutcomeBatch(clicks, torch.zeros(n, 5), torch.zeros(n, 5))
    )


def test_the_reference_learns_the_sign_of_the_viewed_products_weight_from_the_logs():
    cfg = load_run(
        None, {"policy.context_features": True, "baseline.learn_context_weights": True, "baseline.epochs": 2}
    )
    weights = {}
    for reshown in (True, False):
        ref = train_baseline(_logs(reshown), 50, cfg.policy, cfg.baseline, seed=0, progress=False)
        weights[reshown] = ref.context_weights[0] + ref.context_weights[1]  # viewed: in context + viewed
    assert weights[True] > 0.05 and weights[False] < -0.05, weights  # +-0.5 nats and beyond


def test_the_re_showing_target_adds_each_viewed_product_as_a_target_of_its_own_context():
    from recsys_rl.baseline import supervised_examples

    logs = _logs(reshown=False, n=40)
    logs.contexts.viewed[:5] = PAD  # no viewed product: no re-showing example
    base = load_run(None, {"baseline.history_weight": 0.0}).baseline
    ctx0, t0, w0 = supervised_examples(logs, base)
    ctx1, t1, w1 = supervised_examples(logs, base.model_copy(update={"context_weight": 0.5}))
    assert len(t1) == len(t0) + 35
    assert torch.equal(t1[len(t0) :], logs.contexts.viewed[5:]) and torch.equal(
        ctx1.viewed[len(t0) :], t1[len(t0) :]
    )
    assert torch.all(w1[len(t0) :] == 0.5)


def test_a_pickled_policy_from_before_context_weights_unpickles_with_its_bonus():
    import pickle

    p = BannerPolicy(300, 8, 16, candidates=32, full_catalogue_max=0, context_bonus=True)
    want = p.candidates_and_logits(CTX)[1] + 0  # bonus 0
    old = p._parameters.pop("context_weights")  # the attributes an old pickle (an MLflow model) holds
    p._parameters["context_bonus"] = torch.nn.Parameter(old.detach().reshape(()) + 0.3)
    del p.__dict__["context_features"], p.__dict__["n_context_features"]
    p._retriever = None  # rebuilt on first use
    back = pickle.loads(pickle.dumps(p))
    assert torch.equal(back.context_weights, torch.tensor([0.3])) and not back.context_features
    ids, logits = back.candidates_and_logits(CTX)
    inside = (ids.unsqueeze(2) == back.context_products(CTX).unsqueeze(1)).any(2)
    assert torch.allclose(logits, want + 3.0 * inside, atol=1e-5)


def test_by_default_the_reference_leaves_the_context_weights_at_zero_for_the_fine_tune():
    cfg = load_run(None, {"baseline.epochs": 1, "policy.context_features": True})
    assert not cfg.baseline.learn_context_weights
    ref = train_baseline(_logs(reshown=True), 50, cfg.policy, cfg.baseline, seed=0, progress=False)
    assert torch.equal(ref.context_weights, torch.zeros(4))
    from recsys_rl.policy import trainable_copy

    assert trainable_copy(ref).context_weights.requires_grad
