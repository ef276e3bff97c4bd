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
    assert list(res.table.index) == ["reference", "fine-tuned"]
    assert res.table["snips_value"].notna().all() and res.model_version == "1"
    assert res.reference.n_products == res.policy.n_products == catalogue_size(logs) <= SMALL.n_products


def test_with_an_environment_the_classics_are_valued_exactly_beside_the_fine_tune(tmp_path):
    """The yardsticks a practitioner holds us to sit in the same table, on the same users, same columns."""
    from tests.recsys_rl.helpers import small_sim

    logs = read_logs(small_logs_dir(str(tmp_path)))
    cfg = RunConfig(
        sim=SMALL,
        policy=POLICY,
        baseline=BASELINE,
        train=small_train(total_impressions=10_240),
        tracking=TrackingConfig(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"),
    )
    res = offline_job(cfg, logs, env=small_sim(), progress=False)
    classics = ["popularity", "covisitation", "reshow_context", "ips_logreg"]
    assert list(res.table.index) == ["reference", "fine-tuned", "oracle", *classics]
    graded = res.table["reward_graded"]
    assert graded.notna().all()
    assert (graded[classics] < graded["oracle"]).all()  # the oracle bounds every policy, classics included
