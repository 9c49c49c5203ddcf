"""Image-text dual encoders (CLIP-style) → one ONNX graph per tower.

Such a model embeds texts and images into one space, and a request usually holds only one
of the two; optimum's export would make every call run both towers on dummy inputs. So each
tower is exported on its own with ``torch.onnx.export``, from the transformers model's own
``get_text_features`` and ``get_image_features`` (what the validation gate compares with):

* ``text_model.onnx``: ``input_ids``, ``attention_mask`` ``[batch, sequence]`` →
  ``text_embeds`` ``[batch, dim]``;
* ``vision_model.onnx``: ``pixel_values`` ``[batch, 3, H, W]`` → ``image_embeds``.

The artifact keeps the tokenizer (``tokenizer.json``) and ``preprocessor_config.json``, so
serving needs neither torch nor transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelmora.convert._files import copy_sidecars, staged
from modelmora.convert.hf import EXAMPLE_SENTENCES, import_transformers, tokenize
from modelmora.convert.job import ExportJob
from modelmora.convert.torch_export import torch_onnx_export
from modelmora.errors import UserInputError
from modelmora.imaging import ImageError, ImagePreprocessor, test_images
from modelmora.names import IMAGE_TOWER, TEXT_TOWER
from modelmora.records.conversion import ConversionResult

__all__ = ["export_dual_encoder", "load_dual_encoder"]


def load_dual_encoder(model_dir: Path, *, name: str, trust_remote_code: bool) -> Any:
    model = import_transformers().AutoModel.from_pretrained(
        str(model_dir), local_files_only=True, trust_remote_code=trust_remote_code
    )
    if not (hasattr(model, "get_text_features") and hasattr(model, "get_image_features")):
        raise UserInputError(
            f"model '{name}' ({type(model).__name__}) has no get_text_features and "
            "get_image_features: it is not an image-text dual encoder",
            hint=f"set models.{name}.task to what the model does",
        )
    return model.eval()


def export_dual_encoder(job: ExportJob) -> ConversionResult:
    import torch

    model_dir, name, opset = job.snapshot, job.name, job.opset
    if not (model_dir / "tokenizer.json").is_file():
        raise UserInputError(
            f"model '{name}' has no tokenizer.json: serving tokenizes texts with the fast "
            "tokenizer (`tokenizers`, no transformers), and this checkpoint has none (SigLIP "
            "v1 ships only a sentencepiece spiece.model, which transformers cannot convert)",
            hint="use a checkpoint that ships tokenizer.json, or add one to the model's files",
        )
    try:
        preprocess = ImagePreprocessor.read(model_dir)
    except ImageError as exc:
        raise UserInputError(f"model '{name}': {exc}") from None
    model = load_dual_encoder(model_dir, name=name, trust_remote_code=job.trust_remote_code)
    encoded = tokenize(model_dir, EXAMPLE_SENTENCES)
    ids = torch.from_numpy(encoded["input_ids"])
    mask = torch.from_numpy(encoded["attention_mask"])
    pixels = torch.from_numpy(preprocess(test_images(2)))

    class Tower(torch.nn.Module):
        """One tower of ``model`` (its weights registered, so the tracer sees parameters)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

    class Text(Tower):
        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)

    class Vision(Tower):
        def forward(self, pixel_values: Any) -> Any:
            return self.model.get_image_features(pixel_values=pixel_values)

    tokens = {0: "batch_size", 1: "sequence_length"}
    with staged(job.out_dir) as tmp:
        torch_onnx_export(
            Text(),
            (ids, mask),
            tmp / TEXT_TOWER,
            input_names=["input_ids", "attention_mask"],
            output_names=["text_embeds"],
            dynamic_axes={
                "input_ids": tokens,
                "attention_mask": tokens,
                "text_embeds": {0: "batch_size"},
            },
            dynamo=False,
            opset=opset,
        )
        torch_onnx_export(
            Vision(),
            (pixels,),
            tmp / IMAGE_TOWER,
            input_names=["pixel_values"],
            output_names=["image_embeds"],
            dynamic_axes={"pixel_values": {0: "batch_size"}, "image_embeds": {0: "batch_size"}},
            dynamo=False,
            opset=opset,
        )
        copy_sidecars(model_dir, tmp)
    return job.result(
        "torch.onnx",
        torch_exporter="legacy",
        components={"text": TEXT_TOWER, "image": IMAGE_TOWER},
        model_file=IMAGE_TOWER,
    )
