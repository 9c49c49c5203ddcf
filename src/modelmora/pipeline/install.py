"""Run the install job for each model on the project's own Dagster instance.

Runs execute in this process on a persistent instance (``.modelmora/dagster``), so each
one shows up in the Dagster UI (``modelmora ui``) with its logs, lineage and metadata, and
can be re-executed there (:mod:`modelmora.pipeline.launch`). One model's failure never
stops the others.
"""

from __future__ import annotations

import contextvars
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelmora.cache import Store
from modelmora.lock import LockFile
from modelmora.pipeline.progress import STAGES
from modelmora.project import Project


@dataclass
class ModelOutcome:
    name: str
    run_id: str = ""
    stages: dict[str, str] = field(default_factory=dict)
    """stage → ``ok`` | ``failed`` | ``skipped``."""
    error: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error and all(self.stages.get(s) == "ok" for s in STAGES)


def dagster_home(project: Project) -> Path:
    """The project's own instance; created with an empty ``dagster.yaml`` (sqlite storage)."""
    home = project.state_dir / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    gitignore = project.state_dir / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text("*\n")
    return home


def instance_for(project: Project) -> Any:
    import dagster as dg

    # From its directory, not through DAGSTER_HOME: setting that would change the instance
    # of everything else in this process (other projects, a test's own Dagster).
    return dg.DagsterInstance.from_config(str(dagster_home(project)))


def run_install(
    project: Project,
    lock: LockFile,
    names: Sequence[str],
    *,
    store: Store,
    backends: Sequence[str] = (),
    jobs: int = 1,
    on_outcome: Callable[[ModelOutcome], None] | None = None,
    verbose: bool = False,
) -> list[ModelOutcome]:
    """Install ``names``; ``jobs`` models run at once (threads: each run is in-process).

    ``verbose`` prints the runs' logs (Dagster's console logger) on stderr."""
    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    instance = instance_for(project)
    known = set(instance.get_dynamic_partitions("models"))
    new = [n for n in lock.models if n not in known]
    if new:
        instance.add_dynamic_partitions("models", new)
    job = dg.build_reconstructable_job(
        "modelmora.pipeline.definitions",
        "install_job",
        reconstructable_kwargs={"project_dir": str(project.dir), "store_root": str(store.root)},
    )
    run_config = {
        "resources": {
            "project": {
                "config": {
                    "project_dir": str(project.dir),
                    "backends": list(backends),
                    "store_root": str(store.root),
                }
            }
        },
        "loggers": {"console": {"config": {"log_level": "INFO" if verbose else "CRITICAL"}}},
    }

    from modelmora.index import Index, RunRow
    from modelmora.pipeline import launch
    from modelmora.records import now

    index = Index(store)

    def one(name: str) -> ModelOutcome:
        started_at = now()
        started = time.perf_counter()
        result = launch.execute(
            job,
            instance=instance,
            run_config=run_config,
            tags={"dagster/partition": name, "modelmora/project": str(project.dir)},
        )
        outcome = _outcome(name, result)
        outcome.seconds = time.perf_counter() - started
        index.record_run(
            RunRow(
                run_id=outcome.run_id,
                project_dir=str(project.dir),
                model_name=name,
                ok=outcome.ok,
                started_at=started_at,
                finished_at=now(),
                message=outcome.error or None,
                stages=outcome.stages,
                seconds=outcome.seconds,
            )
        )
        if on_outcome:
            on_outcome(outcome)
        return outcome

    if jobs <= 1 or len(names) <= 1:
        return [one(name) for name in names]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        # Each model in a copy of this context: its stages report where this install does.
        futures = [pool.submit(contextvars.copy_context().run, one, name) for name in names]
        return [f.result() for f in futures]


def _outcome(name: str, result: Any) -> ModelOutcome:
    outcome = ModelOutcome(name=name, run_id=result.run_id)
    # Dagster names an asset check's step ``<asset>_<check>``.
    step_to_stage = {**{s: s for s in STAGES}, "convert_validate": "validate"}
    for event in result.all_events:
        stage = step_to_stage.get(event.step_key or "")
        if stage is None:
            continue
        kind = event.event_type_value
        if kind == "STEP_SUCCESS":
            outcome.stages[stage] = "ok"
        elif kind == "STEP_FAILURE":
            outcome.stages[stage] = "failed"
            outcome.error = outcome.error or _failure_message(event)
        elif kind == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            if not evaluation.passed:
                summary = evaluation.metadata.get("summary")
                text = getattr(summary, "value", None) or getattr(summary, "text", "")
                text = str(text).strip()
                outcome.error = (
                    text if "validation failed" in text else f"validation failed: {text}"
                )
    for stage in STAGES:
        outcome.stages.setdefault(stage, "skipped")
    return outcome


def _failure_message(event: Any) -> str:
    """The user-facing message of a failed step (ModelMoraError text, not a traceback)."""
    error = getattr(event.event_specific_data, "error", None)
    while (
        error is not None
        and error.cause is not None
        and error.cls_name
        in (
            "DagsterExecutionStepExecutionError",
            "DagsterUserCodeExecutionError",
        )
    ):
        error = error.cause
    if error is None:
        return "step failed"
    message = str(error.message).strip()
    if error.cls_name == "DagsterAssetCheckFailedError":
        return message.splitlines()[0]
    # Dagster renders "module.Class: text"; our errors speak for themselves.
    for prefix in (f"modelmora.errors.{error.cls_name}: ", f"{error.cls_name}: "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message
