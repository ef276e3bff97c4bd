"""Data-parallel fine-tuning of one run: every worker collects its own impressions, gradients are averaged.

``dp_step`` is one exact data-parallel update. With W workers of equal batches it equals one
worker's update on the W batches concatenated (up to float summation order): every loss term is a
mean over banners, so the mean of the per-worker gradients is the gradient of the whole batch; the
leave-one-out advantages stay within a context (each context's banners live on one worker); the
advantage scale is the whole batch's standard deviation (its sums all-reduced); the KL controller
steps on the whole batch's KL. Item tables over the candidates keep sparse gradients: they are
all-reduced as sparse tensors (gloo), never densified to the catalogue. One pass over the batch per
update (``train.epochs`` and ``train.minibatch_size`` apply to the one-process loop only).

``data_parallel_finetune`` runs that loop under Ray Train's ``TorchTrainer`` (gloo on CPU): worker r
seeds its collection with ``seed + 7 + 1000 r``; rank 0 evaluates and reports.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist

from recsys_rl import slate
from recsys_rl.config import RunConfig, builtin_rewards, load_reward
from recsys_rl.distributed.payload import policy_bytes, policy_from_bytes
from recsys_rl.env import Environment
from recsys_rl.evaluation import Evaluator
from recsys_rl.learner import Learner
from recsys_rl.objective import ppo_kl_loss, rloo_advantages
from recsys_rl.policy import BannerPolicy, trainable_copy
from recsys_rl.records import LoggedBatch
from recsys_rl.rewards import reward
from recsys_rl.sparse_optim import clip_grad_norm

POLICY_FILE = "policy.pt"


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _all_sum(t: torch.Tensor) -> torch.Tensor:
    if _world() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Replace each gradient by its mean over the workers; sparse ones stay sparse (indices gathered)."""
    world = _world()
    if world == 1:
        return
    for p in params:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            p.grad = _sparse_sum(p.grad.coalesce()) / world
        else:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= world


def _sparse_sum(g: torch.Tensor) -> torch.Tensor:
    """Sum of a sparse COO gradient over the workers: every worker's rows gathered, then coalesced."""
    world = _world()
    n = torch.tensor([g.indices().shape[1]])
    counts = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(counts, n)
    most = int(max(c.item() for c in counts))
    idx = torch.zeros(g.indices().shape[0], most, dtype=torch.long)
    val = torch.zeros((most, *g.values().shape[1:]), dtype=g.values().dtype)
    idx[:, : n.item()], val[: n.item()] = g.indices(), g.values()
    all_idx = [torch.zeros_like(idx) for _ in range(world)]
    all_val = [torch.zeros_like(val) for _ in range(world)]
    dist.all_gather(all_idx, idx)
    dist.all_gather(all_val, val)
    parts_i = [a[:, : int(c.item())] for a, c in zip(all_idx, counts, strict=True)]
    parts_v = [a[: int(c.item())] for a, c in zip(all_val, counts, strict=True)]
    return torch.sparse_coo_tensor(torch.cat(parts_i, 1), torch.cat(parts_v), g.shape).coalesce()


def dp_step(
    learner: Learner,
    batch: LoggedBatch,
    group_size: int,
    candidates: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
) -> dict[str, float]:
    """One data-parallel PPO-KL update of ``learner.policy`` on this worker's ``batch`` (B = C x group).

    Every worker must pass a batch of the same size. ``candidates`` (C, M) and ``positions`` (B, K)
    as ``collect_on_candidates`` returns them (None on the full-catalogue path).
    """
    policy, cfg, n_ctx = learner.policy, learner.cfg, len(batch) // group_size
    ctx = batch.contexts[::group_size] if group_size > 1 else batch.contexts  # (C,)
    items, logp_b = batch.banners.items, batch.banners.log_prob  # (B, K), (B,)
    rewards = reward(learner.scheme, batch.outcomes)  # (B,)
    share = torch.arange(n_ctx).repeat_interleave(group_size)  # banner -> context row
    big = policy.uses_candidates
    with torch.no_grad():
        if big:
            ref_logits = learner.reference.candidate_logits(ctx, candidates)  # (C, M)
            if positions is None:
                positions = slate.candidate_positions(candidates[share], items)
        else:
            ref_logits = learner.reference.logits(ctx)  # (C, N)
        values = policy.value(ctx).repeat_interleave(group_size)
        adv = rloo_advantages(rewards.view(-1, group_size)).view(-1) if group_size > 1 else rewards - values
        sums = _all_sum(torch.stack([adv.sum(), adv.pow(2).sum(), torch.tensor(float(len(adv)))]).double())
        mean = sums[0] / sums[2]
        std = ((sums[1] - sums[2] * mean**2) / (sums[2] - 1).clamp(min=1)).clamp(min=0).sqrt()
        adv = adv / (std.float() + 1e-8)
    if big:
        logits, v = policy.candidate_logits_and_value(ctx, candidates)  # (C, M), (C,)
        logp, kl, ent = slate.restricted_terms(
            logits / learner.temperature, ref_logits, candidates, items, share, positions
        )
    else:
        logits, v = policy.logits_and_value(ctx)  # (C, N), (C,)
        logp, kl, ent = slate.banner_terms(logits / learner.temperature, ref_logits, items, share)
    terms = ppo_kl_loss(
        logp,
        logp_b,
        adv,
        kl,
        ent,
        v[share],
        rewards,
        beta=learner.kl_ctl.beta,
        clip_eps=cfg.clip_eps,
        value_coef=cfg.value_coef,
        entropy_coef=cfg.entropy_coef,
    )
    learner.opt.zero_grad(set_to_none=True)
    terms.total.backward()
    average_gradients(learner.opt.params)
    clip_grad_norm(learner.opt.params, cfg.max_grad_norm)
    learner.opt.step()
    world = _world()
    means = _all_sum(torch.stack([terms.total.detach(), terms.kl.detach(), rewards.mean()])) / world
    learner.kl_ctl.update(float(means[1]))
    learner.updates += 1
    return {
        "loss/total": float(means[0]),
        "loss/kl": float(means[1]),
        "loss/kl_per_slot": float(means[1]) / learner.banner_size,
        "beta": learner.kl_ctl.beta,
        "reward": float(means[2]),
    }


def worker_generator(seed: int, rank: int) -> torch.Generator:
    """Worker ``rank``'s collection stream: distinct per worker, fixed by (seed, rank)."""
    return torch.Generator().manual_seed(seed + 7 + 1000 * rank)


def _train_loop(config: dict) -> None:
    """Ray Train's per-worker loop: collect this worker's share, ``dp_step``, rank 0 evaluates/reports."""
    import ray.train

    from recsys_rl.finetune.environment import collect_on_candidates

    cfg: RunConfig = config["cfg"]
    reference = policy_from_bytes(config["reference"])
    ctx_ = ray.train.get_context()
    rank, world = ctx_.get_world_rank(), ctx_.get_world_size()
    torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    env = config["make_env"]()
    scheme = load_reward(cfg.reward)
    policy = trainable_copy(reference)
    learner = Learner(policy, reference, scheme, cfg.train, cfg.seed)
    g = worker_generator(cfg.seed, rank)
    t = cfg.train
    per_worker = max(1, t.contexts_per_batch // world)  # contexts each worker collects per update
    per_update = per_worker * world * t.banners_per_context
    n_updates = max(1, t.total_impressions // per_update)
    evaluator = (
        Evaluator(env, reference, scheme, builtin_rewards(), t.eval_users, cfg.seed + 1000)
        if rank == 0
        else None
    )
    for u in range(1, n_updates + 1):
        learner.set_progress((u - 1) / n_updates)
        batch, cand, positions = collect_on_candidates(policy, env, per_worker, t.banners_per_context, g)
        stats = dp_step(learner, batch, t.banners_per_context, cand, positions)
        if u % t.eval_every and u != n_updates:
            continue
        metrics = {**stats, "impressions": float(u * per_update), "workers": float(world)}
        policy.refresh_candidates()  # on every rank: the workers' policies stay one version
        if evaluator is not None:
            policy.eval()
            metrics.update(evaluator(policy))
            policy.train()
        if rank == 0 and u == n_updates:
            with tempfile.TemporaryDirectory() as d:
                torch.save(policy.state_dict(), Path(d) / POLICY_FILE)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics)


def single_process_equivalent(
    cfg: RunConfig, reference: BannerPolicy, env: Environment, workers: int
) -> BannerPolicy:
    """What ``data_parallel_finetune`` on ``workers`` workers computes, in this process: each update on
    the workers' batches (their own generators) concatenated, one ``dp_step``. The exactness check."""
    from recsys_rl.finetune.environment import collect_on_candidates
    from recsys_rl.finetune.replay import concat

    policy = trainable_copy(reference)
    learner = Learner(policy, reference, load_reward(cfg.reward), cfg.train, cfg.seed)
    gens = [worker_generator(cfg.seed, r) for r in range(workers)]
    t = cfg.train
    per_worker = max(1, t.contexts_per_batch // workers)
    n_updates = max(1, t.total_impressions // (per_worker * workers * t.banners_per_context))
    for u in range(1, n_updates + 1):
        learner.set_progress((u - 1) / n_updates)
        parts = [collect_on_candidates(policy, env, per_worker, t.banners_per_context, g) for g in gens]
        cand = None if parts[0][1] is None else torch.cat([p[1] for p in parts])
        positions = None if parts[0][2] is None else torch.cat([p[2] for p in parts])
        dp_step(learner, concat([p[0] for p in parts]), t.banners_per_context, cand, positions)
        if u % t.eval_every == 0 or u == n_updates:
            policy.refresh_candidates()
    return policy


def max_abs_diff(a: BannerPolicy, b: BannerPolicy) -> float:
    """Largest absolute difference between two policies' parameters."""
    pb = dict(b.named_parameters())
    return max(float((p - pb[n]).abs().max()) for n, p in a.named_parameters())


def data_parallel_finetune(
    cfg: RunConfig,
    reference: BannerPolicy,
    make_env: Callable[[], Environment],
    workers: int,
    storage_path: str,
    name: str = "data-parallel",
) -> tuple[BannerPolicy, dict[str, float]]:
    """Fine-tune one policy on ``workers`` Ray Train workers (Ray must be up); returns it and its last
    rank-0 metrics. ``train.contexts_per_batch`` is the whole update's contexts, split over the workers."""
    from ray.train import RunConfig as TrainRunConfig
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={"cfg": cfg, "reference": policy_bytes(reference), "make_env": make_env},
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=False, resources_per_worker={"CPU": cfg.ray.cpus_per_trial}
        ),
        run_config=TrainRunConfig(name=name, storage_path=str(Path(storage_path).resolve())),
    )
    result = trainer.fit()
    policy = trainable_copy(reference)
    with result.checkpoint.as_directory() as d:
        policy.load_state_dict(torch.load(Path(d) / POLICY_FILE))
    return policy, dict(result.metrics)
