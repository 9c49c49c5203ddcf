"""Root command group. Subcommands live in sibling modules and register themselves here."""

from __future__ import annotations

import click

from modelmora import __version__
from modelmora.cli._common import ModelMoraGroup


@click.group(cls=ModelMoraGroup)
@click.version_option(__version__, prog_name="modelmora")
@click.option(
    "-C",
    "--project",
    "project",
    type=click.Path(file_okay=False, path_type=str),
    default=None,
    help="Project directory (holds modelmora.yml). Default: search upward from the cwd.",
)
@click.pass_context
def main(ctx: click.Context, project: str | None) -> None:
    """Lock, install, convert, validate, benchmark and serve ML models."""
    ctx.obj = {"project": project}


def _register() -> None:
    # Imported for their side effect of adding commands to ``main``.
    from modelmora.cli import project  # noqa: F401


_register()
