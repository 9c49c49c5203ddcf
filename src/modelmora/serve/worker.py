"""The worker process: one ONNX Runtime session, fed batches over a pipe.

Started by the router with the ``spawn`` start method so that it inherits nothing but its
arguments. It imports only numpy, onnxruntime and tokenizers (never torch), loads the
session on the requested execution provider, *checks* that ORT really uses it (ORT silently
falls back to CPU), warms up, reports :class:`~modelmora.serve.ipc.Ready`, then answers one
message at a time until :class:`~modelmora.serve.ipc.Stop` or until the pipe closes (the
router died: nothing is left to serve, so the worker exits too).

Test hook: if ``MODELMORA_SERVE_TEST_GATE`` names a directory, every batch appends a JSON line
``{"event": "held"|"run", "pid": ..., "inputs": ...}`` to ``<dir>/<model>.jsonl`` and, while
``<dir>/<model>.hold`` exists, waits before computing. Tests use it to hold a request inside a
worker deterministically (to kill the worker mid-request, to queue requests behind it, to let
a deadline expire) instead of racing against timing. It is never set in production.
"""

from __future__ import annotations

import json
import os
import signal
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from modelmora.serve.ipc import (
    Failed,
    ModelInfo,
    Output,
    Ready,
    RunTensors,
    RunText,
    Stop,
    TensorSpec,
    WorkerSpec,
    recv_msg,
    send_msg,
)
from modelmora.serve.pooling import PoolingConfig, pool, read_pooling_config

__all__ = ["TEST_GATE_ENV", "main"]

TEST_GATE_ENV = "MODELMORA_SERVE_TEST_GATE"

# ONNX tensor type strings → (v2 datatype, numpy dtype).
_ORT_TYPES: dict[str, tuple[str, Any]] = {
    "tensor(bool)": ("BOOL", np.bool_),
    "tensor(uint8)": ("UINT8", np.uint8),
    "tensor(uint16)": ("UINT16", np.uint16),
    "tensor(uint32)": ("UINT32", np.uint32),
    "tensor(uint64)": ("UINT64", np.uint64),
    "tensor(int8)": ("INT8", np.int8),
    "tensor(int16)": ("INT16", np.int16),
    "tensor(int32)": ("INT32", np.int32),
    "tensor(int64)": ("INT64", np.int64),
    "tensor(float16)": ("FP16", np.float16),
    "tensor(float)": ("FP32", np.float32),
    "tensor(double)": ("FP64", np.float64),
    "tensor(string)": ("BYTES", np.object_),
}


def rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc``; 0 where unavailable)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _spec_of(node: Any) -> TensorSpec:
    datatype = _ORT_TYPES.get(node.type, (node.type, None))[0]
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in node.shape)
    return TensorSpec(name=node.name, datatype=datatype, shape=shape)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _max_seq_length(artifact_dir: Path) -> int:
    """sentence_bert_config → tokenizer_config → config.json → 512, as sentence-transformers."""
    st = _read_json(artifact_dir / "sentence_bert_config.json") or {}
    if isinstance(st.get("max_seq_length"), int):
        return int(st["max_seq_length"])
    tok = _read_json(artifact_dir / "tokenizer_config.json") or {}
    if isinstance(tok.get("model_max_length"), int) and tok["model_max_length"] < 100_000:
        return int(tok["model_max_length"])
    cfg = _read_json(artifact_dir / "config.json") or {}
    if isinstance(cfg.get("max_position_embeddings"), int):
        return int(cfg["max_position_embeddings"])
    return 512


class _Runner:
    """A loaded session plus the pre/post-processing its task needs."""

    def __init__(self, spec: WorkerSpec) -> None:
        import onnxruntime as ort

        self.spec = spec
        self.dir = Path(spec.artifact_dir)
        options = ort.SessionOptions()
        if spec.threads > 0:
            options.intra_op_num_threads = spec.threads
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if spec.spin else "0"
        )
        self.session = ort.InferenceSession(
            str(self.dir / spec.onnx_file), sess_options=options, providers=[spec.provider]
        )
        providers = tuple(self.session.get_providers())
        if spec.provider not in providers:
            raise RuntimeError(
                f"ONNX Runtime did not enable {spec.provider} (active: {', '.join(providers)})"
            )
        self.providers = providers
        self.inputs = [_spec_of(i) for i in self.session.get_inputs()]
        self.outputs = [_spec_of(o) for o in self.session.get_outputs()]
        self.np_types = {
            i.name: _ORT_TYPES.get(i.type, ("", np.float32))[1] for i in self.session.get_inputs()
        }

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

    def run_tensors(self, inputs: dict[str, np.ndarray]) -> Output:
        names = [o.name for o in self.outputs]
        results = self.session.run(names, inputs)
        return Output(arrays=dict(zip(names, results, strict=True)), rss_bytes=rss_bytes())

    def warm_up(self) -> None:
        feed = {}
        for spec in self.inputs:
            shape = tuple(1 if d < 0 else d for d in spec.shape)
            feed[spec.name] = np.zeros(shape, dtype=self.np_types[spec.name])
        self.run_tensors(feed)


class _TextRunner(_Runner):
    """Tokenize in the worker (``tokenizers``), pad to the batch's longest sequence."""

    _KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

    def __init__(self, spec: WorkerSpec) -> None:
        super().__init__(spec)
        from tokenizers import Tokenizer

        tok_file = self.dir / "tokenizer.json"
        if not tok_file.is_file():
            raise RuntimeError(f"{tok_file} is missing: text models need a fast tokenizer")
        self.tokenizer = Tokenizer.from_file(str(tok_file))
        self.max_seq_length = _max_seq_length(self.dir)
        self.tokenizer.enable_truncation(max_length=self.max_seq_length)
        pad_token = self._pad_token()
        pad_id = self.tokenizer.token_to_id(pad_token)
        self.tokenizer.enable_padding(pad_id=pad_id or 0, pad_token=pad_token)
        unknown = [i.name for i in self.inputs if i.name not in self._KNOWN_INPUTS]
        if unknown or "input_ids" not in self.np_types:
            raise RuntimeError(
                f"a text model's ONNX inputs must be among {list(self._KNOWN_INPUTS)} "
                f"(found {[i.name for i in self.inputs]})"
            )

    def _pad_token(self) -> str:
        special = _read_json(self.dir / "special_tokens_map.json") or {}
        pad = special.get("pad_token")
        if isinstance(pad, dict):
            pad = pad.get("content")
        if isinstance(pad, str):
            return pad
        cfg = _read_json(self.dir / "tokenizer_config.json") or {}
        return str(cfg.get("pad_token") or "[PAD]")

    def encode(self, texts: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.np_types:
            feed["token_type_ids"] = np.asarray([e.type_ids for e in encodings], dtype=np.int64)
        feed = {
            k: v.astype(self.np_types[k], copy=False) for k, v in feed.items() if k in self.np_types
        }
        return feed, mask

    def warm_up(self) -> None:
        self.run_text(["warm up"])

    def run_text(self, texts: list[str]) -> Output:
        raise NotImplementedError


class _EmbeddingRunner(_TextRunner):
    def __init__(self, spec: WorkerSpec) -> None:
        super().__init__(spec)
        self.pooling: PoolingConfig = read_pooling_config(self.dir)
        names = [o.name for o in self.outputs]
        # An export of the whole sentence-transformers pipeline already pools.
        self.output_name = "sentence_embedding" if "sentence_embedding" in names else names[0]
        self.dim = 0

    def run_text(self, texts: list[str]) -> Output:
        feed, mask = self.encode(texts)
        (hidden,) = self.session.run([self.output_name], feed)
        hidden = np.asarray(hidden, dtype=np.float32)
        if hidden.ndim == 3:
            vectors = pool(hidden, mask, self.pooling)
        elif self.pooling.normalize:
            vectors = pool(
                hidden[:, None, :], np.ones((len(texts), 1)), PoolingConfig(("mean",), True)
            )
        else:
            vectors = np.ascontiguousarray(hidden)
        return Output(arrays={"embedding": vectors}, tokens=mask.sum(axis=1), rss_bytes=rss_bytes())

    def info(self) -> ModelInfo:
        base = super().info()
        return ModelInfo(
            inputs=(TensorSpec("text", "BYTES", (-1,)),),
            outputs=(TensorSpec("embedding", "FP32", (-1, self.dim)),),
            providers=base.providers,
            batchable=True,
            embedding_dim=self.dim,
            max_seq_length=self.max_seq_length,
            pid=base.pid,
            rss_bytes=rss_bytes(),
        )

    def warm_up(self) -> None:
        self.dim = int(self.run_text(["warm up"]).arrays["embedding"].shape[1])


class _ClassifierRunner(_TextRunner):
    def __init__(self, spec: WorkerSpec) -> None:
        super().__init__(spec)
        cfg = _read_json(self.dir / "config.json") or {}
        id2label = cfg.get("id2label") or {}
        n = int(self.outputs[0].shape[-1]) if self.outputs[0].shape[-1] > 0 else len(id2label)
        self.labels = tuple(str(id2label.get(str(i), f"LABEL_{i}")) for i in range(n))
        self.multi_label = cfg.get("problem_type") == "multi_label_classification"

    def run_text(self, texts: list[str]) -> Output:
        feed, mask = self.encode(texts)
        (logits,) = self.session.run([self.outputs[0].name], feed)
        logits = np.asarray(logits, dtype=np.float32)
        if self.multi_label:
            scores = 1.0 / (1.0 + np.exp(-logits))
        else:
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            scores = shifted / shifted.sum(axis=1, keepdims=True)
        return Output(
            arrays={"logits": logits, "scores": scores.astype(np.float32)},
            tokens=mask.sum(axis=1),
            rss_bytes=rss_bytes(),
        )

    def info(self) -> ModelInfo:
        base = super().info()
        n = len(self.labels)
        return ModelInfo(
            inputs=(TensorSpec("text", "BYTES", (-1,)),),
            outputs=(
                TensorSpec("label", "BYTES", (-1,)),
                TensorSpec("scores", "FP32", (-1, n)),
                TensorSpec("logits", "FP32", (-1, n)),
            ),
            providers=base.providers,
            batchable=True,
            labels=self.labels,
            max_seq_length=self.max_seq_length,
            pid=base.pid,
            rss_bytes=rss_bytes(),
        )


def _make_runner(spec: WorkerSpec) -> _Runner:
    if spec.task == "feature-extraction":
        return _EmbeddingRunner(spec)
    if spec.task == "text-classification":
        return _ClassifierRunner(spec)
    return _Runner(spec)


class _Gate:
    """The test hook described in the module docstring."""

    def __init__(self, name: str) -> None:
        root = os.environ.get(TEST_GATE_ENV)
        self.log = Path(root) / f"{name}.jsonl" if root else None
        self.hold = Path(root) / f"{name}.hold" if root else None

    def _write(self, event: str, inputs: Any) -> None:
        assert self.log is not None
        line = json.dumps({"event": event, "pid": os.getpid(), "inputs": inputs})
        with self.log.open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    def pass_through(self, msg: RunText | RunTensors) -> None:
        if self.log is None or self.hold is None:
            return
        inputs: Any = msg.texts if isinstance(msg, RunText) else sorted(msg.inputs)
        if self.hold.exists():
            self._write("held", inputs)
            while self.hold.exists():
                time.sleep(0.002)
        self._write("run", inputs)


def _serve(conn: Connection, runner: _Runner, gate: _Gate) -> None:
    while True:
        try:
            msg = recv_msg(conn)
        except (EOFError, OSError):
            return
        if isinstance(msg, Stop):
            return
        reply: Output | Failed
        try:
            if isinstance(msg, RunText) and isinstance(runner, _TextRunner):
                gate.pass_through(msg)
                reply = runner.run_text(msg.texts)
            elif isinstance(msg, RunTensors):
                gate.pass_through(msg)
                reply = runner.run_tensors(msg.inputs)
            else:
                reply = Failed(f"this worker cannot run {type(msg).__name__}", "internal")
        except Exception as exc:  # an ORT error is about this batch, not the worker
            reply = Failed(f"{type(exc).__name__}: {exc}", "input")
        send_msg(conn, reply)


def main(conn: Connection, spec: WorkerSpec) -> None:
    """Entry point of the worker process (the ``target`` of the spawned Process)."""
    # Ctrl-C reaches the whole process group; the router decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        runner = _make_runner(spec)
        runner.warm_up()
        info = runner.info()
    except Exception as exc:
        send_msg(conn, Failed(f"{type(exc).__name__}: {exc}", "load"))
        conn.close()
        return
    send_msg(conn, Ready(info))
    try:
        _serve(conn, runner, _Gate(spec.name))
    finally:
        conn.close()
