"""Progress reporting for downloads: a tiny protocol, a silent default and a rich display.

``pull`` reports per file (keyed by sha256, so a file shared by two models shows once) and
the display derives the total. Reporters are called from worker threads.
"""

from __future__ import annotations

import sys
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID
    from typing_extensions import Self


class PullProgress(Protocol):
    def start(self, key: str, label: str, total: int, completed: int = 0) -> None: ...

    def advance(self, key: str, n: int) -> None: ...

    def finish(self, key: str, *, ok: bool) -> None: ...


class NullProgress:
    """Reports nothing: non-TTY output, ``--quiet``, library use."""

    def start(self, key: str, label: str, total: int, completed: int = 0) -> None:
        pass

    def advance(self, key: str, n: int) -> None:
        pass

    def finish(self, key: str, *, ok: bool) -> None:
        pass


class LiveDisplay:
    """A rich ``Progress`` (``self._progress``) shown while the ``with`` block runs."""

    _progress: Progress

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()


class RichProgress(LiveDisplay):
    """A bar per file in flight plus one for the total (grows as files start), on stderr."""

    def __init__(self, *, stream: TextIO | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}", justify="left"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(file=stream or sys.stderr),
            transient=False,
        )
        self._total = self._progress.add_task("[bold]total", total=0)
        self._total_bytes = 0
        self._tasks: dict[str, TaskID] = {}
        self._lock = threading.Lock()

    def start(self, key: str, label: str, total: int, completed: int = 0) -> None:
        with self._lock:
            self._tasks[key] = self._progress.add_task(label, total=total, completed=completed)
            self._total_bytes += total
            self._progress.update(self._total, total=self._total_bytes)
        if completed:
            self._progress.advance(self._total, completed)

    def advance(self, key: str, n: int) -> None:
        task = self._tasks.get(key)
        if task is not None:
            self._progress.advance(task, n)
            self._progress.advance(self._total, n)

    def finish(self, key: str, *, ok: bool) -> None:
        with self._lock:
            task = self._tasks.pop(key, None)
        if task is not None:
            self._progress.remove_task(task)
