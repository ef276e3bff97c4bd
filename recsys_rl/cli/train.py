"""`train-baseline`, `train`, `sweep` and `quickstart`: the reference, then fine-tuning runs tracked in MLflow.

`train` and `sweep` hand over to ``cli.reward_model`` when --reward-model is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recsys_rl.cli.common import (
    MAPPING_HELP,
    audit_world,
    console,
    friendly,
    logs_with_catalogue,
    parse_overrides,
    print_table,
    run_simulator,
    simulated_logs,
    simulator_at,
    use_threads,
)
from recsys_rl.cli.reward_model import (
    sweep_with_reward_model,
    train_with_reward_model,
    with_fitted_examination,
)
from recsys_rl.config import load_reward, load_run

QUICKSTART_DIR = Path("recsys-rl-quickstart")
KL_BUDGETS = "0.05,0.1,0.2,0.4,0.8,1.6,3.2"  # --reward-model's default budgets (nats per displayed product)
QUICKSTART_IMPRESSIONS = 500_000  # about a minute of fine-tuning on 2 cores; closes ~2/3 of the oracle gap

SIM_SHOW = [
    "clicks_per_impression",
    "ctr",
    "purchases_per_impression",
    "revenue_per_impression",
    "multi_purchases_per_impression",
    "reward_graded",
    "kl_to_reference",
    "coverage",
    "exposure_gini",
    "tail_share",
    "popularity_lift",
    "calibration_kl",
    "oracle_gap_closed",
]
LOGS_SHOW = (
    "snips_value",
    "iips_value",
    "heldout_greedy",
    "heldout_greedy_low",
    "heldout_greedy_high",
    "heldout_sampled",
    "heldout_sampled_low",
    "heldout_sampled_high",
    "in_sample_sampled",
    "reward_graded",
    "revenue_per_impression",
    "kl_to_reference",
    "oracle_gap_closed",
)
SWEEP_SHOW = [
    "clicks_per_impression",
    "ctr",
    "purchases_per_impression",
    "revenue_per_impression",
    "multi_purchases_per_impression",
    "reward_ctr",
    "reward_purchase",
    "reward_graded",
    "reward_revenue",
    "kl_to_reference",
]


def _print_result(res, uri: str) -> None:
    print_table(
        res.table[[c for c in SIM_SHOW if c in res.table.columns]], "reference vs fine-tuned vs oracle"
    )
    console.print(f"MLflow run id: [bold]{res.run_id}[/bold]  (tracking URI: {uri})")
    if res.model_uri:
        console.print(f"model: {res.model_uri}  registered version: {res.model_version}")


@friendly
def train_baseline_cmd(
    logs: Annotated[
        Path, typer.Option("--logs", help="log directory (event schema), or a table with --mapping")
    ],
    out: Annotated[Path, typer.Option("--out", help="where to save the frozen reference")] = Path(
        "reference.pt"
    ),
    config: Annotated[
        Path | None, typer.Option("--config", help="run config YAML (policy/baseline sections used)")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override, e.g. --set baseline.epochs=5")
    ] = None,
    mapping: Annotated[Path | None, typer.Option("--mapping", help=MAPPING_HELP)] = None,
    n_products: Annotated[
        int | None,
        typer.Option(
            "--n-products", min=1, help="catalogue size (default: the largest product id in the logs + 1)"
        ),
    ] = None,
) -> None:
    """Train the baseline (reference) recommender on logged data and save it frozen.

    The latest baseline.holdout_fraction of the logs is held out: the reference trains on the rest and
    its values are reported on the held-out rows (with baseline.patience > 0 the best epoch there is kept).
    """
    from recsys_rl.holdout import split_logs, time_split
    from recsys_rl.policy import save_policy
    from recsys_rl.reference import fit_reference

    cfg = load_run(config, parse_overrides(set_))
    use_threads(cfg)
    imported, k, vocab = None, None, None
    if mapping is not None:
        imported, n_products = logs_with_catalogue(logs, mapping, n_products)
        batch, k, vocab = imported.batch, imported.banner_size, imported.vocabulary
    else:
        from recsys_rl.logdata.parquet import read_logs
        from recsys_rl.records import catalogue_size

        batch = read_logs(logs)
        if n_products is not None and n_products < catalogue_size(batch):
            raise ValueError(
                f"--n-products: {n_products}, but the logs hold product id {catalogue_size(batch) - 1}"
            )
        n_products = n_products or catalogue_size(batch)
    scheme = load_reward(cfg.reward)
    train, held = split_logs(batch, time_split(len(batch), cfg.baseline.holdout_fraction), imported)
    fit = fit_reference(
        train,
        held,
        scheme,
        n_products,
        cfg.policy,
        cfg.baseline,
        cfg.seed,
        banner_size=k,
        categorical_vocab=vocab,
    )
    _print_heldout(fit, held, scheme, len(train))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_policy(fit.policy, out)
    console.print(
        f"saved reference policy ({n_products} products, banners of {fit.policy.banner_size}) to {out}"
    )


def _print_heldout(fit, held, scheme, n_train: int) -> None:
    """The reference's greedy and sampled values on the held-out rows beside the logger's, with CIs."""
    import pandas as pd

    from recsys_rl.holdout import logger_value

    def cells(e):
        return {"value": e.value, "ci_low": e.ci_low, "ci_high": e.ci_high}

    table = pd.DataFrame.from_dict(
        {
            "logger": cells(logger_value(held, scheme)),
            "reference (greedy)": cells(fit.heldout.greedy),
            "reference (sampled)": cells(fit.heldout.sampled),
        },
        orient="index",
    )
    print_table(
        table,
        f"held out: the latest {len(held.logs)} rows (trained on the {n_train} before them), "
        f"{scheme.name} per banner, epoch {fit.epoch}",
    )
    for t in fit.tried if len(fit.tried) > 1 else []:
        console.print(
            f"history_weight={t['history_weight']:g}: held-out sampled {t['heldout_sampled']:.4f} "
            f"[{t['heldout_sampled_low']:.4f}, {t['heldout_sampled_high']:.4f}]"
            + ("  (kept)" if t["history_weight"] == fit.history_weight else "")
        )


@friendly
def train_cmd(
    config: Annotated[
        Path | None, typer.Option("--config", help="run config YAML; embedded defaults if omitted")
    ] = None,
    reference: Annotated[
        Path | None, typer.Option("--reference", help="a saved reference (train-baseline); else trained")
    ] = None,
    logs: Annotated[
        Path | None, typer.Option("--logs", help="fine-tune from these logs alone (no simulator in the loop)")
    ] = None,
    sim_config: Annotated[
        Path | None, typer.Option("--sim-config", help="with --logs: also judge exactly on this simulator")
    ] = None,
    reward: Annotated[
        str | None, typer.Option("--reward", help="reward scheme name or YAML (overrides the config)")
    ] = None,
    reward_model: Annotated[
        str | None,
        typer.Option(
            "--reward-model",
            help="with --logs: RL against this reward model (models:/banner-reward-model/1); with "
            "--objective sdpo: its fitted examination curve weighs the in-banner negatives",
        ),
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override, e.g. --set train.kl_target=2")
    ] = None,
    workdir: Annotated[Path, typer.Option("--workdir", help="where simulated logs go")] = Path(
        "recsys-rl-runs"
    ),
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bars")] = False,
    mapping: Annotated[Path | None, typer.Option("--mapping", help="with --logs: " + MAPPING_HELP)] = None,
    n_products: Annotated[
        int | None, typer.Option("--n-products", min=1, help="with --mapping: catalogue size")
    ] = None,
    objective: Annotated[
        str,
        typer.Option(
            "--objective",
            help="with --logs: topk (off-policy correction, train.*), or preference optimisation "
            "dpo|ipo|kto|sdpo (preference.*)",
        ),
    ] = "topk",
) -> None:
    """Fine-tune with the KL-constrained objective: online against the simulator, or from --logs alone."""
    from recsys_rl import tracking
    from recsys_rl.policy import load_policy

    ov = parse_overrides(set_)
    if reward:
        ov["reward"] = reward
    cfg = load_run(config, ov)
    ref = load_policy(reference).frozen_copy() if reference else None
    if objective != "topk" and logs is None:
        raise ValueError("--objective: needs --logs (preferences come from the logs)")
    if objective == "sdpo" and reward_model is not None:
        cfg, reward_model = with_fitted_examination(cfg, reward_model), None
    if objective != "topk" and reward_model is not None:
        raise ValueError(
            f"--reward-model: --objective {objective} takes its preferences from the logs alone "
            "(only sdpo reads a reward model: its fitted examination curve)"
        )
    if reward_model is not None:
        if logs is None:
            raise ValueError("--reward-model: needs --logs (the logged contexts to fine-tune on)")
        use_threads(cfg)
        return train_with_reward_model(cfg, logs, reward_model, ref, sim_config, quiet, mapping)
    if logs is not None:
        return _train_on_logs(cfg, logs, ref, sim_config, quiet, mapping, n_products, objective)
    from recsys_rl.jobs.train import train_job

    sim = run_simulator(cfg)
    batch = None if ref else simulated_logs(cfg, sim, workdir, not quiet)
    res = train_job(
        cfg,
        sim,
        logs=batch,
        reference=ref,
        data_source="simulator",
        progress=not quiet,
        audit=audit_world(sim),
    )
    _print_result(res, tracking.tracking_uri(cfg.tracking))


def _train_on_logs(
    cfg, logs: Path, ref, sim_config: Path | None, quiet: bool, mapping, n_products, objective: str
) -> None:
    """`train --logs`: the logs job, judged on held-out logs (and on --sim-config's simulator exactly)."""
    from recsys_rl.jobs.offline import OBJECTIVES, offline_job, refuse_settings_unused_on_logs

    if objective not in OBJECTIVES:
        raise ValueError(f"--objective: {objective!r} is none of {', '.join(OBJECTIVES)}")
    refuse_settings_unused_on_logs(
        cfg, reference_given=ref is not None, env_given=sim_config is not None, objective=objective
    )
    use_threads(cfg)
    env = simulator_at(sim_config) if sim_config is not None else None
    slots = None
    if mapping is not None:
        slots, n_products = logs_with_catalogue(
            logs, mapping, n_products or (ref.n_products if ref else None)
        )
        batch = slots.for_model(ref.categorical_vocab) if ref is not None else slots.batch
    else:
        from recsys_rl.logdata.parquet import read_logs

        batch = read_logs(logs)
    res = offline_job(
        cfg,
        batch,
        reference=ref,
        env=env,
        data_source=f"logs:{logs}",
        progress=not quiet,
        n_products=n_products,
        slots=slots,
        objective=objective,
    )
    print_table(
        res.table[[c for c in res.table.columns if c in LOGS_SHOW]],
        "offline fine-tuning: reference vs fine-tuned",
    )
    console.print(f"MLflow run id: [bold]{res.run_id}[/bold]  model: {res.model_uri}")


@friendly
def sweep_cmd(
    rewards: Annotated[
        str, typer.Option("--rewards", help="comma-separated schemes")
    ] = "ctr,purchase,graded,revenue",
    betas: Annotated[
        str | None, typer.Option("--betas", help="comma-separated fixed KL coefficients to sweep too")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="run config YAML; embedded defaults if omitted")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override, e.g. --set train.total_impressions=500000")
    ] = None,
    experiment: Annotated[
        str, typer.Option("--experiment", help="MLflow experiment for all runs")
    ] = "recsys-rl-sweep",
    workdir: Annotated[Path, typer.Option("--workdir", help="where simulated logs go")] = Path(
        "recsys-rl-runs"
    ),
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bars")] = False,
    reward_model: Annotated[
        str | None,
        typer.Option(
            "--reward-model", help="sweep KL budgets against this reward model instead (proxy vs gold)"
        ),
    ] = None,
    kl_targets: Annotated[
        str | None,
        typer.Option(
            "--kl-targets",
            help="KL budgets, nats per displayed product (train.kl_target): with --reward-model the "
            f"budgets swept (default {KL_BUDGETS}), with --ray one axis of the grid",
        ),
    ] = None,
    logs: Annotated[
        Path | None,
        typer.Option("--logs", help="with --reward-model: logged contexts (80/20 train/held-out)"),
    ] = None,
    reference: Annotated[
        Path | None, typer.Option("--reference", help="with --reward-model: a saved reference")
    ] = None,
    sim_config: Annotated[
        Path | None, typer.Option("--sim-config", help="with --reward-model: exact gold on this simulator")
    ] = None,
    bon_max_n: Annotated[
        int, typer.Option("--bon-max-n", min=1, help="with --reward-model: largest best-of-n")
    ] = 4096,
    max_kl: Annotated[
        float | None,
        typer.Option(
            "--max-kl",
            help="with --reward-model: while the gold still rises, double the largest budget up to this "
            "(nats per displayed product)",
        ),
    ] = None,
    reach_rounds: Annotated[
        int,
        typer.Option(
            "--reach-rounds",
            min=1,
            help="with --reward-model: most runs of train.total_impressions a budget gets when it ends short of it",
        ),
    ] = 1,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="run each trial on Ray Tune: 'local' starts Ray here, 'auto' or HOST:PORT joins a cluster "
            "(needs the [ray] extra)",
        ),
    ] = None,
    seeds: Annotated[
        str | None, typer.Option("--seeds", help="with --ray: comma-separated seeds, one grid axis")
    ] = None,
    search: Annotated[
        Path | None,
        typer.Option("--search", help="with --ray: search space YAML (random or ASHA search, see the docs)"),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="with --ray: the sweep's name (its Tune directory)")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="with --ray --name: continue that interrupted sweep")
    ] = False,
) -> None:
    """A parent run with one nested run per reward scheme (x beta), sharing one baseline: compare them in the UI."""
    if reward_model is not None:  # over-optimisation sweep: recsys_rl.jobs.kl_sweep
        from recsys_rl.policy import load_policy

        cfg = load_run(config, parse_overrides(set_))
        ref = load_policy(reference).frozen_copy() if reference else None
        return sweep_with_reward_model(
            cfg,
            reward_model,
            kl_targets or KL_BUDGETS,
            logs,
            ref,
            sim_config,
            None if experiment == "recsys-rl-sweep" else experiment,
            bon_max_n,
            quiet,
            max_kl=max_kl,
            reach_rounds=reach_rounds,
        )
    names = [r.strip() for r in rewards.split(",") if r.strip()]
    for n in names:
        load_reward(n)
    if ray is not None:
        from recsys_rl.cli.distributed import sweep_on_ray

        return sweep_on_ray(
            load_run(config, parse_overrides(set_)),
            address=ray,
            rewards=names,
            betas=betas,
            kl_targets=kl_targets,
            seeds=seeds,
            search=search,
            name=name,
            resume=resume,
            experiment=experiment,
            workdir=workdir,
            show=SWEEP_SHOW,
            quiet=quiet,
        )
    for option, value in (
        ("--seeds", seeds),
        ("--search", search),
        ("--name", name),
        ("--kl-targets", kl_targets),
    ):
        if value is not None:
            raise ValueError(f"{option}: needs --ray (or --reward-model for --kl-targets)")
    if resume:
        raise ValueError("--resume: needs --ray")
    import mlflow
    import pandas as pd

    from recsys_rl import tracking
    from recsys_rl.baseline import train_baseline
    from recsys_rl.jobs.train import train_job

    beta_list = [None] if not betas else [float(b) for b in betas.split(",")]
    cfg = load_run(config, parse_overrides(set_))
    sim = run_simulator(cfg)
    batch = simulated_logs(cfg, sim, workdir, not quiet)
    ref = train_baseline(batch, sim.n_products, cfg.policy, cfg.baseline, cfg.seed, not quiet)
    tracking.setup(cfg.tracking, experiment)
    rows = {}
    with mlflow.start_run(run_name=f"sweep-{'-'.join(names)}") as parent:
        mlflow.set_tags(
            {
                "sweep": "reward_schemes",
                "reward_schemes": ",".join(names),
                "betas": betas or "adaptive",
                "data_source": "simulator",
            }
        )
        for name in names:
            for beta in beta_list:
                ov = {"reward": name}
                if beta is not None:
                    ov.update({"train.kl_beta": beta, "train.kl_adaptive": False})
                run_cfg = load_run(config, {**parse_overrides(set_), **ov})
                label = name if beta is None else f"{name} beta={beta:g}"
                res = train_job(
                    run_cfg,
                    sim,
                    reference=ref,
                    data_source="simulator",
                    run_name=label,
                    experiment=experiment,
                    progress=not quiet,
                )
                rows.setdefault("reference", res.table.loc["reference"])
                rows[label] = res.table.loc["fine-tuned"]
                console.print(f"{label}: run {res.run_id} (child of {parent.info.run_id})")
        table = pd.DataFrame(rows).T
        tracking.log_table(table[SWEEP_SHOW], "sweep_comparison")
        tracking.log_figure(tracking.sweep_comparison(table, SWEEP_SHOW), "sweep_comparison.png")
    print_table(table[SWEEP_SHOW], f"sweep ({experiment}): exact expected metrics per impression")
    table[SWEEP_SHOW].to_csv(workdir / "sweep.csv")
    console.print(
        f"table saved to {workdir / 'sweep.csv'}; sweep run {parent.info.run_id}: compare runs: recsys-rl ui"
    )


@friendly
def quickstart_cmd(
    workdir: Annotated[
        Path, typer.Option("--workdir", help="where logs and the reference go")
    ] = QUICKSTART_DIR,
    impressions: Annotated[
        int | None, typer.Option("--impressions", min=1024, help="fine-tuning budget (default 500,000)")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bars")] = False,
) -> None:
    """Simulate logs -> train the baseline -> fine-tune with `graded` -> evaluate -> MLflow. No server needed."""
    from recsys_rl import tracking
    from recsys_rl.baseline import train_baseline
    from recsys_rl.jobs.train import train_job
    from recsys_rl.policy import save_policy

    ov = {"reward": "graded", "train.total_impressions": impressions or QUICKSTART_IMPRESSIONS}
    cfg = load_run(None, ov)
    console.rule("1/4 simulate logged traffic")
    sim = run_simulator(cfg)
    batch = simulated_logs(cfg, sim, workdir, not quiet)
    console.rule("2/4 train the baseline (reference) recommender")
    ref = train_baseline(batch, sim.n_products, cfg.policy, cfg.baseline, cfg.seed, not quiet)
    save_policy(ref, workdir / "reference.pt")
    console.rule("3/4 fine-tune with the graded reward, KL-constrained to the reference")
    res = train_job(
        cfg,
        sim,
        reference=ref,
        data_source="simulator",
        run_name="quickstart-graded",
        progress=not quiet,
        audit=audit_world(sim),
    )
    console.rule("4/4 evaluate")
    _print_result(res, tracking.tracking_uri(cfg.tracking))
    console.print("compare runs in the MLflow UI: [bold]recsys-rl ui[/bold]  (then open the URL it prints)")
