"""The worker process: one model, loaded by its task's runner, fed over a pipe.

Started by the router with the ``spawn`` start method so that it inherits nothing but its
arguments. It imports only numpy, onnxruntime and tokenizers (never torch), builds the runner
the task table names (``WorkerSpec.runner``), which loads the session on the requested
execution provider and *checks* that ORT really uses it (ORT silently falls back to CPU),
warms up, reports :class:`~modelmora.serve.ipc.Ready`, then hands the pipe to the runner's
request loop until :class:`~modelmora.serve.ipc.Stop` or until the pipe closes (the router
died: nothing is left to serve, so the worker exits too).

The test hook ``MODELMORA_SERVE_TEST_GATE`` is described in
:class:`modelmora.serve.runners.base.Gate`.
"""

from __future__ import annotations

import importlib
import signal
from multiprocessing.connection import Connection
from pathlib import Path

from modelmora.errors import IntegrityError
from modelmora.serve.ipc import Failed, Ready, WorkerSpec, send_msg
from modelmora.serve.runners.base import TEST_GATE_ENV, Gate, Runner

__all__ = ["TEST_GATE_ENV", "load_runner", "main"]


def load_runner(spec: WorkerSpec) -> Runner:
    """The runner class named by ``spec.runner`` (``module:Class``), constructed."""
    module_name, _, class_name = spec.runner.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    runner = cls(spec)
    if not isinstance(runner, Runner):
        raise TypeError(f"{spec.runner} is not a modelmora.serve.runners.base.Runner")
    return runner


def check_artifact(spec: WorkerSpec) -> None:
    """Refuse to load bytes that are not the ones install recorded (and validated)."""
    if not spec.files:
        return  # a directory served with --model NAME=DIR: no record to check against
    from modelmora.cache.filecheck import file_problems
    from modelmora.cache.statcache import StatCache

    cache = StatCache.of_store(Path(spec.store_root)) if spec.store_root else None
    problems = file_problems(Path(spec.artifact_dir), spec.files, cache, full=spec.verify_full)
    if problems:
        raise IntegrityError(
            f"not loaded: {len(problems)} artifact file(s) differ from what install recorded: "
            + "; ".join(map(str, problems[:3]))
            + " — run `modelmora install` to rebuild it (`modelmora cache verify` lists all)"
        )


def main(conn: Connection, spec: WorkerSpec) -> None:
    """Entry point of the worker process (the ``target`` of the spawned Process)."""
    # Ctrl-C reaches the whole process group; the router decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        check_artifact(spec)
        runner = load_runner(spec)
        runner.warm_up()
        info = runner.info()
    except Exception as exc:
        send_msg(conn, Failed(f"{type(exc).__name__}: {exc}", "load"))
        conn.close()
        return
    send_msg(conn, Ready(info))
    try:
        runner.serve(conn, Gate(spec.name))
    finally:
        conn.close()
