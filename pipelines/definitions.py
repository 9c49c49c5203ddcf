"""The repository's own Dagster code location: its modelmora.yml / modelmora.lock.

`dagster dev -f pipelines/definitions.py` shows the demo project's assets; `modelmora ui`
does the same for any project.
"""

from __future__ import annotations

from pathlib import Path

from modelmora.pipeline.definitions import build_definitions

defs = build_definitions(str(Path(__file__).resolve().parents[1]))
