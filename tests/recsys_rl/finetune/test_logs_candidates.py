"""The logs fine-tune on the candidate path: item tables with sparse row gradients."""

import torch

from recsys_rl.baseline import train_baseline
from recsys_rl.config import BaselineConfig, PolicyConfig, load_reward
from recsys_rl.finetune.logs import offline_finetune
from recsys_rl.logdata.parquet import read_logs
from tests.recsys_rl.helpers import SMALL, small_logs_dir, small_train

CANDIDATE_POLICY = PolicyConfig(embed_dim=16, hidden_dim=64, full_catalogue_max=0, candidates=64)
SAMPLED_BASELINE = BaselineConfig(logged_impressions=20_000, epochs=1, sampled_negatives=64)


def test_offline_finetune_on_the_candidate_path_completes_and_moves_the_item_tables(tmp_path):
    logs = read_logs(small_logs_dir(str(tmp_path)))
    ref = train_baseline(logs, SMALL.n_products, CANDIDATE_POLICY, SAMPLED_BASELINE, 0, progress=False)
    assert ref.uses_candidates and ref.sparse_parameters()
    cfg = small_train(total_impressions=4096, minibatch_size=512, max_grad_norm=0.01)
    policy, history = offline_finetune(ref, logs, load_reward("graded"), cfg, seed=0, progress=False)
    assert len(history) == 8 and all(torch.isfinite(torch.tensor(r["loss"])) for r in history)
    moved = policy.item_in.weight.detach() - ref.item_in.weight
    assert moved.abs().sum() > 0  # the sparse item table was updated, not skipped
    assert all(torch.isfinite(p).all() for p in policy.parameters())
    greedy = policy.eval().greedy(logs.contexts[:32])
    assert greedy.shape == (32, ref.banner_size)
