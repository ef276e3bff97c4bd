"""Data-parallel fine-tuning under Ray Train: N workers make the update one worker makes on the
concatenated batch, sparse item-table gradients included."""

from __future__ import annotations

import functools

import pytest
import torch

from recsys_rl.config import PolicyConfig, load_reward, with_overrides
from recsys_rl.distributed.data_parallel import data_parallel_finetune, dp_step, worker_generator
from recsys_rl.finetune.environment import collect_on_candidates
from recsys_rl.finetune.replay import concat
from recsys_rl.learner import Learner
from recsys_rl.policy import trainable_copy
from simulator import Simulator
from tests.recsys_rl.distributed.conftest import tiny_reference, tiny_run

pytestmark = pytest.mark.ray


def one_process(cfg, reference, workers: int):
    """The same updates in one process: each update on the workers' batches concatenated."""
    env = Simulator(cfg.sim)
    policy = trainable_copy(reference)
    learner = Learner(policy, reference, load_reward(cfg.reward), cfg.train, cfg.seed)
    gens = [worker_generator(cfg.seed, r) for r in range(workers)]
    t = cfg.train
    per_worker = t.contexts_per_batch // workers
    n_updates = t.total_impressions // (per_worker * workers * t.banners_per_context)
    for u in range(1, n_updates + 1):
        learner.set_progress((u - 1) / n_updates)
        parts = [collect_on_candidates(policy, env, per_worker, t.banners_per_context, g) for g in gens]
        cand = None if parts[0][1] is None else torch.cat([p[1] for p in parts])
        pos = None if parts[0][2] is None else torch.cat([p[2] for p in parts])
        dp_step(learner, concat([p[0] for p in parts]), t.banners_per_context, cand, pos)
        policy.refresh_candidates()
    return policy


def test_two_workers_update_as_one_worker_on_the_concatenated_batch(two_nodes, tmp_path):
    # 200 products over 64 candidates: the policy's item tables take sparse gradients
    cfg = with_overrides(
        tiny_run(tmp_path, updates=3),
        {"policy.candidates": 64, "policy.full_catalogue_max": 100, "train.eval_every": 3},
    )
    ref = _candidate_reference(tiny_reference(), cfg.policy)
    assert trainable_copy(ref).uses_candidates
    policy, metrics = data_parallel_finetune(
        cfg, ref, functools.partial(Simulator, cfg.sim), workers=2, storage_path=str(tmp_path / "train")
    )
    assert metrics["workers"] == 2 and metrics["impressions"] == cfg.train.total_impressions
    alone = one_process(cfg, ref, workers=2)
    start = dict(ref.named_parameters())
    moved = 0.0
    for name, p in alone.named_parameters():
        q = dict(policy.named_parameters())[name]
        assert torch.allclose(p, q, atol=1e-5, rtol=0), name
        moved = max(moved, float((p - start[name]).abs().max()))
    assert moved > 1e-4  # the updates did change the policy: the comparison is not of two copies


def _candidate_reference(reference, policy_cfg: PolicyConfig):
    """The tiny reference's weights in a policy over top-M candidates (the large-catalogue path)."""
    from recsys_rl.policy import BannerPolicy

    hp = reference.hparams()
    out = BannerPolicy(
        **{**hp, "candidates": policy_cfg.candidates, "full_catalogue_max": policy_cfg.full_catalogue_max}
    )
    out.load_state_dict(reference.state_dict())
    return out.frozen_copy()
