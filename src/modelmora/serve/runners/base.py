"""The runner interface, the plain ONNX tensor runner, and the worker's test gate.

A runner loads its model in ``__init__``, warms up, describes itself (:meth:`Runner.info`)
and then owns the request loop (:meth:`Runner.serve`). The default loop answers one request
at a time with :meth:`Runner.handle` — right for batch tasks, whose batching happens in the
router. A runner that batches inside the worker (token generation joins and leaves a running
batch between decode steps) overrides :meth:`Runner.serve` and reads the pipe between steps.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from modelmora.onnx_types import numpy_dtype, v2_datatype
from modelmora.serve.ipc import (
    Cancel,
    Failed,
    ModelInfo,
    Output,
    Replies,
    Reply,
    Request,
    RunTensors,
    RunText,
    StepStats,
    Stop,
    TensorSpec,
    WorkerSpec,
    recv_msg,
    send_msg,
)

__all__ = [
    "TEST_GATE_ENV",
    "Classes",
    "Gate",
    "Runner",
    "TensorRunner",
    "read_json",
    "rss_bytes",
]

TEST_GATE_ENV = "MODELMORA_SERVE_TEST_GATE"


def rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc``; 0 where unavailable)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _spec_of(node: Any) -> TensorSpec:
    datatype = v2_datatype(node.type)
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in node.shape)
    return TensorSpec(name=node.name, datatype=datatype, shape=shape)


class Gate:
    """Test hook: with ``MODELMORA_SERVE_TEST_GATE`` naming a directory, every request appends
    a JSON line ``{"event": "held"|"run", "pid": ..., "inputs": ...}`` to ``<dir>/<model>.jsonl``
    and, while ``<dir>/<model>.hold`` exists, waits before computing. Tests use it to hold a
    request inside a worker deterministically (to kill the worker mid-request, to queue
    requests behind it, to let a deadline expire) instead of racing against timing. It is
    never set in production."""

    def __init__(self, name: str) -> None:
        root = os.environ.get(TEST_GATE_ENV)
        self.log = Path(root) / f"{name}.jsonl" if root else None
        self.hold = Path(root) / f"{name}.hold" if root else None
        self._steps_left: int | None = None

    def _write(self, event: str, inputs: Any) -> None:
        assert self.log is not None
        line = json.dumps({"event": event, "pid": os.getpid(), "inputs": inputs})
        with self.log.open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    def pause(self) -> None:
        """Between two steps of a stepping runner: wait while the hold file exists. A hold
        file holding a number ``k`` lets ``k`` more steps run first (to hold a request
        *after* its first token)."""
        if self.hold is None or not self.hold.exists():
            self._steps_left = None
            return
        if self._steps_left is None:
            text = self.hold.read_text().strip()
            self._steps_left = int(text) if text.isdigit() else 0
        if self._steps_left > 0:
            self._steps_left -= 1
            return
        self._write("held", "step")
        while self.hold.exists():
            time.sleep(0.002)
        self._write("run", "step")
        self._steps_left = None

    def pass_through(self, body: Any) -> None:
        if self.log is None or self.hold is None:
            return
        inputs: Any = (
            body.texts if isinstance(body, RunText) else sorted(getattr(body, "inputs", {}))
        )
        if self.hold.exists():
            self._write("held", inputs)
            while self.hold.exists():
                time.sleep(0.002)
        self._write("run", inputs)


IDLE_RELEASE_S = 1.0
"""Idle time after a big batch before a worker gives its grown memory back."""

GROWN_TOKENS = 2048
"""A call of at least this many rows × padded tokens grows ORT's arena enough to be worth
giving back once the worker is idle."""


def arena_shrink_options() -> Any:
    """ONNX Runtime run options that hand what the CPU arena grew back to the system at the
    end of the call (the arena otherwise keeps its peak for the life of the session)."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


def trim_malloc() -> None:
    """glibc's ``malloc_trim(0)``: return freed heap pages to the system (no-op elsewhere)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return
    trim(0)


@dataclass(frozen=True)
class Classes:
    """A classifier's labels (``config.json`` ``id2label``) and how logits become scores
    (softmax; sigmoid for ``multi_label_classification``), for text and image classifiers."""

    labels: tuple[str, ...]
    multi_label: bool = False

    @classmethod
    def read(cls, directory: Path, logits: TensorSpec) -> Classes:
        cfg = read_json(directory / "config.json") or {}
        id2label = cfg.get("id2label") or {}
        n = int(logits.shape[-1]) if logits.shape[-1] > 0 else len(id2label)
        labels = tuple(str(id2label.get(str(i), f"LABEL_{i}")) for i in range(n))
        return cls(labels, cfg.get("problem_type") == "multi_label_classification")

    def outputs(self, logits: Any, **extra: Any) -> Output:
        logits = np.asarray(logits, dtype=np.float32)
        if self.multi_label:
            scores = 1.0 / (1.0 + np.exp(-logits))
        else:
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            scores = shifted / shifted.sum(axis=1, keepdims=True)
        arrays = {"logits": logits, "scores": scores.astype(np.float32)}
        return Output(arrays=arrays, rss_bytes=rss_bytes(), **extra)

    def specs(self) -> tuple[TensorSpec, ...]:
        n = len(self.labels)
        return (
            TensorSpec("label", "BYTES", (-1,)),
            TensorSpec("scores", "FP32", (-1, n)),
            TensorSpec("logits", "FP32", (-1, n)),
        )


class Runner:
    """A loaded ONNX Runtime session; subclasses add their task's pre/post-processing."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.dir = Path(spec.artifact_dir)
        self.session = self.open_session(spec.onnx_file)
        self.providers = tuple(self.session.get_providers())
        self.inputs = [_spec_of(i) for i in self.session.get_inputs()]
        self.outputs = [_spec_of(o) for o in self.session.get_outputs()]
        self.np_types = {i.name: numpy_dtype(i.type, np.float32) for i in self.session.get_inputs()}

    def open_session(self, relpath: str) -> Any:
        """A session on one of the artifact's graphs with the model's provider and threads;
        refused unless ONNX Runtime really enabled that provider."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        if self.spec.threads > 0:
            options.intra_op_num_threads = self.spec.threads
        spin = self.default_spin() if self.spec.spin is None else self.spec.spin
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        session = ort.InferenceSession(
            str(self.dir / relpath), sess_options=options, providers=[self.spec.provider]
        )
        providers = tuple(session.get_providers())
        if self.spec.provider not in providers:
            raise RuntimeError(
                f"ONNX Runtime did not enable {self.spec.provider} for {relpath} "
                f"(active: {', '.join(providers)})"
            )
        return session

    def default_spin(self) -> bool:
        """Whether idle intra-op threads spin when the model's ``spin`` is unset (ORT's default)."""
        return True

    def info(self) -> ModelInfo:
        batchable = all(t.shape[:1] == (-1,) for t in (*self.inputs, *self.outputs))
        return ModelInfo(
            inputs=tuple(self.inputs),
            outputs=tuple(self.outputs),
            providers=self.providers,
            batchable=batchable,
            pid=os.getpid(),
            rss_bytes=rss_bytes(),
        )

    def warm_up(self) -> None:
        raise NotImplementedError

    def handle(self, body: Any) -> Output:
        """Answer one request body (the default loop's unit of work)."""
        raise NotImplementedError

    grown = False
    """Set by a runner after a call big enough to grow ORT's arena (see release_memory)."""
    idle_release_s = IDLE_RELEASE_S
    """Idle time after such a call before :meth:`release_memory` runs."""

    def release_memory(self) -> None:
        """Give back memory a big batch grew; called once the worker has been idle for
        :attr:`idle_release_s` after one (never under steady load)."""

    def _release_when_idle(self, conn: Connection) -> bool:
        """After a call that grew the arena, wait up to :attr:`idle_release_s` for the next
        message; if none comes, give the memory back. True if it did."""
        if not self.grown or conn.poll(self.idle_release_s):
            return False
        self.release_memory()
        self.grown = False
        return True

    def serve(self, conn: Connection, gate: Gate) -> None:
        """Answer requests one at a time until ``Stop`` or until the router goes away."""
        while True:
            try:
                self._release_when_idle(conn)
                msg = recv_msg(conn)
            except (EOFError, OSError):
                return
            if isinstance(msg, Stop):
                return
            if isinstance(msg, Cancel):
                continue  # its request was answered before this message was read
            if not isinstance(msg, Request):
                continue
            reply: Output | Failed
            try:
                gate.pass_through(msg.body)
                reply = self.handle(msg.body)
            except Exception as exc:  # an ORT error is about this batch, not the worker
                reply = Failed(f"{type(exc).__name__}: {exc}", "input")
            send_msg(conn, Reply(msg.id, reply))


class TensorRunner(Runner):
    """Any ONNX graph: the request's named tensors in, every graph output out."""

    def run_tensors(self, inputs: dict[str, np.ndarray]) -> Output:
        names = [o.name for o in self.outputs]
        results = self.session.run(names, inputs)
        return Output(arrays=dict(zip(names, results, strict=True)), rss_bytes=rss_bytes())

    def handle(self, body: Any) -> Output:
        if not isinstance(body, RunTensors):
            raise TypeError(f"a tensor model cannot run {type(body).__name__}")
        return self.run_tensors(body.inputs)

    def warm_up(self) -> None:
        feed = {}
        for spec in self.inputs:
            shape = tuple(1 if d < 0 else d for d in spec.shape)
            feed[spec.name] = np.zeros(shape, dtype=self.np_types[spec.name])
        self.run_tensors(feed)


class SteppingRunner(Runner):
    """A runner that advances many requests together, one step at a time.

    Between two steps it reads everything the router sent: new requests join the running
    set (:meth:`admit`), cancelled ones leave it (:meth:`cancel`) before the next step, so a
    cancelled request costs at most the step already under way. With nothing running it
    blocks on the pipe. This is the loop continuous batching needs; token generation builds
    on it. The test gate holds it between steps (:meth:`Gate.pause`), not at admission.
    """

    def admit(self, request_id: int, body: Any) -> None:
        """Start ``body``; raise to refuse it (the router gets the error as its only reply)."""
        raise NotImplementedError

    def cancel(self, request_id: int) -> None:
        """Drop the request and free what it holds."""
        raise NotImplementedError

    def running(self) -> int:
        raise NotImplementedError

    def step(self) -> Replies:
        """Advance every running request once; the replies to send (``last`` ends one)."""
        raise NotImplementedError

    def stats(self) -> StepStats | None:
        """What the runner did since the last call and what it holds now, for the router's
        metrics; sent after each step and each cancel (None: nothing to report)."""
        return None

    def _read(self, conn: Connection) -> bool:
        """Apply every waiting message (blocking while idle); False once the router is gone."""
        timeout: float | None = 0.0 if self.running() else None
        while conn.poll(timeout):
            try:
                msg = recv_msg(conn)
            except (EOFError, OSError):
                return False
            if isinstance(msg, Stop):
                return False
            if isinstance(msg, Cancel):
                self.cancel(msg.id)
                answer = Replies(stats=self.stats())
                answer.add(msg.id, Failed("cancelled", "input"), last=True)
                send_msg(conn, answer)
            elif isinstance(msg, Request):
                try:
                    self.admit(msg.id, msg.body)
                except Exception as exc:
                    send_msg(conn, Reply(msg.id, Failed(f"{type(exc).__name__}: {exc}", "input")))
            timeout = 0.0
        return True

    def serve(self, conn: Connection, gate: Gate) -> None:
        while True:
            try:
                if not self.running() and self._release_when_idle(conn):
                    stats = self.stats()
                    if stats is not None:  # the router sees the memory fall
                        send_msg(conn, Replies(stats=stats))
                if not self._read(conn):
                    return
            except (EOFError, OSError):
                return
            if self.running():
                gate.pause()
                replies = self.step()
                replies.stats = self.stats()
                if replies.ids or replies.stats:  # one message per step, however many answers
                    send_msg(conn, replies)
