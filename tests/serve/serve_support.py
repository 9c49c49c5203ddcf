"""Test helpers for serve: build artifact directories (HF snapshot + ``model.onnx``) and compute
PyTorch references. Both run in the *test* process; the server under test never imports torch.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelmora.serve.server import READY_PREFIX
from modelmora.serve.worker import TEST_GATE_ENV

os.environ.setdefault("USE_TF", "0")

CLI = Path(sys.executable).with_name("modelmora")
LABELS = ("negative", "neutral", "positive")


@dataclass(frozen=True)
class Artifacts:
    emb: Path
    emb_b: Path
    cls: Path
    lin: Path
    weight: np.ndarray
    bias: np.ndarray


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


class Server:
    def __init__(self, proc: subprocess.Popen[str], url: str, log: Path, gate: Path | None):
        self.proc = proc
        self.url = url
        self.log = log
        self.gate = gate
        self.http = httpx.Client(base_url=url, timeout=60)

    # -- metrics ---------------------------------------------------------------------------
    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        text = self.http.get("/metrics").text
        out = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples named ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.metrics().items() if n == name and wanted <= ls)

    # -- test gate (see modelmora.serve.worker) ---------------------------------------------
    def hold(self, model: str, *, after_steps: int = 0) -> None:
        """Hold the model's next request (or, for stepping runners, its next step; with
        ``after_steps``, the step after that many more)."""
        assert self.gate is not None
        (self.gate / f"{model}.hold").write_text(str(after_steps) if after_steps else "")

    def release(self, model: str) -> None:
        """Remove the hold; if the worker is held, wait until it has resumed (so that a next
        ``hold`` cannot be mistaken by the worker for the one it is still in)."""
        assert self.gate is not None
        (self.gate / f"{model}.hold").unlink(missing_ok=True)
        if self.proc.poll() is None:
            wait_until(
                lambda: (
                    not (events := self.events(model))
                    or events[-1]["event"] != "held"
                    or not _alive(events[-1]["pid"])
                ),
                f"{model}'s worker to resume",
            )

    def events(self, model: str) -> list[dict[str, Any]]:
        assert self.gate is not None
        path = self.gate / f"{model}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def wait_held(self, model: str, text: str) -> dict[str, Any]:
        """Wait until the batch holding ``text`` is held at the gate inside the worker."""
        held = wait_until(
            lambda: [e for e in self.events(model) if e["event"] == "held" and text in e["inputs"]],
            f"{text!r} held in {model}",
        )
        return dict(held[-1])

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


@contextmanager
def run_server(
    models: dict[str, Path],
    *args: str,
    gate: Path | None = None,
    env: dict[str, str] | None = None,
    project: Path | None = None,
) -> Iterator[Server]:
    cmd = [str(CLI), *(["-C", str(project)] if project else []), "serve", "--port", "0"]
    for name, path in models.items():
        cmd += ["--model", f"{name}={path}"]
    cmd += list(args)
    full_env = {
        k: v for k, v in os.environ.items() if k not in (TEST_GATE_ENV, "MODELMORA_API_KEY")
    }
    if gate is not None:
        gate.mkdir(parents=True, exist_ok=True)
        full_env[TEST_GATE_ENV] = str(gate)
    full_env.update(env or {})
    log = (
        Path(os.environ.get("TMPDIR", "/tmp"))
        / f"modelmora-serve-{os.getpid()}-{time.monotonic_ns()}.log"
    )
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=full_env)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    url = None
    deadline = time.monotonic() + 60
    while url is None:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            line = None
        if line is None:
            proc.kill()
            pytest.fail(f"server did not become ready: {' '.join(cmd)}\n{log.read_text()}")
        elif line.startswith(READY_PREFIX):
            url = line[len(READY_PREFIX) :].strip()
    server = Server(proc, url, log, gate)
    try:
        yield server
    finally:
        server.http.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.unlink(missing_ok=True)


def worker_pids(server_pid: int) -> list[int]:
    """The server's worker processes (spawned children; not multiprocessing's tracker)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == server_pid and b"spawn_main" in cmdline:
            out.append(int(entry.name))
    return out


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def export_text_model(snapshot: Path, *, classifier: bool = False) -> Path:
    """Write ``snapshot/model.onnx`` for a BERT-like HF model saved in ``snapshot``."""
    import torch
    import transformers

    auto = transformers.AutoModelForSequenceClassification if classifier else transformers.AutoModel
    model = auto.from_pretrained(str(snapshot)).eval()
    output = "logits" if classifier else "last_hidden_state"

    class Wrapper(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out[0]

    ids = torch.ones((2, 8), dtype=torch.int64)
    dyn = {0: "batch", 1: "sequence"}
    torch.onnx.export(
        Wrapper(model),
        (ids, torch.ones_like(ids), torch.zeros_like(ids)),
        str(snapshot / "model.onnx"),
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=[output],
        dynamic_axes={
            "input_ids": dyn,
            "attention_mask": dyn,
            "token_type_ids": dyn,
            output: {0: "batch"} if classifier else dyn,
        },
        opset_version=17,
        dynamo=False,
    )
    return snapshot


def make_linear_model(dest: Path, weight: np.ndarray, bias: np.ndarray) -> Path:
    """A numeric ONNX graph ``y = x @ weight + bias`` with a dynamic batch dimension."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dest.mkdir(parents=True, exist_ok=True)
    n_in, n_out = weight.shape
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", n_out])],
        initializer=[
            numpy_helper.from_array(weight.astype(np.float32), "W"),
            numpy_helper.from_array(bias.astype(np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(dest / "model.onnx"))
    return dest


def torch_embeddings(snapshot: Path, texts: list[str], max_length: int = 128) -> np.ndarray:
    """Mean pooling + L2 normalization: what sentence-transformers does for MiniLM-style models."""
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(snapshot))
    model = transformers.AutoModel.from_pretrained(str(snapshot)).eval()
    batch = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
    return pooled.numpy()


def torch_class_probs(snapshot: Path, texts: list[str]) -> np.ndarray:
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(snapshot))
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(snapshot)).eval()
    batch = tok(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    return torch.softmax(logits, dim=-1).numpy()


def token_counts(snapshot: Path, texts: list[str]) -> list[int]:
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(snapshot))
    return [len(ids) for ids in tok(texts, truncation=True)["input_ids"]]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.asarray((a * b).sum(axis=-1))
