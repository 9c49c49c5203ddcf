"""``cache verify``: is every blob intact, every snapshot its blobs, every artifact its record?

The fast path trusts the stat cache (unchanged inode, size and mtime since the last
hash), so a warm multi-GB cache verifies in milliseconds; ``full=True`` re-hashes every
byte, which is what catches bit rot that leaves metadata untouched.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from modelmora.cache.filecheck import file_problems
from modelmora.cache.statcache import stat_key
from modelmora.cache.store import Store
from modelmora.fsutil import sha256_file

ProblemKind = Literal["corrupt", "missing", "stray", "snapshot", "artifact"]


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.subject}: {self.detail}"


@dataclass
class VerifyReport:
    blobs: int = 0
    bytes: int = 0
    rehashed: int = 0
    rehashed_bytes: int = 0
    snapshots: int = 0
    artifacts: int = 0
    problems: list[Problem] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}


def verify_store(store: Store, *, full: bool = False, repair: bool = False) -> VerifyReport:
    """Check blobs against their names, snapshots against their records and blobs, and
    converted artifacts against the file digests their records hold.

    ``repair`` deletes corrupt blobs, the snapshots that use them and corrupt artifacts, so
    that the next ``pull``/``install`` fetches or rebuilds them; without it nothing is
    modified except the stat cache.
    """
    report = VerifyReport()
    known = store.statcache.entries(reload=True)
    verified: dict[str, os.stat_result] = {}
    present: dict[str, os.stat_result] = {}
    stats: dict[str, os.stat_result] = {}
    corrupt: set[str] = set()
    for sha, path in store.iter_blobs():
        try:
            expected_path = store.blob_path(sha)
        except ValueError:
            expected_path = None
        if expected_path != path:
            report.problems.append(
                Problem("stray", str(path.relative_to(store.root)), "not named by its sha256")
            )
            continue
        st = path.stat()
        stats[sha] = st
        report.blobs += 1
        report.bytes += st.st_size
        if not full and known.get(sha) == stat_key(st):
            present[sha] = st
            continue
        report.rehashed += 1
        report.rehashed_bytes += st.st_size
        actual = sha256_file(path)
        if actual != sha:
            corrupt.add(sha)
            report.problems.append(Problem("corrupt", f"blob {sha}", f"content hashes to {actual}"))
            continue
        present[sha] = st
        verified[sha] = path.stat()
    if verified:
        store.statcache.record(verified)

    broken_snapshots: list[tuple[str, str]] = []
    for record in store.iter_snapshots():
        report.snapshots += 1
        name, digest = record.name, record.content_digest
        label = f"snapshot {name}@{digest[:12]}"
        bad = False
        for f in record.model.files:
            if f.sha256 in corrupt:
                bad = True
            if f.sha256 not in present and f.sha256 not in corrupt:
                report.problems.append(
                    Problem("missing", f"blob {f.sha256}", f"used by {name}/{f.path}, not in store")
                )
                bad = True
            problem = store.snapshot_file_problem(record, f, full=full)
            if problem:
                report.problems.append(Problem("snapshot", f"{label}: {f.path}", problem))
                bad = True
        if bad:
            broken_snapshots.append((name, digest))

    broken_artifacts: list[str] = []
    for directory, artifact in store.iter_artifacts():
        key = directory.name
        report.artifacts += 1
        damaged = file_problems(directory, artifact.conversion.files, store.statcache, full=full)
        for bad_file in damaged:
            subject = f"artifact {key}: {bad_file.path}"
            report.problems.append(Problem("artifact", subject, bad_file.detail))
        if damaged:
            broken_artifacts.append(key)

    if repair:
        for sha in sorted(corrupt):
            store.discard_blob(sha)
            report.repaired.append(f"removed corrupt blob {sha}")
        for name, digest in broken_snapshots:
            store.remove_snapshot(name, digest)
            report.repaired.append(f"removed snapshot {name}@{digest}")
        for key in broken_artifacts:
            with store.artifact_lock(key):
                store.remove_artifact(key)
            report.repaired.append(f"removed artifact {key} (install rebuilds it)")
    return report
