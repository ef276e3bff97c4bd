import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.neighbors import KNeighborsRegressor
from threadpoolctl import threadpool_limits

from recsys_rl.ope.marginals import exact_marginals, sample_banners
from recsys_rl.ope.outcome_regression import cross_fit_rewards, default_reward_model

N, K, F, G = 8, 5, 3, 2


def _linear_logs(n: int, seed: int, noise: float = 0.1):
    """Rewards additive in [context, product, position]: r_ik = x_i.u + e_{a_ik}.v + c_k + noise."""
    rng = np.random.default_rng(seed)
    ctx, items = rng.normal(size=(n, F)), rng.normal(size=(N, G))
    u, v, c = rng.normal(size=F), rng.normal(size=G), np.linspace(1.0, 0.2, K)
    logits = rng.normal(size=(n, N))
    banners = sample_banners(logits, K, 1, rng)[:, 0]
    q_true = (ctx @ u)[:, None, None] + (items @ v)[None, None, :] + c[None, :, None]  # (n, K, N)
    r = np.take_along_axis(q_true, banners[:, :, None], axis=2)[:, :, 0] + noise * rng.normal(size=(n, K))
    return ctx, items, logits, banners, r, q_true


def test_cross_fitted_model_recovers_a_linear_reward_and_its_target_value():
    ctx, items, logits, banners, r, q_true = _linear_logs(400, seed=0)
    marg = exact_marginals(logits, K)
    q = cross_fit_rewards(r, banners, ctx, items, target_marginals=marg, model=Ridge(alpha=1e-3))
    truth_logged = np.take_along_axis(q_true, banners[:, :, None], axis=2)[:, :, 0]
    np.testing.assert_allclose(q.logged, truth_logged, atol=0.05)
    np.testing.assert_allclose(q.target, (marg * q_true).sum(axis=(1, 2)), atol=5 * 0.05)


def test_sampled_target_banners_agree_with_marginals():
    ctx, items, logits, banners, r, _ = _linear_logs(100, seed=1)
    kw = {"model": Ridge(alpha=1e-3), "seed": 3}
    exact = cross_fit_rewards(r, banners, ctx, items, target_marginals=exact_marginals(logits, K), **kw)
    samples = sample_banners(logits, K, 400, np.random.default_rng(0))
    mc = cross_fit_rewards(r, banners, ctx, items, target_banners=samples, **kw)
    np.testing.assert_array_equal(mc.logged, exact.logged)
    # Σ_k q̂ varies by ~1 across banners, so the MC mean of 400 samples is within ~0.05 per row
    np.testing.assert_allclose(mc.target, exact.target, atol=0.25)
    assert abs((mc.target - exact.target).mean()) < 0.02


def test_candidate_subset_holding_all_the_mass_matches_full_catalogue():
    ctx, items, logits, banners, r, _ = _linear_logs(60, seed=2)
    marg = exact_marginals(logits, K)
    rng = np.random.default_rng(0)
    cand = np.argsort(rng.random((60, N)), axis=1)[:, :6]
    marg_on_cand = np.take_along_axis(marg, cand[:, None, :], axis=2)
    # mass off the candidates is zeroed in the full version too, so both describe the same target
    full = np.zeros_like(marg)
    np.put_along_axis(full, cand[:, None, :].repeat(K, 1), marg_on_cand, axis=2)
    kw = {"model": Ridge(), "seed": 0}
    a = cross_fit_rewards(r, banners, ctx, items, target_marginals=marg_on_cand, candidates=cand, **kw)
    b = cross_fit_rewards(r, banners, ctx, items, target_marginals=full, **kw)
    np.testing.assert_allclose(a.target, b.target, atol=1e-12)


def test_rows_are_scored_by_a_model_that_never_saw_them():
    # 1-nearest-neighbour on unique contexts reproduces every training reward exactly in-sample;
    # cross-fitted, the logged predictions come from the other fold and mostly differ.
    rng = np.random.default_rng(4)
    n = 200
    ctx, items = rng.normal(size=(n, F)), rng.normal(size=(N, G))
    banners = sample_banners(np.zeros((n, N)), K, 1, rng)[:, 0]
    r = rng.binomial(1, 0.5, size=(n, K)).astype(float)
    q = cross_fit_rewards(
        r, banners, ctx, items, target_marginals=np.full((n, K, N), 1 / N), model=KNeighborsRegressor(1)
    )
    assert (q.logged == r).mean() < 0.75


def test_cross_fitting_is_deterministic_for_a_seed_and_uses_gradient_boosting_by_default():
    ctx, items, logits, banners, r, _ = _linear_logs(80, seed=5)
    marg = exact_marginals(logits, K)
    with threadpool_limits(1):  # OpenMP threads thrash on a shared 2-core box
        a = cross_fit_rewards(r, banners, ctx, items, target_marginals=marg, seed=1)
        b = cross_fit_rewards(r, banners, ctx, items, target_marginals=marg, seed=1)
    np.testing.assert_array_equal(a.target, b.target)
    assert type(default_reward_model()).__name__ == "HistGradientBoostingRegressor"


def test_bad_reward_model_inputs_name_the_argument():
    ctx, items, _logits, banners, r, _ = _linear_logs(20, seed=6)
    marg = np.full((20, K, N), 1 / N)
    with pytest.raises(ValueError, match="give exactly one of them"):
        cross_fit_rewards(r, banners, ctx, items)
    with pytest.raises(ValueError, match="n_folds: must be in"):
        cross_fit_rewards(r, banners, ctx, items, target_marginals=marg, n_folds=1)
    with pytest.raises(ValueError, match=r"target_marginals: expected shape \(20, 5, 8\)"):
        cross_fit_rewards(r, banners, ctx, items, target_marginals=marg[:, :, :7])
    bad = banners.copy()
    bad[3, 0] = N
    with pytest.raises(ValueError, match="banners: row 3: product id outside"):
        cross_fit_rewards(r, bad, ctx, items, target_marginals=marg)
    nan_ctx = ctx.copy()
    nan_ctx[5, 1] = np.nan
    with pytest.raises(ValueError, match="context_features: row 5: non-finite"):
        cross_fit_rewards(r, banners, nan_ctx, items, target_marginals=marg)
    with pytest.raises(ValueError, match="target_banners: expected shape"):
        cross_fit_rewards(r, banners, ctx, items, target_banners=np.zeros((20, 3, 4), dtype=int))
