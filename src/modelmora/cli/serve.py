"""``modelmora serve``: the HTTP server (OpenAI embeddings, KServe v2, metrics)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from modelmora import netutil
from modelmora.cli._common import find_project_dir
from modelmora.errors import UserInputError
from modelmora.manifest.model import ServeSpec

_SERVE_FIELDS = tuple(ServeSpec.model_fields)
_MODEL_FIELDS = ("task", "backend", "onnx_file", "threads", "spin")


def _split(arg: str, sep: str, option: str, form: str) -> tuple[str, str]:
    left, found, right = arg.partition(sep)
    if not found or not left or not right:
        raise UserInputError(f"{option} {arg!r}: expected {form}")
    return left.strip(), right.strip()


def _models(model_args: tuple[str, ...], set_args: tuple[str, ...]) -> list[Any]:
    from modelmora.serve.config import ServedModel, detect_task

    dirs: dict[str, Path] = {}
    for arg in model_args:
        name, raw = _split(arg, "=", "--model", "NAME=ARTIFACT_DIR")
        if name in dirs:
            raise UserInputError(f"--model {name!r} is given twice")
        path = Path(raw).expanduser().resolve()
        if not path.is_dir():
            raise UserInputError(f"--model {arg!r}: {path} is not a directory")
        dirs[name] = path
    overrides: dict[str, dict[str, Any]] = {name: {} for name in dirs}
    for arg in set_args:
        target, value = _split(arg, "=", "--set", "NAME.FIELD=VALUE")
        name, field = _split(target, ".", "--set", "NAME.FIELD=VALUE")
        if name not in dirs:
            raise UserInputError(f"--set {arg!r}: no --model named {name!r}")
        if field not in (*_SERVE_FIELDS, *_MODEL_FIELDS):
            raise UserInputError(
                f"--set {arg!r}: unknown field {field!r}",
                hint="one of " + ", ".join((*_SERVE_FIELDS, *_MODEL_FIELDS)),
            )
        overrides[name][field] = value
    models = []
    for name, path in dirs.items():
        extra = overrides[name]
        fields: dict[str, Any] = {k: extra[k] for k in _MODEL_FIELDS if k in extra}
        fields["serve"] = {k: extra[k] for k in _SERVE_FIELDS if k in extra}
        if "task" not in fields:
            fields["task"] = detect_task(path)
        try:
            models.append(ServedModel(name=name, artifact_dir=path, **fields))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise UserInputError(f"--model {name}: {problems}") from None
    return models


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="0 = any free."
)
@click.option(
    "--api-key",
    envvar="MODELMORA_API_KEY",
    show_envvar=True,
    default=None,
    help="Require 'Authorization: Bearer KEY' (health endpoints stay open). Prefer the env var.",
)
@click.option("--max-loaded-models", type=click.IntRange(min=1), help="Evict LRU models beyond N.")
@click.option(
    "--memory-budget",
    type=click.FloatRange(min=0, min_open=True),
    metavar="MB",
    help="Evict LRU models while workers' resident memory would exceed MB.",
)
@click.option(
    "--max-body-bytes",
    type=click.IntRange(min=1024),
    default=16 * 1024 * 1024,
    show_default=True,
    help="Larger request bodies get 413.",
)
@click.option(
    "--preload",
    multiple=True,
    metavar="NAME[,NAME…]",
    help="Load these models at start-up instead of on first request (repeatable).",
)
@click.option(
    "--model",
    "model_args",
    multiple=True,
    metavar="NAME=ARTIFACT_DIR",
    help="Serve the ONNX artifact directory under NAME (repeatable).",
)
@click.option(
    "--set",
    "set_args",
    multiple=True,
    metavar="NAME.FIELD=VALUE",
    help="Per-model setting: " + ", ".join((*_SERVE_FIELDS, *_MODEL_FIELDS)) + ".",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10,
    show_default=True,
    metavar="S",
    help="Seconds a client has to send the request line and headers (then 408).",
)
@click.option(
    "--body-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60,
    show_default=True,
    metavar="S",
    help="Seconds a client has to send the request body after its headers (then 408).",
)
@click.option(
    "--max-header-bytes",
    type=click.IntRange(min=1024),
    default=64 * 1024,
    show_default=True,
    help="Larger request line + headers get 431.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Open connections beyond this get 503.",
)
@click.option("--access-log/--no-access-log", default=False, show_default=True)
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    api_key: str | None,
    max_loaded_models: int | None,
    memory_budget: float | None,
    max_body_bytes: int,
    preload: tuple[str, ...],
    model_args: tuple[str, ...],
    set_args: tuple[str, ...],
    header_timeout: float,
    body_timeout: float,
    max_header_bytes: int,
    max_connections: int,
    access_log: bool,
) -> None:
    """Serve models over HTTP: one worker process per model, batching, priority, LRU."""
    from modelmora.serve import server
    from modelmora.serve.config import ServerSettings
    from modelmora.serve.discovery import discover

    # click reads an empty MODELMORA_API_KEY as unset; an empty key must not mean "no auth".
    if api_key is None:
        api_key = os.environ.get("MODELMORA_API_KEY")
    if api_key is not None and not api_key.strip():
        raise UserInputError(
            "the API key is empty (--api-key or MODELMORA_API_KEY)",
            hint="set a real key, or unset MODELMORA_API_KEY to serve without one",
        )
    if api_key is None and not netutil.is_loopback(host):
        click.echo(
            f"warning: serving on {host} without an API key: anyone who can reach this "
            "address can use the models (set MODELMORA_API_KEY)",
            err=True,
        )

    models = _models(model_args, set_args) if model_args else discover(find_project_dir(ctx))
    settings = ServerSettings(
        host=host,
        port=port,
        api_key=api_key,
        max_loaded_models=max_loaded_models,
        memory_budget_mb=memory_budget,
        max_body_bytes=max_body_bytes,
        preload=tuple(n.strip() for arg in preload for n in arg.split(",") if n.strip()),
        header_timeout_s=header_timeout,
        body_timeout_s=body_timeout,
        max_header_bytes=max_header_bytes,
        max_connections=max_connections,
    )
    server.run(settings, models, access_log=access_log)
