"""Property tests: whatever mapping or YAML text a config is given, loading it either succeeds or
stops with a ConfigError (one line naming the field) — never another exception."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_rl.config import (
    BaselineConfig,
    ConfigError,
    OnlineConfig,
    PolicyConfig,
    RewardScheme,
    RunConfig,
    SimConfig,
    TrackingConfig,
    TrainConfig,
    load_reward,
    load_run,
    validate,
)

MODELS = [
    SimConfig,
    RewardScheme,
    PolicyConfig,
    BaselineConfig,
    TrainConfig,
    TrackingConfig,
    OnlineConfig,
    RunConfig,
]
FIELD_NAMES = sorted({name for m in MODELS for name in m.model_fields})
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["small", "graded", "ctr", "x.yaml", "../nope.yml", "", "\x00", "1e3", "nan"])
)
keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=8)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)
mappings = st.dictionaries(keys, values, max_size=8)


def accepts_or_config_error(fn, *args, **kwargs) -> None:
    try:
        fn(*args, **kwargs)
    except ConfigError as e:
        assert str(e), "ConfigError without a message"


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@FUZZ
@given(data=mappings | values)
def test_validate_raises_only_config_error(model, data):
    accepts_or_config_error(validate, model, data, "fuzz.yaml")


@FUZZ
@given(
    data=mappings,
    overrides=st.dictionaries(
        st.sampled_from(["train.lr", "sim", "sim.n_products", "reward", "online.kl_budget", "a.b.c", "seed"]),
        values,
        max_size=3,
    ),
)
def test_load_run_raises_only_config_error(tmp_path, data, overrides):
    import yaml

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    accepts_or_config_error(load_run, path, overrides)


@FUZZ
@given(text=st.text(max_size=200) | st.binary(max_size=100).map(lambda b: b.decode("latin-1")))
def test_any_yaml_text_raises_only_config_error(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    accepts_or_config_error(load_run, path)
    accepts_or_config_error(load_reward, str(path))


@FUZZ
@given(name=st.text(max_size=20))
def test_any_reward_name_raises_only_config_error(name):
    accepts_or_config_error(load_reward, name)
