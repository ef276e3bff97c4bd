"""One sweep trial as a Tune function trainable: a fine-tune that reports and checkpoints each evaluation.

The loop is ``finetune.environment``'s (collect on the candidates, one ``Learner`` update), cut at
``ray.evaluations`` evaluation points. At each one the trial logs the exact evaluation to its MLflow
run, saves everything the rest of the run depends on (policy, optimiser, KL coefficient, both random
generators, the update count, the run id) as a Tune checkpoint, and reports the metrics, so ASHA can
stop it there. A trial restarted after its worker died continues from the last checkpoint into the
same MLflow run: the run id rides in the checkpoint, and a trial that died before its first checkpoint
finds its run by the ``ray_trial_id`` tag under the sweep's parent. One trial, one run, always.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import torch

from recsys_rl import tracking
from recsys_rl.config import RunConfig, builtin_rewards, flatten, load_reward, with_overrides
from recsys_rl.distributed.payload import policy_from_bytes
from recsys_rl.env import Environment
from recsys_rl.evaluation import Evaluator
from recsys_rl.finetune.environment import collect_on_candidates
from recsys_rl.jobs.result import comparison_table, finish_run
from recsys_rl.learner import Learner
from recsys_rl.policy import trainable_copy

TRIAL_TAG = "ray_trial_id"
STATE_FILE = "trial_state.pt"


@dataclass
class TrialSetup:
    """What every trial shares, shipped once through the object store (``tune.with_parameters``)."""

    base: RunConfig
    reference_blob: bytes  # the frozen reference, trained once on the driver (``payload.policy_bytes``)
    make_env: Callable[[], Environment]  # builds the simulator on the worker (the engine imports none)
    tracking_uri: str
    experiment: str
    experiment_id: str
    parent_run_id: str


def trial_label(params: dict) -> str:
    """A readable run name from a trial's grid and search values, e.g. ``graded kl_target=0.4 seed=1``."""
    scheme = params.get("reward")
    name = scheme["name"] if isinstance(scheme, dict) else str(scheme or "run")
    rest = [
        f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
        for k, v in params.items()
        if k != "reward"
    ]
    return " ".join([name, *rest])


def evaluation_points(n_updates: int, evaluations: int) -> list[int]:
    """Update counts (1-based) after which a trial evaluates, checkpoints and reports; the last is the end."""
    return sorted({max(1, round(n_updates * (i + 1) / evaluations)) for i in range(evaluations)})


def child_run(setup: TrialSetup, trial_id: str, params: dict, cfg: RunConfig, scheme_name: str) -> str:
    """The trial's MLflow run id: the one a previous attempt of this trial created, else a new child."""
    client = mlflow.MlflowClient()
    found = client.search_runs(
        [setup.experiment_id],
        filter_string=f"tags.{TRIAL_TAG} = '{trial_id}' and tags.`mlflow.parentRunId` = '{setup.parent_run_id}'",
    )
    if found:
        return found[0].info.run_id
    run = client.create_run(
        setup.experiment_id,
        run_name=trial_label(params),
        tags={
            "mlflow.parentRunId": setup.parent_run_id,
            TRIAL_TAG: trial_id,
            "job": "sweep_trial",
            "reward_scheme": scheme_name,
            "data_source": "simulator",
        },
    )
    params_out = {k: str(v) for k, v in flatten(cfg).items()}
    params_out["reward"] = scheme_name
    for k in range(0, len(params_out), 100):  # MLflow takes at most 100 params per batch
        chunk = dict(list(params_out.items())[k : k + 100])
        client.log_batch(run.info.run_id, params=[mlflow.entities.Param(a, b) for a, b in chunk.items()])
    return run.info.run_id


def run_trial(params: dict, setup: TrialSetup) -> None:
    """Tune's function trainable: ``params`` are dotted run-config overrides (grid and search values)."""
    import ray
    from ray import tune

    cfg = with_overrides(setup.base, params)
    torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    scheme = load_reward(cfg.reward)
    env = setup.make_env()
    reference = policy_from_bytes(setup.reference_blob)
    policy = trainable_copy(reference)
    learner = Learner(policy, reference, scheme, cfg.train, cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed + 7)
    evaluator = Evaluator(env, reference, scheme, builtin_rewards(), cfg.train.eval_users, cfg.seed + 1000)
    t = cfg.train
    per_update = t.contexts_per_batch * t.banners_per_context
    n_updates = max(1, t.total_impressions // per_update)
    points = evaluation_points(n_updates, cfg.ray.evaluations)

    done, restores, run_id = 0, 0, None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, weights_only=False)
        policy.load_state_dict(state["policy"])
        learner.opt.load_state_dict(state["optimizer"])
        learner.kl_ctl.beta = state["beta"]
        learner.generator.set_state(state["learner_rng"])
        g.set_state(state["collect_rng"])
        done, run_id, restores = state["update"], state["run_id"], state["restores"] + 1
    tracking.use(setup.tracking_uri, setup.experiment)
    trial_id = tune.get_context().get_trial_id()
    run_id = run_id or child_run(setup, trial_id, params, cfg, scheme.name)
    # the run is open only while the trial writes to it, never across tune.report: Tune ends a trial
    # it stops (ASHA, or at its last rung) inside report, and an open run would be marked FAILED
    with mlflow.start_run(run_id=run_id):
        # where each attempt ran: attempt 0 on one node, a retry after that node died on another
        mlflow.set_tag(f"ray_node_attempt_{restores}", ray.get_runtime_context().get_node_id())
        if restores:
            mlflow.set_tag("resumed_from_update", str(done))
            mlflow.log_metric("restores", restores)
    for u in range(done + 1, n_updates + 1):
        learner.set_progress((u - 1) / n_updates)
        batch, cand, positions = collect_on_candidates(
            policy, env, t.contexts_per_batch, t.banners_per_context, g
        )
        stats = learner.update(batch, t.banners_per_context, cand, positions=positions)
        if u not in points:
            continue
        policy.refresh_candidates()
        policy.eval()
        final = {**evaluator(policy), **stats, "impressions": float(u * per_update)}
        policy.train()
        with mlflow.start_run(run_id=run_id) as run:
            tracking.log_metrics(final, u * per_update)
            if u == n_updates:
                table = comparison_table(evaluator, final)
                finish_run(run, cfg, table, final, u * per_update, policy, reference, 0.0)
        state = {
            "policy": policy.state_dict(),
            "optimizer": learner.opt.state_dict(),
            "beta": learner.kl_ctl.beta,
            "learner_rng": learner.generator.get_state(),
            "collect_rng": g.get_state(),
            "update": u,
            "run_id": run_id,
            "restores": restores,
        }
        with tempfile.TemporaryDirectory() as d:
            torch.save(state, Path(d) / STATE_FILE)
            tune.report(
                {**final, "restores": restores, "update": u, "mlflow_run_id": run_id},
                checkpoint=tune.Checkpoint.from_directory(d),
            )
