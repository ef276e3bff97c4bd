"""The logs job: one tracked run judged on held-out logs, its catalogue taken from the logs."""

from recsys_rl.config import RunConfig, TrackingConfig
from recsys_rl.jobs.offline import offline_job
from recsys_rl.logdata.parquet import read_logs
from recsys_rl.records import catalogue_size
from tests.recsys_rl.helpers import BASELINE, POLICY, SMALL, small_logs_dir, small_train


def test_offline_job_tracks_and_judges_on_held_out_logs(tmp_path):
    logs = read_logs(small_logs_dir(str(tmp_path)))
    cfg = RunConfig(
        sim=SMALL.model_copy(update={"n_products": 5 * SMALL.n_products}),  # a preset that is not the logs'
        policy=POLICY,
        baseline=BASELINE,
        train=small_train(total_impressions=10_240),
        tracking=TrackingConfig(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"),
    )
    res = offline_job(cfg, logs, progress=False)
    assert list(res.table.index) == ["logger", "reference", "fine-tuned"]
    policies = res.table.loc[["reference", "fine-tuned"]]
    assert policies["snips_value"].notna().all() and res.model_version == "1"
    for kind in ("greedy", "sampled"):  # held-out values inside their CIs
        assert (policies[f"heldout_{kind}_low"] <= policies[f"heldout_{kind}"]).all()
        assert (policies[f"heldout_{kind}"] <= policies[f"heldout_{kind}_high"]).all()
    assert res.table.loc["fine-tuned", "in_sample_sampled"] > 0
    assert res.reference.n_products == res.policy.n_products == catalogue_size(logs) <= SMALL.n_products
