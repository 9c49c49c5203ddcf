"""Causal LMs through ``install``: converted with a KV cache, gated by greedy decoding
against PyTorch, benchmarked in tokens/s. Real CLI, real Dagster, real ORT.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modelmora.lock import read_lock
from modelmora.testing.cli import run_cli
from modelmora.testing.hub_emulator import HubEmulator
from modelmora.testing.tiny_models import make_tiny_bert, make_tiny_causal_lm

pytestmark = pytest.mark.timeout(600)

# A 32-wide random model has one 4-bit block per weight row, far coarser than real models:
# the manifest's own threshold field relaxes the top-1 gate from its default 0.9.
GEN_BLOCKS = (
    "    validate: {new_tokens: 8, quantized_min_top1: 0.8}\n"
    "    benchmark: {prompt_tokens: 8, new_tokens: 4, sequences: [1, 2]}\n"
)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_install_converts_validates_and_benchmarks_a_causal_lm(family: str, tmp_path: Path) -> None:
    project, home = tmp_path / "proj", tmp_path / "home"
    make_tiny_causal_lm(project / "models" / "lm", family=family)
    quantize = {"llama": "dynamic-int8", "qwen2": "weight-int4"}[family]
    variant = {"llama": "int8", "qwen2": "int4"}[family]
    (project / "modelmora.yml").write_text(
        "models:\n  lm:\n    source: ./models/lm\n"
        f"    convert: {{quantize: {quantize}}}\n" + GEN_BLOCKS
    )  # no task: detected from config.json (LlamaForCausalLM / Qwen2ForCausalLM)
    proc = run_cli(project, "install", "--json", env={"MODELMORA_HOME": str(home)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    model = json.loads(proc.stdout)["models"][0]
    assert model["stages"] == {
        "download": "ok", "convert": "ok", "validate": "ok", "benchmark": "ok"
    }  # fmt: skip
    base = model["artifacts"][0]
    artifact = Path(base["path"])
    record = json.loads((artifact / "artifact.json").read_text())
    assert record["conversion"]["task"] == "text-generation"
    names = {i["name"] for i in record["conversion"]["inputs"]}
    assert {"input_ids", "attention_mask", "past_key_values.0.key"} <= names  # a KV cache
    # The chat template and GenAI's description of the graph travel with the artifact.
    assert (artifact / "chat_template.jinja").is_file()
    genai = json.loads((artifact / "genai_config.json").read_text())
    assert genai["model"]["decoder"]["num_hidden_layers"] == 2
    (validation,) = [json.loads(p.read_text()) for p in artifact.glob("validation-*.json")]
    checks = validation["report"]["generation"]
    assert len(checks) == 3 and all(c["first_mismatch"] is None for c in checks)
    assert all(len(c["onnx_ids"]) == 8 or c["onnx_ids"][-1] == 0 for c in checks)
    (bench,) = [json.loads(p.read_text()) for p in artifact.glob("benchmark-*.json")]
    result = bench["result"]
    assert result["kind"] == "generation" and result["status"] == "ok", result
    assert result["session_providers"] == ["CPUExecutionProvider"]
    rows = {r["batch_size"]: r for r in result["batches"]}
    assert set(rows) == {1, 2}
    assert all(r["ttft_ms"] > 0 and r["throughput_items_per_s"] > 0 for r in rows.values())
    assert all(r["seq_len"] == 8 and r["iterations"] == 4 for r in rows.values())
    # list/show read the same figures back from the index: tokens/s, TTFT, ms per token.
    listed = json.loads(
        run_cli(project, "list", "--json", env={"MODELMORA_HOME": str(home)}).stdout
    )
    (row,) = [b for b in listed[0]["artifacts"][0]["benchmarks"] if b["batch_size"] == 1]
    assert (
        row["ttft_ms"] == rows[1]["ttft_ms"]
        and row["throughput"] == rows[1]["throughput_items_per_s"]
    )
    assert listed[0]["best_backend"] == "cpu"
    shown = run_cli(project, "show", "lm", env={"MODELMORA_HOME": str(home), "COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    assert "sequences" in shown.stdout and "tokens/s" in shown.stdout and "TTFT ms" in shown.stdout
    quantized = model["artifacts"][1]  # validated by the looser, documented gate
    assert quantized["variant"] == variant and quantized["validated"] is True
    if variant == "int4":
        assert b"MatMulNBits" in (Path(quantized["path"]) / "model.onnx").read_bytes()
    (qv,) = [json.loads(p.read_text()) for p in Path(quantized["path"]).glob("validation-*.json")]
    report = qv["report"]
    assert report["quantized"] is True and report["generation"]  # ids recorded, not gated
    assert report["top1_agreement"] >= 0.8 and report["perplexity_ratio"] <= 1.2


def test_the_gate_names_prompt_step_and_ids_when_the_graph_disagrees(tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    from modelmora.convert import convert
    from modelmora.manifest.model import ConvertSpec, ValidateSpec
    from modelmora.validate import validate

    snapshot = make_tiny_causal_lm(tmp_path / "lm")
    out = tmp_path / "onnx"
    convert(snapshot, out, name="lm", task=None, spec=ConvertSpec())
    spec = ValidateSpec(new_tokens=8)
    good = validate(snapshot, out / "model.onnx", task="text-generation", spec=spec)
    assert good.passed, good.summary

    graph = onnx.load(str(out / "model.onnx"))
    # The output head is the MatMul weight of shape (hidden, vocab) = (32, 512).
    head = next(t for t in graph.graph.initializer if tuple(t.dims) == (32, 512))
    weights = numpy_helper.to_array(head).copy()
    weights[:, : weights.shape[1] // 2] *= -1.0  # a perturbed output head
    head.CopyFrom(numpy_helper.from_array(weights, head.name))
    onnx.save(graph, str(out / "model.onnx"))
    bad = validate(snapshot, out / "model.onnx", task="text-generation", spec=spec)
    assert not bad.passed and bad.generation is not None
    i, check = next((i, c) for i, c in enumerate(bad.generation) if c.first_mismatch is not None)
    k = check.first_mismatch
    assert k is not None
    assert (
        f"prompt {i} ({check.prompt_tokens} tokens): greedy ids differ at new token {k}: "
        f"ONNX {check.onnx_ids[k]}, PyTorch {check.reference_ids[k]}"
    ) in bad.summary
    assert check.onnx_ids[k] != check.reference_ids[k]
    assert not np.isclose(bad.outputs[0].min_cosine or 1.0, 1.0)


def test_an_architecture_without_a_decoder_export_is_named(tmp_path: Path) -> None:
    from modelmora.convert.hf import check_exportable
    from modelmora.errors import UserInputError

    snapshot = make_tiny_bert(tmp_path / "bert", sentence_transformers=False)
    with pytest.raises(UserInputError) as err:
        check_exportable(snapshot, name="bert", task="text-generation")
    message = str(err.value)
    assert "(bert)" in message and "KV cache" in message
    assert "llama" in message and "qwen2" in message  # what is supported


def test_the_artifact_also_runs_in_onnxruntime_genai(tmp_path: Path) -> None:
    """genai_config.json describes our export correctly: GenAI's own loop gives our ids."""
    og = pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai has no wheel here")
    from modelmora.convert import convert
    from modelmora.decoding import Decoder
    from modelmora.manifest.model import ConvertSpec

    snapshot = make_tiny_causal_lm(tmp_path / "lm", family="qwen2")
    out = tmp_path / "onnx"
    convert(snapshot, out, name="lm", task=None, spec=ConvertSpec())
    prompt = np.arange(3, 20, dtype=np.int64)[None, :]
    ours = Decoder.load(out / "model.onnx").greedy_batch(prompt, 12).ids[0].tolist()
    model = og.Model(str(out))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=prompt.shape[1] + 12, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt.astype(np.int32))
    produced: list[int] = []
    while len(produced) < 12 and not generator.is_done():
        generator.generate_next_token()
        produced.append(int(generator.get_next_tokens()[0]))
    assert produced == ours[: len(produced)] and len(produced) >= 1


def test_the_chat_template_is_locked_from_the_hub(hub: HubEmulator, tmp_path: Path) -> None:
    """hf:// locks chat_template.jinja by default: the template is part of the pinned bytes."""
    snapshot = make_tiny_causal_lm(tmp_path / "lm")
    files = {p.name: p.read_bytes() for p in snapshot.iterdir() if p.is_file()}
    hub.create_repo("org/tiny-llama", files, metadata={"pipeline_tag": "text-generation"})
    project = tmp_path / "proj"
    project.mkdir()
    (project / "modelmora.yml").write_text(
        f"registries:\n  hf: {{endpoint: '{hub.url}'}}\n"
        "models:\n  lm:\n    source: hf://org/tiny-llama\n"
    )
    proc = run_cli(project, "lock")
    assert proc.returncode == 0, proc.stderr
    locked = {f.path for f in read_lock(project / "modelmora.lock").models["lm"].files}
    assert {"chat_template.jinja", "tokenizer_config.json", "tokenizer.json"} <= locked


@pytest.mark.parametrize(("family", "window"), [("mistral", 16), ("phi3", None)])
def test_other_families_pass_the_gate(family: str, window: int | None, tmp_path: Path) -> None:
    """Mistral with a sliding window (checked past it) and Phi-3 (fused qkv/gate-up weights)."""
    from modelmora.convert import convert
    from modelmora.manifest.model import ConvertSpec, ValidateSpec
    from modelmora.validate import validate

    snapshot = make_tiny_causal_lm(tmp_path / "lm", family=family, sliding_window=window)
    convert(snapshot, tmp_path / "onnx", name="lm", task=None, spec=ConvertSpec())
    report = validate(
        snapshot, tmp_path / "onnx" / "model.onnx", task="text-generation",
        spec=ValidateSpec(new_tokens=8),
    )  # fmt: skip
    assert report.passed, report.summary
    assert report.generation is not None
    if window is not None:  # the fixed prompts plus one past the window
        assert len(report.generation) == 4 and report.generation[-1].prompt_tokens == window + 8
    else:
        assert len(report.generation) == 3
