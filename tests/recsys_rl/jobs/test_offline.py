"""The logs job: one tracked run judged on held-out logs, its catalogue taken from the logs."""

import pytest

from recsys_rl.config import RunConfig, TrackingConfig, TrainConfig, load_run
from recsys_rl.jobs.offline import WHY_NOT, offline_job, refuse_settings_unused_on_logs
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


def test_every_train_setting_is_honoured_or_refused_on_the_logs_path():
    from recsys_rl.jobs.offline import TRAIN_USED

    assert set(TRAIN_USED) | set(WHY_NOT) | {"eval_users"} == set(TrainConfig.model_fields)
    assert not set(TRAIN_USED) & set(WHY_NOT)


@pytest.mark.parametrize("key", sorted(WHY_NOT))
def test_a_setting_the_logs_fine_tune_does_not_use_is_refused_even_at_its_default(key):
    default = TrainConfig.model_fields[key].default
    cfg = load_run(None, {f"train.{key}": default})  # set by the user, whatever its value
    with pytest.raises(ValueError, match=rf"^train\.{key}: does not apply to train --logs \(.+\)$"):
        refuse_settings_unused_on_logs(cfg, reference_given=False, env_given=False)


def test_settings_it_uses_and_untouched_sections_pass():
    cfg = load_run(None, {"train.weight_clip": 5.0, "train.kl_target": 0.2, "train.lr": 0.01, "seed": 3})
    refuse_settings_unused_on_logs(cfg, reference_given=True, env_given=False)
    with pytest.raises(ValueError, match="train.eval_users: .*--sim-config"):
        refuse_settings_unused_on_logs(
            load_run(None, {"train.eval_users": 64}), reference_given=False, env_given=False
        )
    refuse_settings_unused_on_logs(
        load_run(None, {"train.eval_users": 64}), reference_given=False, env_given=True
    )
    with pytest.raises(ValueError, match=r"^baseline.epochs: .*--reference"):
        refuse_settings_unused_on_logs(
            load_run(None, {"baseline.epochs": 1}), reference_given=True, env_given=False
        )
    refuse_settings_unused_on_logs(
        load_run(None, {"baseline.epochs": 1}), reference_given=False, env_given=False
    )
    for key in ("sim.n_products", "warm_start.enabled", "online.batch_size"):
        value = 500 if key != "warm_start.enabled" else False
        with pytest.raises(ValueError, match=rf"^{key}: does not apply to train --logs"):
            refuse_settings_unused_on_logs(
                load_run(None, {key: value}), reference_given=False, env_given=True
            )
