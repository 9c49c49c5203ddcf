"""Code location for ``dagster dev -m modelmora.pipeline.location`` (what ``modelmora ui`` runs).

The project comes from ``MODELMORA_PROJECT_DIR`` (default: the current directory).
"""

from __future__ import annotations

import os
from pathlib import Path

from modelmora.pipeline.definitions import build_definitions

defs = build_definitions(str(Path(os.environ.get("MODELMORA_PROJECT_DIR", ".")).resolve()))
