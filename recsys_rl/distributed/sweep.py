"""A sweep on Ray Tune: a grid (schemes x beta x KL targets x seeds) times a search space, one trial each.

The driver trains nothing: it opens the sweep's parent MLflow run, ships the frozen reference and an
environment factory to the trials once (``tune.with_parameters``), runs the Tuner, and closes every
child run the trials left open (a trial ASHA stopped ends at its last report, one that failed for good
is marked FAILED), then logs the comparison table and plot to the parent. Tune's state lives under
``ray.storage_path``/``name``: ``resume=True`` continues an interrupted sweep from there (finished trials
are kept, unfinished ones restart from their last checkpoint) into the same parent run.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd

from recsys_rl import tracking
from recsys_rl.config import RewardScheme, RunConfig, SearchConfig, with_overrides
from recsys_rl.distributed.cluster import connect
from recsys_rl.distributed.payload import policy_bytes
from recsys_rl.distributed.trial import TrialSetup, evaluation_points, run_trial, trial_label
from recsys_rl.env import Environment
from recsys_rl.policy import BannerPolicy
from recsys_rl.progress import progress_bar

PARENT_FILE = "mlflow_parent_run_id"


@dataclass
class RaySweepResult:
    table: pd.DataFrame  # one row per trial (its label): the last evaluation it reported
    parent_run_id: str
    trials: int
    errors: int
    path: str  # where Tune keeps the sweep (what ``resume`` reads)


def grid_points(
    schemes: list[RewardScheme],
    betas: list[float | None],
    kl_targets: list[float | None],
    seeds: list[int | None],
) -> list[dict]:
    """Every grid combination as dotted run-config overrides; None on an axis keeps the config's value.

    A fixed beta turns the adaptive controller off (``train.kl_adaptive: false``), as the in-process
    sweep does.
    """
    out = []
    for scheme, beta, target, seed in itertools.product(schemes, betas, kl_targets, seeds):
        point: dict = {"reward": scheme.model_dump()}
        if beta is not None:
            point |= {"train.kl_beta": beta, "train.kl_adaptive": False}
        if target is not None:
            point["train.kl_target"] = target
        if seed is not None:
            point["seed"] = seed
        out.append(point)
    return out


def check_search(search: SearchConfig, base: RunConfig) -> None:
    """Every key of ``search.space`` a run-config field that takes both ends of its range (or every
    choice): an unknown key or an out-of-range value fails here, named, before anything runs."""
    for key, dist in search.space.items():
        (kind, args), *_ = dist.items()
        for value in args if kind == "choice" else (args[0], args[-1] - (kind == "randint")):
            try:
                with_overrides(base, {key: value})
            except ValueError as e:
                raise ValueError(f"--search: space: {key}: {e}") from None


def search_space(search: SearchConfig, base: RunConfig) -> dict:
    """Tune distributions of ``search.space`` (checked by ``check_search`` first)."""
    from ray import tune

    check_search(search, base)
    make = {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint}
    space = {}
    for key, dist in search.space.items():
        (kind, args), *_ = dist.items()
        space[key] = tune.choice(args) if kind == "choice" else make[kind](*args)
    return space


def refuse_unsupported(base: RunConfig) -> None:
    """A trial runs the plain simulator loop: settings it would silently ignore are refused instead."""
    if base.warm_start.enabled or base.dyna.enabled:
        raise ValueError(
            "warm_start.enabled / dyna.enabled: not available in a --ray sweep yet (run without --ray)"
        )
    if base.train.replay_batches:
        raise ValueError("train.replay_batches: not available in a --ray sweep yet (run without --ray)")


def absolute_store(uri: str) -> str:
    """A relative ``sqlite:///file.db`` made absolute: trial processes do not share the driver's cwd."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    return uri


def overrides_of(params: dict) -> dict:
    """A trial's flat overrides: its grid point merged with its sampled search values."""
    return {**params["grid"], **{k: v for k, v in params.items() if k != "grid"}}


def ray_sweep(
    base: RunConfig,
    reference: BannerPolicy,
    make_env: Callable[[], Environment],
    grid: list[dict],
    *,
    address: str,
    experiment: str,
    name: str,
    search: SearchConfig | None = None,
    resume: bool = False,
    progress: bool = True,
) -> RaySweepResult:
    """Run (or with ``resume`` continue) the sweep ``name`` of ``grid`` x ``search`` on Ray Tune."""
    refuse_unsupported(base)
    uri = absolute_store(tracking.tracking_uri(base.tracking))
    connect(address, base.ray, uri)
    from ray import tune

    storage = base.ray.storage_path
    if "://" not in storage:
        storage = str(Path(storage).resolve())
    path = f"{storage.rstrip('/')}/{name}"
    local = Path(path) if "://" not in path else None
    if resume and not tune.Tuner.can_restore(path):
        raise ValueError(f"--resume: no sweep named {name!r} under {storage} to resume")
    if not resume and local is not None and local.exists():
        raise ValueError(
            f"--name: a sweep {name!r} already exists under {storage}; --resume it or pick another name"
        )
    space = search_space(search, base) if search is not None else {}
    metric, mode = (search.metric, search.mode) if search is not None else ("oracle_gap_closed", "max")

    tracking.use(uri, experiment)
    exp_id = mlflow.get_experiment_by_name(experiment).experiment_id
    parent_file = local / PARENT_FILE if local is not None else None
    if resume and parent_file is not None and parent_file.exists():
        parent = mlflow.start_run(run_id=parent_file.read_text().strip())
    else:
        parent = mlflow.start_run(run_name=name)
        mlflow.set_tags({"sweep": "ray_tune", "ray_sweep": name, "data_source": "simulator"})
        mlflow.log_params({"grid_points": len(grid), "search_space": ",".join(space) or "none"})
        if parent_file is not None:
            local.mkdir(parents=True, exist_ok=True)
            parent_file.write_text(parent.info.run_id)
    with parent:
        setup = TrialSetup(
            base, policy_bytes(reference), make_env, uri, experiment, exp_id, parent.info.run_id
        )
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, setup=setup), {"cpu": base.ray.cpus_per_trial}
        )
        n_trials = len(grid) * (search.num_samples if search else 1)
        per_trial = _evaluations(base)
        with progress_bar(f"sweep {name} on Ray", n_trials * per_trial, progress) as advance:
            callbacks = [_progress_callback(advance, metric)]
            if resume:
                tuner = tune.Tuner.restore(
                    path, trainable=trainable, resume_errored=True, restart_errored=False
                )
            else:
                tuner = tune.Tuner(
                    trainable,
                    param_space={"grid": tune.grid_search(grid), **space},
                    tune_config=tune.TuneConfig(
                        metric=metric,
                        mode=mode,
                        num_samples=search.num_samples if search else 1,
                        scheduler=_scheduler(search, per_trial),
                        reuse_actors=True,  # a worker process runs trial after trial: imports paid once
                    ),
                    run_config=tune.RunConfig(
                        name=name,
                        storage_path=storage,
                        failure_config=tune.FailureConfig(max_failures=base.ray.max_failures),
                        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                        callbacks=callbacks,
                        verbose=0,
                    ),
                )
            results = tuner.fit()
        rows, errors = {}, 0
        for r in results:
            if r.error is not None:
                errors += 1
            if r.metrics and "mlflow_run_id" in r.metrics:
                rows[trial_label(overrides_of(r.config))] = {
                    k: v
                    for k, v in r.metrics.items()
                    if isinstance(v, int | float) and not isinstance(v, bool)
                }
        close_child_runs(exp_id, parent.info.run_id, results, _impressions(base))
        table = pd.DataFrame.from_dict(rows, orient="index").sort_index()
        mlflow.log_metrics({"trials": float(len(results)), "trials_failed": float(errors)})
    return RaySweepResult(table, parent.info.run_id, len(results), errors, path)


def _trainable(params: dict, setup: TrialSetup) -> None:
    run_trial(overrides_of(params), setup)


def _evaluations(base: RunConfig) -> int:
    t = base.train
    return len(
        evaluation_points(
            max(1, t.total_impressions // (t.contexts_per_batch * t.banners_per_context)),
            base.ray.evaluations,
        )
    )


def _impressions(base: RunConfig) -> int:
    """Impressions a trial that runs to its end has seen (whole updates only)."""
    t = base.train
    per_update = t.contexts_per_batch * t.banners_per_context
    return max(1, t.total_impressions // per_update) * per_update


def _scheduler(search: SearchConfig | None, max_t: int):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if search is None or search.scheduler == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=max_t,
        grace_period=min(search.grace_period, max_t),
        reduction_factor=search.reduction_factor,
    )


def _progress_callback(advance, metric: str):
    from ray.tune import Callback

    class Progress(Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            value = result.get(metric)
            advance(
                1,
                **({metric: float(value)} if isinstance(value, int | float) and math.isfinite(value) else {}),
            )

    return Progress()


def close_child_runs(experiment_id: str, parent_run_id: str, results, total_impressions: int) -> None:
    """Tag how each trial ended and make its run's status say so: FAILED for a trial whose retries
    ran out (or whose process died with its run open), FINISHED otherwise, ``stopped_early`` where
    ASHA stopped it before ``total_impressions``."""
    client = mlflow.MlflowClient()
    ok = {r.metrics.get("mlflow_run_id") for r in results if r.error is None and r.metrics}
    children = client.search_runs(
        [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
    )
    for run in children:
        if run.info.run_id not in ok:
            client.set_tag(run.info.run_id, "trial_outcome", "failed")
            client.set_terminated(run.info.run_id, "FAILED")
            continue
        done = run.data.metrics.get("impressions", 0) >= total_impressions
        client.set_tag(run.info.run_id, "trial_outcome", "completed" if done else "stopped_early")
        if run.info.status != "FINISHED":
            client.set_terminated(run.info.run_id, "FINISHED")
