"""Learning from the live event stream: read ready impressions, update, checkpoint, commit, register.

Exactly-once training: the checkpoint (policy, optimiser, beta, and the offset after the batch) is
written atomically *before* the offset is committed to the store. On restart the checkpoint wins: if
the store's committed offset lags it (a crash between the two), the checkpoint's offset is committed
first, so no event is trained on twice and none is skipped.

Faults of what it depends on:

- the event store unavailable (``StoreUnavailable``: Redis down, disk full): the loop waits, retrying
  with backoff (``online.retry_s`` doubling to ``retry_max_s``), and resumes from its committed
  offset; an offset whose commit failed is committed before anything is read again, so the batch
  already trained on does not come back;
- MLflow unreachable: training and checkpointing go on (step metrics of the outage are dropped, with a
  warning); a version that passed the guard rails stays pending, in the checkpoint too, and its
  registration is retried with backoff until it goes through, exactly once
  (``recsys_rl.registration``: the version is tagged with the update it came from, and a retry first
  looks for that tag).
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

from recsys_rl import registration, tracking
from recsys_rl.audit.guard import ExposureGuard
from recsys_rl.config import RunConfig, load_reward, per_banner
from recsys_rl.events import EventStore, StoreUnavailable
from recsys_rl.finetune.replay import ReplayBuffer
from recsys_rl.guard_rails import GuardRails, ValueFn, snips_value
from recsys_rl.learner import Learner
from recsys_rl.policy import BannerPolicy, trainable_copy
from recsys_rl.records import POSITION_BIAS_CURVE, LoggedBatch

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
        warm_logs: LoggedBatch | None = None,
    ):
        """``warm_logs``: the logs that trained the reference; with ``warm_start.enabled`` a fresh
        trainer (no checkpoint) first fine-tunes against a reward model fitted on them
        (``recsys_rl.finetune.warm_start``) and checks that version's guard rails at its first live update."""
        if (
            cfg.dyna.enabled
        ):  # measured in the simulator loop only (recsys_rl.finetune.dyna); not wired in here
            raise ValueError("dyna.enabled: the online trainer does not run Dyna updates yet; set it false")
        self.cfg, self.store, self.reference, self.clock, self.log = cfg, store, reference, clock, log
        self.scheme = load_reward(cfg.reward)
        self.policy = trainable_copy(reference)
        self.learner = Learner(
            self.policy, reference, self.scheme, cfg.train, cfg.seed, cfg.policy.temperature
        )
        self.current = reference  # the last registered version: what guard rails compare against
        self.value_fn = value_fn or (lambda logged: snips_value(logged, self.scheme, cfg.policy.temperature))
        self.guards = GuardRails(
            per_banner(cfg.train.kl_hard_limit, reference.banner_size),
            cfg.online.value_tolerance,
            cfg.online.min_value_gain,
        )
        oc = cfg.online
        if oc.max_exposure_gini_rise is not None or oc.max_tail_share_drop is not None:
            self.guards.exposure = ExposureGuard(
                torch.tensor(POSITION_BIAS_CURVE[: reference.banner_size]),
                oc.max_exposure_gini_rise,
                oc.max_tail_share_drop,
            )
        if cfg.online.reward_model:  # optional extra guard rail: the learned reward model's value
            from recsys_rl.reward_model.guard import reward_model_guard

            self.guards.reward_model_value = reward_model_guard(
                cfg.online.reward_model, self.scheme, reference
            )
            self.guards.reward_model_tolerance = cfg.online.reward_model_tolerance
        self.ckpt = Path(cfg.online.checkpoint_dir) / CHECKPOINT
        self.updates = self.impressions = 0
        self.registered: list[str] = []
        self.pending: tuple[str, BannerPolicy] | None = None  # (key, candidate) awaiting registration
        self._offset = None  # offset after the last batch trained on (what the checkpoint holds)
        self._uncommitted = None  # an offset checkpointed but whose commit to the store failed
        self._register_wait, self._register_at = cfg.online.retry_s, 0.0
        self.metrics_dropped = 0
        self._stop = False
        self._check_next = False  # check the guard rails at the next update (after a warm start)
        # replayed batches are not checkpointed: after a restart replay starts empty (offsets stay exact)
        self.replay = ReplayBuffer(cfg.train.replay_batches)
        for var, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0"), ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")):
            os.environ.setdefault(var, value)  # fail fast: this loop retries itself, with backoff
        resumed = self._resume()
        if cfg.warm_start.enabled and not resumed:
            self._warm_start(warm_logs)

    def _warm_start(self, logs: LoggedBatch | None) -> None:
        from recsys_rl.finetune.warm_start import warm_start

        if logs is None:
            raise ValueError("warm_start.enabled: needs the logs that trained the reference (--logs)")
        res = warm_start(
            self.reference, logs, self.scheme, self.cfg.train, self.cfg.warm_start, self.cfg.seed
        )
        self.policy.load_state_dict(res.policy.state_dict())  # in place: the optimiser keeps its params
        self._check_next = True
        self.log(
            f"warm start from {len(logs)} logged impressions: {res.updates} updates, kl={res.kl:.3f}"
            + (" (rolled back to stay within train.kl_hard_limit)" if res.rolled_back else "")
        )

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
            "pending": None if self.pending is None else (self.pending[0], self.pending[1].state_dict()),
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

    def _resume(self) -> bool:
        """Load the checkpoint if there is one; True if it was loaded."""
        if not self.ckpt.exists():
            return False
        s = torch.load(self.ckpt, map_location="cpu", weights_only=True)
        self.policy.load_state_dict(s["policy"])
        current = trainable_copy(self.reference)
        current.load_state_dict(s["current"])
        self.current = current.frozen_copy()
        self.learner.opt.load_state_dict(s["optimizer"])
        self.learner.kl_ctl.beta = s["beta"]
        self.updates, self.impressions, self.registered = s["updates"], s["impressions"], s["registered"]
        if s.get("pending") is not None:
            key, state = s["pending"]
            pending = trainable_copy(self.reference)
            pending.load_state_dict(state)
            self.pending = (key, pending.frozen_copy())
        self._offset = s["offset"]
        consumer = self.cfg.online.consumer
        if s["offset"] is not None and self.store.committed(consumer) != s["offset"]:
            self.store.commit(consumer, s["offset"])  # crashed after checkpoint, before commit
        self.log(f"resumed from {self.ckpt}: {self.updates} updates, {self.impressions} impressions")
        return True

    # -- one step ----------------------------------------------------------------------------------
    def step(self) -> dict[str, float] | None:
        """Train on the next ready batch; None when fewer than ``min_batch`` impressions are ready."""
        oc = self.cfg.online
        self.retry_registration()
        if self._uncommitted is not None:  # checkpointed, commit failed: commit before reading again
            self.store.commit(oc.consumer, self._uncommitted)
            self._uncommitted = None
        batch = self.store.read_ready(oc.consumer, self.clock() - oc.attribution_window_s, oc.batch_size)
        if len(batch) < oc.min_batch:
            return None  # not committed: the same impressions come back next time, with more
        # banners shorter than the model's K (requests with a smaller k) are served and stored, not learned from
        logged = batch.of_banner_size(self.policy.banner_size).to_logged(self.policy.n_products)
        explored = logged.banners.log_prob < 0  # deterministic (A/B control) banners carry log 1 = 0
        stats: dict[str, float] = {}
        if bool(explored.any()):
            fresh, _ = self.replay.with_replay(
                logged[explored], None
            )  # + recent batches, logged propensities
            stats = self.learner.update(fresh, group_size=1)
        self.updates += 1
        self.impressions += len(batch)
        self._offset = batch.offset
        self._save(batch.offset)
        try:
            self.store.commit(oc.consumer, batch.offset)
        except StoreUnavailable as exc:
            self._uncommitted = batch.offset  # the checkpoint has it; committed at the next step
            self.log(f"update {self.updates}: offset not committed yet ({exc}); will retry")
        if self.updates % oc.register_every == 0 or self._check_next:
            self._check_next = False
            stats.update(self._maybe_register(logged))
        stats["impressions_consumed"] = float(self.impressions)
        if mlflow.active_run():
            try:
                tracking.log_metrics(stats, step=self.updates)
            except Exception as exc:  # noqa: BLE001 - MLflow down: training goes on, these metrics are lost
                self.metrics_dropped += 1
                self.log(f"update {self.updates}: metrics not logged (MLflow: {type(exc).__name__})")
        return stats

    def _maybe_register(self, logged: LoggedBatch) -> dict[str, float]:
        candidate = self.policy.frozen_copy()
        rep = self.guards.check(
            candidate, self.current, self.reference, logged, self.value_fn(logged), self.cfg.seed
        )
        out = {"guard_kl": rep.kl, "guard_value": rep.value, "guard_current_value": rep.current_value}
        out.update(rep.exposure)
        if not rep.passed:
            self.log(f"update {self.updates}: not registered: {'; '.join(rep.reasons)}")
            out["registered"] = 0.0
            return out
        if self.pending is not None:  # the last one is not through yet: it goes first
            self.log(f"update {self.updates}: passed, but version {self.pending[0]} is still pending")
            out["registered"] = 0.0
            return out
        self.pending = (f"{self.cfg.online.consumer}:{self.updates}", candidate)
        self._save(self._offset)  # pending survives a restart: registered once whatever happens
        self.log(f"update {self.updates}: passed the guard rails (kl={rep.kl:.3f}, value={rep.value:.4f})")
        self._register_wait, self._register_at = self.cfg.online.retry_s, 0.0
        out["registered"] = float(self.retry_registration())
        return out

    def retry_registration(self) -> bool:
        """Register the pending version if its retry is due; True if it went through now."""
        if self.pending is None or self.clock() < self._register_at:
            return False
        key, candidate = self.pending
        try:
            version = registration.register_once(
                candidate, self.cfg.tracking.registered_model, self.cfg.online.alias, key
            )
        except Exception as exc:  # noqa: BLE001 - MLflow unreachable or failing: keep training, retry later
            self._register_at = self.clock() + self._register_wait
            self.log(
                f"registration of {key} failed ({type(exc).__name__}: {str(exc)[:200]}); "
                f"retrying in {self._register_wait:g} s"
            )
            self._register_wait = min(2 * self._register_wait, self.cfg.online.retry_max_s)
            return False
        self.current, self.pending = candidate, None
        self.registered.append(version)
        self._save(self._offset)
        self.log(f"registered version {version} ({key})")
        return True

    # -- loop --------------------------------------------------------------------------------------
    def stop(self, *_) -> None:
        self._stop = True

    def run(self, max_updates: int | None = None, idle_exit_s: float | None = None) -> None:
        """Train until stopped (SIGINT/SIGTERM), ``max_updates`` more updates, or idle for ``idle_exit_s``."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread (tests)
                signal.signal(sig, self.stop)
        done, idle_since = 0, self.clock()
        wait, down_since = self.cfg.online.retry_s, None
        while not self._stop:
            try:
                stats = self.step()
            except StoreUnavailable as exc:  # wait for the store; resume from the committed offset
                if down_since is None:
                    down_since = self.clock()
                    self.log(f"event store unavailable, waiting: {exc}")
                time.sleep(wait)
                wait = min(2 * wait, self.cfg.online.retry_max_s)
                continue
            if down_since is not None:
                self.log(f"event store back after {self.clock() - down_since:.1f} s")
                wait, down_since = self.cfg.online.retry_s, None
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
