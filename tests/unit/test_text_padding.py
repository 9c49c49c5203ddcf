"""Which text towers are padded to their full context, whatever the batch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from modelmora.validate.inputs import text_pad_length


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        # SigLIP: the text settings sit in text_config.
        ({"model_type": "siglip", "text_config": {"max_position_embeddings": 64}}, 64),
        # A SigLIP text tower on its own (SiglipTextModel checkpoints).
        ({"model_type": "siglip_text_model", "max_position_embeddings": 16}, 16),
        # Masked padding: padded to the batch's longest.
        ({"model_type": "bert", "max_position_embeddings": 512}, None),
        ({"model_type": "clip", "text_config": {"max_position_embeddings": 77}}, None),
    ],
)
def test_full_length_padding_follows_the_model_type(
    tmp_path: Path, config: dict[str, Any], expected: int | None
) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert text_pad_length(tmp_path) == expected
