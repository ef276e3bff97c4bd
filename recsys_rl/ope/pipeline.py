"""From a logged batch and a target policy to off-policy estimates: the path the CLI and benchmarks share.

- Rewards: the scheme applied to the logged outcomes, per position (n, K) and per banner (n,).
- Behaviour: the banner propensity logged at serving time (IPS/SNIPS). Per-position marginals μ_k(a_k|x)
  (IIPS/DR) from the log when it carries them, else the empirical show rate of each product at each
  position, μ̂_k(j) = #{i : a_ik = j} / n. That is the exact marginal in the limit when the logging policy
  ignores the context (a popularity or random exploration policy, as in the simulator), and biased when
  it did not: log per-position propensities for contextual logging policies.
- Target: ``policy_probs.target_probs`` (exact π(a|x); exact or Rao–Blackwellised per-position marginals).
- DM/DR reward model: cross-fitted q̂(x, j, k) (``reward_model.cross_fit_rewards``) on features that need no
  knowledge of the policy's internals: the target's log-softmax of product j in context x, the
  reference's (when one is given), the product's overall log show rate, and the position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.base import RegressorMixin

from recsys_rl.config import RewardScheme
from recsys_rl.ope.estimate import Estimate
from recsys_rl.ope.estimators import direct_method, doubly_robust, iips, ips, snips
from recsys_rl.ope.outcome_regression import cross_fit_rewards, default_reward_model
from recsys_rl.ope.policy_probs import LogitsFn, PairScores, pair_log_softmax, slot_target_probs, target_probs
from recsys_rl.records import LoggedBatch
from recsys_rl.rewards import position_rewards

ESTIMATORS = ("ips", "snips", "iips", "dm", "dr")
BANNER_WEIGHTED = ("ips", "snips")
MODEL_BASED = ("dm", "dr")


def parse_estimators(text: str) -> list[str]:
    """'ips, snips,dr' -> ['ips', 'snips', 'dr']; unknown or empty -> ValueError naming the option."""
    names = [x.strip().lower() for x in text.split(",") if x.strip()]
    if not names:
        raise ValueError(f"--estimators: empty (choose from {', '.join(ESTIMATORS)})")
    unknown = [x for x in names if x not in ESTIMATORS]
    if unknown:
        raise ValueError(f"--estimators: unknown {unknown[0]!r} (choose from {', '.join(ESTIMATORS)})")
    return list(dict.fromkeys(names))


def show_rate_marginals(items: np.ndarray, n_items: int) -> np.ndarray:
    """μ̂_k(a_ik): the share of logged banners showing product a_ik at position k, (n, K) from items (n, K)."""
    n, k_size = items.shape
    counts = np.zeros((k_size, n_items))
    np.add.at(counts, (np.broadcast_to(np.arange(k_size), items.shape), items), 1.0)
    return counts[np.arange(k_size), items] / n


@dataclass(frozen=True)
class OPEResult:
    """Estimates by requested name, and how the weights behind them were obtained."""

    estimates: dict[str, Estimate]
    exact_target_marginals: bool
    behaviour_marginals: str  # "logged" or "show rate"
    n_samples: int


def _featurizer(target: PairScores, reference: PairScores | None, log_rate: np.ndarray, k_size: int):
    eye = np.eye(k_size)

    def featurize(rows: np.ndarray, items: np.ndarray, positions: np.ndarray) -> np.ndarray:
        cols = [target(rows, items)[:, None]]
        if reference is not None:
            cols.append(reference(rows, items)[:, None])
        cols += [log_rate[items][:, None], eye[positions]]
        return np.concatenate(cols, axis=1)

    return featurize


def evaluate_policy(
    batch: LoggedBatch,
    policy: LogitsFn,
    scheme: RewardScheme,
    estimators: Sequence[str],
    *,
    behaviour_marginals: np.ndarray | None = None,
    reference: LogitsFn | None = None,
    temperature: float = 1.0,
    clip: float | None = None,
    n_samples: int = 64,
    dm_samples: int | None = None,
    n_folds: int = 2,
    reward_model: RegressorMixin | None = None,
    seed: int = 0,
    positions: np.ndarray | None = None,
    banner_size: int | None = None,
) -> OPEResult:
    """Estimate the value of PL(policy(x) / temperature) from ``batch`` with each named estimator.

    behaviour_marginals: (n, K) logged μ_k(a_ik|x_i), else empirical show rates; reference: an extra policy
    whose scores feed the reward model; n_samples: banners drawn from the target per context for its
    marginals (unused when the catalogue is small enough to enumerate); dm_samples of them (default
    min(16, n_samples)) average q̂.

    Slot rows (``positions`` (n,) given; the batch holds one product per row, items (n, 1)): each row is
    the product shown at positions[i] of a ``banner_size``-product banner, with that slot's logged
    propensity in behaviour_marginals (n, 1). The value per banner is Σ_p (mean over the rows at
    position p of the position-wise term), so every term is scaled by n / n_p before averaging.
    Whole-banner IPS/SNIPS cannot be computed from such rows and are refused.
    """
    names = [e.lower() for e in estimators]
    unknown = [e for e in names if e not in ESTIMATORS]
    if unknown:
        raise ValueError(f"estimators: unknown {unknown[0]!r} (choose from {', '.join(ESTIMATORS)})")
    dm_samples = min(16, n_samples) if dm_samples is None else dm_samples
    if not 1 <= dm_samples <= n_samples:
        raise ValueError(f"dm_samples: must be in [1, n_samples={n_samples}], got {dm_samples}")
    items = batch.banners.items.numpy()
    n, k_size = items.shape
    behaviour_lp = batch.banners.log_prob.double().numpy()
    if positions is not None:
        return _evaluate_slots(
            batch,
            policy,
            scheme,
            names,
            positions,
            banner_size,
            behaviour_marginals,
            reference,
            temperature,
            clip,
            n_samples,
            dm_samples,
            n_folds,
            reward_model,
            seed,
        )
    if any(e in BANNER_WEIGHTED for e in names) and np.isnan(behaviour_lp).any():
        raise ValueError(
            "estimators: ips/snips need banner propensities, and this log has none (use iips, dm, dr)"
        )
    r_pos = position_rewards(scheme, batch.outcomes).double().numpy()
    rng = np.random.default_rng(seed)
    model_based = any(e in MODEL_BASED for e in names)
    tp = target_probs(
        policy,
        batch.contexts,
        items,
        n_samples=n_samples,
        keep_samples=dm_samples if model_based else 0,
        generator=rng,
        temperature=temperature,
    )
    n_items = tp.pairs.n_items
    if behaviour_marginals is not None:
        mu_marg, mu_source = np.asarray(behaviour_marginals, dtype=np.float64), "logged"
    else:
        mu_marg, mu_source = show_rate_marginals(items, n_items), "show rate"

    out: dict[str, Estimate] = {}
    target_prob = np.exp(tp.log_prob)
    if "ips" in names:
        out["ips"] = ips(r_pos.sum(1), target_prob, np.exp(behaviour_lp), clip)
    if "snips" in names:
        out["snips"] = snips(r_pos.sum(1), target_prob, np.exp(behaviour_lp), clip)
    if "iips" in names:
        out["iips"] = iips(r_pos, tp.marginals, mu_marg, clip)
    if model_based:
        ref_pairs = pair_log_softmax(reference, batch.contexts, tp.pairs) if reference is not None else None
        shows = np.bincount(items.reshape(-1), minlength=n_items).astype(np.float64)
        log_rate = np.log(np.maximum(shows, 0.5) / (n * k_size))
        target = {"target_marginals": tp.exact_marginals} if tp.exact else {"target_banners": tp.samples}
        predictions = cross_fit_rewards(
            r_pos,
            items,
            np.zeros((n, 1)),  # shape only: ``featurize`` builds the features
            log_rate[:, None],
            model=reward_model if reward_model is not None else default_reward_model(seed),
            n_folds=n_folds,
            seed=seed,
            featurize=_featurizer(tp.pairs, ref_pairs, log_rate, k_size),
            **target,
        )
        if "dm" in names:
            out["dm"] = direct_method(predictions)
        if "dr" in names:
            out["dr"] = doubly_robust(r_pos, tp.marginals, mu_marg, predictions, clip)
    ordered = {e: out[e] for e in names}
    return OPEResult(ordered, tp.exact, mu_source, 0 if tp.exact else n_samples)


def _evaluate_slots(
    batch,
    policy,
    scheme,
    names,
    positions,
    banner_size,
    behaviour_marginals,
    reference,
    temperature,
    clip,
    n_samples,
    dm_samples,
    n_folds,
    reward_model,
    seed,
) -> OPEResult:
    """``evaluate_policy`` on slot rows (see there): IIPS, DM and DR per row at its position."""
    banner = [e for e in names if e in BANNER_WEIGHTED]
    if banner:
        raise ValueError(
            f"estimators: {', '.join(banner)} weight whole banners, and these rows are single displayed items "
            "with no impression key to regroup them into banners (use iips, dm or dr; or map impression_id)"
        )
    if behaviour_marginals is None:
        raise ValueError("behaviour_marginals: slot rows need the logged propensity of each row's slot")
    items = batch.banners.items.numpy()
    n = len(items)
    pos = np.asarray(positions, dtype=np.int64)
    k_size = int(banner_size if banner_size is not None else pos.max() + 1)
    per_pos = np.bincount(pos, minlength=k_size)
    scale = (n / per_pos[pos])[:, None]  # (n, 1): the value per banner sums the positions' means
    r = position_rewards(scheme, batch.outcomes).double().numpy() * scale  # (n, 1)
    mu = np.asarray(behaviour_marginals, dtype=np.float64).reshape(n, 1)
    rng = np.random.default_rng(seed)
    model_based = any(e in MODEL_BASED for e in names)
    tp = slot_target_probs(
        policy,
        batch.contexts,
        items[:, 0],
        pos,
        k_size,
        n_samples=n_samples,
        keep_samples=dm_samples if model_based else 0,
        generator=rng,
        temperature=temperature,
    )
    out: dict[str, Estimate] = {}
    if "iips" in names:
        out["iips"] = iips(r, tp.marginals, mu, clip)
    if model_based:
        n_items = tp.pairs.n_items
        ref_pairs = pair_log_softmax(reference, batch.contexts, tp.pairs) if reference is not None else None
        shows = np.bincount(items.reshape(-1), minlength=n_items).astype(np.float64)
        log_rate = np.log(np.maximum(shows, 0.5) / n)
        base = _featurizer(tp.pairs, ref_pairs, log_rate, k_size)

        def featurize(rows, its, columns):  # column 0 of every row is its own banner position
            return base(rows, its, pos[rows] + columns)

        target = {"target_marginals": tp.exact_marginals} if tp.exact else {"target_banners": tp.samples}
        raw = position_rewards(scheme, batch.outcomes).double().numpy()
        pred = cross_fit_rewards(
            raw,
            items,
            np.zeros((n, 1)),
            log_rate[:, None],
            model=reward_model if reward_model is not None else default_reward_model(seed),
            n_folds=n_folds,
            seed=seed,
            featurize=featurize,
            **target,
        )
        scaled = type(pred)(pred.logged * scale, pred.target * scale[:, 0])
        if "dm" in names:
            out["dm"] = direct_method(scaled)
        if "dr" in names:
            out["dr"] = doubly_robust(r, tp.marginals, mu, scaled, clip)
    return OPEResult({e: out[e] for e in names}, tp.exact, "logged", 0 if tp.exact else n_samples)
