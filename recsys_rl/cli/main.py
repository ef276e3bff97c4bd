"""Command-line interface (typer). The one place that wires the simulator into the engine.

Every command turns a ConfigError / bad argument into one readable line on stderr and exit code 2.
"""

from __future__ import annotations

import functools
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from recsys_rl.cli.evaluate import evaluate
from recsys_rl.cli.reward_model import sweep_with_reward_model, train_reward_model, train_with_reward_model
from recsys_rl.cli.serve import drive, serve
from recsys_rl.cli.simulate import simulate
from recsys_rl.cli.ui import ui_cmd
from recsys_rl.config import ConfigError, RunConfig, load_reward, load_run

app = typer.Typer(
    help="recsys-rl: fine-tune a banner recommender with KL-constrained online RL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
app.command("simulate")(simulate)
app.command("serve")(serve)
app.command("drive")(drive)
app.command("evaluate")(evaluate)
app.command("ui")(ui_cmd)

QUICKSTART_DIR = Path("recsys-rl-quickstart")
QUICKSTART_IMPRESSIONS = 500_000  # about a minute of fine-tuning on 2 cores; closes ~2/3 of the oracle gap


def friendly(fn):
    """Bad input -> one line on stderr and exit 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ConfigError, FileNotFoundError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        except ValueError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None

    return wrapper


app.command("train-reward-model")(friendly(train_reward_model))


def _overrides(pairs: list[str] | None) -> dict:
    """--set train.lr=0.001 style overrides; values parsed as YAML scalars."""
    import yaml

    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise ConfigError(f"--set: expected key=value, got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def _threads(cfg: RunConfig) -> None:
    import torch

    torch.set_num_threads(cfg.torch_threads)


def _simulator(cfg: RunConfig):
    from simulator import Simulator

    _threads(cfg)
    return Simulator(cfg.sim)


def _logs_for(cfg: RunConfig, sim, logs: Path | None, workdir: Path, progress: bool = True):
    """Read given logs, or simulate ``baseline.logged_impressions`` with the behaviour policy."""
    from recsys_rl.logdata.parquet import read_logs

    if logs is None:
        from simulator.logged import generate_logs

        logs = generate_logs(
            sim, cfg.baseline.logged_impressions, workdir / "logs", seed=cfg.seed, progress=progress
        )
        console.print(f"simulated {cfg.baseline.logged_impressions:,} logged impressions -> {logs}")
    return read_logs(logs)


def print_table(table, title: str) -> None:
    """Metrics as rows, policies as columns: readable in a narrow terminal."""
    import math

    t = Table(title=title)
    t.add_column("metric")
    for name in table.index:
        t.add_column(str(name), justify="right")
    for col in table.columns:
        cells = [table.loc[name, col] for name in table.index]
        t.add_row(col, *["–" if isinstance(v, float) and math.isnan(v) else f"{v:.4g}" for v in cells])
    console.print(t)


def _print_result(res, uri: str) -> None:
    show = [
        "clicks_per_impression",
        "ctr",
        "purchases_per_impression",
        "revenue_per_impression",
        "multi_purchases_per_impression",
        "reward_graded",
        "kl_to_reference",
        "coverage",
        "oracle_gap_closed",
    ]
    print_table(res.table[[c for c in show if c in res.table.columns]], "reference vs fine-tuned vs oracle")
    console.print(f"MLflow run id: [bold]{res.run_id}[/bold]  (tracking URI: {uri})")
    if res.model_uri:
        console.print(f"model: {res.model_uri}  registered version: {res.model_version}")


def _mapped_logs(logs: Path, mapping: Path, n_products: int | None):
    """(ImportedLogs, catalogue size) of a table a column mapping describes; the catalogue is
    ``--n-products`` or, when not given, the largest product id in the log + 1."""
    from recsys_rl.logdata.importer import import_logs

    imported = import_logs(logs, n_products or 2**62, mapping)
    if n_products is None:
        b = imported.batch
        n_products = int(max(b.banners.items.max(), b.contexts.viewed.max(), b.contexts.history.max())) + 1
    return imported, n_products


MAPPING_HELP = "column mapping YAML of another layout (e.g. configs/mappings/open_bandit.yaml)"


@app.command("train-baseline")
@friendly
def train_baseline_cmd(
    logs: Path = typer.Option(..., "--logs", help="log directory (event schema), or a table with --mapping"),
    out: Path = typer.Option(Path("reference.pt"), "--out", help="where to save the frozen reference"),
    config: Path = typer.Option(None, "--config", help="run config YAML (policy/baseline sections used)"),
    set_: list[str] = typer.Option(None, "--set", help="override, e.g. --set baseline.epochs=5"),
    mapping: Path = typer.Option(None, "--mapping", help=MAPPING_HELP),
    n_products: int = typer.Option(None, "--n-products", min=1, help="with --mapping: catalogue size"),
) -> None:
    """Train the baseline (reference) recommender on logged data and save it frozen."""
    from recsys_rl.baseline import train_baseline
    from recsys_rl.logdata.parquet import read_logs
    from recsys_rl.policy import save_policy

    cfg = load_run(config, _overrides(set_))
    _threads(cfg)
    if mapping is not None:
        imported, n_products = _mapped_logs(logs, mapping, n_products)
        ref = train_baseline(
            imported.batch,
            n_products,
            cfg.policy,
            cfg.baseline,
            cfg.seed,
            banner_size=imported.banner_size,
            categorical_vocab=imported.vocabulary,
        )
    else:
        batch = read_logs(logs)
        n_products = (
            int(max(batch.banners.items.max(), batch.contexts.viewed.max(), batch.contexts.history.max())) + 1
        )
        n_products = max(n_products, cfg.sim.n_products)
        ref = train_baseline(batch, n_products, cfg.policy, cfg.baseline, cfg.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_policy(ref, out)
    console.print(f"saved reference policy ({n_products} products, banners of {ref.banner_size}) to {out}")


@app.command("train")
@friendly
def train_cmd(
    config: Path = typer.Option(None, "--config", help="run config YAML; embedded defaults if omitted"),
    reference: Path = typer.Option(
        None, "--reference", help="a saved reference (train-baseline); else trained"
    ),
    logs: Path = typer.Option(
        None, "--logs", help="fine-tune from these logs alone (no simulator in the loop)"
    ),
    sim_config: Path = typer.Option(
        None, "--sim-config", help="with --logs: also judge exactly on this simulator"
    ),
    reward: str = typer.Option(None, "--reward", help="reward scheme name or YAML (overrides the config)"),
    reward_model: str = typer.Option(
        None,
        "--reward-model",
        help="with --logs: RL against this reward model (models:/banner-reward-model/1)",
    ),
    set_: list[str] = typer.Option(None, "--set", help="override, e.g. --set train.kl_target=2"),
    workdir: Path = typer.Option(Path("recsys-rl-runs"), "--workdir", help="where simulated logs go"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
    mapping: Path = typer.Option(None, "--mapping", help="with --logs: " + MAPPING_HELP),
    n_products: int = typer.Option(None, "--n-products", min=1, help="with --mapping: catalogue size"),
) -> None:
    """Fine-tune with the KL-constrained objective: online against the simulator, or from --logs alone."""
    from recsys_rl import tracking
    from recsys_rl.jobs.train import offline_job, train_job
    from recsys_rl.policy import load_policy

    ov = _overrides(set_)
    if reward:
        ov["reward"] = reward
    cfg = load_run(config, ov)
    ref = load_policy(reference).frozen_copy() if reference else None
    if reward_model is not None:
        if logs is None:
            raise ValueError("--reward-model: needs --logs (the logged contexts to fine-tune on)")
        _threads(cfg)
        return train_with_reward_model(cfg, logs, reward_model, ref, sim_config, quiet)
    if logs is not None:
        from recsys_rl.logdata.parquet import read_logs

        _threads(cfg)
        env = None
        if sim_config is not None:
            from recsys_rl.config import SimConfig, load
            from simulator import Simulator

            env = Simulator(load(SimConfig, sim_config))
        slots = None
        if mapping is not None:
            slots, n_products = _mapped_logs(logs, mapping, n_products or (ref.n_products if ref else None))
            batch = slots.for_model(ref.categorical_vocab) if ref is not None else slots.batch
        else:
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
        )
        print_table(
            res.table[
                [
                    c
                    for c in res.table.columns
                    if c
                    in (
                        "snips_value",
                        "iips_value",
                        "reward_graded",
                        "revenue_per_impression",
                        "kl_to_reference",
                        "oracle_gap_closed",
                    )
                ]
            ],
            "offline fine-tuning: reference vs fine-tuned",
        )
        console.print(f"MLflow run id: [bold]{res.run_id}[/bold]  model: {res.model_uri}")
        return
    sim = _simulator(cfg)
    batch = None if ref else _logs_for(cfg, sim, None, workdir, not quiet)
    res = train_job(cfg, sim, logs=batch, reference=ref, data_source="simulator", progress=not quiet)
    _print_result(res, tracking.tracking_uri(cfg.tracking))


@app.command("sweep")
@friendly
def sweep_cmd(
    rewards: str = typer.Option("ctr,purchase,graded,revenue", "--rewards", help="comma-separated schemes"),
    betas: str = typer.Option(None, "--betas", help="comma-separated fixed KL coefficients to sweep too"),
    config: Path = typer.Option(None, "--config", help="run config YAML; embedded defaults if omitted"),
    set_: list[str] = typer.Option(None, "--set", help="override, e.g. --set train.total_impressions=500000"),
    experiment: str = typer.Option("recsys-rl-sweep", "--experiment", help="MLflow experiment for all runs"),
    workdir: Path = typer.Option(Path("recsys-rl-runs"), "--workdir", help="where simulated logs go"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
    reward_model: str = typer.Option(
        None, "--reward-model", help="sweep KL budgets against this reward model instead (proxy vs gold)"
    ),
    kl_targets: str = typer.Option(
        "0.25,0.5,1,2,4,8,16", "--kl-targets", help="with --reward-model: budgets"
    ),
    logs: Path = typer.Option(
        None, "--logs", help="with --reward-model: logged contexts (80/20 train/held-out)"
    ),
    reference: Path = typer.Option(None, "--reference", help="with --reward-model: a saved reference"),
    sim_config: Path = typer.Option(
        None, "--sim-config", help="with --reward-model: exact gold on this simulator"
    ),
    bon_max_n: int = typer.Option(4096, "--bon-max-n", min=1, help="with --reward-model: largest best-of-n"),
    max_kl: float = typer.Option(
        None,
        "--max-kl",
        help="with --reward-model: while the gold still rises, double the largest budget up to this",
    ),
    reach_rounds: int = typer.Option(
        1,
        "--reach-rounds",
        min=1,
        help="with --reward-model: most runs of train.total_impressions a budget gets when it ends short of it",
    ),
) -> None:
    """A parent run with one nested run per reward scheme (x beta), sharing one baseline: compare them in the UI."""
    if reward_model is not None:  # over-optimisation sweep: recsys_rl.jobs.kl_sweep
        from recsys_rl.policy import load_policy

        cfg = load_run(config, _overrides(set_))
        ref = load_policy(reference).frozen_copy() if reference else None
        return sweep_with_reward_model(
            cfg,
            reward_model,
            kl_targets,
            logs,
            ref,
            sim_config,
            None if experiment == "recsys-rl-sweep" else experiment,
            bon_max_n,
            quiet,
            max_kl=max_kl,
            reach_rounds=reach_rounds,
        )
    import mlflow
    import pandas as pd

    from recsys_rl.baseline import train_baseline
    from recsys_rl.jobs.train import train_job

    names = [r.strip() for r in rewards.split(",") if r.strip()]
    for n in names:
        load_reward(n)
    beta_list = [None] if not betas else [float(b) for b in betas.split(",")]
    cfg = load_run(config, _overrides(set_))
    sim = _simulator(cfg)
    batch = _logs_for(cfg, sim, None, workdir, not quiet)
    ref = train_baseline(batch, sim.n_products, cfg.policy, cfg.baseline, cfg.seed, not quiet)
    from recsys_rl import tracking

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
                run_cfg = load_run(config, {**_overrides(set_), **ov})
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
        show = [
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
        tracking.log_table(table[show], "sweep_comparison")
        tracking.log_figure(tracking.sweep_comparison(table, show), "sweep_comparison.png")
    print_table(table[show], f"sweep ({experiment}): exact expected metrics per impression")
    table[show].to_csv(workdir / "sweep.csv")
    console.print(
        f"table saved to {workdir / 'sweep.csv'}; sweep run {parent.info.run_id}: compare runs: recsys-rl ui"
    )


@app.command("quickstart")
@friendly
def quickstart_cmd(
    workdir: Path = typer.Option(QUICKSTART_DIR, "--workdir", help="where logs and the reference go"),
    impressions: int = typer.Option(
        None, "--impressions", min=1024, help="fine-tuning budget (default 500,000)"
    ),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Simulate logs -> train the baseline -> fine-tune with `graded` -> evaluate -> MLflow. No server needed."""
    from recsys_rl import tracking
    from recsys_rl.baseline import train_baseline
    from recsys_rl.jobs.train import train_job
    from recsys_rl.policy import save_policy

    ov = {"reward": "graded", "train.total_impressions": impressions or QUICKSTART_IMPRESSIONS}
    cfg = load_run(None, ov)
    console.rule("1/4 simulate logged traffic")
    sim = _simulator(cfg)
    batch = _logs_for(cfg, sim, None, workdir, not quiet)
    console.rule("2/4 train the baseline (reference) recommender")
    ref = train_baseline(batch, sim.n_products, cfg.policy, cfg.baseline, cfg.seed, not quiet)
    save_policy(ref, workdir / "reference.pt")
    console.rule("3/4 fine-tune with the graded reward, KL-constrained to the reference")
    res = train_job(
        cfg, sim, reference=ref, data_source="simulator", run_name="quickstart-graded", progress=not quiet
    )
    console.rule("4/4 evaluate")
    _print_result(res, tracking.tracking_uri(cfg.tracking))
    console.print("open the MLflow UI: [bold]recsys-rl ui[/bold]  (then http://127.0.0.1:5000)")


@app.command("train-online")
@friendly
def train_online_cmd(
    events: str = typer.Option(
        ..., "--events", help="event store URI: sqlite:///events.db or redis://host:port/0"
    ),
    reference: Path = typer.Option(..., "--reference", help="the frozen reference (train-baseline output)"),
    config: Path = typer.Option(None, "--config", help="run config YAML (train/online/tracking sections)"),
    set_: list[str] = typer.Option(None, "--set", help="override, e.g. --set online.register_every=5"),
    sim_config: Path = typer.Option(None, "--sim-config", help="judge guard rails exactly on this simulator"),
    max_updates: int = typer.Option(None, "--max-updates", help="stop after this many updates"),
    idle_exit: float = typer.Option(None, "--idle-exit", help="stop after this many idle seconds"),
    logs: Path = typer.Option(
        None, "--logs", help="the logs that trained the reference: the warm start's data (warm_start.enabled)"
    ),
) -> None:
    """Learn from the live event stream: KL-PG updates, checkpointed offsets, guard-railed registrations."""
    import mlflow

    from recsys_rl import tracking
    from recsys_rl.events import open_store
    from recsys_rl.finetune.live import OnlineTrainer
    from recsys_rl.policy import load_policy

    cfg = load_run(config, _overrides(set_))
    if cfg.warm_start.enabled and logs is None:
        raise ValueError("--logs: warm_start.enabled needs the logs that trained the reference")
    _threads(cfg)
    ref = load_policy(reference).frozen_copy()
    value_fn = _sim_value_fn(sim_config, cfg) if sim_config else None
    warm_logs = None
    if logs is not None and cfg.warm_start.enabled:
        from recsys_rl.logdata.parquet import read_logs

        warm_logs = read_logs(logs)
    store = open_store(events)
    tracking.setup(cfg.tracking)
    with store, mlflow.start_run(run_name=f"online-{cfg.online.consumer}"):
        mlflow.set_tags({"data_source": f"events:{events.split('?')[0]}", "reward_scheme": str(cfg.reward)})
        trainer = OnlineTrainer(
            cfg, store, ref, value_fn=value_fn, log=lambda s: console.print(s), warm_logs=warm_logs
        )
        trainer.run(max_updates=max_updates, idle_exit_s=idle_exit)
    console.print(
        f"stopped after {trainer.updates} updates; registered versions: {trainer.registered or 'none'}"
    )


def _sim_value_fn(sim_config: Path, cfg: RunConfig):
    """Guard-rail value = exact expected reward of the greedy banners on a fixed simulated user set."""
    from recsys_rl.config import SimConfig, load
    from recsys_rl.evaluation import greedy_banners, make_eval_set
    from recsys_rl.rewards import expected_reward
    from simulator import Simulator

    sim = Simulator(load(SimConfig, sim_config))
    es = make_eval_set(sim, cfg.train.eval_users, cfg.seed + 1000)
    scheme = load_reward(cfg.reward)

    def value(policy) -> float:
        return (
            expected_reward(scheme, sim.expected(es.users, greedy_banners(policy, es.contexts))).mean().item()
        )

    return lambda logged: value


@app.command("register")
@friendly
def register_cmd(
    policy: Path = typer.Option(
        ..., "--policy", help="a saved policy (e.g. the reference from train-baseline)"
    ),
    alias: str = typer.Option(
        "champion", "--alias", help="registry alias to point at it (serving follows it)"
    ),
    config: Path = typer.Option(None, "--config", help="run config YAML (tracking section used)"),
) -> None:
    """Register a saved policy in the MLflow model registry and point an alias at it."""
    import mlflow

    from recsys_rl import tracking
    from recsys_rl.policy import load_policy

    if not policy.is_file():
        raise FileNotFoundError(f"--policy: {policy}: file not found")
    cfg = load_run(config)
    tracking.setup(cfg.tracking)
    with mlflow.start_run(run_name=f"register-{policy.stem}"):
        uri, version = tracking.log_policy(load_policy(policy), cfg.tracking.registered_model, alias)
    console.print(f"registered {policy} as {cfg.tracking.registered_model} version {version} (@{alias})")
