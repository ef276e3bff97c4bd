"""One KL-constrained policy-gradient update from a batch of logged banners.

The learner does not know how the batch was collected: the simulator loop and the live event stream
both hand it a ``LoggedBatch``. Banners of one context sit in consecutive rows (``group_size`` per
context); with ``group_size > 1`` the advantage is leave-one-out (RLOO), otherwise the critic's value.
"""

from __future__ import annotations

import torch

from recsys_rl import slate
from recsys_rl.config import RewardScheme, TrainConfig
from recsys_rl.objective import AdaptiveKL, ppo_kl_loss, reinforce_kl_loss, rloo_advantages
from recsys_rl.policy import BannerPolicy
from recsys_rl.records import LoggedBatch
from recsys_rl.rewards import reward


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
        self.opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
        self.kl_ctl = AdaptiveKL(
            cfg.kl_beta, cfg.kl_target * (1 - cfg.kl_margin), cfg.kl_horizon, cfg.kl_adaptive
        )
        self.generator = torch.Generator().manual_seed(seed)
        self.updates = 0

    def _advantages(self, rewards: torch.Tensor, values: torch.Tensor, group: int) -> torch.Tensor:
        adv = rloo_advantages(rewards.view(-1, group)).view(-1) if group > 1 else rewards - values
        return adv / (adv.std() + 1e-8) if adv.numel() > 1 else adv

    def set_progress(self, fraction: float) -> None:
        """Linear learning-rate annealing (CleanRL-style): lr * (1 - fraction done)."""
        if self.cfg.lr_anneal:
            for group in self.opt.param_groups:
                group["lr"] = self.cfg.lr * max(1.0 - fraction, 0.0)

    def update(
        self, batch: LoggedBatch, group_size: int = 1, rewards: torch.Tensor | None = None
    ) -> dict[str, float]:
        """Optimise on one batch for ``cfg.epochs`` passes; returns the mean of each loss term.

        ``rewards`` (B,): per-banner rewards to use instead of the scheme's reward of ``batch.outcomes``
        (e.g. a learned reward model's expected reward, no sampling noise).
        """
        cfg, n_ctx = self.cfg, len(batch) // group_size
        ctx = batch.contexts[::group_size] if group_size > 1 else batch.contexts  # (C,) unique contexts
        items, logp_b = batch.banners.items, batch.banners.log_prob
        if rewards is None:
            rewards = reward(self.scheme, batch.outcomes)  # (B,)
        with torch.no_grad():
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
                logits, v = self.policy.logits_and_value(ctx[c])  # (c, N), (c,)
                share = torch.arange(len(c)).repeat_interleave(group_size)  # banner -> its context row
                v, it = v[share], items[rows]
                logp, kl, ent = slate.banner_terms(logits / self.temperature, ref_logits[c], it, share)
                if cfg.algorithm == "ppo":
                    terms = ppo_kl_loss(
                        logp, logp_b[rows], advantages[rows], kl, ent, v, rewards[rows],
                        beta=self.kl_ctl.beta, clip_eps=cfg.clip_eps,
                        value_coef=cfg.value_coef, entropy_coef=cfg.entropy_coef,
                    )  # fmt: skip
                else:
                    r = rewards[rows]
                    baseline = r - self._loo(r, group_size) if group_size > 1 else v.detach()
                    terms = reinforce_kl_loss(
                        logp, r, slate.log_prob(ref_logits[c][share], it), baseline, ent, v,
                        beta=self.kl_ctl.beta, value_coef=cfg.value_coef, entropy_coef=cfg.entropy_coef,
                    )  # fmt: skip
                self.opt.zero_grad(set_to_none=True)
                terms.total.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
                self.opt.step()
                for k in ("total", "policy", "kl", "value", "entropy", "clip_frac"):
                    stats.setdefault(k, []).append(float(getattr(terms, k).detach()))
        out = {f"loss/{k}": sum(v) / len(v) for k, v in stats.items()}
        self.kl_ctl.update(out["loss/kl"])
        self.updates += 1
        out["beta"] = self.kl_ctl.beta
        out["reward"] = rewards.mean().item()
        return out

    @staticmethod
    def _loo(r: torch.Tensor, group: int) -> torch.Tensor:
        return rloo_advantages(r.view(-1, group)).view(-1)
