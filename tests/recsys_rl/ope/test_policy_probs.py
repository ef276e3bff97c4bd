"""Target-policy probabilities for OPE: sampled banners and Rao–Blackwellised marginals match exact PL."""

import numpy as np
import pytest
import torch

from recsys_rl.config import RewardScheme
from recsys_rl.ope.marginals import banner_log_prob, exact_marginals, marginals_of
from recsys_rl.ope.pipeline import evaluate_policy, parse_estimators, show_rate_marginals
from recsys_rl.ope.policy_probs import pair_log_softmax, rb_marginals, sample_pl, target_probs
from recsys_rl.records import PAD, BannerBatch, ContextBatch, LoggedBatch, OutcomeBatch


def _logits(n=4, n_items=9, seed=0, scale=1.5):
    return np.random.default_rng(seed).normal(size=(n, n_items)) * scale


def _counts(samples, n_items):
    c, s, k = samples.shape
    out = np.zeros((c, k, n_items))
    for j in range(n_items):
        out[:, :, j] = (samples == j).mean(axis=1)
    return out


def test_inverse_cdf_samples_follow_plackett_luce():
    s = _logits()
    samples = sample_pl(s, 5, 20_000, np.random.default_rng(1))
    assert samples.shape == (4, 20_000, 5)
    assert (np.sort(samples, axis=2)[..., 1:] != np.sort(samples, axis=2)[..., :-1]).all()
    assert np.abs(_counts(samples, 9) - exact_marginals(s, 5)).max() < 0.02  # 5.5 standard errors


def test_peaked_rows_are_sampled_exactly_too():
    s = np.array([[80.0, 60, 40, 20, 0, 0, 0, 0, 0], [0.0, 1, 2, 3, 4, 5, 6, 7, 8]])
    samples = sample_pl(s, 5, 5_000, np.random.default_rng(2))
    assert (samples[0, :, :4] == [0, 1, 2, 3]).all()
    assert np.abs(_counts(samples, 9) - exact_marginals(s, 5)).max() < 0.03


def test_rao_blackwellised_marginals_are_unbiased_and_converge():
    s = _logits(seed=3)
    rng = np.random.default_rng(4)
    banners = np.stack([rng.permutation(9)[:5] for _ in range(4)])
    exact = marginals_of(banners, exact_marginals(s, 5))
    many = rb_marginals(s, banners, sample_pl(s, 5, 20_000, rng))
    assert np.abs(many - exact).max() < 0.01
    few = np.mean([rb_marginals(s, banners, sample_pl(s, 5, 4, rng)) for _ in range(500)], axis=0)
    assert np.abs(few - exact).max() < 0.01
    one = rb_marginals(s, banners, sample_pl(s, 5, 1, rng))
    np.testing.assert_allclose(one[:, 0], exact[:, 0])  # the first position has no prefix: no noise


def test_rao_blackwellised_marginals_keep_precision_when_the_prefix_holds_almost_all_mass():
    s = np.array([[0.0, -40, -40, -40, -40, -45, -45, -45, -45]])
    banners = np.array([[0, 1, 2, 3, 5]])
    exact = marginals_of(banners, exact_marginals(s, 5))
    rb = rb_marginals(s, banners, sample_pl(s, 5, 4_000, np.random.default_rng(5)))
    np.testing.assert_allclose(rb[0, 0], exact[0, 0])
    np.testing.assert_allclose(rb[0, 4], exact[0, 4], rtol=0.1)  # ~1e-2, not 0 or 1 from cancellation


def _contexts(n, n_items, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ContextBatch(torch.randint(0, n_items, (n,), generator=g), torch.full((n, 10), PAD))


class Table:
    """A fixed logits table indexed by the viewed product: a policy with known logits."""

    def __init__(self, logits: np.ndarray):
        self.logits = torch.from_numpy(logits)

    def __call__(self, ctx: ContextBatch) -> torch.Tensor:
        return self.logits[ctx.viewed]


def test_target_probs_are_exact_for_small_catalogues_and_sampled_for_large_ones():
    for n_items, exact in ((9, True), (30, False)):
        policy = Table(_logits(n=n_items, n_items=n_items, seed=n_items))
        ctx = _contexts(50, n_items)
        rng = np.random.default_rng(0)
        banners = np.stack([rng.permutation(n_items)[:5] for _ in range(50)])
        tp = target_probs(policy, ctx, banners, n_samples=64, generator=rng, temperature=2.0)
        s = policy(ctx).numpy() / 2.0
        np.testing.assert_allclose(tp.log_prob, banner_log_prob(s, banners))
        assert tp.exact == exact and (tp.samples is None) == exact
        if exact:
            np.testing.assert_allclose(tp.marginals, marginals_of(banners, exact_marginals(s, 5)))
        lse = np.log(np.exp(s).sum(1))
        np.testing.assert_allclose(
            tp.pairs(np.arange(50), banners[:, 2]), s[np.arange(50), banners[:, 2]] - lse
        )
        ref = pair_log_softmax(policy, ctx, tp.pairs)
        np.testing.assert_allclose(
            ref(np.arange(50), banners[:, 0]),
            (s * 2)[np.arange(50), banners[:, 0]] - np.log(np.exp(s * 2).sum(1)),
        )


def _logged_from(policy, n, n_items, seed):
    """Banners drawn from ``policy`` itself with Bernoulli(0.3) clicks: evaluating it on-policy."""
    ctx = _contexts(n, n_items, seed)
    rng = np.random.default_rng(seed)
    s = policy(ctx).numpy()
    items = sample_pl(s, 5, 1, rng)[:, 0]
    clicks = torch.from_numpy((rng.random((n, 5)) < 0.3).astype(np.float32))
    log_prob = torch.from_numpy(banner_log_prob(s, items)).float()
    zeros = torch.zeros(n, 5)
    return LoggedBatch(
        ctx, BannerBatch(torch.from_numpy(items), log_prob), OutcomeBatch(clicks, zeros, zeros)
    )


def test_on_policy_evaluation_has_unit_weights_and_recovers_the_mean_reward():
    policy = Table(
        np.repeat(_logits(n=1, n_items=40, seed=7), 40, axis=0)
    )  # context-free: show rates are exact
    logged = _logged_from(policy, 3000, 40, seed=8)
    ctr = RewardScheme(name="ctr", click=1.0)
    res = evaluate_policy(logged, policy, ctr, ["ips", "snips", "iips", "dm", "dr"], n_samples=32, seed=0)
    assert list(res.estimates) == ["ips", "snips", "iips", "dm", "dr"]
    np.testing.assert_allclose(res.estimates["ips"].max_weight, 1.0, rtol=1e-5)
    mean = logged.outcomes.clicks.sum(1).mean().item()
    assert res.estimates["snips"].value == pytest.approx(mean, rel=1e-5)
    for name in ("iips", "dm", "dr"):
        est = res.estimates[name]
        assert est.ci_low - 0.05 < 1.5 < est.ci_high + 0.05, (name, est)
    assert not res.exact_target_marginals and res.behaviour_marginals == "show rate"


def test_contextual_logging_needs_logged_marginals_and_then_is_unbiased():
    policy = Table(_logits(n=40, n_items=40, seed=7, scale=2.0))
    logged = _logged_from(policy, 2000, 40, seed=8)
    ctr = RewardScheme(name="ctr", click=1.0)
    biased = evaluate_policy(logged, policy, ctr, ["iips"], n_samples=16).estimates["iips"]
    assert not biased.ci_low < 1.5 < biased.ci_high  # show rates are wrong for a contextual logger
    s = policy(logged.contexts).numpy()
    mu = rb_marginals(s, logged.banners.items.numpy(), sample_pl(s, 5, 200, np.random.default_rng(9)))
    res = evaluate_policy(logged, policy, ctr, ["iips", "dr"], behaviour_marginals=mu, n_samples=16)
    assert res.behaviour_marginals == "logged"
    for est in res.estimates.values():
        assert est.ci_low - 0.05 < 1.5 < est.ci_high + 0.05, est


def test_show_rate_marginals_count_each_product_at_each_position():
    items = np.array([[0, 1, 2, 3, 4], [0, 2, 1, 3, 4], [5, 1, 2, 3, 4], [0, 1, 2, 4, 3]])
    m = show_rate_marginals(items, 6)
    np.testing.assert_allclose(m[0], [0.75, 0.75, 0.75, 0.75, 0.75])
    np.testing.assert_allclose(m[1], [0.75, 0.25, 0.25, 0.75, 0.75])
    np.testing.assert_allclose(m[2], [0.25, 0.75, 0.75, 0.75, 0.75])


def test_estimator_names_are_checked():
    assert parse_estimators(" IPS, dr ,ips") == ["ips", "dr"]
    with pytest.raises(ValueError, match="--estimators: unknown 'xips'"):
        parse_estimators("ips,xips")
    with pytest.raises(ValueError, match="--estimators: empty"):
        parse_estimators(" , ")
