"""What the install stages report while they work, and where library chatter goes.

Stages run in the CLI's process (or a Dagster run worker), so progress is a callback: the
CLI runs the install inside :func:`reporting_to` a :class:`Listener` (a context variable, not
a process-wide list: two installs in one process report each to its own) and the stages
call :func:`stage`, :func:`step` and :func:`files`. With nobody listening every call is a
no-op.

Third-party libraries (transformers, optimum, torch, ONNX exporters) print deprecation
notes and tracer warnings that say nothing to a user of ``install``. :func:`library_logs_to`
sends their log records and Python warnings to the run's own log instead (the Dagster
event log: visible in the UI and, with ``install -v``, on the terminal).
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

from modelmora.cache.progress import NullProgress, PullProgress

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


_listener: ContextVar[Listener | None] = ContextVar("modelmora_install_listener", default=None)
"""Who hears the stages of the install running in this context (set by :func:`reporting_to`;
``run_install`` carries it into its ``--jobs`` threads)."""


@contextmanager
def reporting_to(listener: Listener) -> Iterator[None]:
    """Within the block, this context's stages report to ``listener``."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


def stage(model: str, name: str, status: str) -> None:
    listener = _listener.get()
    if listener is not None:
        listener.stage(model, name, status)


def step(model: str, name: str, done: int, total: int, detail: str) -> None:
    listener = _listener.get()
    if listener is not None:
        listener.step(model, name, done, total, detail)


def files() -> PullProgress:
    """The byte-level reporter of this context's listener, resolved now, so that the
    download threads a stage starts report to it."""
    listener = _listener.get()
    return listener.files if listener is not None else NullProgress()


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
    "onnxruntime",
    "diffusers",
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
_install_lock = threading.Lock()


def _install_handler() -> None:
    global _installed
    with _install_lock:
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
    """transformers, optimum and diffusers put their own stderr handler on their logger when
    first used. diffusers also warns while it is imported ("Multiple distributions found for
    package optimum"), through a handler that binds the stderr of that moment: the import
    happens here, with that handler bound to nothing (the record reaches the run log through
    ours), and the handler is then removed."""
    from importlib import import_module

    for library in ("transformers", "optimum", "diffusers"):
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                hf_logging = import_module(f"{library}.utils.logging")
                hf_logging.get_logger()  # creates the default handler if not there yet
        except ImportError:
            continue
        hf_logging.disable_default_handler()
        logging.getLogger(library).propagate = False
