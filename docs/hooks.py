"""MkDocs hook: the reference pages are generated from the code, so a new option or field appears
in the docs without editing them.

A page asks for a generated section with a marker line, e.g. ``<!-- generated: cli -->``; the hook
replaces it with Markdown built from the typer app (``cli``), the pydantic config models
(``config``) or the service's OpenAPI document (``http``). To document another config model, add it
to ``CONFIG_MODELS``.
"""

from __future__ import annotations

import importlib
import json
import re
import warnings

import typer.main
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

CLI_APP = "recsys_rl.cli.main:app"

# (title, "module:Class"): one section per model, nested models listed after their parent.
CONFIG_MODELS = [
    ("Run config (`recsys-rl train`, `sweep`, `train-online`, `quickstart`)", "recsys_rl.config:RunConfig"),
    ("Banner service (`recsys-rl serve`)", "serving.config:ServeConfig"),
    ("Reward model (`recsys-rl train-reward-model`)", "recsys_rl.reward_model.config:RewardModelConfig"),
    ("Column mapping of logged data (`--mapping`)", "recsys_rl.logdata.mapping:ColumnMapping"),
    ("Reward scheme (`configs/rewards/*.yaml`)", "recsys_rl.config:RewardScheme"),
    ("Sweep search space (`recsys-rl sweep --ray --search`)", "recsys_rl.config:SearchConfig"),
]

MARKER = re.compile(r"^<!-- generated: (\w+) -->$", re.MULTILINE)


def _load(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


# ---- CLI ---------------------------------------------------------------------------------------
# Typer builds a click-style command tree (its own vendored click): commands with ``params``, each
# with ``opts``, ``secondary_opts``, ``default``, ``required``, ``is_flag`` and ``help``.


def _option_type(p) -> str:
    if getattr(p, "is_flag", False):
        return "flag"
    return _cell(_type_name(p.type_descriptor.annotation))


def _default(p) -> str:
    if p.required:
        return "required"
    d = p.default
    if d is None or d == () or d == [] or callable(d):
        return ""
    if getattr(p, "is_flag", False) and p.secondary_opts:
        return f"`{p.opts[0] if d else p.secondary_opts[0]}`"
    return f"`{d}`"


def cli_markdown() -> str:
    """Every command of the typer app: its help, then a table of its options."""
    root = typer.main.get_command(_load(CLI_APP))
    out = [_cell(root.help or "")]
    for name in sorted(root.commands):
        cmd = root.commands[name]
        out += [f"\n## `recsys-rl {name}`\n", (cmd.help or "").strip(), ""]
        params = [p for p in cmd.params if p.name != "help"]
        if not params:
            continue
        out += ["| option | type | default | help |", "| --- | --- | --- | --- |"]
        for p in params:
            names = ", ".join(f"`{o}`" for o in (*p.opts, *p.secondary_opts))
            if p.param_type_name == "argument":
                names = f"`{p.name.upper()}` (argument)"
            out.append(
                f"| {names} | {_option_type(p)} | {_default(p)} | {_cell(getattr(p, 'help', '') or '')} |"
            )
    return "\n".join(out) + "\n"


# ---- config ------------------------------------------------------------------------------------


def _nested(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _type_name(annotation) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation).replace("typing.", "")
    return re.sub(r"\b[\w.]+\.(\w+)", r"\1", text)


def _field_default(info) -> str:
    if info.default is not PydanticUndefined:
        return f"`{json.dumps(info.default, default=str)}`"
    if info.default_factory is not None:
        value = info.default_factory()
        if isinstance(value, BaseModel):
            return "(section)"
        return f"`{json.dumps(value, default=str)}`"
    return "required"


def _model_markdown(model: type[BaseModel], prefix: str, out: list[str], seen: set) -> None:
    rows, children = [], []
    for name, info in model.model_fields.items():
        child = _nested(info.annotation)
        if child is not None and child not in seen:
            children.append((f"{prefix}{name}.", child))
            continue
        rows.append(
            f"| `{prefix}{name}` | {_cell(_type_name(info.annotation))} | {_field_default(info)} | "
            f"{_cell(info.description or '')} |"
        )
    if rows:
        out += ["| field | type | default | description |", "| --- | --- | --- | --- |", *rows, ""]
    for child_prefix, child in children:
        seen.add(child)
        out += [f"#### `{child_prefix.rstrip('.')}`", "", _cell(child.__doc__ or ""), ""]
        _model_markdown(child, child_prefix, out, seen)


def config_markdown() -> str:
    """Every field of every model in CONFIG_MODELS: dotted key, type, default, description."""
    out: list[str] = []
    for title, path in CONFIG_MODELS:
        model = _load(path)
        out += [f"## {title}", "", f"`{path}`: {_cell(model.__doc__ or '')}", ""]
        _model_markdown(model, "", out, {model})
    return "\n".join(out) + "\n"


# ---- HTTP --------------------------------------------------------------------------------------


def _schema_name(schema: dict) -> str:
    if "$ref" in schema:
        return f"`{schema['$ref'].rsplit('/', 1)[-1]}`"
    if "anyOf" in schema:
        return " or ".join(_schema_name(s) for s in schema["anyOf"])
    if schema.get("type") == "array":
        return f"array of {_schema_name(schema.get('items', {}))}"
    return schema.get("type", "any")


def http_markdown() -> str:
    """Every path and method of the service's OpenAPI document, then every schema's properties."""
    from serving.app import create_app
    from serving.config import ServeConfig

    doc = create_app(ServeConfig()).openapi()
    out = [f"OpenAPI {doc['openapi']}, `{doc['info']['title']}` {doc['info'].get('version', '')}.", ""]
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            out += [f"## `{method.upper()} {path}`", "", _cell(op.get("summary", "")), ""]
            if op.get("description"):
                out += [op["description"].strip(), ""]
            body = op.get("requestBody", {}).get("content", {})
            for media, spec in body.items():
                out += [f"Request body ({media}): {_schema_name(spec.get('schema', {}))}", ""]
            out += ["| status | meaning | body |", "| --- | --- | --- |"]
            for status, resp in op.get("responses", {}).items():
                schema = next(iter(resp.get("content", {}).values()), {}).get("schema", {})
                out.append(f"| {status} | {_cell(resp.get('description', ''))} | {_schema_name(schema)} |")
            out.append("")
    out += ["## Schemas", ""]
    for name, schema in doc.get("components", {}).get("schemas", {}).items():
        out += [f"### `{name}`", "", _cell(schema.get("description", "")), ""]
        props = schema.get("properties", {})
        if props:
            required = set(schema.get("required", []))
            out += ["| property | type | required | description |", "| --- | --- | --- | --- |"]
            for prop, spec in props.items():
                out.append(
                    f"| `{prop}` | {_cell(_schema_name(spec))} | {'yes' if prop in required else ''} | "
                    f"{_cell(spec.get('description', ''))} |"
                )
            out.append("")
    return "\n".join(out) + "\n"


GENERATORS = {"cli": cli_markdown, "config": config_markdown, "http": http_markdown}


def on_page_markdown(markdown: str, page, config, files) -> str:
    with warnings.catch_warnings():  # importing the engine wakes MLflow's model-logging advice
        warnings.simplefilter("ignore")
        return MARKER.sub(lambda m: GENERATORS[m.group(1)](), markdown)
