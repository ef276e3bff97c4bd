"""What every command shares: the one error path, the one ``--set`` parser, tables, and the helpers
that turn options into a simulator or into logs with their catalogue size.

``simulator`` is imported inside the helpers, so ``import recsys_rl.cli`` never pulls it in.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from recsys_rl.config import ConfigError, RunConfig

console = Console()

USER_ERRORS = (ConfigError, ValueError, OSError)
"""Bad input: a config, an option, a log file (LogFormatError is a ValueError), a path, a URL."""

MAPPING_HELP = "column mapping YAML of another layout (e.g. configs/mappings/open_bandit.yaml)"


def friendly(fn):
    """Bad input -> ``error: <message>`` as one line on stderr and exit 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            typer.echo(f"error: {' '.join(str(e).split())}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def parse_overrides(pairs: list[str] | None) -> dict:
    """``--set train.lr=0.001`` pairs -> {"train.lr": 0.001}; values parsed as YAML scalars."""
    import yaml

    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise ConfigError(f"--set: expected key=value, got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def use_threads(cfg: RunConfig) -> None:
    import torch

    torch.set_num_threads(cfg.torch_threads)


def simulator_at(path: Path | None):
    """The simulator of a preset YAML (``--sim-config``), or of the default preset when None."""
    from recsys_rl.config import SimConfig, load
    from simulator import Simulator

    return Simulator(load(SimConfig, path) if path is not None else SimConfig())


def run_simulator(cfg: RunConfig):
    """The run config's own simulator, with the run's torch threads set."""
    from simulator import Simulator

    use_threads(cfg)
    return Simulator(cfg.sim)


def audit_world(sim):
    """The simulator's exact position bias, popularity, categories and price-sensitive users as the
    engine's ``AuditWorld`` (users more price-sensitive than the median are ``price_sensitive``)."""
    from recsys_rl.audit.world import AuditWorld

    sensitivity = sim.population.sensitivity
    return AuditWorld(
        examination=sim.position_bias,
        popularity=sim.popularity,
        categories=sim.catalogue.category,
        user_groups={"price_sensitive": sensitivity > sensitivity.median()},
    )


def simulated_logs(cfg: RunConfig, sim, workdir: Path, progress: bool = True):
    """``baseline.logged_impressions`` logged from the behaviour policy on ``sim``, read back."""
    from recsys_rl.logdata.parquet import read_logs
    from simulator.logged import generate_logs

    logs = generate_logs(
        sim, cfg.baseline.logged_impressions, workdir / "logs", seed=cfg.seed, progress=progress
    )
    console.print(f"simulated {cfg.baseline.logged_impressions:,} logged impressions -> {logs}")
    return read_logs(logs)


def logs_with_catalogue(logs: Path, mapping: Path | None, n_products: int | None):
    """(ImportedLogs, catalogue size) of an event-schema directory or a table ``mapping`` describes.

    The catalogue is ``n_products`` when given (ids past it are refused), else the one the log implies
    (``records.catalogue_size``): logs carry no catalogue size, and a simulator preset's is not theirs.
    """
    from recsys_rl.logdata.importer import import_logs
    from recsys_rl.records import catalogue_size

    imported = import_logs(logs, n_products or 2**62, mapping)
    return imported, n_products or catalogue_size(imported.batch)


def print_table(table, title: str) -> None:
    """Metrics as rows, policies as columns: readable in a narrow terminal."""
    t = Table(title=title)
    t.add_column("metric")
    for name in table.index:
        t.add_column(str(name), justify="right")
    for col in table.columns:
        cells = [table.loc[name, col] for name in table.index]
        t.add_row(col, *["–" if isinstance(v, float) and math.isnan(v) else f"{v:.4g}" for v in cells])
    console.print(t)
