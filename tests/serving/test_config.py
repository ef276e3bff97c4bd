"""ServeConfig: one model source, validated fields, one-line errors naming the file and field."""

from __future__ import annotations

import pytest

from recsys_rl.config import ConfigError
from serving.app import model_source
from serving.config import ServeConfig, load_config
from serving.model_holder import FileSource, RegistrySource


def test_defaults_need_no_file():
    cfg = load_config(None)
    assert cfg.events == "sqlite:///events.db" and cfg.temperature == 1.0 and cfg.torch_threads == 1
    assert not cfg.has_model_source and model_source(cfg) is None


def test_bad_field_in_the_file_is_one_line_naming_it(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("temperature: -1\n")
    with pytest.raises(ConfigError, match=r"serve.yaml: temperature: Input should be greater than 0"):
        load_config(path)
    path.write_text("temprature: 1\n")
    with pytest.raises(ConfigError, match=r"temprature: unknown key"):
        load_config(path)


def test_only_one_model_source(tmp_path):
    with pytest.raises(ValueError, match="give one model source, not model_uri and policy_path"):
        ServeConfig(model_uri="models:/banner-policy@champion", policy_path=tmp_path / "p.pt")
    with pytest.raises(ValueError, match="model_uri: expected"):
        ServeConfig(model_uri="runs:/abc/policy")


def test_a_source_on_the_command_line_replaces_the_files(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("model_uri: models:/banner-policy@champion\nport: 9000\n")
    cfg = load_config(path, {"policy_path": tmp_path / "p.pt", "port": None})
    assert cfg.model_uri is None and cfg.policy_path == tmp_path / "p.pt" and cfg.port == 9000


def test_model_sources_from_config(tmp_path):
    db = f"sqlite:///{tmp_path}/mlflow.db"  # never created: sources touch the registry only when polled
    follow = model_source(ServeConfig(model_uri="models:/bp@champion", tracking_uri=db))
    fixed = model_source(ServeConfig(model_uri="models:/bp/3", tracking_uri=db))
    named = model_source(ServeConfig(registered_model="bp", alias="staging", tracking_uri=db))
    local = model_source(ServeConfig(policy_path=tmp_path / "p.pt"))
    assert isinstance(follow, RegistrySource) and (follow.name, follow.alias) == ("bp", "champion")
    assert isinstance(fixed, RegistrySource) and fixed.target_version() == "bp/3"
    assert isinstance(named, RegistrySource) and named.alias == "staging"
    assert isinstance(local, FileSource)
    assert not (tmp_path / "mlflow.db").exists()
    with pytest.raises(ValueError, match="model_uri"):
        RegistrySource.from_uri("models:/bp/latest", db)


def test_the_shipped_config_loads_with_the_defaults():
    from pathlib import Path

    shipped = load_config(Path(__file__).resolve().parents[2] / "configs" / "serve" / "default.yaml")
    defaults = ServeConfig()
    assert shipped.model_uri == "models:/banner-policy@champion"
    assert shipped.model_dump(exclude={"model_uri"}) == defaults.model_dump(exclude={"model_uri"})


def test_workers_default_to_one_and_must_be_at_least_one():
    assert load_config(None).workers == 1 and load_config(None, {"workers": 4}).workers == 4
    with pytest.raises(ConfigError, match=r"workers: Input should be greater than or equal to 1"):
        load_config(None, {"workers": 0})
