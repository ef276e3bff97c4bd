"""The pages a user reads: README stays a short guide, no page talks about how the work was
organised, and the reference pages are generated from the code, so a new option shows up by itself."""

from __future__ import annotations

import re
import sys

import pytest
from pydantic import BaseModel

from tests.docs.blocks import ROOT, pages

sys.path.insert(0, str(ROOT / "docs"))
import hooks  # noqa: E402  (docs/hooks.py, the MkDocs hook)

WORKFLOW_WORDS = re.compile(r"\bstop \d+\b|\bscratch\b|\bthis machine\b|\bhelper\b|\bsession\b", re.I)


def test_readme_is_a_short_guide():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pages_do_not_talk_about_how_the_work_was_organised(page):
    found = [m.group(0) for m in WORKFLOW_WORDS.finditer(page.read_text())]
    assert not found, f"{page.name}: {found}"


def test_cli_reference_has_every_command_and_option():
    import typer.main

    from recsys_rl.cli.main import app

    text = hooks.cli_markdown()
    root = typer.main.get_command(app)
    assert root.commands
    for name, cmd in root.commands.items():
        assert f"## `recsys-rl {name}`" in text
        for p in cmd.params:
            for opt in p.opts:
                assert f"`{opt}`" in text, f"{name} {opt}"


def _fields(model: type[BaseModel], prefix: str = ""):
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _fields(ann, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def test_config_reference_has_every_field_of_every_model():
    text = hooks.config_markdown()
    for _, path in hooks.CONFIG_MODELS:
        for key in _fields(hooks._load(path)):
            assert f"| `{key}` |" in text, f"{path}: {key}"


def test_http_reference_has_every_endpoint():
    from serving.app import create_app
    from serving.config import ServeConfig

    text = hooks.http_markdown()
    for path, methods in create_app(ServeConfig()).openapi()["paths"].items():
        for method in methods:
            assert f"## `{method.upper()} {path}`" in text
