"""Learning from the live event stream: read ready impressions, update, checkpoint, commit, register.

Exactly-once training: the checkpoint (policy, optimiser, beta, and the offset after the batch) is
written atomically *before* the offset is committed to the store. On restart the checkpoint wins: if
the store's committed offset lags it (a crash between the two), the checkpoint's offset is committed
first, so no event is trained on twice and none is skipped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
import torch

from recsys_rl import tracking
from recsys_rl.config import RunConfig, load_reward
from recsys_rl.events import EventStore
from recsys_rl.guards import GuardRails, ValueFn, snips_value
from recsys_rl.jobs import trainable_copy
from recsys_rl.learner import Learner
from recsys_rl.policy import BannerPolicy
from recsys_rl.records import LoggedBatch

CHECKPOINT = "trainer.pt"


class OnlineTrainer:
    def __init__(
        self,
        cfg: RunConfig,
        store: EventStore,
        reference: BannerPolicy,
        value_fn: Callable[[LoggedBatch], ValueFn] | None = None,
        clock: Callable[[], float] = time.time,
        log: Callable[[str], None] = print,
    ):
        self.cfg, self.store, self.reference, self.clock, self.log = cfg, store, reference, clock, log
        self.scheme = load_reward(cfg.reward)
        self.policy = trainable_copy(reference)
        self.learner = Learner(
            self.policy, reference, self.scheme, cfg.train, cfg.seed, cfg.policy.temperature
        )
        self.current = reference  # the last registered version: what guard rails compare against
        self.value_fn = value_fn or (lambda logged: snips_value(logged, self.scheme, cfg.policy.temperature))
        self.guards = GuardRails(
            cfg.train.kl_hard_limit, cfg.online.value_tolerance, cfg.online.min_value_gain
        )
        if cfg.online.reward_model:  # optional extra guard rail: the learned reward model's value
            from recsys_rl.reward_model.guard import reward_model_guard

            self.guards.reward_model_value = reward_model_guard(cfg.online.reward_model, self.scheme, reference)
            self.guards.reward_model_tolerance = cfg.online.reward_model_tolerance
        self.ckpt = Path(cfg.online.checkpoint_dir) / CHECKPOINT
        self.updates = self.impressions = 0
        self.registered: list[str] = []
        self._stop = False
        self._resume()

    # -- state -------------------------------------------------------------------------------------
    def _state(self, offset) -> dict:
        return {
            "policy": self.policy.state_dict(),
            "current": self.current.state_dict(),
            "optimizer": self.learner.opt.state_dict(),
            "beta": self.learner.kl_ctl.beta,
            "updates": self.updates,
            "impressions": self.impressions,
            "registered": list(self.registered),
            "offset": offset,
        }

    def _save(self, offset) -> None:
        """Atomic: write a temp file, fsync, rename over the old checkpoint."""
        self.ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.ckpt.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            torch.save(self._state(offset), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.ckpt)

    def _resume(self) -> None:
        if not self.ckpt.exists():
            return
        s = torch.load(self.ckpt, map_location="cpu", weights_only=True)
        self.policy.load_state_dict(s["policy"])
        current = trainable_copy(self.reference)
        current.load_state_dict(s["current"])
        self.current = current.frozen_copy()
        self.learner.opt.load_state_dict(s["optimizer"])
        self.learner.kl_ctl.beta = s["beta"]
        self.updates, self.impressions, self.registered = s["updates"], s["impressions"], s["registered"]
        consumer = self.cfg.online.consumer
        if s["offset"] is not None and self.store.committed(consumer) != s["offset"]:
            self.store.commit(consumer, s["offset"])  # crashed after checkpoint, before commit
        self.log(f"resumed from {self.ckpt}: {self.updates} updates, {self.impressions} impressions")

    # -- one step ----------------------------------------------------------------------------------
    def step(self) -> dict[str, float] | None:
        """Train on the next ready batch; None when fewer than ``min_batch`` impressions are ready."""
        oc = self.cfg.online
        batch = self.store.read_ready(oc.consumer, self.clock() - oc.attribution_window_s, oc.batch_size)
        if len(batch) < oc.min_batch:
            return None  # not committed: the same impressions come back next time, with more
        logged = batch.to_logged(self.policy.n_products)
        explored = logged.banners.log_prob < 0  # deterministic (A/B control) banners carry log 1 = 0
        stats: dict[str, float] = {}
        if bool(explored.any()):
            stats = self.learner.update(logged[explored], group_size=1)
        self.updates += 1
        self.impressions += len(batch)
        self._save(batch.offset)
        self.store.commit(oc.consumer, batch.offset)
        if self.updates % oc.register_every == 0:
            stats.update(self._maybe_register(logged))
        stats["impressions_consumed"] = float(self.impressions)
        if mlflow.active_run():
            tracking.log_metrics(stats, step=self.updates)
        return stats

    def _maybe_register(self, logged: LoggedBatch) -> dict[str, float]:
        candidate = self.policy.frozen_copy()
        rep = self.guards.check(
            candidate, self.current, self.reference, logged, self.value_fn(logged), self.cfg.seed
        )
        out = {"guard_kl": rep.kl, "guard_value": rep.value, "guard_current_value": rep.current_value}
        if not rep.passed:
            self.log(f"update {self.updates}: not registered: {'; '.join(rep.reasons)}")
            out["registered"] = 0.0
            return out
        _, version = tracking.log_policy(candidate, self.cfg.tracking.registered_model, self.cfg.online.alias)
        self.current = candidate
        self.registered.append(str(version))
        self._save(self.store.committed(self.cfg.online.consumer))
        self.log(
            f"update {self.updates}: registered version {version} (kl={rep.kl:.3f}, value={rep.value:.4f})"
        )
        out["registered"] = 1.0
        return out

    # -- loop --------------------------------------------------------------------------------------
    def stop(self, *_) -> None:
        self._stop = True

    def run(self, max_updates: int | None = None, idle_exit_s: float | None = None) -> None:
        """Train until stopped (SIGINT/SIGTERM), ``max_updates`` more updates, or idle for ``idle_exit_s``."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread (tests)
                signal.signal(sig, self.stop)
        done, idle_since = 0, self.clock()
        while not self._stop:
            stats = self.step()
            if stats is None:
                if idle_exit_s is not None and self.clock() - idle_since > idle_exit_s:
                    break
                time.sleep(self.cfg.online.poll_s)
                continue
            idle_since, done = self.clock(), done + 1
            self.log(
                f"update {self.updates}: impressions={self.impressions} reward={stats.get('reward', float('nan')):.3f} "
                f"kl={stats.get('loss/kl', float('nan')):.3f} beta={stats.get('beta', float('nan')):.4f}"
            )
            if max_updates is not None and done >= max_updates:
                break
