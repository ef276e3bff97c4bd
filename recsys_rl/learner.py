"""One KL-constrained policy-gradient update from a batch of logged banners.

The learner does not know how the batch was collected: the simulator loop and the live event stream
both hand it a ``LoggedBatch``. Banners of one context sit in consecutive rows (``group_size`` per
context); with ``group_size > 1`` the advantage is leave-one-out (RLOO), otherwise the critic's value.
"""

from __future__ import annotations

import torch

from recsys_rl import slate
from recsys_rl.config import RewardScheme, TrainConfig, per_banner
from recsys_rl.objective import AdaptiveKL, ppo_kl_loss, reinforce_kl_loss, rloo_advantages
from recsys_rl.policy import BannerPolicy
from recsys_rl.records import LoggedBatch
from recsys_rl.rewards import reward
from recsys_rl.sparse_optim import MixedAdam, clip_grad_norm


class Learner:
    def __init__(
        self,
        policy: BannerPolicy,
        reference: BannerPolicy,
        scheme: RewardScheme,
        cfg: TrainConfig,
        seed: int,
        temperature: float = 1.0,
    ):
        """``temperature``: the one banners are served at, so ratios compare like with like."""
        self.policy, self.reference, self.scheme, self.cfg = policy, reference, scheme, cfg
        self.temperature = temperature
        self.opt = MixedAdam(policy, policy.sparse_parameters(), cfg.lr, cfg.item_lr)
        self.banner_size = policy.banner_size
        aim = per_banner(cfg.kl_target, self.banner_size) * (1 - cfg.kl_margin)  # nats per banner
        self.kl_ctl = AdaptiveKL(cfg.kl_beta, aim, cfg.kl_horizon, cfg.kl_adaptive)
        self.generator = torch.Generator().manual_seed(seed)
        self.updates = 0

    def _advantages(self, rewards: torch.Tensor, values: torch.Tensor, group: int) -> torch.Tensor:
        adv = rloo_advantages(rewards.view(-1, group)).view(-1) if group > 1 else rewards - values
        return adv / (adv.std() + 1e-8) if adv.numel() > 1 else adv

    def set_progress(self, fraction: float) -> None:
        """Linear learning-rate annealing (CleanRL-style): each group's lr * (1 - fraction done)."""
        if self.cfg.lr_anneal:
            for group in self.opt.param_groups:
                group["lr"] = group.get("base_lr", self.cfg.lr) * max(1.0 - fraction, 0.0)

    def _candidates(self, ctx, items: torch.Tensor, group_size: int, candidates: torch.Tensor | None):
        """(ids (C, M'), valid (C, M') or None): the candidate set each context's banners are scored on.

        Given (the simulator loop passes the ids its banners were sampled from) they are used as they
        are: the policy over those candidates is exactly the one that served. Otherwise (the live
        stream) the current policy's candidates are extended by the served items (``with_banner``), so
        a banner from an older version keeps a finite, defined log-prob.
        """
        if candidates is not None:
            return candidates, None
        served = items.view(len(ctx), group_size * items.shape[1])
        return slate.with_banner(self.policy.candidates(ctx), served)

    def update(
        self,
        batch: LoggedBatch,
        group_size: int = 1,
        candidates: torch.Tensor | None = None,
        rewards: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """Optimise on one batch for ``cfg.epochs`` passes; returns the mean of each loss term.

        ``candidates`` (C, M): per context, the candidate ids its banners were drawn from (only used
        when the policy ``uses_candidates``); see ``_candidates``.
        ``rewards`` (B,): per-banner rewards to use instead of the scheme's reward of ``batch.outcomes``
        (e.g. a learned reward model's expected reward, no sampling noise).
        ``positions`` (B, K): each banner item's position in its context's row of ``candidates``, when
        the sampler handed them on (``trainer.collect_on_candidates``); found here otherwise.
        """
        cfg, n_ctx = self.cfg, len(batch) // group_size
        ctx = batch.contexts[::group_size] if group_size > 1 else batch.contexts  # (C,) unique contexts
        items, logp_b = batch.banners.items, batch.banners.log_prob
        if rewards is None:
            rewards = reward(self.scheme, batch.outcomes)  # (B,)
        big = self.policy.uses_candidates
        with torch.no_grad():
            if big:  # everything over (C, M) candidates, never (C, N)
                cand, valid = self._candidates(ctx, items, group_size, candidates)
                ref_logits = self.reference.candidate_logits(ctx, cand)  # (C, M)
                if valid is not None:
                    ref_logits = ref_logits.masked_fill(~valid, slate.PAD_LOGIT)
                values = self.policy.value(ctx)
                owner = torch.arange(n_ctx).repeat_interleave(group_size)  # banner -> context row
                if positions is None or candidates is None:  # (B, K), once per batch
                    positions = slate.candidate_positions(cand[owner], items)
            else:
                ref_logits = self.reference.logits(ctx)  # (C, N)
                _, values = self.policy.logits_and_value(ctx)
            advantages = self._advantages(rewards, values.repeat_interleave(group_size), group_size)
        ctx_per_mb = max(1, cfg.minibatch_size // group_size)
        stats: dict[str, list[float]] = {}
        for _ in range(cfg.epochs):
            order = torch.randperm(n_ctx, generator=self.generator)
            for start in range(0, n_ctx, ctx_per_mb):
                c = order[start : start + ctx_per_mb]  # context rows
                rows = (c.unsqueeze(1) * group_size + torch.arange(group_size)).view(-1)  # banner rows
                share = torch.arange(len(c)).repeat_interleave(group_size)  # banner -> its context row
                it = items[rows]
                if big:
                    logits, v = self.policy.candidate_logits_and_value(ctx[c], cand[c])  # (c, M), (c,)
                    if valid is not None:
                        logits = logits.masked_fill(~valid[c], slate.PAD_LOGIT)
                    logp, kl, ent = slate.restricted_terms(
                        logits / self.temperature, ref_logits[c], cand[c], it, share, positions[rows]
                    )
                else:
                    logits, v = self.policy.logits_and_value(ctx[c])  # (c, N), (c,)
                    logp, kl, ent = slate.banner_terms(logits / self.temperature, ref_logits[c], it, share)
                v = v[share]
                if cfg.algorithm == "ppo":
                    terms = ppo_kl_loss(
                        logp,
                        logp_b[rows],
                        advantages[rows],
                        kl,
                        ent,
                        v,
                        rewards[rows],
                        beta=self.kl_ctl.beta,
                        clip_eps=cfg.clip_eps,
                        value_coef=cfg.value_coef,
                        entropy_coef=cfg.entropy_coef,
                    )
                else:
                    r = rewards[rows]
                    baseline = r - self._loo(r, group_size) if group_size > 1 else v.detach()
                    ref_lp = (
                        slate.restricted_terms(
                            ref_logits[c], ref_logits[c], cand[c], it, share, positions[rows]
                        )[0]
                        if big
                        else slate.log_prob(ref_logits[c][share], it)
                    )
                    terms = reinforce_kl_loss(
                        logp,
                        r,
                        ref_lp,
                        baseline,
                        ent,
                        v,
                        beta=self.kl_ctl.beta,
                        value_coef=cfg.value_coef,
                        entropy_coef=cfg.entropy_coef,
                    )
                self.opt.zero_grad(set_to_none=True)
                terms.total.backward()
                clip_grad_norm(self.opt.params, cfg.max_grad_norm)
                self.opt.step()
                for k in ("total", "policy", "kl", "value", "entropy", "clip_frac"):
                    stats.setdefault(k, []).append(float(getattr(terms, k).detach()))
        out = {f"loss/{k}": sum(v) / len(v) for k, v in stats.items()}
        self.kl_ctl.update(out["loss/kl"])
        self.updates += 1
        out["loss/kl_per_slot"] = out["loss/kl"] / self.banner_size
        out["beta"] = self.kl_ctl.beta
        out["reward"] = rewards.mean().item()
        return out

    @staticmethod
    def _loo(r: torch.Tensor, group: int) -> torch.Tensor:
        return rloo_advantages(r.view(-1, group)).view(-1)
