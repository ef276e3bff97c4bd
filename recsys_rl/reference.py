"""The reference as the logs path fits it: on the earlier rows only, judged on the held-out later ones.

Why: ``train_baseline`` fits whatever rows it is given; here the split is made, the held-out rows are
kept out of every training step, and each epoch is scored on them (sampled IIPS value with its CI,
``recsys_rl.holdout``). With ``baseline.patience`` > 0 training stops after that many epochs without a
better held-out value and the best epoch is kept; with 0 all ``baseline.epochs`` run, as before.

Which targets suit a shop differs (next purchase, never a context product, is right in our simulator
and wrong where re-showing the viewed product wins), so ``baseline.history_weights`` lists
next-purchase weights and ``baseline.context_weights`` re-showing weights to try: one reference per
pair, the best held-out sampled value kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recsys_rl.baseline import train_baseline
from recsys_rl.config import BaselineConfig, PolicyConfig, RewardScheme
from recsys_rl.holdout import HeldOutLogs, HeldOutValues, heldout_value, heldout_values
from recsys_rl.policy import BannerPolicy
from recsys_rl.records import LoggedBatch


@dataclass
class ReferenceFit:
    """The chosen reference, its held-out values, the epoch kept and each epoch's held-out sampled value;
    tried: each history weight tried with its held-out sampled value and CI."""

    policy: BannerPolicy
    heldout: HeldOutValues
    epoch: int
    curve: list[dict[str, float]] = field(default_factory=list)
    history_weight: float = 1.0
    context_weight: float = 0.0
    tried: list[dict[str, float]] = field(default_factory=list)


def fit_reference(
    train: LoggedBatch,
    held: HeldOutLogs,
    scheme: RewardScheme,
    n_products: int,
    policy_cfg: PolicyConfig,
    cfg: BaselineConfig,
    seed: int,
    progress: bool = True,
    banner_size: int | None = None,
    categorical_vocab: list[list[str]] | None = None,
) -> ReferenceFit:
    """Train on ``train`` (never on ``held``), score epochs on ``held``; keep the best one when patience > 0;
    with ``cfg.history_weights``, one fit per weight and the best held-out sampled value kept."""
    fits = []
    for w in cfg.history_weights or [cfg.history_weight]:
        for c in cfg.context_weights or [cfg.context_weight]:
            one = cfg.model_copy(update={"history_weight": w, "context_weight": c})
            fit = _fit_one(
                train,
                held,
                scheme,
                n_products,
                policy_cfg,
                one,
                seed,
                progress,
                banner_size,
                categorical_vocab,
            )
            fits.append(fit)
    tried = [
        {
            "history_weight": f.history_weight,
            "context_weight": f.context_weight,
            "heldout_sampled": f.heldout.sampled.value,
            "heldout_sampled_low": f.heldout.sampled.ci_low,
            "heldout_sampled_high": f.heldout.sampled.ci_high,
            "heldout_greedy": f.heldout.greedy.value,
        }
        for f in fits
    ]
    best = max(fits, key=lambda f: f.heldout.sampled.value)
    best.tried = tried
    return best


def _fit_one(
    train, held, scheme, n_products, policy_cfg, cfg, seed, progress, banner_size, categorical_vocab
):
    """One reference for one target mix (``fit_reference`` without the choice among mixes)."""
    curve: list[dict[str, float]] = []
    best: dict = {"value": float("-inf"), "policy": None, "epoch": 0}

    def on_epoch(epoch: int, policy: BannerPolicy) -> bool:
        if cfg.patience == 0:
            return False
        value = heldout_value(policy, held, scheme, seed)
        policy.train()
        curve.append({"epoch": epoch, "heldout_sampled": value.value})
        if value.value > best["value"]:
            best.update(value=value.value, policy=policy.frozen_copy(), epoch=epoch)
        return epoch - best["epoch"] >= cfg.patience

    last = train_baseline(
        train,
        n_products,
        policy_cfg,
        cfg,
        seed,
        progress,
        banner_size=banner_size,
        categorical_vocab=categorical_vocab,
        on_epoch=on_epoch,
    )
    ref, epoch = (last, cfg.epochs) if best["policy"] is None else (best["policy"], best["epoch"])
    if ref is not last:
        ref.refresh_candidates()
    return ReferenceFit(
        ref, heldout_values(ref, held, scheme, seed), epoch, curve, cfg.history_weight, cfg.context_weight
    )
