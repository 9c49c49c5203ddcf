"""Root command group. Subcommands are imported only when invoked, so ``modelmora install``'s
no-op path and ``--help`` never pay for Dagster, DuckDB, torch or the HTTP stack."""

from __future__ import annotations

from importlib import import_module

import click

from modelmora import __version__
from modelmora.cli._common import ModelMoraGroup

# name → "module:attribute" of a click command: the one place commands are registered.
COMMANDS: dict[str, str] = {
    "init": "modelmora.cli.project:init",
    "add": "modelmora.cli.project:add",
    "remove": "modelmora.cli.project:remove",
    "lock": "modelmora.cli.project:lock",
    "pull": "modelmora.cli.cache:pull_command",
    "install": "modelmora.cli.install:install",
    "list": "modelmora.cli.install:list_models",
    "show": "modelmora.cli.install:show",
    "bench": "modelmora.cli.install:bench",
    "ui": "modelmora.cli.install:ui",
    "serve": "modelmora.cli.serve:serve",
    "cache": "modelmora.cli.cache:cache_group",
    "search": "modelmora.cli.search:search",
    "export": "modelmora.cli.export:export_group",
}


class LazyGroup(ModelMoraGroup):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        command = getattr(import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup)
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
