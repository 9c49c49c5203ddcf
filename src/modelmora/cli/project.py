"""Project commands: ``init``, ``add``, ``remove``, ``lock``."""

from __future__ import annotations

import sys
import time
from collections.abc import Collection
from typing import Any

import click

from modelmora.cache.store import Store
from modelmora.cli._common import echo_json, find_project_dir, status
from modelmora.errors import UserInputError
from modelmora.fsutil import atomic_write_bytes
from modelmora.lock import read_lock
from modelmora.lock.check import Drift, check_lock
from modelmora.lock.resolve import ModelChange
from modelmora.manifest.edit import add_model, init_manifest, remove_model, suggest_name
from modelmora.project import Project

_MARK = {"added": "+", "updated": "~", "unchanged": "=", "removed": "-"}


@click.command()
@click.pass_context
def init(ctx: click.Context) -> None:
    """Create a commented modelmora.yml in the project directory."""
    project = Project(find_project_dir(ctx))
    init_manifest(project.manifest_path)
    click.echo(f"Created {project.manifest_path}")
    click.echo("Next: `modelmora add hf://ORG/NAME` or edit the file, then `modelmora lock`.")


@click.command()
@click.argument("source")
@click.option("--name", help="Model name in modelmora.yml (default: derived from SOURCE).")
@click.option("--task", help="Task, e.g. feature-extraction, text-classification.")
@click.option("--sha256", help="Expected sha256 (required for https:// sources).")
@click.option("--registry", help="Registry block of modelmora.yml to use (endpoint, token).")
@click.option(
    "--trust-remote-code",
    is_flag=True,
    help="Allow running the model's own code (required for torchhub:// sources).",
)
@click.option("--no-lock", is_flag=True, help="Only edit modelmora.yml; do not lock.")
@click.pass_context
def add(
    ctx: click.Context,
    source: str,
    name: str | None,
    task: str | None,
    sha256: str | None,
    registry: str | None,
    trust_remote_code: bool,
    no_lock: bool,
) -> None:
    """Add a model to modelmora.yml (comments and order kept), then lock it.

    If locking fails the manifest is restored, so a typo never leaves a half-added model.
    """
    project = Project(find_project_dir(ctx))
    existing = project.manifest.manifest.models
    name = name or suggest_name(source, existing)
    spec: dict[str, Any] = {"source": source}
    if task:
        spec["task"] = task
    if sha256:
        spec["sha256"] = sha256
    if registry:
        spec["registry"] = registry
    if trust_remote_code:
        spec["trust_remote_code"] = True
    original = project.manifest_path.read_bytes()
    add_model(project.manifest_path, name, spec)
    added = f"Added {name} ({source}) to {project.manifest_path.name}"
    if no_lock:
        click.echo(added)
        return
    try:
        _lock(Project(project.dir), upgrade=(), jobs=8, as_json=False, only=[name])
    except BaseException:
        atomic_write_bytes(project.manifest_path, original)
        click.echo(
            f"Not added: locking {name} failed; {project.manifest_path.name} restored.", err=True
        )
        raise
    click.echo(added)


@click.command()
@click.argument("name")
@click.option("--no-lock", is_flag=True, help="Only edit modelmora.yml; do not lock.")
@click.pass_context
def remove(ctx: click.Context, name: str, no_lock: bool) -> None:
    """Remove a model from modelmora.yml and from the lock."""
    project = Project(find_project_dir(ctx))
    remove_model(project.manifest_path, name)
    click.echo(f"Removed {name} from {project.manifest_path.name}")
    if not no_lock:
        _lock(Project(project.dir), upgrade=(), jobs=8, as_json=False)


@click.command()
@click.option("--check", is_flag=True, help="Exit 1 naming each model and field that drifted.")
@click.option(
    "--upgrade",
    "-U",
    "upgrade",
    multiple=True,
    is_flag=False,
    flag_value="*",
    metavar="[NAME]",
    help="Re-resolve branches and tags: all models, or NAME (repeatable).",
)
@click.option("--jobs", "-j", default=8, show_default=True, help="Models resolved in parallel.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.pass_context
def lock(
    ctx: click.Context, check: bool, upgrade: tuple[str, ...], jobs: int, as_json: bool
) -> None:
    """Resolve modelmora.yml into modelmora.lock (pins kept unless --upgrade)."""
    project = Project(find_project_dir(ctx))
    if check:
        if upgrade:
            raise UserInputError("--check and --upgrade cannot be combined")
        sys.exit(_check(project, as_json=as_json))
    _lock(project, upgrade=upgrade, jobs=jobs, as_json=as_json)


def _lock(
    project: Project,
    *,
    upgrade: Collection[str],
    jobs: int,
    as_json: bool,
    only: Collection[str] = (),
    quiet: bool = False,
) -> None:
    """``Project.lock`` with the CLI's report: each change as it resolves (or only those of
    ``only``), then one summary line; JSON instead with ``as_json``; nothing with ``quiet``."""
    started = time.perf_counter()
    upgrade_arg: bool | Collection[str] = True if "*" in upgrade else set(upgrade)

    def report(change: ModelChange) -> None:
        if not as_json and not quiet and (not only or change.name in only):
            _print_change(change)

    with status(f"Resolving {len(project.specs())} model(s)…", quiet=as_json or quiet):
        result, changed_file = project.lock(
            upgrade=upgrade_arg, jobs=jobs, on_done=report, scratch_dir=Store().tmp_dir
        )
    elapsed = time.perf_counter() - started
    if quiet:
        return
    if as_json:
        echo_json(
            {
                "lock": str(project.lock_path.name),
                "written": changed_file,
                "seconds": round(elapsed, 3),
                "models": [vars(c) for c in result.changes],
            }
        )
        return
    for change in result.changes:
        if change.action == "removed":
            _print_change(change)
    verb = "Updated" if changed_file else "Unchanged:"
    click.echo(
        f"{verb} {project.lock_path.name} ({len(result.lock.models)} models) in {elapsed:.2f}s",
        err=True,
    )


def lock_project(project: Project, *, quiet: bool = False) -> None:
    """Lock keeping every pin, reported as ``modelmora lock`` does (``install`` when the lock
    is out of date)."""
    _lock(project, upgrade=(), jobs=8, as_json=False, quiet=quiet)


def _print_change(change: ModelChange) -> None:
    detail = f"{change.revision}  {change.files} files" if change.revision else change.reason
    extra = f"  ({change.reason})" if change.reason and change.revision else ""
    click.echo(f"{_MARK[change.action]} {change.name}  {detail}{extra}")


def _check(project: Project, *, as_json: bool) -> int:
    lock_file = read_lock(project.lock_path)
    specs = project.specs()
    drifts = check_lock(specs, lock_file, project.source_context())
    if as_json:
        echo_json({"up_to_date": not drifts, "drift": [d.as_json() for d in drifts]})
    elif drifts:
        for d in drifts:
            click.echo(f"{_where(project, d)}{d.describe()}")
        models = sorted({d.model for d in drifts})
        click.echo(
            f"{project.lock_path.name} is out of date for {len(models)} model(s): "
            f"{', '.join(models)}. Run `modelmora lock`.",
            err=True,
        )
    else:
        click.echo(f"{project.lock_path.name} is up to date ({len(lock_file.models)} models).")
    return 1 if drifts else 0


def _where(project: Project, drift: Drift) -> str:
    """``modelmora.yml:LINE:COL `` of the drifted field (or its nearest declared parent)."""
    keys = list(drift.keys)
    while keys:
        pos = project.manifest.location(tuple(keys))
        if pos:
            return f"{project.manifest_path.name}:{pos[0]}:{pos[1]} "
        keys.pop()
    return ""
