"""The time-ordered held-out split of the logs path, and the figures reported on it.

Why: a reference or a fine-tune judged on the rows it was trained on looks better than it is (a
reference trained for many epochs scores above the oracle in-sample). The latest ``fraction`` of the
logs (by timestamp where the logs carry one, else in the order they were written) is held out: the
reference and the fine-tune train on the earlier rows only, and every value the logs path prints is
computed on the held-out rows, with a 95% confidence interval.

Values are position-wise IIPS per banner: the policy's sampled banners (temperature 1, as it serves;
``ope.pipeline``) and its greedy banner (its top-K, exact marginals), both on the same estimator so they
compare; the logger's own value (mean logged reward per banner) beside them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recsys_rl.config import RewardScheme
from recsys_rl.ope.estimate import Estimate, summarise
from recsys_rl.ope.estimators import iips
from recsys_rl.ope.pipeline import evaluate_policy, show_rate_marginals
from recsys_rl.policy import BannerPolicy
from recsys_rl.records import LoggedBatch
from recsys_rl.rewards import position_rewards

RUNAWAY_RATIO = 1.25
"""In-sample value above both the held-out CI and this multiple of the held-out value: overfitting."""


@dataclass(frozen=True)
class Split:
    """Row ids of the two parts: train_rows (n_train,) earlier, holdout_rows (n_holdout,) later."""

    train_rows: torch.Tensor
    holdout_rows: torch.Tensor


def time_split(n: int, fraction: float, timestamps: torch.Tensor | np.ndarray | None = None) -> Split:
    """Hold out the latest ``fraction`` of n rows: the first int((1 - fraction) n) in time order train.

    timestamps (n,): event times (ties keep row order); None: rows are already in time order.
    Both parts must be non-empty."""
    if not 0 < fraction < 1:
        raise ValueError(f"baseline.holdout_fraction: must be in (0, 1), got {fraction}")
    n_train = int((1 - fraction) * n)
    if not 0 < n_train < n:
        raise ValueError(
            f"baseline.holdout_fraction: {fraction} of {n} logged rows leaves an empty "
            f"{'training' if n_train == 0 else 'held-out'} part"
        )
    if timestamps is None:
        order = torch.arange(n)
    else:
        t = torch.as_tensor(np.asarray(timestamps, dtype=np.float64))
        if t.shape != (n,):
            raise ValueError(f"timestamps: need one per logged row ({n}), got shape {tuple(t.shape)}")
        order = torch.argsort(t, stable=True)
    return Split(order[:n_train], order[n_train:])


@dataclass(frozen=True)
class HeldOutValues:
    """A policy's value per banner on held-out rows: its greedy banner and its sampled banners."""

    greedy: Estimate
    sampled: Estimate

    def row(self, prefix: str = "heldout") -> dict[str, float]:
        """Flat figures for a table or MLflow: value and CI bounds of each."""
        out = {}
        for kind, e in (("greedy", self.greedy), ("sampled", self.sampled)):
            out.update(
                {
                    f"{prefix}_{kind}": e.value,
                    f"{prefix}_{kind}_low": e.ci_low,
                    f"{prefix}_{kind}_high": e.ci_high,
                }
            )
        return out


@dataclass(frozen=True)
class HeldOutLogs:
    """Held-out rows and what the estimator needs of them.

    positions (n,) and behaviour_marginals (n, 1) for slot rows (one displayed item per row, banners
    of ``banner_size``); behaviour_marginals (n, K) for banners where the log carries them, else None
    (empirical show rates)."""

    logs: LoggedBatch
    positions: np.ndarray | None = None
    behaviour_marginals: np.ndarray | None = None
    banner_size: int | None = None


@torch.no_grad()
def heldout_value(
    policy: BannerPolicy, held: HeldOutLogs, scheme: RewardScheme, seed: int = 0, temperature: float = 1.0
) -> Estimate:
    """IIPS value per banner of PL(policy / temperature) on the held-out rows, with its 95% CI."""
    return evaluate_policy(
        held.logs,
        policy.eval().logits,
        scheme,
        ["iips"],
        behaviour_marginals=held.behaviour_marginals,
        positions=held.positions,
        banner_size=held.banner_size,
        temperature=temperature,
        n_samples=32,
        seed=seed,
    ).estimates["iips"]


@torch.no_grad()
def greedy_value(
    policy: BannerPolicy, held: HeldOutLogs, scheme: RewardScheme, chunk: int = 4096
) -> Estimate:
    """IIPS value per banner of the policy's greedy banner (its top-K in order) on the held-out rows.

    Exact: the greedy banner's marginal at position k is 1 where it shows the logged product there,
    else 0 (no sampling, no temperature). Logits are computed ``chunk`` rows at a time."""
    logs = held.logs
    items = logs.banners.items.numpy()
    n = len(items)
    k_size = held.banner_size or items.shape[1]
    policy.eval()
    top = np.concatenate(
        [
            policy.logits(logs.contexts[i : i + chunk]).topk(k_size, dim=1).indices.numpy()
            for i in range(0, n, chunk)
        ]
    )  # (n, K)
    r = position_rewards(scheme, logs.outcomes).double().numpy()
    if held.positions is None:
        target = (top == items).astype(np.float64)
        mu = held.behaviour_marginals
        mu = show_rate_marginals(items, policy.n_products) if mu is None else np.asarray(mu, np.float64)
    else:  # slot rows: each row weighs n / n_p so the value per banner sums the positions' means
        pos = np.asarray(held.positions, dtype=np.int64)
        target = (top[np.arange(n), pos] == items[:, 0]).astype(np.float64)[:, None]
        r = r * (n / np.bincount(pos, minlength=k_size)[pos])[:, None]
        mu = np.asarray(held.behaviour_marginals, dtype=np.float64).reshape(n, 1)
    return iips(r, target, mu)


def heldout_values(
    policy: BannerPolicy, held: HeldOutLogs, scheme: RewardScheme, seed: int = 0
) -> HeldOutValues:
    """Greedy and sampled held-out values of ``policy`` (the policy is left in eval mode)."""
    return HeldOutValues(
        greedy=greedy_value(policy, held, scheme), sampled=heldout_value(policy, held, scheme, seed)
    )


def logger_value(held: HeldOutLogs, scheme: RewardScheme) -> Estimate:
    """The logging policy's own value per banner on the held-out rows (mean logged reward), with its CI.

    Slot rows: the mean reward of each position summed over positions, as IIPS reports per banner."""
    r = position_rewards(scheme, held.logs.outcomes).double().numpy().sum(1)
    if held.positions is not None:
        pos = np.asarray(held.positions)
        share = np.bincount(pos, minlength=int(pos.max()) + 1)[pos] / len(pos)
        r = r / share  # row i stands for its position's mean: Σ_p mean_p = mean(r_i / share_p)
    return summarise("logged", r, np.ones_like(r))


def runaway_warning(name: str, in_sample: Estimate, heldout: Estimate) -> str | None:
    """A one-line warning when ``name``'s in-sample value runs away from its held-out one, else None."""
    if in_sample.value > heldout.ci_high and in_sample.value > RUNAWAY_RATIO * heldout.value:
        return (
            f"warning: {name} overfits its training rows: in-sample value {in_sample.value:.4f} against "
            f"{heldout.value:.4f} [{heldout.ci_low:.4f}, {heldout.ci_high:.4f}] held out"
        )
    return None


def split_logs(logs: LoggedBatch, split: Split, slots=None) -> tuple[LoggedBatch, HeldOutLogs]:
    """(training rows, held-out rows with what the estimator needs) of ``logs``.

    slots: the ``ImportedLogs`` that ``logs`` comes from, if any: its logged per-position marginals
    (and, for slot rows, positions and banner size) go with the held-out rows."""
    train, held, rows = logs[split.train_rows], logs[split.holdout_rows], split.holdout_rows.numpy()
    if slots is None:
        return train, HeldOutLogs(held)
    mu = None if slots.behaviour_marginals is None else slots.behaviour_marginals[rows]
    if not slots.slot_rows:
        return train, HeldOutLogs(held, behaviour_marginals=mu)
    return train, HeldOutLogs(held, slots.positions[rows], mu, slots.banner_size)
