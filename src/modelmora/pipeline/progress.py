"""What the install stages report while they work, and where library chatter goes.

Stages run in the CLI's process (or a Dagster run worker), so progress is a callback: the
CLI registers a :class:`Listener` and the stages call :func:`stage`, :func:`step` and the
byte-level :data:`files` reporter. With nobody listening every call is a no-op.

Third-party libraries (transformers, optimum, torch, ONNX exporters) print deprecation
notes and tracer warnings that say nothing to a user of ``install``. :func:`library_logs_to`
sends their log records and Python warnings to the run's own log instead (the Dagster
event log: visible in the UI and, with ``install -v``, on the terminal).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from modelmora.cache.progress import PullProgress

STAGES = ("download", "convert", "validate", "benchmark")
"""The install stages, by the one set of names used everywhere: Dagster asset keys
(``validate`` is the blocking asset check on ``convert``), the CLI tables, ``--json``,
progress reports and the docs."""


class Listener(Protocol):
    def stage(self, model: str, stage: str, status: str) -> None:
        """``status``: ``running``, ``done``, ``cached`` or ``failed``."""

    def step(self, model: str, stage: str, done: int, total: int, detail: str) -> None:
        """``done`` of ``total`` measurements of a stage finished; ``detail``: the latest."""

    @property
    def files(self) -> PullProgress:
        """Per-file download progress (bytes)."""


_listeners: list[Listener] = []
_lock = threading.Lock()


def add_listener(listener: Listener) -> None:
    with _lock:
        _listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)


def _current() -> list[Listener]:
    with _lock:
        return list(_listeners)


def stage(model: str, name: str, status: str) -> None:
    for listener in _current():
        listener.stage(model, name, status)


def step(model: str, name: str, done: int, total: int, detail: str) -> None:
    for listener in _current():
        listener.step(model, name, done, total, detail)


class _Files:
    """Fans byte progress out to every listener's reporter."""

    def start(self, key: str, label: str, total: int, completed: int = 0) -> None:
        for listener in _current():
            listener.files.start(key, label, total, completed)

    def advance(self, key: str, n: int) -> None:
        for listener in _current():
            listener.files.advance(key, n)

    def finish(self, key: str, *, ok: bool) -> None:
        for listener in _current():
            listener.files.finish(key, ok=ok)


files: PullProgress = _Files()


# -- library chatter ----------------------------------------------------------------------

LIBRARY_LOGGERS = (
    "py.warnings",
    "transformers",
    "optimum",
    "torch",
    "onnxscript",
    "onnx_ir",
    "tf2onnx",
    "tensorflow",
)


class _ToRunLog(logging.Handler):
    """Forwards a record to the log of the stage running on the emitting thread (or, for a
    library thread of its own, to the one that started last)."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()
        self.latest: logging.Logger | None = None

    def emit(self, record: logging.LogRecord) -> None:
        target = getattr(self.local, "target", None) or self.latest
        if target is not None:
            target.log(record.levelno, "%s: %s", record.name, record.getMessage())


_handler = _ToRunLog()


@contextmanager
def library_logs_to(log: logging.Logger) -> Iterator[None]:
    """Within the block, library log records and warnings go to ``log`` only."""
    _install_handler()
    previous = getattr(_handler.local, "target", None)
    _handler.local.target = _handler.latest = log
    try:
        yield
    finally:
        _handler.local.target = previous


_installed = False


def _install_handler() -> None:
    global _installed
    with _lock:
        if _installed:
            return
        logging.captureWarnings(True)
        for name in LIBRARY_LOGGERS:
            logger = logging.getLogger(name)
            logger.propagate = False
            logger.addHandler(_handler)
        _silence_default_handlers()
        _installed = True


def _silence_default_handlers() -> None:
    """transformers and optimum put their own stderr handler on their logger when first used."""
    from importlib import import_module

    for library in ("transformers", "optimum"):
        try:
            hf_logging = import_module(f"{library}.utils.logging")
        except ImportError:
            continue
        hf_logging.get_logger()  # creates the default handler if not there yet
        hf_logging.disable_default_handler()
        logging.getLogger(library).propagate = False
