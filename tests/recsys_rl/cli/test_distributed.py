"""The --ray options' bad input: one readable line and exit 2, before Ray or any training starts."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from recsys_rl.cli.main import app


def run(args, cwd, monkeypatch):
    monkeypatch.chdir(cwd)
    return CliRunner().invoke(app, args)


def last_line(res) -> str:
    return res.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "0,1"], "error: --seeds: needs --ray"),
        (["--search", "s.yaml"], "error: --search: needs --ray"),
        (["--resume"], "error: --resume: needs --ray"),
        (["--ray", "local", "--resume"], "error: --resume: give the --name of the sweep to resume"),
        (["--ray", "local", "--seeds", "a,b"], "error: --seeds: expected comma-separated integers"),
        (["--ray", "local", "--set", "train.replay_batches=2"], "error: train.replay_batches: not available"),
    ],
)
def test_sweep_ray_options_are_checked(tmp_path, monkeypatch, args, message):
    (tmp_path / "s.yaml").write_text("space: {}\n")
    res = run(["sweep", *args], tmp_path, monkeypatch)
    assert res.exit_code == 2
    assert last_line(res).startswith(message)


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ("space: {train.lr: {loguniform: [0, 1]}}", "loguniform needs a positive low bound"),
        ("space: {train.nope: {choice: [1, 2]}}", "--search: space: train.nope: "),
        ("space: {train.clip_eps: {uniform: [0.1, 2.0]}}", "--search: space: train.clip_eps: "),
        ("space: {train.lr: {normal: [0, 1]}}", "space.train.lr.normal"),
        ("scheduler: hyperband", "scheduler"),
    ],
)
def test_a_bad_search_space_names_the_key(tmp_path, monkeypatch, space, message):
    (tmp_path / "s.yaml").write_text(space + "\n")
    res = run(["sweep", "--ray", "local", "--search", "s.yaml"], tmp_path, monkeypatch)
    assert res.exit_code == 2
    assert message in last_line(res) and last_line(res).startswith("error: ")
