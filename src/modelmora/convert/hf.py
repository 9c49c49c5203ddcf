"""Hugging Face transformers checkpoints → ONNX.

The default path is optimum-onnx ``main_export`` with an explicit task. Its own validation
only warns on mismatches, so it is switched off here: :mod:`modelmora.validate` is the gate.
``exporter: torch`` / ``torch-dynamo`` instead load the task's model class and run
``torch.onnx.export`` on it (useful when optimum lacks an export config).
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path
from typing import Any

from modelmora import tasks
from modelmora.convert._files import MODEL_FILE, copy_sidecars, onnx_graphs, staged
from modelmora.convert.detect import read_config
from modelmora.convert.genai_config import write_genai_config
from modelmora.convert.job import ExportJob
from modelmora.convert.torch_export import export_module
from modelmora.errors import UserInputError
from modelmora.records.conversion import ConversionResult

EXAMPLE_SENTENCES = ("Export this sentence.", "A second, somewhat longer example sentence here.")


def import_transformers() -> Any:
    """Import transformers without TensorFlow (with the [tf] extra it would pull Keras 3)."""
    os.environ.setdefault("USE_TF", "0")
    import transformers

    return transformers


def _optimum_tasks(model_type: str, *, name: str) -> list[str]:
    import_transformers()
    import optimum.exporters.onnx.model_configs  # noqa: F401  (registers the export configs)
    from optimum.exporters.tasks import TasksManager

    try:
        return sorted(
            TasksManager.get_supported_tasks_for_model_type(
                model_type, exporter="onnx", library_name="transformers"
            )
        )
    except KeyError as exc:
        raise UserInputError(
            f"model '{name}': architecture '{model_type}' is not supported by the optimum ONNX "
            f"exporter (optimum-onnx {metadata.version('optimum-onnx')})",
            hint=f"set models.{name}.convert.exporter: torch to export with torch.onnx instead",
        ) from exc


def export_task(task: str) -> str:
    """The optimum task for ``task``: generative models are exported with their KV cache."""
    info = tasks.known(task)
    return f"{task}-with-past" if info is not None and info.generative else task


def _decoder_types() -> list[str]:
    """Model types optimum can export as a decoder with a KV cache."""
    from optimum.exporters.tasks import TasksManager

    return sorted(
        TasksManager.get_supported_model_type_for_task("text-generation-with-past", exporter="onnx")
    )


def check_exportable(model_dir: Path, *, name: str, task: str) -> None:
    """Fail before loading any weights when optimum cannot export this model for this task."""
    model_type = str(read_config(model_dir).get("model_type") or "")
    if not model_type:
        raise UserInputError(
            f"model '{name}': config.json has no model_type; cannot pick an export config",
            hint=f"set models.{name}.convert.exporter: torch",
        )
    supported = _optimum_tasks(model_type, name=name)
    base = [t for t in supported if not t.endswith("-with-past")]
    decoder = export_task(task) != task
    if task not in supported:
        kv = (
            f"; architectures optimum exports as decoders with a KV cache: "
            f"{', '.join(_decoder_types())} (tested: llama, mistral, phi3, qwen2)"
            if decoder
            else ""
        )
        raise UserInputError(
            f"model '{name}' ({model_type}) cannot be exported for task '{task}'; "
            f"supported tasks: {', '.join(base)}{kv}",
            hint=f"set models.{name}.task to one of them",
        )
    if decoder and export_task(task) not in supported:
        raise UserInputError(
            f"model '{name}': architecture '{model_type}' cannot be exported as a decoder with "
            f"a KV cache for {task}; supported: {', '.join(_decoder_types())}",
            hint="tested: llama, mistral, phi3, qwen2",
        )


def export_optimum(job: ExportJob) -> ConversionResult:
    model_dir, name, task = job.snapshot, job.name, job.known_task
    check_exportable(model_dir, name=name, task=task)
    from optimum.exporters.onnx import main_export

    with staged(job.out_dir) as tmp:
        try:
            main_export(
                str(model_dir),
                output=tmp,
                task=export_task(task),
                opset=job.opset,
                device="cpu",
                framework="pt",
                library_name="transformers",
                do_validation=False,
                local_files_only=True,
                trust_remote_code=job.trust_remote_code,
            )
        except Exception as exc:
            raise UserInputError(
                f"model '{name}': optimum export for task '{task}' failed: {exc}",
                hint=f"check models.{name}.task, or try models.{name}.convert.exporter: torch",
            ) from exc
        graphs = onnx_graphs(tmp)
        if [g.name for g in graphs] != [MODEL_FILE]:
            raise UserInputError(
                f"model '{name}': task '{task}' exports several graphs "
                f"({', '.join(g.name for g in graphs)}); only single-graph models are "
                "supported so far",
                hint=f"set models.{name}.task to a single-graph task such as "
                "feature-extraction or text-classification",
            )
        copy_sidecars(model_dir, tmp)
        if export_task(task) != task:
            write_genai_config(model_dir, tmp, name=name)
    return job.result("optimum")


def load_task_model(model_dir: Path, *, task: str, trust_remote_code: bool) -> Any:
    """The PyTorch model class optimum would use for ``task``, loaded from local files."""
    import_transformers()
    from optimum.exporters.tasks import TasksManager

    cls = TasksManager.get_model_class_for_task(task, framework="pt", library="transformers")
    return cls.from_pretrained(
        str(model_dir), local_files_only=True, trust_remote_code=trust_remote_code
    ).eval()


def tokenize(model_dir: Path, sentences: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """Padded numpy inputs from the snapshot's own tokenizer."""
    tf = import_transformers()
    tokenizer = tf.AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    encoded = tokenizer(list(sentences), padding=True, truncation=True, return_tensors="np")
    return {k: v for k, v in encoded.items()}


def export_torch_hf(job: ExportJob) -> ConversionResult:
    import inspect

    import torch

    model = load_task_model(
        job.snapshot, task=job.known_task, trust_remote_code=job.trust_remote_code
    )
    params = inspect.signature(model.forward).parameters
    encoded = tokenize(job.snapshot, EXAMPLE_SENTENCES)
    input_names = [k for k in encoded if k in params]
    args = tuple(torch.from_numpy(encoded[k]) for k in input_names)
    with torch.no_grad():
        sample = model(**dict(zip(input_names, args, strict=True)), return_dict=True)
    output_names = [k for k, v in sample.items() if isinstance(v, torch.Tensor)]
    seq_len = args[0].shape[1]

    class _Positional(torch.nn.Module):
        """torch.onnx wants positional tensors in and a tuple out."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = self.model(**dict(zip(input_names, inputs, strict=True)), return_dict=True)
            return tuple(out[k] for k in output_names)

    axes: dict[str, dict[int, str]] = {
        n: {0: "batch_size", 1: "sequence_length"} for n in input_names
    }
    for k in output_names:
        dims = {0: "batch_size"}
        if sample[k].dim() >= 2 and sample[k].shape[1] == seq_len:
            dims[1] = "sequence_length"
        axes[k] = dims
    return export_module(
        _Positional(),
        args,
        job,
        input_names=input_names,
        output_names=output_names,
        dynamic_axes=axes,
    )
