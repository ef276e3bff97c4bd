"""`train --logs` refuses, in one line, a setting it would otherwise ignore; nothing runs or is stored."""

from tests.cli import run_cli as run


def test_a_setting_that_does_not_apply_to_train_logs_is_refused_in_one_line(tmp_path):
    (tmp_path / "cfg.yaml").write_text("train:\n  epochs: 4\n")
    r = run(["train", "--logs", str(tmp_path / "logs"), "--config", "cfg.yaml", "--quiet"], tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: train.epochs: does not apply to train --logs (each step draws a fresh minibatch; "
        "train.total_impressions sets the length)"
    ]
    r = run(["train", "--logs", str(tmp_path / "logs"), "--set", "train.clip_eps=0.3", "--quiet"], tmp_path)
    assert r.returncode == 2 and r.stderr.startswith(
        "error: train.clip_eps: does not apply to train --logs ("
    )
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "mlflow.db").exists()
