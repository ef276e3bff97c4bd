"""Dyna-style model-based updates: a reward model refitted on live impressions scores virtual banners.

Every real impression tells the reward model (``recsys_rl.reward_model``) a little about where the
current policy is: the logs it was first fitted on come from the logging policy, and a policy that has
moved away from it is exactly where the model is least informed. ``Dyna`` keeps the live impressions
seen so far, refits (fine-tunes) the model on them together with the original logs every
``dyna.refit_every`` real updates, and after each real update makes ``dyna.updates_per_real`` virtual
updates: the current policy samples ``banners_per_context`` banners for ``dyna.contexts_per_update``
contexts drawn from those seen live so far, the model scores them (its expected reward, no sampling
noise) and the same ``Learner`` -- PPO ratio against the banners' exact sampling propensity, RLOO
advantages, exact per-position KL to the frozen reference, the one adaptive beta of the run -- makes a
step. Virtual banners cost no impression. The refit needs no importance weight: the model is of
outcomes given (context, banner), which does not depend on the policy that chose the banner; the
virtual banners are drawn by the current policy and logged with that exact propensity (so their ratio
in the learner is against it, 1 in the first pass). The KL budget is shared: the controller sees the virtual
updates' KL as it sees the real ones'.

A learned reward is wrong in places and optimising it hard is the failure the KL term exists for; the
real updates keep pulling towards the gold reward, and the refit corrects the model where the policy
goes. The virtual steps can never leave the policy past K * ``train.kl_hard_limit`` per banner: after each one the
exact per-position KL to the reference is measured on the latest real batch's contexts, and a step
that went past the limit is undone (the state before it restored, as the warm start rolls back) and
ends that round of virtual steps; with
``dyna.within_budget`` it is also what the adaptive beta aims at, (1 - kl_margin) * K * kl_target, so the learned reward
cannot spend more of the budget than the controller allows (the adaptive beta alone, moved at most 2%
an update, lags behind a reward that is cheap to optimise).
With ``dyna.stop_after`` the refits and virtual steps stop once that many live impressions have been
observed, and the real updates go on alone: the model-based steps buy the early budget, where real
impressions are few, and the real ones need not share the KL budget with the learned reward later.
Full-catalogue path only (``policy.full_catalogue_max``), as the warm start.

Shapes: C contexts, G banners per context, K banner positions, N products.
"""

from __future__ import annotations

import math

import torch

from recsys_rl.config import DynaConfig, RewardScheme, TrainConfig, per_banner
from recsys_rl.evaluation import divergence
from recsys_rl.finetune.replay import concat
from recsys_rl.finetune.reward_model import scored_batch
from recsys_rl.learner import Learner
from recsys_rl.policy import BannerPolicy
from recsys_rl.records import LoggedBatch
from recsys_rl.reward_model.fit import nll_terms
from recsys_rl.reward_model.model import BannerRewardModel


class Dyna:
    """Live impressions -> periodic reward-model refit -> virtual KL-constrained updates (see module doc).

    ``model`` is copied (the caller's stays as it was); ``logs``: the impressions it was fitted on,
    mixed into every refit so the model does not forget the rest of the catalogue (None: live only).
    """

    def __init__(
        self,
        model: BannerRewardModel,
        logs: LoggedBatch | None,
        scheme: RewardScheme,
        cfg: DynaConfig,
        seed: int,
    ):
        self.model = BannerRewardModel(**model.hparams())
        self.model.load_state_dict(model.state_dict())
        self.model.eval()
        self.logs, self.scheme, self.cfg = logs, scheme, cfg
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.refit_lr, weight_decay=1e-4)
        self.generator = torch.Generator().manual_seed(seed + 19)
        self._live: list[LoggedBatch] = []
        self._pool: LoggedBatch | None = None  # concatenation of _live (rebuilt when it grew)
        self._latest: LoggedBatch | None = None  # the last batch observed
        self.real_updates = 0
        self.seen = 0  # live impressions observed (kept or, once stopped, not)
        self.refits = 0
        self.rollbacks = 0

    def observe(self, batch: LoggedBatch) -> None:
        """Keep a freshly served batch (its outcomes observed); replays are not observed twice. Once
        ``stopped`` nothing more is kept (nothing would use it)."""
        self.seen += len(batch)
        if self.stopped():
            return
        self._live.append(batch)
        self._latest = batch
        self._pool = None

    def live(self) -> LoggedBatch | None:
        """Every live impression observed so far, in order (None before the first)."""
        if self._pool is None and self._live:
            self._pool = concat(self._live) if len(self._live) > 1 else self._live[0]
            self._live = [self._pool]
        return self._pool

    def refit(self) -> dict[str, float]:
        """``refit_steps`` minibatch steps of the reward model's likelihood; each minibatch is
        ``live_share`` live impressions (uniform over those seen) and the rest from the logs."""
        live = self.live()
        if live is None:
            return {}
        cfg, g = self.cfg, self.generator
        n_live = cfg.refit_batch if self.logs is None else max(1, round(cfg.live_share * cfg.refit_batch))
        self.model.train()
        total = 0.0
        for _ in range(cfg.refit_steps):
            parts = [live[torch.randint(0, len(live), (n_live,), generator=g)]]
            if self.logs is not None and cfg.refit_batch > n_live:
                parts.append(
                    self.logs[torch.randint(0, len(self.logs), (cfg.refit_batch - n_live,), generator=g)]
                )
            mb = concat(parts) if len(parts) > 1 else parts[0]
            loss = sum(nll_terms(self.model, mb).values()) / len(mb)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += float(loss.detach())
        self.model.eval()
        self.refits += 1
        return {"dyna/refit_nll": total / max(cfg.refit_steps, 1)}

    def after_update(self, learner: Learner, policy: BannerPolicy, group: int) -> dict[str, float]:
        """Called after each real update: refit when due, then the virtual updates. Returns their stats."""
        if policy.uses_candidates:
            raise ValueError(
                f"dyna.enabled: virtual banners are scored over the full catalogue; {policy.n_products} "
                "products is above policy.full_catalogue_max"
            )
        self.real_updates += 1
        out: dict[str, float] = {}
        cfg = self.cfg
        if self.stopped():
            return out
        if cfg.refit_every and self.real_updates % cfg.refit_every == 0:
            out.update(self.refit())
        live = self.live()
        if live is None or cfg.updates_per_real == 0:
            return out
        probe = self._latest.contexts[::group] if group > 1 else self._latest.contexts
        limit, rewards, kls, kl = self.kl_limit(learner.cfg, policy.banner_size), [], [], math.nan
        for _ in range(cfg.updates_per_real):
            before = {k: v.detach().clone() for k, v in policy.state_dict().items()}
            idx = torch.randint(0, len(live), (cfg.contexts_per_update,), generator=self.generator)
            batch, r = scored_batch(
                policy, self.model, self.scheme, live.contexts[idx], group, self.generator
            )
            stats = learner.update(batch, group, rewards=r)
            rewards.append(stats["reward"])
            kls.append(stats["loss/kl"])
            kl = self.measured_kl(policy, learner.reference, probe)
            if not kl <= limit:  # NaN counts as past the limit: this step is undone, no more this round
                policy.load_state_dict(before)
                self.rollbacks += 1
                break
        out.update(
            {
                "dyna/proxy_reward": sum(rewards) / len(rewards),
                "dyna/kl": sum(kls) / len(kls),
                "dyna/measured_kl": kl,
                "dyna/rollbacks": float(self.rollbacks),
            }
        )
        return out

    def stopped(self) -> bool:
        """True once more than ``dyna.stop_after`` (> 0) live impressions have been observed: the real
        updates on the first ``stop_after`` have their refit and virtual steps, later ones run alone."""
        return bool(self.cfg.stop_after) and self.seen > self.cfg.stop_after

    def kl_limit(self, train: TrainConfig, banner_size: int) -> float:
        """The KL the virtual steps may not leave the policy past: the hard limit, and with
        ``dyna.within_budget`` what the adaptive beta aims at, (1 - train.kl_margin) * K * train.kl_target
        (both budgets are per displayed product, so per banner they are K times larger)."""
        aim = per_banner(train.kl_target, banner_size) * (1 - train.kl_margin)
        hard = per_banner(train.kl_hard_limit, banner_size)
        return min(hard, aim) if self.cfg.within_budget else hard

    def measured_kl(self, policy: BannerPolicy, reference: BannerPolicy, contexts) -> float:
        """Exact per-position KL(policy || reference) per banner along banners drawn from the policy."""
        was_training = policy.training
        policy.eval()
        kl, _ = divergence(policy.logits, reference, contexts, torch.Generator().manual_seed(17))
        policy.train(was_training)
        return kl
