"""The Open Bandit Dataset's real sample through the shipped mapping, as a user runs it: the 10,000-row
``obd/random/all/all.csv`` of the ``obp`` source archive (fetched and cached by ``tests.obd``), one row
per displayed item of 3-slot banners over 80 items, slots numbered 1..3, a uniform-random logger
(propensity 1/80), 38 clicks, no viewed product, no history, no impression key.

The README's commands run as written (subprocesses, a real MLflow store in the working directory),
with a smaller training budget."""

import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.obd import open_bandit_sample

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
MAPPING = str(CONFIGS / "mappings" / "open_bandit.yaml")
N_ITEMS, K, N_ROWS = 80, 3, 10_000
ROWS_PER_POSITION = [3_322, 3_412, 3_266]  # positions 1, 2, 3 in the file
CLICKS = 38


@pytest.fixture(scope="module")
def sample() -> Path:
    return open_bandit_sample()


def recsys_rl(command: str, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    """``recsys-rl <command>`` as the README writes it (M = the shipped mapping), plus ``extra``; the
    conftest keeps a developer's MLFLOW_TRACKING_URI out, so the default store is in ``cwd``."""
    args = command.replace("$M", "configs/mappings/open_bandit.yaml").split()
    return subprocess.run(
        [sys.executable, "-m", "recsys_rl", *args, *extra],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_shipped_mapping_reads_the_real_sample_as_feature_only_slot_rows(sample):
    from recsys_rl.logdata.importer import import_logs

    imp = import_logs(sample, N_ITEMS, MAPPING)
    assert imp.slot_rows and imp.banner_size == K and len(imp) == N_ROWS
    assert np.bincount(imp.positions).tolist() == ROWS_PER_POSITION  # slots 1..3 read as 0..2
    ctx = imp.batch.contexts
    assert (ctx.viewed == -1).all() and (ctx.history == -1).all()  # no viewed product, no history
    assert ctx.user_features.shape == (N_ROWS, N_ITEMS) and ctx.user_categories.shape == (N_ROWS, 4)
    assert [len(v) for v in imp.vocabulary] == [3, 5, 8, 8] and (ctx.user_categories >= 1).all()
    items = imp.batch.banners.items[:, 0]
    assert items.min() == 0 and items.max() == N_ITEMS - 1
    np.testing.assert_allclose(imp.behaviour_marginals, 1 / N_ITEMS)  # the random logger
    assert imp.batch.outcomes.clicks.sum() == CLICKS and imp.outcomes == {"clicks"}
    assert imp.categories[0, 0] == "81ce123cbb5bd8ce818f60fb3586bba5"  # raw values kept for a model


def test_a_mapping_counting_slots_from_0_names_the_first_row_outside_the_banner(sample):
    from recsys_rl.logdata.importer import import_logs
    from recsys_rl.logdata.mapping import load_mapping
    from recsys_rl.logdata.parquet import LogFormatError

    wrong = load_mapping(MAPPING).model_copy(update={"first_position": 0})
    with pytest.raises(
        LogFormatError, match=r"all.csv: position: row 0 \(line 2\): position 3 is outside \[0, 3\)"
    ):
        import_logs(sample, N_ITEMS, wrong)


@pytest.mark.slow
def test_the_readme_commands_run_on_the_real_sample(sample, tmp_path):
    (tmp_path / "all.csv").symlink_to(sample)
    (tmp_path / "configs").symlink_to(CONFIGS)
    r = recsys_rl("train-baseline --logs all.csv --mapping $M --out obd-ref.pt", tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "80 products, banners of 3" in r.stdout
    r = recsys_rl(
        "train --logs all.csv --mapping $M --reference obd-ref.pt --reward ctr "
        "--set tracking.registered_model=obd-policy --quiet",
        tmp_path,
        *("--set", "train.total_impressions=4096", "--set", "train.minibatch_size=256"),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "iips_value" in r.stdout
    run_id = r.stdout.split("MLflow run id:")[1].split()[0]
    uri = f"sqlite:///{tmp_path}/mlflow.db"  # the default store, in the working directory
    assert np.isfinite(mlflow.MlflowClient(uri).get_run(run_id).data.metrics["final_iips_value"])

    # the registered policy serves 3-product banners for the file's feature-only contexts
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model("models:/obd-policy/1")
    assert model.metadata.metadata["banner_size"] == 3
    inputs = {c.name: c.required for c in model.metadata.get_input_schema().inputs}
    assert inputs == {"viewed": False, "history": False, "user_features": True, "user_categories": True}
    rows = pd.read_csv(sample, nrows=6)
    contexts = pd.DataFrame(
        {
            "user_features": [r.tolist() for r in rows.filter(like="user-item_affinity_").to_numpy()],
            "user_categories": [r.tolist() for r in rows.filter(like="user_feature_").to_numpy()],
        }
    )
    out = model.predict(contexts, params={"mode": "explore", "seed": 0})
    assert [len(set(b)) for b in out["items"]] == [3] * 6 and (out["log_propensity"] < 0).all()

    for policy in ("obd-ref.pt", "models:/obd-policy/1"):
        r = recsys_rl(
            f"evaluate --logs all.csv --mapping $M --policy {policy} --reward ctr --estimators iips,dm,dr",
            tmp_path,
            *("--samples", "16"),
        )
        assert r.returncode == 0, r.stderr[-3000:]
        for label in ("IIPS", "DM", "DR"):
            assert label in r.stdout
    r = recsys_rl(
        "evaluate --logs all.csv --mapping $M --policy obd-ref.pt --reward ctr --estimators ips", tmp_path
    )
    assert r.returncode == 2
    assert r.stderr.startswith("error: --estimators: ips weight whole banners, and this log has one row per")


def test_a_bad_row_of_the_real_file_is_named_and_nothing_is_written(sample, tmp_path):
    lines = sample.read_text().splitlines(keepends=True)
    assert ",0.0125," in lines[18]
    lines[18] = lines[18].replace(",0.0125,", ",1.5,", 1)  # data row 17 is line 19 of the file
    (tmp_path / "bad.csv").write_text("".join(lines))
    (tmp_path / "configs").symlink_to(CONFIGS)
    r = recsys_rl("train-baseline --logs bad.csv --mapping $M --out never.pt", tmp_path)
    assert r.returncode != 0 and "bad.csv: propensity_score: row 17 (line 19): propensity 1.5" in r.stderr
    assert not (tmp_path / "never.pt").exists()
    assert not (tmp_path / "mlflow.db").exists()  # nothing written for rejected input


def test_the_reward_model_learns_from_the_unkeyed_slot_rows(sample):
    """Item-level training on the real rows: each row a (context, product, position) example. With 38
    clicks in 10,000 rows the fitted click probability must stay of the order of the file's rate."""
    import torch

    from recsys_rl.logdata.importer import import_logs
    from recsys_rl.reward_model.config import RewardModelConfig
    from recsys_rl.reward_model.fit import fit_reward_model

    imp = import_logs(sample, N_ITEMS, MAPPING)
    assert imp.batch.banners.positions.shape == (N_ROWS, 1)
    res = fit_reward_model(
        imp.batch,
        N_ITEMS,
        RewardModelConfig(epochs=30, embed_dim=8, hidden_dim=32),
        False,
        n_positions=K,
        categorical_vocab=imp.vocabulary,
    )
    exam = res.model.examination().detach()
    assert exam.shape == (K,) and exam[0] == 1
    with torch.no_grad():
        p = res.model.expected(
            imp.batch.contexts, imp.batch.banners.items, positions=imp.batch.banners.positions
        ).click
    rate = CLICKS / N_ROWS
    assert ((p > 0) & (p < 1)).all() and rate / 3 < p.mean().item() < 3 * rate
