"""`recsys-rl --help`: the app lists every command."""

from tests.cli import run_cli


def test_help_lists_the_commands(tmp_path):
    r = run_cli(["--help"], tmp_path)
    assert r.returncode == 0
    for cmd in ("simulate", "train-baseline", "train", "sweep", "quickstart", "ui", "train-online"):
        assert cmd in r.stdout
