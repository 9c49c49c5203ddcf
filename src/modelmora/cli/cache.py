"""``modelmora pull`` and the ``modelmora cache`` group: thin shells over modelmora.cache."""

from __future__ import annotations

import logging
import sys
import time
from contextlib import nullcontext
from typing import Any

import click

from modelmora.cache import Store, collect_garbage, pull, verify_store
from modelmora.cache.download import PullReport
from modelmora.cache.progress import NullProgress, PullProgress, RichProgress
from modelmora.cli._common import echo_json, find_project_dir
from modelmora.errors import ModelMoraError
from modelmora.index import Index
from modelmora.project import Project


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


class _WarnHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        _warn(record.getMessage())


def _route_warnings() -> None:
    """Library warnings (a corrupt blob re-fetched, a resumed download) reach stderr."""
    logger = logging.getLogger("modelmora.cache")
    if not any(isinstance(h, _WarnHandler) for h in logger.handlers):
        handler = _WarnHandler(logging.WARNING)
        logger.addHandler(handler)
        logger.propagate = False


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


@click.command("pull")
@click.argument("names", nargs=-1)
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    envvar="MODELMORA_JOBS",
    help="Files downloaded in parallel (env MODELMORA_JOBS).",
)
@click.option(
    "--offline",
    is_flag=True,
    help="Use the cache only; fail listing what is missing (also HF_HUB_OFFLINE=1).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress display, no summary.")
@click.option("--json", "as_json", is_flag=True, help="Print the pull report as JSON.")
@click.pass_context
def pull_command(
    ctx: click.Context,
    names: tuple[str, ...],
    jobs: int,
    offline: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Download and verify the locked models (all, or NAMES) into the cache.

    Only download + verify + snapshot: no conversion. Useful to pre-fetch in CI or in a
    Docker layer; `modelmora install` does the rest.
    """
    _route_warnings()
    project = Project(find_project_dir(ctx))
    show = not quiet and not as_json and sys.stderr.isatty()
    progress: PullProgress = RichProgress() if show else NullProgress()
    started = time.perf_counter()
    with progress if isinstance(progress, RichProgress) else nullcontext():
        store = Store()
        report = pull(
            project,
            names,
            store=store,
            mirror=Index(store, notify=_warn),
            jobs=jobs,
            offline=True if offline else None,
            progress=progress,
            notify=_warn,
        )
    if as_json:
        echo_json(report.to_json())
    elif not quiet:
        _print_pull(report, time.perf_counter() - started)


def _print_pull(report: PullReport, seconds: float) -> None:
    if not report.models:
        click.echo("Nothing to pull: modelmora.lock has no models.")
        return
    for m in report.models:
        fetched = f", {m.fetched} fetched ({_human(m.bytes_fetched)})" if m.fetched else ""
        click.echo(f"✓ {m.name}: {m.files} files{fetched} → {m.snapshot}")
    rate = report.bytes_fetched / seconds if seconds > 0 else 0.0
    click.echo(
        f"{report.blobs_fetched} blob(s) fetched ({_human(report.bytes_fetched)}"
        f"{f', {_human(rate)}/s' if report.bytes_fetched else ''}), "
        f"{report.blobs_present} already cached, in {seconds:.1f} s"
    )


@click.group("cache")
def cache_group() -> None:
    """Inspect and maintain the model cache (MODELMORA_HOME)."""
    _route_warnings()


@cache_group.command("path")
@click.argument("name", required=False)
@click.pass_context
def path_command(ctx: click.Context, name: str | None) -> None:
    """Print the cache directory, or the snapshot directory of a pulled model NAME.

    The snapshot is a normal directory: `AutoModel.from_pretrained("$(modelmora cache path
    NAME)")` loads it.
    """
    store = Store()
    if name is None:
        click.echo(str(store.root))
        return
    project = Project(find_project_dir(ctx))
    lock = project.read_lock()
    (entry,) = lock.select([name])
    if store.read_snapshot(entry.name, entry.content_digest()) is None:
        raise ModelMoraError(
            f"{name} is locked but not in the cache {store.root}",
            hint=f"run `modelmora pull {name}`",
        )
    click.echo(str(store.snapshot_dir(entry.name, entry.content_digest())))


@cache_group.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ls_command(as_json: bool) -> None:
    """List the model snapshots in the cache (from index.duckdb)."""
    from modelmora.index import Index

    store = Store()
    rows = Index(store, notify=_warn).list_snapshots()
    if as_json:
        echo_json([dict(r.to_json(), path=str(store.root / r.path)) for r in rows])
        return
    if not rows:
        click.echo(f"The cache {store.root} holds no models yet (`modelmora pull`).")
        return
    width = max(len(r.name) for r in rows)
    click.echo(f"{'NAME':<{width}}  {'REVISION':<12}  {'FILES':>5}  {'SIZE':>9}  SOURCE")
    for r in rows:
        click.echo(
            f"{r.name:<{width}}  {r.revision[:12]:<12}  {r.file_count:>5}  "
            f"{_human(r.total_size):>9}  {r.source}"
        )


@cache_group.command("verify")
@click.option("--full", is_flag=True, help="Re-hash every byte (default: trust the stat cache).")
@click.option(
    "--repair",
    is_flag=True,
    help="Delete corrupt blobs, their snapshots and corrupt artifacts (pull/install after).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def verify_command(full: bool, repair: bool, as_json: bool) -> None:
    """Check every blob against its sha256, every snapshot against its record and blobs, and
    every converted artifact against the file digests install recorded.

    Exit 1 if anything is corrupt or missing.
    """
    store = Store()
    started = time.perf_counter()
    report = verify_store(store, full=full, repair=repair)
    elapsed = time.perf_counter() - started
    if as_json:
        echo_json(dict(report.to_json(), seconds=round(elapsed, 4)))
    else:
        for problem in report.problems:
            click.echo(f"✗ {problem}", err=True)
        for line in report.repaired:
            click.echo(f"repaired: {line}", err=True)
        verdict = "OK" if report.ok else f"{len(report.problems)} problem(s)"
        click.echo(
            f"{report.blobs} blobs ({_human(report.bytes)}), {report.snapshots} snapshots, "
            f"{report.artifacts} artifacts; "
            f"re-hashed {report.rehashed} ({_human(report.rehashed_bytes)}) in "
            f"{elapsed * 1000:.0f} ms: {verdict}"
        )
        if not report.ok and not repair:
            click.echo(
                "hint: `modelmora cache verify --repair` removes what is broken; "
                "`modelmora pull` then fetches it again, `modelmora install` rebuilds it",
                err=True,
            )
    if not report.ok:
        sys.exit(1)


@cache_group.command("gc")
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def gc_command(dry_run: bool, as_json: bool) -> None:
    """Delete snapshots and blobs no registered project's lock references.

    Also deletes converted artifacts no locked model's install uses, and the sources'
    download caches (tfhub archives, git mirrors) once every model that came from them is
    in the store.
    """
    store = Store()
    report = collect_garbage(store, mirror=Index(store, notify=_warn), dry_run=dry_run)
    if as_json:
        echo_json(report.to_json())
        return
    verb = "would remove" if dry_run else "removed"
    for project_dir in report.dropped_projects:
        click.echo(f"{'would forget' if dry_run else 'forgot'} project {project_dir} (gone)")
    for name, digest in report.snapshots:
        click.echo(f"{verb} snapshot {name}@{digest[:12]}")
    for key, model, _ in report.artifacts:
        click.echo(f"{verb} artifact {key[:16]} ({model})")
    for relpath, _ in report.source_caches:
        click.echo(f"{verb} source cache {relpath}")
    for cache, model in report.kept_source_caches:
        click.echo(f"kept {cache}/: {model}'s blobs are not all in the store yet (run `pull`)")
    for what in report.skipped_busy:
        click.echo(f"skipped {what[:40]}: a lock or pull is using it", err=True)
    click.echo(
        f"{verb} {len(report.snapshots)} snapshot(s), {len(report.blobs)} blob(s), "
        f"{len(report.partials)} partial download(s), {len(report.artifacts)} artifact(s), "
        f"{len(report.source_caches)} source cache(s): {_human(report.freed_bytes)}; "
        f"kept what {len(report.projects)} registered project(s) reference"
    )


@cache_group.command("reindex")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def reindex_command(as_json: bool) -> None:
    """Rebuild index.duckdb from the store (the store is the source of truth)."""
    from modelmora.index import Index

    store = Store()
    counts: dict[str, Any] = Index(store, notify=_warn).rebuild()
    if as_json:
        echo_json(dict(counts, index=str(store.index_path)))
        return
    click.echo(
        f"Rebuilt {store.index_path}: {counts.get('snapshots', 0)} snapshots, "
        f"{counts.get('blobs', 0)} blobs, {counts.get('projects', 0)} projects"
    )


__all__ = ["cache_group", "pull_command"]
