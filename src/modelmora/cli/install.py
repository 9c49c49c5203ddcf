"""``install``, ``list``, ``show``, ``bench``, ``ui``: the pipeline's commands.

``install`` checks its no-op fast path before importing Dagster, torch or DuckDB.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from modelmora.cli._common import echo_json, find_project_dir
from modelmora.names import LOCK_NAME, MANIFEST_NAME

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rich.table import Table

    from modelmora.index.status import ModelStatus
    from modelmora.lock import LockFile
    from modelmora.pipeline.install import ModelOutcome
    from modelmora.project import Project

_MARKS = {
    "ok": "[green]✓[/]",
    "failed": "[red]✗[/]",
    "skipped": "[dim]–[/]",
    "missing": "[dim]·[/]",
}


@click.command()
@click.argument("names", nargs=-1)
@click.option("--locked", is_flag=True, help="Fail (exit 1) if modelmora.lock is out of date.")
@click.option("--frozen", is_flag=True, help="Use modelmora.lock as is, without checking it.")
@click.option(
    "--backend",
    "-b",
    "backends",
    multiple=True,
    help="Benchmark these backends instead of each model's `backends` (repeatable).",
)
@click.option(
    "--jobs",
    "-j",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Models installed at the same time.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the per-model outcome as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress, only the summary.")
@click.option(
    "--verbose", "-v", is_flag=True, help="Also print the run's log (library warnings included)."
)
@click.pass_context
def install(
    ctx: click.Context,
    names: tuple[str, ...],
    locked: bool,
    frozen: bool,
    backends: tuple[str, ...],
    jobs: int,
    as_json: bool,
    quiet: bool,
    verbose: bool,
) -> None:
    """Download, convert, validate and benchmark every locked model (or NAMES).

    Runs on the project's Dagster instance (.modelmora/dagster), so every run appears in
    `modelmora ui`. Exit code 0 only if every selected model was installed.
    """
    from modelmora.home import modelmora_home
    from modelmora.pipeline.fastpath import is_installed

    project_dir = find_project_dir(ctx)
    manifest, lock_path = project_dir / MANIFEST_NAME, project_dir / LOCK_NAME
    home = modelmora_home().absolute()
    if not (locked and frozen) and is_installed(
        project_dir, manifest, lock_path, home, names, backends
    ):
        if as_json:
            echo_json({"up_to_date": True, "models": []})
        else:
            click.echo("Everything is installed; nothing to do.")
        return
    request = _InstallRequest(names, locked, frozen, backends, jobs, as_json, quiet, verbose)
    sys.exit(_install(project_dir, request))


@dataclass(frozen=True)
class _InstallRequest:
    """What ``install`` was asked (its options), past the no-op fast path."""

    names: tuple[str, ...]
    locked: bool
    frozen: bool
    backends: tuple[str, ...]
    jobs: int
    as_json: bool
    quiet_flag: bool
    verbose: bool

    @property
    def quiet(self) -> bool:
        return self.as_json or self.quiet_flag


def _install(project_dir: Path, request: _InstallRequest) -> int:
    from modelmora.cache import Store
    from modelmora.errors import UserInputError
    from modelmora.pipeline.fastpath import write_state
    from modelmora.project import Project
    from modelmora.records import artifact_path

    if request.locked and request.frozen:
        raise UserInputError("--locked and --frozen cannot be combined")
    project = Project(project_dir)
    lock = _lock_for_install(
        project, locked=request.locked, frozen=request.frozen, quiet=request.quiet
    )
    selected = [entry.name for entry in lock.select(request.names)]
    store = Store()
    started = time.perf_counter()
    outcomes = _run_with_progress(project, lock, selected, store, request)
    from modelmora.index import Index

    statuses = Index(store).statuses([lock.models[n] for n in selected])
    ok = all(o.ok for o in outcomes)
    if request.as_json:
        echo_json(
            {
                "up_to_date": False,
                "ok": ok,
                "seconds": round(time.perf_counter() - started, 2),
                "models": [
                    {**s.to_json(), "run_id": o.run_id, "error": o.error or None}
                    for s, o in zip(statuses, outcomes, strict=True)
                ],
            }
        )
    else:
        _summary(statuses, outcomes, time.perf_counter() - started)
    if ok and not request.names:
        write_state(
            project.dir,
            project.manifest_path,
            project.lock_path,
            store.root,
            request.backends,
            {s.name: [artifact_path(Path(a.path)) for a in s.artifacts] for s in statuses},
        )
    return 0 if ok else 1


def _lock_for_install(project: Project, *, locked: bool, frozen: bool, quiet: bool) -> LockFile:
    """``--frozen``: the lock as is; ``--locked``: fail on drift; default: re-lock if needed."""
    from modelmora.errors import ModelMoraError
    from modelmora.lock import read_lock
    from modelmora.lock.check import check_lock

    if frozen:
        return read_lock(project.lock_path)
    if project.lock_path.exists():
        current = read_lock(project.lock_path)
        drift = check_lock(project.specs(), current, project.source_context())
        if not drift:
            return current
        if locked:
            details = "\n".join(f"  {d.describe()}" for d in drift)
            raise ModelMoraError(
                f"modelmora.lock is out of date (--locked):\n{details}",
                hint="run `modelmora lock`, commit the lock, and install again",
            )
    elif locked:
        raise ModelMoraError(
            "modelmora.lock does not exist (--locked)", hint="run `modelmora lock`"
        )
    from modelmora.cli.project import lock_project

    lock_project(project, quiet=quiet)
    return read_lock(project.lock_path)


def _run_with_progress(
    project: Project, lock: LockFile, names: list[str], store: Any, request: _InstallRequest
) -> list[ModelOutcome]:
    from contextlib import ExitStack

    from modelmora.cli._progress import display
    from modelmora.pipeline import progress
    from modelmora.pipeline.install import run_install

    shown = display(quiet=request.quiet)

    def on_outcome(outcome: ModelOutcome) -> None:
        assert shown is not None  # only passed when something is shown
        shown.finish_model(outcome.name)
        mark = "✓" if outcome.ok else "✗"
        click.echo(f"{mark} {outcome.name} ({outcome.seconds:.1f}s)", err=True)

    with ExitStack() as stack:
        if shown is not None:
            stack.enter_context(progress.reporting_to(shown))
            stack.enter_context(shown)
        return run_install(
            project,
            lock,
            names,
            store=store,
            backends=request.backends,
            jobs=request.jobs,
            on_outcome=on_outcome if shown is not None else None,
            verbose=request.verbose,
        )


def _summary(statuses: list[ModelStatus], outcomes: list[ModelOutcome], seconds: float) -> None:
    from rich.console import Console

    from modelmora.pipeline.progress import STAGES as stages

    console = Console()
    console.print(
        _status_table(
            statuses,
            stages,
            [[outcome.stages.get(s, "skipped") for s in stages] for outcome in outcomes],
            title=f"modelmora install ({seconds:.1f}s)",
        )
    )
    for outcome in outcomes:
        if outcome.error:
            console.print(f"[red]error[/]: {outcome.name}: {outcome.error}", highlight=False)


# -- read commands ----------------------------------------------------------------------


def _statuses(ctx: click.Context, names: tuple[str, ...] = ()) -> list[ModelStatus]:
    from modelmora.cache import Store
    from modelmora.index import Index
    from modelmora.project import Project

    project = Project(find_project_dir(ctx))
    lock = project.read_lock()
    return Index(Store()).statuses(lock.select(names))


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_models(ctx: click.Context, as_json: bool) -> None:
    """Each locked model: stage statuses, artifact digest, best backend."""
    statuses = _statuses(ctx)
    if as_json:
        echo_json([s.to_json() for s in statuses])
        return
    from rich.console import Console

    from modelmora.pipeline.progress import STAGES as stages

    Console().print(
        _status_table(statuses, stages, [[s.stages[x] for x in stages] for s in statuses])
    )


def _status_table(
    statuses: list[ModelStatus],
    stages: Sequence[str],
    marks: list[list[str]],
    *,
    title: str | None = None,
) -> Table:
    """One row per model: a mark per stage, the artifact digest and the fastest backend."""
    from rich.table import Table

    table = Table(title=title)
    for column in ("model", *stages, "artifact", "best"):
        table.add_column(column)
    for status, row in zip(statuses, marks, strict=True):
        best = status.best()
        table.add_row(
            status.name,
            *(_MARKS.get(mark, mark) for mark in row),
            status.artifacts[0].sha256[:12] if status.artifacts else "",
            (
                f"{best.backend} {best.p50_ms:.1f} ms"
                + {"generation": "/token", "diffusion": "/image"}.get(best.kind, "")
            )
            if best and best.p50_ms
            else "",
        )
    return table


@click.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Files, artifacts, validation numbers and the benchmark table of one model."""
    from modelmora.project import Project

    (status,) = _statuses(ctx, (name,))
    entry = Project(find_project_dir(ctx)).read_lock().models[name]
    if as_json:
        echo_json(
            {
                **status.to_json(),
                "files_detail": [f.model_dump(exclude_none=True) for f in entry.files],
            }
        )
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    # Not wrapped: a digest revision broken over two lines can be neither copied nor grepped.
    console.print(f"[bold]{name}[/]  {entry.source}  revision {entry.revision}", soft_wrap=True)
    files = Table(title="files")
    for column in ("path", "size", "sha256"):
        files.add_column(column)
    for f in entry.files:
        files.add_row(f.path, f"{f.size:,}", f.sha256[:16])
    console.print(files)
    for art in status.artifacts:
        verdict = {True: "[green]valid[/]", False: "[red]INVALID[/]", None: "not validated"}
        console.print(
            f"artifact [bold]{art.variant}[/] {art.sha256[:16]} {verdict[art.validated]}: "
            f"{art.validation_summary}"
        )
        bench = Table()
        kind = next((b.kind for b in art.benchmarks), "latency")
        generation = kind == "generation"
        columns = {
            "generation": (
                "backend",
                "sequences",
                "ms/token p50",
                "p95",
                "p99",
                "tokens/s",
                "load ms",
                "TTFT ms",
            ),
            "diffusion": ("backend", "steps", "ms/image p50", "p95", "p99", "images/s", "load ms"),
        }.get(kind, ("backend", "batch", "p50 ms", "p95 ms", "p99 ms", "items/s", "load ms"))
        for column in columns:
            bench.add_column(column)
        notes: list[str] = []
        for b in art.benchmarks:
            notes.extend(n for n in b.notes if n not in notes)
            if b.status != "ok" and not b.batch_size:
                blanks = [""] * (len(columns) - 3)
                mark = _MARKS["failed"] + " " if b.status == "failed" else ""
                bench.add_row(b.backend, "", f"{mark}{b.status}: {b.reason}", *blanks)
                continue
            values = [b.p50_ms, b.p95_ms, b.p99_ms, b.throughput, b.load_time_ms]
            if generation:
                values.append(b.ttft_ms)
            bench.add_row(
                b.backend,
                str(b.seq_len if kind == "diffusion" else b.batch_size),
                *(f"{v:.2f}" if v is not None else "" for v in values),
            )
        console.print(bench)
        for note in notes:
            console.print(f"note: {note}")


@click.command()
@click.argument("names", nargs=-1)
@click.option("--backend", "-b", "backends", multiple=True, help="Backends (default: manifest's).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def bench(
    ctx: click.Context, names: tuple[str, ...], backends: tuple[str, ...], as_json: bool
) -> None:
    """Re-run the benchmarks of installed, validated models.

    Exit code 1 if a benchmark failed (its record says why); a backend that is not active
    here is `unavailable`, which is not a failure.
    """
    from modelmora.cache import Store
    from modelmora.errors import ModelMoraError
    from modelmora.index import Index
    from modelmora.pipeline import steps
    from modelmora.project import Project
    from modelmora.records import read_artifact

    project = Project(find_project_dir(ctx))
    lock = project.read_lock()
    store = Store()
    results: dict[str, Any] = {}
    failed = False
    for status in Index(store).statuses(lock.select(names)):
        if status.stages["validate"] != "ok":
            raise ModelMoraError(
                f"model '{status.name}' is not installed and validated",
                hint=f"run `modelmora install {status.name}` first",
            )
        job = steps.ModelJob(project=project, entry=lock.models[status.name], store=store)
        artifacts = [a for row in status.artifacts if (a := read_artifact(Path(row.path)))]
        records = steps.benchmark(job, artifacts, backends=list(backends) or None, force=True)
        results[status.name] = [rec.result.model_dump() for rec in records]
        failed = failed or any(rec.result.status == "failed" for rec in records)
        if not as_json:
            for rec in records:
                res = rec.result
                click.echo(
                    f"{status.name} [{rec.artifact_key[:8]}] {res.backend}: {res.status_line}"
                )
                for note in res.notes:
                    click.echo(f"  note: {note}")
                for b in res.batches:
                    click.echo(f"  {b.summary(res.kind)}")
    if as_json:
        echo_json(results)
    if failed:
        sys.exit(1)


@click.command()
@click.option("--port", "-p", default=3000, show_default=True, help="Port on 127.0.0.1.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.pass_context
def ui(ctx: click.Context, port: int, host: str) -> None:
    """The Dagster UI for this project's instance (lineage, runs, re-execution)."""
    from modelmora.netutil import bind
    from modelmora.pipeline.install import dagster_home
    from modelmora.pipeline.launch import UI_LOCATION_MODULE
    from modelmora.project import Project

    project = Project(find_project_dir(ctx))
    _ = project.manifest  # fail early, with a located error, on a broken manifest
    # dagster dev reports a port in use and then waits forever: find out first. (Another
    # process may still take the port in the moment between; then dagster's error it is.)
    bind(host, port).close()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home(project)),
        "MODELMORA_PROJECT_DIR": str(project.dir),
    }
    dagster = Path(sys.executable).with_name("dagster")
    cmd = [
        str(dagster) if dagster.exists() else "dagster",
        "dev",
        "-m",
        UI_LOCATION_MODULE,
        "-h",
        host,
        "-p",
        str(port),
    ]
    click.echo(f"Dagster UI for {project.dir} on http://{host}:{port} (Ctrl-C stops it)", err=True)
    # dagster dev started from a non-interactive shell ignores SIGINT/SIGTERM unless their
    # default handlers are restored in the child; we stop it by forwarding the signal.
    child = subprocess.Popen(
        cmd,
        env=env,
        preexec_fn=lambda: (
            signal.signal(signal.SIGINT, signal.SIG_DFL),
            signal.signal(signal.SIGTERM, signal.SIG_DFL),
        ),
    )

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    try:
        code = child.wait()
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
    sys.exit(0 if code in (0, -signal.SIGINT, -signal.SIGTERM) else code)
