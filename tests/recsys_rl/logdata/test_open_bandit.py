"""Other people's logs through the shipped Open Bandit mapping, as a user runs the CLI (subprocesses,
real files, a real MLflow store): slot rows of 3-slot banners over 80 items, contexts with no viewed
product and no history, only categorical and numeric user features, no impression key.

The file is built here in the dataset's layout (columns as in obp's obd/random/all/all.csv, with
its unnamed index column); nothing is downloaded."""

import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

MAPPING = str(Path(__file__).resolve().parents[3] / "configs" / "mappings" / "open_bandit.yaml")
CLI = [sys.executable, "-m", "recsys_rl"]
N_ITEMS, K, N_BANNERS = 80, 3, 800


def run(args, cwd, timeout=600):
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def open_bandit_frame(seed: int = 0, n_banners: int = N_BANNERS) -> pd.DataFrame:
    """A uniform-random logger's 3-slot banners, one row per displayed item; clicks depend on one
    categorical feature and on the user-item affinity, so there is something to learn."""
    rng = np.random.default_rng(seed)
    N_BANNERS = n_banners  # noqa: N806
    n = N_BANNERS * K
    banners = np.argsort(rng.random((N_BANNERS, N_ITEMS)), axis=1)[:, :K]  # distinct items per banner
    user_cat = rng.integers(0, 4, (N_BANNERS, 4))
    affinity = rng.exponential(0.2, (N_BANNERS, N_ITEMS)).round(3)
    liked = (np.arange(N_ITEMS)[None, :] % 4) == user_cat[:, :1]  # category c likes items i % 4 == c
    p = 0.02 + 0.25 * liked[np.arange(N_BANNERS)[:, None], banners] * np.array([1.0, 0.7, 0.5])
    df = pd.DataFrame(
        {
            "timestamp": pd.date_range("2019-11-24", periods=n, freq="s").astype(str),
            "item_id": banners.reshape(-1),
            "position": np.tile(np.arange(K), N_BANNERS),
            "click": rng.binomial(1, p.reshape(-1)),
            "propensity_score": np.full(n, 1.0 / N_ITEMS),  # the random policy: 1/80 per item and slot
        }
    )
    for j in range(4):
        df[f"user_feature_{j}"] = np.repeat([f"{h:032x}" for h in (user_cat[:, j] * 7919 + j)], K)
    aff = pd.DataFrame(
        np.repeat(affinity, K, axis=0), columns=[f"user-item_affinity_{i}" for i in range(N_ITEMS)]
    )
    return pd.concat([df, aff], axis=1)


@pytest.fixture(scope="module")
def obd(tmp_path_factory):
    root = tmp_path_factory.mktemp("obd")
    open_bandit_frame().to_csv(root / "all.csv")  # with the unnamed index column, as the dataset has
    return root


def test_shipped_mapping_reads_the_layout_as_feature_only_slot_rows(obd):
    from recsys_rl.logdata.importer import import_logs

    imp = import_logs(obd / "all.csv", N_ITEMS, MAPPING)
    assert imp.slot_rows and imp.banner_size == K and len(imp) == N_BANNERS * K
    ctx = imp.batch.contexts
    assert (ctx.viewed == -1).all() and (ctx.history == -1).all()  # no viewed product, no history
    assert ctx.user_features.shape == (N_BANNERS * K, N_ITEMS) and ctx.user_categories.shape == (
        N_BANNERS * K,
        4,
    )
    assert [len(v) for v in imp.vocabulary] == [4, 4, 4, 4] and (ctx.user_categories >= 1).all()
    np.testing.assert_allclose(imp.behaviour_marginals, 1 / N_ITEMS)
    assert sorted(np.unique(imp.positions)) == [0, 1, 2]


def test_train_baseline_train_and_evaluate_run_through_the_mapping(obd, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    common = ["--mapping", MAPPING, "--set", f"tracking.tracking_uri={uri}"]
    r = run(
        [
            "train-baseline",
            "--logs",
            str(obd / "all.csv"),
            "--out",
            str(tmp_path / "ref.pt"),
            *common,
            "--set",
            "baseline.epochs=3",
        ],
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "80 products, banners of 3" in r.stdout
    r = run(
        [
            "train",
            "--logs",
            str(obd / "all.csv"),
            "--reference",
            str(tmp_path / "ref.pt"),
            "--reward",
            "ctr",
            "--quiet",
            *common,
            "--set",
            "train.total_impressions=4096",
            "--set",
            "train.minibatch_size=256",
            "--set",
            "tracking.registered_model=obd-policy",
        ],
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "iips_value" in r.stdout
    run_id = r.stdout.split("MLflow run id:")[1].split()[0]
    client = mlflow.MlflowClient(uri)
    metrics = client.get_run(run_id).data.metrics
    assert np.isfinite(metrics["final_iips_value"])
    # the registered policy serves 3-product banners for feature-only contexts, as its signature says
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model("models:/obd-policy/1")
    assert model.metadata.metadata["banner_size"] == 3
    inputs = {c.name: c.required for c in model.metadata.get_input_schema().inputs}
    assert inputs == {"viewed": False, "history": False, "user_features": True, "user_categories": True}
    frame = open_bandit_frame().iloc[:6]
    contexts = pd.DataFrame(
        {
            "user_features": [r.tolist() for r in frame.filter(like="user-item_affinity_").to_numpy()],
            "user_categories": [r.tolist() for r in frame.filter(like="user_feature_").to_numpy()],
        }
    )
    out = model.predict(contexts, params={"mode": "explore", "seed": 0})
    assert [len(set(b)) for b in out["items"]] == [3] * 6 and (out["log_propensity"] < 0).all()
    assert [len(b) for b in model.predict(contexts, params={"k": 2})["items"]] == [2] * 6
    for name in ("reference", "fine-tuned"):
        policy = str(tmp_path / "ref.pt") if name == "reference" else "models:/obd-policy/1"
        r = run(
            [
                "evaluate",
                "--logs",
                str(obd / "all.csv"),
                "--mapping",
                MAPPING,
                "--policy",
                policy,
                "--reward",
                "ctr",
                "--estimators",
                "iips,dm,dr",
                "--samples",
                "16",
                "--tracking-uri",
                uri,
            ],
            tmp_path,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        for label in ("IIPS", "DM", "DR"):
            assert label in r.stdout


def test_whole_banner_estimators_refuse_slot_rows_and_bad_rows_are_named(obd, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    from recsys_rl.baseline import train_baseline
    from recsys_rl.config import BaselineConfig, PolicyConfig
    from recsys_rl.logdata.importer import import_logs
    from recsys_rl.policy import save_policy

    imp = import_logs(obd / "all.csv", N_ITEMS, MAPPING)
    ref = train_baseline(
        imp.batch,
        N_ITEMS,
        PolicyConfig(embed_dim=8, hidden_dim=16),
        BaselineConfig(epochs=1),
        0,
        False,
        banner_size=K,
        categorical_vocab=imp.vocabulary,
    )
    save_policy(ref, tmp_path / "ref.pt")
    r = run(
        [
            "evaluate",
            "--logs",
            str(obd / "all.csv"),
            "--mapping",
            MAPPING,
            "--policy",
            str(tmp_path / "ref.pt"),
            "--reward",
            "ctr",
            "--estimators",
            "ips,iips",
            "--tracking-uri",
            uri,
        ],
        tmp_path,
    )
    assert r.returncode == 2 and "ips weight whole banners" in r.stderr and "no impression key" in r.stderr
    bad = open_bandit_frame()
    bad.loc[17, "propensity_score"] = 1.5
    bad.to_csv(tmp_path / "bad.csv")
    r = run(
        [
            "train-baseline",
            "--logs",
            str(tmp_path / "bad.csv"),
            "--mapping",
            MAPPING,
            "--out",
            str(tmp_path / "never.pt"),
        ],
        tmp_path,
    )
    assert r.returncode != 0 and "bad.csv: propensity_score: row 17 (line 19): propensity 1.5" in r.stderr
    assert not (tmp_path / "never.pt").exists()
    assert not (tmp_path / "mlflow.db").exists()  # nothing written for rejected input


def test_the_reward_model_learns_from_unkeyed_slot_rows_with_feature_only_contexts(obd):
    """Item-level training: each row a (context, product, position) example; the examination curve is
    learnt at the rows' own positions and the liked items score above the rest from features alone."""
    import torch

    from recsys_rl.logdata.importer import import_logs
    from recsys_rl.reward_model.config import RewardModelConfig
    from recsys_rl.reward_model.fit import fit_reward_model

    imp = import_logs(obd / "all.csv", N_ITEMS, MAPPING)
    assert imp.batch.banners.positions.shape == (N_BANNERS * K, 1)
    res = fit_reward_model(
        imp.batch,
        N_ITEMS,
        RewardModelConfig(epochs=30, embed_dim=8, hidden_dim=32),
        False,
        n_positions=K,
        categorical_vocab=imp.vocabulary,
    )
    exam = res.model.examination().detach()
    assert exam.shape == (K,) and exam[0] == 1 and (exam[1:] < 0.9).all()  # lower slots are seen less
    ctx, items = imp.batch.contexts, imp.batch.banners.items
    with torch.no_grad():
        p = res.model.expected(ctx, items, positions=torch.zeros_like(items)).click[:, 0]
    cat = np.array([int(v, 16) // 7919 for v in imp.categories[:, 0]])  # the raw category of the test's world
    liked = (items[:, 0].numpy() % 4) == cat
    assert p[torch.from_numpy(liked)].mean() > 1.2 * p[torch.from_numpy(~liked)].mean()
