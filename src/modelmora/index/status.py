"""What is installed, per locked model: the read side of ``list``, ``show`` and ``install``.

Answers come from the DuckDB index (one short read transaction for all models, through
:meth:`modelmora.index.Index.statuses`) and are keyed by the lock entry, so an artifact
built for an older lock entry never counts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from modelmora.lock import LockedModel
from modelmora.records import validation_spec_digest

if TYPE_CHECKING:
    import duckdb


@dataclass
class BenchRow:
    backend: str
    status: str
    reason: str | None
    batch_size: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    throughput: float | None
    """Items/s; for text generation, generated tokens/s over all sequences."""
    load_time_ms: float | None
    ttft_ms: float | None = None
    """Text generation only (then ``batch_size`` = sequences, ``p50_ms`` = per token)."""
    kind: str = "latency"
    """What the row measures (``records.benchmark.BenchmarkKind``); for ``diffusion``,
    ``seq_len`` is the step count and ``p50_ms`` the time per image."""
    seq_len: int | None = None
    prompt_tokens_per_s: float | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class ArtifactRow:
    key: str
    variant: str
    sha256: str
    path: str
    size: int
    validated: bool | None
    """None: not validated yet."""
    max_abs_diff: float | None = None
    min_cosine: float | None = None
    validation_summary: str = ""
    benchmarks: list[BenchRow] = field(default_factory=list)


@dataclass
class ModelStatus:
    name: str
    source: str
    revision: str
    files: int
    size: int
    downloaded: bool
    snapshot: str | None
    artifacts: list[ArtifactRow] = field(default_factory=list)

    @property
    def stages(self) -> dict[str, str]:
        base = self.artifacts[0] if self.artifacts else None
        benches = [b for a in self.artifacts for b in a.benchmarks]
        validated = [a.validated for a in self.artifacts]
        return {
            "download": "ok" if self.downloaded else "missing",
            "convert": "ok" if base else "missing",
            "validate": (
                "missing"
                if not validated or None in validated
                else ("ok" if all(validated) else "failed")
            ),
            "benchmark": (
                "missing"
                if not benches
                else ("failed" if any(b.status == "failed" for b in benches) else "ok")
            ),
        }

    @property
    def installed(self) -> bool:
        return all(v == "ok" for v in self.stages.values())

    def best(self) -> BenchRow | None:
        """Fastest measured backend at the smallest batch size (of the base artifact)."""
        rows = [b for b in (self.artifacts[0].benchmarks if self.artifacts else []) if b.p50_ms]
        if not rows:
            return None
        smallest = min(b.batch_size for b in rows)
        return min((b for b in rows if b.batch_size == smallest), key=lambda b: b.p50_ms or 0)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["stages"] = self.stages
        data["installed"] = self.installed
        best = self.best()
        data["best_backend"] = best.backend if best else None
        data["artifact_sha256"] = self.artifacts[0].sha256 if self.artifacts else None
        return data


def read_statuses(
    con: duckdb.DuckDBPyConnection, entries: Sequence[LockedModel]
) -> list[ModelStatus]:
    statuses = []
    for entry in entries:
        digest = entry.content_digest()
        spec_digest = validation_spec_digest(entry.model_spec.validate_)
        snap = con.execute(
            "SELECT path FROM snapshots WHERE name = ? AND content_digest = ?",
            [entry.name, digest],
        ).fetchone()
        status = ModelStatus(
            name=entry.name,
            source=entry.source,
            revision=entry.revision,
            files=len(entry.files),
            size=sum(f.size for f in entry.files),
            downloaded=snap is not None,
            snapshot=snap[0] if snap else None,
        )
        artifacts = con.execute(
            "SELECT a.artifact_key, a.kind, a.sha256, a.path, a.size FROM model_artifacts m "
            "JOIN artifacts a USING (artifact_key) WHERE m.name = ? AND m.entry_digest = ? "
            "ORDER BY m.position",
            [entry.name, entry.entry_digest()],
        ).fetchall()
        for key, kind, sha, path, size in artifacts:
            row = ArtifactRow(
                key=key, variant=kind, sha256=sha, path=path, size=size, validated=None
            )
            val = con.execute(
                "SELECT passed, max_abs_diff, min_cosine, metrics FROM validations "
                "WHERE artifact_key = ? AND spec_digest = ? ORDER BY created_at DESC LIMIT 1",
                [key, spec_digest],
            ).fetchone()
            if val:
                row.validated, row.max_abs_diff, row.min_cosine = val[0], val[1], val[2]
                row.validation_summary = json.loads(val[3]).get("summary", "")
            for b in con.execute(
                "SELECT backend, status, reason, batch_size, latency_ms_p50, latency_ms_p95, "
                "latency_ms_p99, throughput_per_s, load_time_ms, metadata, seq_len FROM benchmarks "
                "WHERE artifact_key = ? AND backend = ANY(?) ORDER BY backend, batch_size, seq_len",
                [key, list(entry.model_spec.backends)],
            ).fetchall():
                meta = json.loads(b[9]) if b[9] else {}
                row.benchmarks.append(
                    BenchRow(
                        b[0],
                        b[1],
                        b[2],
                        b[3],
                        b[4],
                        b[5],
                        b[6],
                        b[7],
                        b[8],
                        ttft_ms=meta.get("ttft_ms"),
                        prompt_tokens_per_s=meta.get("prompt_tokens_per_s"),
                        notes=meta.get("notes", []),
                        kind=meta.get("kind") or "latency",
                        seq_len=b[10],
                    )
                )
            status.artifacts.append(row)
        statuses.append(status)
    return statuses
