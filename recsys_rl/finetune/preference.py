"""Preference optimisation from logs: a copy of the reference trained by Adam on DPO, IPO, KTO or
in-banner softmax DPO (``recsys_rl.preference``), with no reward model and no sampling loop.

beta (``preference.beta``) plays the KL penalty's part: the optimum of each loss is the reference
tilted by the implicit reward / beta, so a larger beta stays closer. Each step also measures the exact
per-position KL to the reference along banners the policy would draw (as every logs path reports).

Off-policy (``preference.weighting: importance``): the logs come from a logging policy mu, not from
the reference the losses assume, so each example is weighted by pi_ref / mu from the logged
propensities (banner level for dpo / ipo / kto; item level, K pi_ref(i) against the show rate, for
sdpo), clipped at ``preference.weight_clip`` and self-normalised per minibatch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from recsys_rl import slate
from recsys_rl.config import PreferenceConfig, RewardScheme
from recsys_rl.finetune.logs import show_rates
from recsys_rl.policy import BannerPolicy, trainable_copy
from recsys_rl.preference import data
from recsys_rl.preference.losses import (
    PreferenceTerms,
    banner_reward,
    dpo_loss,
    importance_weights,
    ipo_loss,
    item_reward,
    kto_balance,
    kto_loss,
    kto_reference_point,
    sdpo_loss,
)
from recsys_rl.progress import progress_bar
from recsys_rl.records import LoggedBatch
from recsys_rl.sparse_optim import MixedAdam, clip_gradients

CHUNK = 4096
"""Contexts per reference pass when the importance weights are computed up front."""


def _row_log_ratio(reference: BannerPolicy, logs: LoggedBatch) -> torch.Tensor:
    """(n,) log pi_ref(a|x) - log mu(a|x) of each logged banner."""
    out = [
        reference.banner_log_prob(logs.contexts[s : s + CHUNK], logs.banners.items[s : s + CHUNK])
        for s in range(0, len(logs), CHUNK)
    ]
    return torch.cat(out) - logs.banners.log_prob


def _examples(
    reference: BannerPolicy, logs: LoggedBatch, scheme: RewardScheme, cfg: PreferenceConfig, seed: int
):
    """(the examples, their (P,) log importance ratio or None)."""
    importance = cfg.weighting == "importance"
    if cfg.objective == "sdpo":
        exam = None if cfg.examination is None else torch.tensor(cfg.examination)
        ex = data.in_banner(logs, scheme, exam)
        if not importance:
            return ex, None
        mu = show_rates(logs, reference.n_products)[ex.chosen]
        with torch.no_grad():
            p_ref = torch.cat(
                [
                    torch.softmax(reference.logits(logs.contexts[ex.rows[s : s + CHUNK]]), -1)
                    .gather(1, ex.chosen[s : s + CHUNK, None])
                    .squeeze(1)
                    for s in range(0, len(ex), CHUNK)
                ]
            )
        return ex, (reference.banner_size * p_ref).log() - mu.log()
    rho = _row_log_ratio(reference, logs) if importance else None
    if cfg.objective == "kto":
        ex = data.unpaired(logs, scheme)
        return ex, rho
    ex = data.context_pairs(logs, scheme, cfg.pair_rounds, seed)
    return ex, None if rho is None else rho[ex.chosen] + rho[ex.rejected]


def preference_finetune(
    reference: BannerPolicy,
    logs: LoggedBatch,
    scheme: RewardScheme,
    cfg: PreferenceConfig,
    seed: int,
    progress: bool = True,
    on_check: Callable[[int, BannerPolicy], bool] | None = None,
    checks: int = 10,
) -> tuple[BannerPolicy, list[dict[str, float]]]:
    """Train a copy of ``reference`` for ``cfg.steps`` minibatches of preference examples built from
    ``logs``. History rows: loss, kl, kl_per_slot, beta and TRL's rewards/chosen, /rejected, /margins,
    /accuracies. on_check(step, policy) at ``checks`` evenly spaced steps: True stops training."""
    if cfg.objective == "sdpo" and logs.banners.items.shape[1] == 1:
        raise ValueError(
            "preference.objective: sdpo compares the products of one banner, and these logs hold one "
            "displayed item per row with no impression key to group them; use kto or dpo"
        )
    ex, log_ratio = _examples(reference, logs, scheme, cfg, seed)
    if len(ex) == 0:
        raise ValueError(f"preference.objective: {cfg.objective} finds no preference in these logs")
    policy = trainable_copy(reference)
    sparse = [policy.item_in.weight] if policy.item_in.sparse else []
    opt = MixedAdam(policy, sparse, cfg.lr)
    g = torch.Generator().manual_seed(seed)
    k, ctx_all, items_all = reference.banner_size, logs.contexts, logs.banners.items
    lam_d, lam_u = 0.0, 0.0
    if cfg.objective == "kto":
        lam_d, lam_u = kto_balance(int(ex.desirable.sum()), int((~ex.desirable).sum()))
    history: list[dict[str, float]] = []
    with progress_bar(f"preference fine-tune ({cfg.objective})", cfg.steps, progress) as advance:
        for step in range(cfg.steps):
            idx = torch.randint(0, len(ex), (cfg.minibatch_size,), generator=g)
            w = (
                None
                if log_ratio is None
                else importance_weights(log_ratio[idx], torch.zeros(len(idx)), cfg.weight_clip)
            )
            if cfg.objective in ("dpo", "ipo"):
                rows = torch.cat([ex.chosen[idx], ex.rejected[idx]])
            else:
                rows = ex.rows[idx]
            ctx = ctx_all[rows]
            logits = policy.logits(ctx)
            with torch.no_grad():
                ref_logits = reference.logits(ctx)
            terms = _loss(cfg, ex, idx, rows, logits, ref_logits, items_all, w, lam_d, lam_u)
            opt.zero_grad(set_to_none=True)
            terms.loss.backward()
            clip_gradients(policy, opt, sparse, cfg.max_grad_norm)
            opt.step()
            with torch.no_grad():
                drawn = slate.gumbel_topk(logits, k, g)
                kl = slate.banner_terms(logits, ref_logits, drawn)[1].mean().item()
            row = {**terms.metrics(), "kl": kl, "kl_per_slot": kl / k, "beta": cfg.beta}
            history.append(row)
            advance(1, kl=kl, margin=row["rewards/margins"])
            done = step + 1
            if on_check is not None and (done % max(1, cfg.steps // checks) == 0 or done == cfg.steps):
                if on_check(done, policy):
                    break
    return policy, history


def _loss(cfg, ex, idx, rows, logits, ref_logits, items_all, w, lam_d, lam_u) -> PreferenceTerms:
    """The objective's loss on one minibatch (rows: the logged rows whose contexts gave ``logits``)."""
    beta = cfg.beta
    if cfg.objective == "sdpo":
        neg = item_reward(logits, ref_logits, ex.negatives[idx])  # (P, K)
        chosen = item_reward(logits, ref_logits, ex.chosen[idx, None]).squeeze(1)
        return sdpo_loss(chosen, neg, ex.examined[idx], beta=beta, weights=w)
    r = banner_reward(logits, ref_logits, items_all[rows])
    if cfg.objective == "kto":
        mismatched = banner_reward(logits, ref_logits, items_all[rows.roll(1)])
        z0 = kto_reference_point(mismatched)
        return kto_loss(r, ex.desirable[idx], z0, beta=beta, lambda_d=lam_d, lambda_u=lam_u, weights=w)
    chosen, rejected = r.chunk(2)
    if cfg.objective == "ipo":
        return ipo_loss(chosen, rejected, beta=beta, weights=w)
    return dpo_loss(chosen, rejected, beta=beta, margin=cfg.margin * ex.grade_gap[idx], weights=w)
