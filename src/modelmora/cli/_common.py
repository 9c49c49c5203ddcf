"""What every command shares: user-error handling, project discovery, JSON output."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from modelmora.errors import ModelMoraError
from modelmora.names import MANIFEST_NAME


class ModelMoraGroup(click.Group):
    """A group that turns :class:`ModelMoraError` into a message and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ModelMoraError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)


def find_project_dir(ctx: click.Context) -> Path:
    """The directory holding ``modelmora.yml``: ``-C`` if given, else the nearest ancestor."""
    explicit = (ctx.find_root().obj or {}).get("project")
    if explicit:
        return Path(explicit).resolve()
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if (d / MANIFEST_NAME).is_file():
            return d
    return here


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


@contextmanager
def status(message: str, *, quiet: bool = False) -> Iterator[None]:
    """A spinner on stderr while work runs; silent when stderr is not a terminal."""
    if quiet or not sys.stderr.isatty():
        yield
        return
    from rich.console import Console

    console = Console(stderr=True)
    with console.status(message):
        yield
