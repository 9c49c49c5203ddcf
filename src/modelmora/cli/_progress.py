"""What ``install`` shows while it works: live on a terminal, line by line otherwise.

Live (rich, on stderr): a line per model with a spinner, its current stage and the time it
has taken so far; a bar with bytes and rate per file being downloaded; the benchmark's
``i/N`` with the latest figure. Plain (not a TTY): one line per finished stage and per
finished measurement, so a CI log still shows where the time went.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from modelmora.cache.progress import LiveDisplay, NullProgress, PullProgress

if TYPE_CHECKING:
    from rich.progress import Task, TaskID


class PlainProgress:
    """Lines on stderr; no byte counts (a log is not a display)."""

    files: PullProgress = NullProgress()

    def __init__(self) -> None:
        self._started: dict[tuple[str, str], float] = {}

    def stage(self, model: str, stage: str, status: str) -> None:
        key = (model, stage)
        if status == "running":
            self._started[key] = time.monotonic()
            return
        took = time.monotonic() - self._started.pop(key, time.monotonic())
        click.echo(f"  {model}: {stage} {status} ({took:.1f}s)", err=True)

    def step(self, model: str, stage: str, done: int, total: int, detail: str) -> None:
        click.echo(f"  {model}: {stage} {done}/{total} {detail}", err=True)

    def finish_model(self, model: str) -> None:
        """Nothing to take down: every line is final."""

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


class _FigureColumn(ProgressColumn):
    """Bytes and rate for a download bar, the latest figure for a stage line."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes = DownloadColumn()
        self._rate = TransferSpeedColumn()

    def render(self, task: Task) -> Text:
        if task.fields.get("kind") == "file":
            return Text.assemble(self._bytes.render(task), " ", self._rate.render(task))
        return Text(str(task.fields.get("figure", "")), style="dim")


class LiveProgress(LiveDisplay):
    """The rich display; also the byte reporter for downloads (:attr:`files`)."""

    def __init__(self) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            _FigureColumn(),
            TimeElapsedColumn(),
            console=Console(file=sys.stderr),
            transient=True,
        )
        self._models: dict[str, TaskID] = {}
        self._files: dict[str, TaskID] = {}
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def files(self) -> PullProgress:
        return self

    # -- stages -----------------------------------------------------------------------
    def stage(self, model: str, stage: str, status: str) -> None:
        with self._lock:
            task = self._models.get(model)
            if status == "running":
                self._started[model] = time.monotonic()
                if task is None:
                    self._models[model] = self._progress.add_task(
                        f"{model}: {stage}", total=None, figure="", kind="stage"
                    )
                else:
                    self._progress.reset(task, description=f"{model}: {stage}", total=None)
                    self._progress.update(task, figure="")
                return
            took = time.monotonic() - self._started.pop(model, time.monotonic())
        mark = "[red]✗[/]" if status == "failed" else "[green]✓[/]"
        self._progress.console.print(f"  {mark} {model}: {stage} {status} ({took:.1f}s)")

    def step(self, model: str, stage: str, done: int, total: int, detail: str) -> None:
        task = self._models.get(model)
        if task is not None:
            self._progress.update(
                task,
                description=f"{model}: {stage} {done}/{total}",
                total=total,
                completed=done,
                figure=detail,
            )

    def finish_model(self, model: str) -> None:
        with self._lock:
            task = self._models.pop(model, None)
        if task is not None:
            self._progress.remove_task(task)

    # -- files (PullProgress) ----------------------------------------------------------
    def start(self, key: str, label: str, total: int, completed: int = 0) -> None:
        with self._lock:
            self._files[key] = self._progress.add_task(
                f"  {label}", total=total, completed=completed, kind="file"
            )

    def advance(self, key: str, n: int) -> None:
        task = self._files.get(key)
        if task is not None:
            self._progress.advance(task, n)

    def finish(self, key: str, *, ok: bool) -> None:
        with self._lock:
            task = self._files.pop(key, None)
        if task is not None:
            self._progress.remove_task(task)


def display(*, quiet: bool) -> LiveProgress | PlainProgress | None:
    """The listener for this terminal: live, plain, or None (quiet / ``--json``)."""
    if quiet:
        return None
    return LiveProgress() if sys.stderr.isatty() else PlainProgress()
