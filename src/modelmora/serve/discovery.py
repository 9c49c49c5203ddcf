"""The seam between ``modelmora install`` and ``modelmora serve``.

At start-up the router reads the index once (then closes it, as DuckDB wants): for every
locked model, the validated artifacts of its current lock entry and their benchmarks. It
serves the fastest validated artifact on the first of the model's ``backends`` that was
really measured (a backend recorded as unavailable is skipped), falling back to the base
artifact on the CPU.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from modelmora.cache.filecheck import FileDigest
from modelmora.errors import UserInputError
from modelmora.serve.config import ServedModel

if TYPE_CHECKING:
    from modelmora.index.status import ArtifactRow, ModelStatus

__all__ = ["choose_artifact", "discover"]


def discover(project_dir: Path) -> list[ServedModel]:
    """The installed, validated models of the project in ``project_dir``."""
    from modelmora.cache import Store
    from modelmora.index import Index
    from modelmora.project import Project
    from modelmora.records import read_artifact
    from modelmora.serve.tasks import served_as

    project = Project(project_dir)
    if not project.lock_path.is_file():
        raise UserInputError(
            f"nothing to serve: no modelmora.lock in {project_dir}",
            hint="run `modelmora install` in a project, or serve a directory: --model NAME=DIR",
        )
    lock = project.read_lock()
    store = Store()
    statuses = Index(store).statuses([lock.models[n] for n in sorted(lock.models)])
    served, skipped = [], []
    for status in statuses:
        entry = lock.models[status.name]
        spec = entry.model_spec
        chosen = choose_artifact(status, spec.backends)
        if chosen is None:
            skipped.append(status.name)
            continue
        backend, artifact = chosen
        record = read_artifact(Path(artifact.path))
        served.append(
            ServedModel(
                name=status.name,
                artifact_dir=Path(artifact.path),
                onnx_file=record.conversion.model_file if record else None,
                task=served_as(record.conversion.task if record else None),
                files=tuple(FileDigest.of(f) for f in record.conversion.files) if record else (),
                store_root=store.root,
                backend=backend,
                serve=spec.serve,
            )
        )
    if skipped:
        print(
            f"modelmora serve: not installed or not validated, not served: {', '.join(skipped)}"
            " (run `modelmora install`)",
            file=sys.stderr,
        )
    if not served:
        raise UserInputError(
            f"no installed, validated models in {project_dir}",
            hint="run `modelmora install` first, or serve a directory: --model NAME=DIR",
        )
    return served


def choose_artifact(status: ModelStatus, backends: Sequence[str]) -> tuple[str, ArtifactRow] | None:
    """``(backend, artifact)`` to run a model with, or None if nothing of it passed validation.

    Public so that every consumer of installed models (``serve``, ``export triton``) makes
    the same choice: the fastest validated artifact on the first of ``backends`` that was
    really measured, else the first validated artifact (the base) on the CPU.
    """
    valid = [a for a in status.artifacts if a.validated]
    if not valid:
        return None

    def p50(artifact: ArtifactRow, backend: str) -> float | None:
        rows = [b for b in artifact.benchmarks if b.backend == backend and b.p50_ms]
        return min(rows, key=lambda b: b.batch_size).p50_ms if rows else None

    for candidate in backends:
        measured = [(p50(a, candidate), a) for a in valid]
        timed = [(t, a) for t, a in measured if t is not None]
        if timed:
            return candidate, min(timed, key=lambda pair: pair[0])[1]
    return "cpu", valid[0]
