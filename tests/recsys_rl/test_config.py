import subprocess
import sys

import pytest

from recsys_rl.config import ConfigError, RunConfig, SimConfig, builtin_rewards, load, load_reward, load_run


def write(tmp_path, text, name="cfg.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "text, field, problem",
    [
        ("train:\n  lr: -1\n", "train.lr", "greater than 0"),
        ("train:\n  lrr: 0.1\n", "train.lrr", "unknown key"),
        ("sim:\n  n_products: many\n", "sim.n_products", "valid integer"),
        ("sim:\n  clickbait_share: 1.5\n", "sim.clickbait_share", "less than or equal to 1"),
        ("sim:\n  position_bias: [1, 0.5]\n", "sim.position_bias", "5 values"),
        ("sim:\n  position_bias: [0.5, 0.6, 0.4, 0.3, 0.2]\n", "sim.position_bias", "non-increasing"),
        ("train:\n  algorithm: sarsa\n", "train.algorithm", "'ppo' or 'reinforce'"),
        ("reward: nonexistent\n", "reward", "unknown scheme"),
    ],
)
def test_bad_config_fails_with_one_line_naming_file_and_field(tmp_path, text, field, problem):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_run(p)
    msg = str(e.value)
    assert "\n" not in msg
    assert field in msg and problem in msg
    if field != "reward":
        assert str(p) in msg


def test_invalid_yaml_names_the_line(tmp_path):
    p = write(tmp_path, "train:\n  lr: [1,\n")
    with pytest.raises(ConfigError, match=r"cfg.yaml: line \d+: invalid YAML"):
        load_run(p)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_run(tmp_path / "nope.yaml")


def test_presets_load_and_default_file_equals_embedded_defaults():
    assert load(SimConfig, "configs/sim/small.yaml").n_products == 1000
    assert load(SimConfig, "configs/sim/large.yaml").n_products == 100_000
    assert load_run("configs/train/default.yaml") == RunConfig()


def test_builtin_reward_schemes_from_yaml():
    schemes = builtin_rewards()
    assert set(schemes) >= {"ctr", "purchase", "graded", "revenue"}
    g = schemes["graded"]
    assert g.click < g.purchase and g.multi_purchase > 0
    assert schemes["revenue"].revenue == 1.0 and schemes["ctr"].click == 1.0


def test_a_new_scheme_is_just_a_yaml_file(tmp_path):
    p = write(tmp_path, "name: units\nunits: 1.0\n", "units.yaml")
    assert load_reward(str(p)).units == 1.0
    cfg = load_run(overrides={"reward": {"name": "inline", "purchase": 2.0}})
    assert load_reward(cfg.reward).purchase == 2.0


def test_scheme_with_all_zero_weights_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="rewards nothing"):
        load_reward(str(write(tmp_path, "name: nothing\n", "z.yaml")))


def test_cli_bad_config_exits_nonzero_with_one_readable_line(tmp_path):
    p = write(tmp_path, "train:\n  lr: -1\n")
    r = subprocess.run(
        [sys.executable, "-m", "recsys_rl", "train", "--config", str(p), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and "train.lr" in lines[0] and "greater than 0" in lines[0]


def test_error_stays_on_one_line_even_for_a_key_with_a_newline():
    with pytest.raises(ConfigError) as e:
        load_run(overrides={"train": {"bad\nkey": 1}})
    assert "\n" not in str(e.value) and "unknown key" in str(e.value)


def test_a_per_banner_sized_kl_target_warns_once_in_one_line(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="recsys_rl.config"):
        cfg = load_run(write(tmp_path, "train:\n  kl_target: 3\n"), {})
    assert cfg.train.kl_target == 3.0  # honoured, only flagged
    (record,) = caplog.records
    assert record.getMessage().startswith("train.kl_target: 3 nats per displayed product (15 per banner")
    assert "\n" not in record.getMessage()
    caplog.clear()
    with caplog.at_level("WARNING", logger="recsys_rl.config"):
        load_run(write(tmp_path, "train:\n  kl_target: 0.6\n"), {})
    assert caplog.records == []
