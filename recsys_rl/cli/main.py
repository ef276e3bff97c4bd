"""The `recsys-rl` typer app: registers the commands, one module per command group.

The CLI is the one place that wires the simulator into the engine. Every command turns bad input into
one readable line on stderr and exit code 2 (``cli.common.friendly``).
"""

from __future__ import annotations

import typer

from recsys_rl.cli.common import friendly
from recsys_rl.cli.evaluate import evaluate
from recsys_rl.cli.loop import loop_cmd
from recsys_rl.cli.reward_model import train_reward_model
from recsys_rl.cli.serve import drive, register, serve, train_online
from recsys_rl.cli.simulate import simulate
from recsys_rl.cli.train import quickstart_cmd, sweep_cmd, train_baseline_cmd, train_cmd
from recsys_rl.cli.ui import ui_cmd

app = typer.Typer(
    help="recsys-rl: fine-tune a banner recommender with KL-constrained online RL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("simulate")(simulate)
app.command("serve")(serve)
app.command("drive")(drive)
app.command("evaluate")(evaluate)
app.command("ui")(friendly(ui_cmd))
app.command("train-reward-model")(train_reward_model)
app.command("train-baseline")(train_baseline_cmd)
app.command("train")(train_cmd)
app.command("sweep")(sweep_cmd)
app.command("quickstart")(quickstart_cmd)
app.command("train-online")(train_online)
app.command("register")(register)
app.command("loop")(loop_cmd)
