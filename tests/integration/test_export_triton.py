"""``modelmora export triton``: a Triton model repository from what ``install`` produced.

One real install (tiny models built here, real Dagster, DuckDB, ONNX Runtime) serves the
whole module. Every generated ``config.pbtxt`` is parsed with protobuf's text format into
Triton's own ``ModelConfig`` message (shipped by tritonclient) and compared with the ONNX
graph, read independently with ``onnx``. No Triton server runs here (there is no
``tritonserver`` build for this machine); the message schema is Triton's own.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import np_to_triton_dtype

from modelmora.errors import ModelMoraError
from modelmora.export.triton import PriorityMapping, triton_config
from modelmora.manifest.model import ServeSpec
from modelmora.testing.cli import run_cli
from modelmora.testing.tiny_models import make_tiny_bert, make_tiny_classifier

pytestmark = pytest.mark.timeout(300)

FAST_BENCH = "    benchmark: {batch_sizes: [1], seq_len: 8, warmup: 1, iterations: 2}\n"
# A non-power-of-two batch size, a fractional delay, priorities on both sides of 0.
SERVE: dict[str, dict[str, Any]] = {
    "embedder": {"max_batch_size": 12, "max_queue_delay_ms": 2.5, "priority": 3},
    "sentiment": {"priority": -1, "max_queue_size": 64},
}
MANIFEST = (
    "models:\n"
    "  embedder:\n    source: ./models/embedder\n    task: feature-extraction\n"
    + FAST_BENCH
    + f"    serve: {json.dumps(SERVE['embedder'])}\n"
    "  sentiment:\n    source: ./models/sentiment\n"
    "    convert: {quantize: dynamic-int8}\n"  # two validated artifacts: the choice matters
     + FAST_BENCH + f"    serve: {json.dumps(SERVE['sentiment'])}\n"
)

# install's records next to an artifact: never part of the exported model
RECORD = re.compile(r"artifact\.json|(validation|benchmark)-[0-9a-f]+\.json")


def run(project: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(project, *args, env={"MODELMORA_HOME": str(home)}, timeout=240)


class Installed:
    def __init__(self, project: Path, home: Path) -> None:
        self.project, self.home = project, home

    def export(self, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return run(self.project, self.home, "export", "triton", str(out), *args)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("export")
    project, home = root / "proj", root / "home"
    make_tiny_bert(project / "models" / "embedder")
    make_tiny_classifier(project / "models" / "sentiment")
    (project / "modelmora.yml").write_text(MANIFEST)
    proc = run(project, home, "install")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return Installed(project, home)


@pytest.fixture
def in_home(installed: Installed, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In-process calls (``discover``) read the module's store."""
    monkeypatch.setenv("MODELMORA_HOME", str(installed.home))
    yield


def parse(path: Path) -> Any:
    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def expected_tensors(values: Any, initializers: set[str], batched: bool) -> list[Any]:
    """(name, Triton type, dims) straight from the graph, by other libraries' type tables."""
    out = []
    for v in values:
        if v.name in initializers:
            continue
        tt = v.type.tensor_type
        dtype = np_to_triton_dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        out.append((v.name, f"TYPE_{dtype}", dims[1:] if batched else dims))
    return out


def test_repository_configs_parse_into_triton_model_config_and_match(
    installed: Installed, tmp_path: Path, in_home: None
) -> None:
    out = tmp_path / "repo"
    proc = installed.export(out, "--json")
    assert proc.returncode == 0, proc.stderr
    exported = {m["name"]: m for m in json.loads(proc.stdout)}
    assert set(exported) == {"embedder", "sentiment"}
    assert sorted(p.name for p in out.iterdir()) == ["embedder", "sentiment"]  # no leftovers

    listing = run(installed.project, installed.home, "list", "--json")
    artifacts = {
        a["key"]: a for m in json.loads(listing.stdout) for a in m["artifacts"] if a["validated"]
    }
    from modelmora.serve.discovery import discover

    served = {m.name: m for m in discover(installed.project)}
    manifest = {name: ServeSpec.model_validate(spec) for name, spec in SERVE.items()}
    levels = {}
    for name, model in exported.items():
        serve = manifest[name]
        artifact = artifacts[model["artifact_key"]]
        # The same artifact `modelmora serve` picks, byte for byte.
        assert Path(artifact["path"]) == served[name].artifact_dir
        assert model["backend"] == served[name].backend
        store_dir, version_dir = Path(artifact["path"]), out / name / "1"
        assert sha256(version_dir / "model.onnx") == artifact["sha256"] == model["onnx_sha256"]
        record = json.loads((store_dir / "artifact.json").read_text())
        model_files = [f for f in record["conversion"]["files"] if not RECORD.fullmatch(f["path"])]
        for f in model_files:
            assert sha256(version_dir / f["path"]) == f["sha256"] == sha256(store_dir / f["path"])
        copied = sorted(
            p.relative_to(version_dir).as_posix() for p in version_dir.rglob("*") if p.is_file()
        )
        assert copied == sorted(f["path"] for f in model_files) == sorted(model["files"])
        assert "tokenizer.json" in copied  # install's records stay in the store

        config = parse(out / name / "config.pbtxt")
        assert config.name == name and config.platform == "onnxruntime_onnx"
        assert config.max_batch_size == serve.max_batch_size
        graph = onnx.load(str(version_dir / "model.onnx")).graph
        inits = {t.name for t in graph.initializer}
        got_in = [
            (t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims))
            for t in config.input
        ]
        got_out = [
            (t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims))
            for t in config.output
        ]
        assert got_in == expected_tensors(graph.input, inits, batched=True)
        assert got_out == expected_tensors(graph.output, set(), batched=True)
        assert {"input_ids", "attention_mask"} <= {t[0] for t in got_in}

        batching = config.dynamic_batching
        assert batching.max_queue_delay_microseconds == round(serve.max_queue_delay_ms * 1000)
        sizes = list(batching.preferred_batch_size)
        m = serve.max_batch_size
        assert sizes == sorted(set(sizes)) and sizes[-1] == m and 1 not in sizes
        assert all(s & (s - 1) == 0 for s in sizes[:-1])  # powers of two, then the maximum
        assert {1 << k for k in range(1, m.bit_length()) if 1 << k <= m} <= set(sizes)
        assert batching.default_queue_policy.max_queue_size == serve.max_queue_size
        assert batching.default_queue_policy.allow_timeout_override is True
        # Levels: 1 = first; room above and below the declared priorities for overrides.
        declared = {s.priority for s in manifest.values()}
        assert batching.priority_levels == len(declared) + 2
        assert 1 < batching.default_priority_level < batching.priority_levels
        assert (
            batching.default_priority_level
            == model["config"]["dynamic_batching"]["default_priority_level"]
        )
        levels[name] = batching.default_priority_level
    # ModelMora: larger priority first. Triton: smaller level first.
    assert manifest["embedder"].priority > manifest["sentiment"].priority
    assert levels["embedder"] < levels["sentiment"]


def test_existing_model_dir_is_refused_then_replaced_with_force(
    installed: Installed, tmp_path: Path
) -> None:
    out = tmp_path / "repo"
    assert installed.export(out, "embedder").returncode == 0
    marker = out / "embedder" / "hand-edited.txt"
    marker.write_text("keep me unless --force")
    before = (out / "embedder" / "config.pbtxt").read_text()

    refused = installed.export(out, "embedder", "sentiment")
    assert refused.returncode == 2
    assert f"already exists, not overwritten: {out / 'embedder'}" in refused.stderr
    assert "--force" in refused.stderr and "Traceback" not in refused.stderr
    assert marker.is_file() and not (out / "sentiment").exists()  # nothing half-done

    forced = installed.export(out, "embedder", "sentiment", "--force")
    assert forced.returncode == 0, forced.stderr
    assert not marker.exists()
    assert (out / "embedder" / "config.pbtxt").read_text() == before
    assert parse(out / "sentiment" / "config.pbtxt").name == "sentiment"
    assert sorted(p.name for p in out.iterdir()) == ["embedder", "sentiment"]


def test_unknown_and_uninstalled_models_error_and_write_nothing(
    installed: Installed, tmp_path: Path
) -> None:
    unknown = installed.export(tmp_path / "a", "embedder", "nope")
    assert unknown.returncode == 2
    assert (
        "not in modelmora.lock: nope" in unknown.stderr and "embedder, sentiment" in unknown.stderr
    )
    assert not (tmp_path / "a").exists()

    # A copy of the project with one more model, locked but never installed.
    project = tmp_path / "proj"
    shutil.copytree(installed.project, project)
    make_tiny_bert(project / "models" / "later", seed=7)
    with (project / "modelmora.yml").open("a") as fh:
        fh.write("  later:\n    source: ./models/later\n    task: feature-extraction\n")
    assert run(project, installed.home, "lock").returncode == 0
    out = tmp_path / "b"
    proc = run(project, installed.home, "export", "triton", str(out))
    assert proc.returncode == 2
    assert "not installed or not validated: later" in proc.stderr
    assert "modelmora install later" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
    # The installed ones still export from the same lock.
    ok = run(project, installed.home, "export", "triton", str(out), "embedder")
    assert ok.returncode == 0, ok.stderr
    assert sorted(p.name for p in out.iterdir()) == ["embedder"]


def test_corrupt_store_file_fails_without_partial_directory(
    installed: Installed, tmp_path: Path, in_home: None
) -> None:
    from modelmora.serve.discovery import discover

    artifact_dir = next(m.artifact_dir for m in discover(installed.project) if m.name == "embedder")
    victim = artifact_dir / "vocab.txt"
    original = victim.read_bytes()
    out = tmp_path / "repo"
    try:
        victim.write_bytes(original + b"tampered\n")
        proc = installed.export(out, "embedder")
    finally:
        victim.write_bytes(original)
    assert proc.returncode == 1
    assert str(victim) in proc.stderr and "cache verify" in proc.stderr
    assert list(out.iterdir()) == []  # the staging directory was removed


def _graph(path: Path, inputs: list[Any], outputs: list[Any]) -> Path:
    nodes = [helper.make_node("Identity", [inputs[0].name], [outputs[0].name])]
    model = helper.make_model(
        helper.make_graph(nodes, "g", inputs, outputs), opset_imports=[helper.make_opsetid("", 18)]
    )
    onnx.save(model, str(path))
    return path


def test_fixed_batch_scalars_and_types_map_without_batching(tmp_path: Path) -> None:
    """A graph with a fixed leading dimension cannot be batched by Triton: max_batch_size 0."""
    name = 'tokens "ids" é'
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT16, [1, "n"]),
        helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        helper.make_tensor_value_info("ids", TensorProto.UINT32, [1, 4]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, "n"])]
    path = _graph(tmp_path / "model.onnx", inputs, outputs)
    serve = ServeSpec(max_batch_size=8, priority=5)
    config, notes = triton_config("fixed", path, serve, PriorityMapping.from_priorities([5]))
    parsed = text_format.Parse(config.to_pbtxt(["a comment"]), model_config_pb2.ModelConfig())
    assert parsed.max_batch_size == 0 and not parsed.HasField("dynamic_batching")
    assert notes and "max_batch_size 0" in notes[0]
    assert [t.name for t in parsed.input] == [name, "flag", "ids"]
    want = expected_tensors(inputs, set(), batched=False)
    for tensor, (_, dtype, dims) in zip(parsed.input, want, strict=True):
        assert model_config_pb2.DataType.Name(tensor.data_type) == dtype
        assert list(tensor.dims) == (dims or [1])
    scalar = parsed.input[1]
    assert scalar.HasField("reshape") and list(scalar.reshape.shape) == []

    unsupported = _graph(
        tmp_path / "complex.onnx",
        [helper.make_tensor_value_info("z", TensorProto.COMPLEX64, ["b", 2])],
        [helper.make_tensor_value_info("w", TensorProto.COMPLEX64, ["b", 2])],
    )
    with pytest.raises(ModelMoraError, match="tensor 'z' has element type COMPLEX64"):
        triton_config("c", unsupported, serve, PriorityMapping.from_priorities([0]))
