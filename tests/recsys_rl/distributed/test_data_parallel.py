"""Data-parallel fine-tuning under Ray Train: N workers make the update one worker makes on the
concatenated batch, sparse item-table gradients included."""

from __future__ import annotations

import functools

import pytest
import torch

from recsys_rl.config import PolicyConfig, with_overrides
from recsys_rl.distributed.data_parallel import (
    data_parallel_finetune,
    max_abs_diff,
    single_process_equivalent,
)
from recsys_rl.policy import trainable_copy
from simulator import Simulator
from tests.recsys_rl.distributed.conftest import tiny_reference, tiny_run

pytestmark = pytest.mark.ray


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
    alone = single_process_equivalent(cfg, ref, Simulator(cfg.sim), workers=2)
    assert max_abs_diff(alone, policy) <= 1e-5
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
