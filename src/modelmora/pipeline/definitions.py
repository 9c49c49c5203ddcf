"""Dagster definitions for one project: partitions per model, thin assets over ``steps``.

``download`` → ``convert`` → (blocking check ``validate``) → ``benchmark`` (the names of
:data:`~modelmora.pipeline.progress.STAGES`, the same in the CLI, JSON and docs), each
partitioned by model name. Data versions come from the lock entry (bytes + spec), code
versions from the tool versions, so the UI shows which model is stale after a lock or an
upgrade. The project directory is a resource: ``modelmora install`` passes it, and the UI's
code location (``modelmora.pipeline.location``) reads it from ``MODELMORA_PROJECT_DIR``.
"""

import warnings
from functools import cache, partial
from pathlib import Path
from typing import Any

import dagster as dg

from modelmora import __version__
from modelmora.cache import Store
from modelmora.pipeline import progress, steps
from modelmora.project import Project
from modelmora.records import ArtifactRecord, read_artifact

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

PARTITIONS = dg.DynamicPartitionsDefinition(name="models")
JOB_NAME = "install"
GROUP = "modelmora"


class ModelMoraProject(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where the project lives and which backends to benchmark (empty: the manifest's)."""

    project_dir: str
    backends: list[str] = []  # noqa: RUF012 (pydantic copies defaults)
    store_root: str = ""
    """Empty: ``MODELMORA_HOME`` (or its platform default)."""

    def job(self, name: str) -> steps.ModelJob:
        project = Project(Path(self.project_dir))
        lock = project.read_lock()
        if name not in lock.models:
            raise dg.Failure(f"model {name!r} is not in {project.lock_path}")
        store = Store(Path(self.store_root)) if self.store_root else Store()
        return steps.ModelJob(project=project, entry=lock.models[name], store=store)


def _code_version() -> str:
    from modelmora.convert import tool_versions

    tools = tool_versions()
    return f"modelmora-{__version__}:" + ",".join(f"{k}={v}" for k, v in tools.items())


def _artifacts(job: steps.ModelJob, keys: list[str]) -> list[ArtifactRecord]:
    found = [read_artifact(job.store.artifact_dir(k)) for k in keys]
    missing = [k for k, r in zip(keys, found, strict=True) if r is None]
    if missing:
        raise dg.Failure(f"artifacts missing from the store: {missing}; re-run `convert`")
    return [r for r in found if r is not None]


@cache
def build_definitions(project_dir: str, store_root: str = "") -> dg.Definitions:
    # Every stage is partitioned by model, grouped together and versioned by our code.
    stage = partial(
        dg.asset, partitions_def=PARTITIONS, group_name=GROUP, code_version=_code_version()
    )

    @stage(
        kinds={"python"},
        description="Fetch and verify the locked files into the content-addressed store.",
    )
    def download(context: dg.AssetExecutionContext, project: ModelMoraProject) -> dg.Output[str]:
        job = project.job(context.partition_key)
        snapshot = steps.download(job)
        entry = job.entry
        return dg.Output(
            str(snapshot),
            data_version=dg.DataVersion(entry.content_digest()[:32]),
            metadata={
                "source": entry.source,
                "revision": entry.revision,
                "files": len(entry.files),
                "bytes": sum(f.size for f in entry.files),
                "snapshot": dg.MetadataValue.path(str(snapshot)),
            },
        )

    @stage(
        kinds={"onnx"},
        description="Convert the snapshot to ONNX (plus optimized / int8 variants).",
    )
    def convert(
        context: dg.AssetExecutionContext, project: ModelMoraProject, download: str
    ) -> dg.Output[list[str]]:
        job = project.job(context.partition_key)
        with progress.library_logs_to(context.log):
            records = steps.convert(job, Path(download))
        base = records[0].conversion
        return dg.Output(
            [r.key for r in records],
            data_version=dg.DataVersion(base.sha256[:32]),
            metadata={
                "artifact_sha256": base.sha256,
                "exporter": base.exporter_label,
                "opset": base.opset,
                "task": base.task or "",
                "variants": ", ".join(r.variant for r in records),
                "inputs": ", ".join(i.name for i in base.inputs),
                "outputs": ", ".join(o.name for o in base.outputs),
            },
        )

    @dg.asset_check(
        asset=convert,
        name="validate",
        blocking=True,
        partitions_def=PARTITIONS,
        additional_ins={"download": dg.AssetIn("download")},
        description="Hard gate: ONNX Runtime outputs vs the reference model, per output.",
    )
    def validate(
        context: dg.AssetCheckExecutionContext,
        project: ModelMoraProject,
        convert: list[str],
        download: str,
    ) -> dg.AssetCheckResult:
        job = project.job(_partition(context))
        artifacts = _artifacts(job, convert)
        with progress.library_logs_to(context.log):
            results = steps.validate(job, Path(download), artifacts)
        metadata: dict[str, Any] = {}
        for artifact, record in zip(artifacts, results, strict=True):
            report = record.report
            prefix = "" if artifact.variant == "base" else f"{artifact.variant} "
            for out in report.outputs:
                metadata[f"{prefix}{out.name} max_abs_diff"] = out.max_abs_diff
                metadata[f"{prefix}{out.name} max_rel_diff"] = out.max_rel_diff
                if out.min_cosine is not None:
                    metadata[f"{prefix}{out.name} min_cosine"] = out.min_cosine
            metadata[f"{prefix}summary".strip()] = report.summary
        failed = [(a, r) for a, r in zip(artifacts, results, strict=True) if not r.report.passed]
        if failed:  # the line `install` shows: the first failing artifact's, named
            artifact, record = failed[0]
            named = "" if artifact.variant == "base" else f"{artifact.variant} variant: "
            metadata["summary"] = named + record.report.summary
        return dg.AssetCheckResult(
            passed=all(r.report.passed for r in results),
            severity=dg.AssetCheckSeverity.ERROR,
            metadata=metadata,
        )

    @stage(
        kinds={"onnxruntime"},
        description="Latency, throughput and memory per execution provider and batch size.",
    )
    def benchmark(
        context: dg.AssetExecutionContext, project: ModelMoraProject, convert: list[str]
    ) -> dg.Output[list[str]]:
        job = project.job(context.partition_key)
        records = steps.benchmark(job, _artifacts(job, convert), backends=project.backends or None)
        rows = []
        for r in records:
            res = r.result
            if res.status != "ok":
                rows.append(f"| {r.artifact_key[:8]} | {res.backend} | {res.status_line} | | |")
            for b in res.batches:
                rows.append(
                    f"| {r.artifact_key[:8]} | {res.backend} | batch {b.batch_size} | "
                    f"{b.p50_ms:.2f} / {b.p95_ms:.2f} / {b.p99_ms:.2f} | "
                    f"{b.throughput_items_per_s:.1f} |"
                )
        table = (
            "| artifact | backend | run | p50 / p95 / p99 ms | items/s |\n|---|---|---|---|---|\n"
        )
        results = dg.MetadataValue.md(table + "\n".join(rows))
        failed = [r for r in records if r.result.status == "failed"]
        if failed:  # recorded (list/show tell), and the step fails so install does too
            first = failed[0]
            raise dg.Failure(
                description=f"benchmark failed on {first.result.backend} "
                f"(artifact {first.artifact_key[:12]}): {first.result.reason}",
                metadata={"results": results},
            )
        return dg.Output([r.id for r in records], metadata={"results": results})

    job = dg.define_asset_job(
        JOB_NAME,
        selection=dg.AssetSelection.all(include_sources=False),
        partitions_def=PARTITIONS,
        executor_def=dg.in_process_executor,
        description="download → convert → validate → benchmark for one model partition",
    )
    return dg.Definitions(
        assets=[download, convert, benchmark],
        asset_checks=[validate],
        jobs=[job],
        resources={"project": ModelMoraProject(project_dir=project_dir, store_root=store_root)},
    )


def _partition(context: dg.AssetCheckExecutionContext) -> str:
    key = context.op_execution_context.partition_key
    return str(key)


def install_job(project_dir: str, store_root: str = "") -> dg.JobDefinition:
    """Entry point for ``build_reconstructable_job``: the install job of one project."""
    return build_definitions(project_dir, store_root).resolve_job_def(JOB_NAME)
