import itertools

import numpy as np
import pytest
import torch

from recsys_rl.ope.marginals import (
    banner_log_prob,
    exact_marginals,
    marginals_of,
    mc_marginals,
    position_log_probs,
    prefix_probs,
    sample_banners,
)


def _brute_force_marginals(logits: np.ndarray, k_size: int) -> np.ndarray:
    """P(j at k) by summing the PL probability of every ordered K-tuple, one tuple at a time."""
    n, n_items = logits.shape
    out = np.zeros((n, k_size, n_items))
    for i in range(n):
        w = np.exp(logits[i])
        for banner in itertools.permutations(range(n_items), k_size):
            p, left = 1.0, w.sum()
            for j in banner:
                p *= w[j] / left
                left -= w[j]
            for k, j in enumerate(banner):
                out[i, k, j] += p
    return out


def test_banner_log_prob_matches_hand_computed_pl_probability():
    # exp(logits) = 1, 2, 3 (sum 6). Banner (2, 1): 3/6 * 2/(6-3) = 1/3. Banner (0, 2): 1/6 * 3/5 = 1/10.
    logits = np.log(np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]))
    lp = banner_log_prob(logits, np.array([[2, 1], [0, 2]]))
    np.testing.assert_allclose(np.exp(lp), [1 / 3, 1 / 10])
    np.testing.assert_allclose(np.exp(position_log_probs(logits, np.array([[2, 1]] * 2))[0]), [0.5, 2 / 3])


@pytest.mark.parametrize("k_size", [3, 5])
def test_exact_marginals_match_brute_force_enumeration(k_size):
    logits = np.random.default_rng(k_size).normal(scale=1.5, size=(4, 6))
    m = exact_marginals(logits, k_size)
    assert m.shape == (4, k_size, 6)
    np.testing.assert_allclose(m, _brute_force_marginals(logits, k_size), atol=1e-12)
    np.testing.assert_allclose(m.sum(axis=2), 1.0, atol=1e-12)
    assert (m.sum(axis=1) <= 1 + 1e-12).all()


def test_exact_marginals_full_permutation_puts_every_item_somewhere():
    logits = np.random.default_rng(1).normal(size=(2, 5))
    np.testing.assert_allclose(exact_marginals(logits, 5).sum(axis=1), 1.0, atol=1e-12)


def test_exact_marginals_never_place_a_masked_product():
    logits = np.random.default_rng(2).normal(size=(3, 6))
    logits[:, 4] = -np.inf
    m = exact_marginals(logits, 5)
    assert (m[:, :, 4] == 0).all()
    np.testing.assert_allclose(m.sum(axis=2), 1.0, atol=1e-12)


def test_exact_marginals_refuse_large_catalogues():
    with pytest.raises(ValueError, match="logits: catalogue of 13 products is too large"):
        exact_marginals(np.zeros((1, 13)), 5)


def test_mc_marginals_converge_to_exact():
    logits = np.random.default_rng(3).normal(scale=1.5, size=(3, 7))
    mc = mc_marginals(logits, 5, 40_000, np.random.default_rng(0))
    # each entry's s.e. <= 0.5/sqrt(40000) = 0.0025; 0.012 is ~5 s.e.
    np.testing.assert_allclose(mc, exact_marginals(logits, 5), atol=0.012)
    np.testing.assert_allclose(mc.sum(axis=2), 1.0)


def test_sample_banners_are_distinct_seeded_and_skip_masked_products():
    logits = np.random.default_rng(4).normal(size=(5, 8))
    logits[:, 0] = -np.inf
    a = sample_banners(logits, 5, 50, np.random.default_rng(7))
    b = sample_banners(logits, 5, 50, np.random.default_rng(7))
    assert a.shape == (5, 50, 5)
    np.testing.assert_array_equal(a, b)
    assert (np.sort(a, axis=2)[..., 1:] != np.sort(a, axis=2)[..., :-1]).all()
    assert (a != 0).all()


def test_prefix_probs_last_column_is_the_banner_probability():
    logits = np.random.default_rng(5).normal(size=(6, 10))
    banners = sample_banners(logits, 5, 1, np.random.default_rng(0))[:, 0]
    pp = prefix_probs(logits, banners)
    np.testing.assert_allclose(pp[:, -1], np.exp(banner_log_prob(logits, banners)))
    assert (np.diff(pp, axis=1) <= 0).all()


def test_marginals_of_gathers_each_logged_item_at_its_position():
    m = np.arange(2 * 2 * 3, dtype=float).reshape(2, 2, 3) / 100
    # row 0 banner (2, 0): m[0,0,2]=0.02, m[0,1,0]=0.03; row 1 banner (1, 2): m[1,0,1]=0.07, m[1,1,2]=0.11
    np.testing.assert_allclose(marginals_of(np.array([[2, 0], [1, 2]]), m), [[0.02, 0.03], [0.07, 0.11]])


def test_torch_logits_give_the_same_probabilities():
    logits = np.random.default_rng(6).normal(size=(3, 6))
    banners = np.array([[0, 1, 2], [5, 4, 3], [1, 3, 5]])
    np.testing.assert_allclose(
        banner_log_prob(torch.tensor(logits, requires_grad=True), torch.tensor(banners)),
        banner_log_prob(logits, banners),
    )


def test_bad_banners_and_logits_raise_naming_the_argument():
    logits = np.zeros((2, 6))
    with pytest.raises(ValueError, match="banners: row 1: repeated product"):
        banner_log_prob(logits, np.array([[0, 1], [2, 2]]))
    with pytest.raises(ValueError, match=r"banners: row 0: product id outside \[0, 6\)"):
        banner_log_prob(logits, np.array([[0, 6], [2, 3]]))
    with pytest.raises(ValueError, match="banners: has 1 rows but logits has 2"):
        banner_log_prob(logits, np.array([[0, 1]]))
    bad = logits.copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="logits: row 1: NaN"):
        exact_marginals(bad, 3)
    with pytest.raises(ValueError, match="K: banner size must be in"):
        exact_marginals(logits, 7)
