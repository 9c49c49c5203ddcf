"""``index.duckdb``: a queryable mirror of the store, rebuildable from it at any time.

One package owns the index — its schema (:mod:`~modelmora.index.schema`), how records
become rows (:mod:`~modelmora.index.rows`), the reads (:mod:`~modelmora.index.status`)
and the connection discipline and rebuild (:mod:`~modelmora.index.db`). It sits above the
store and the records it mirrors; :class:`Index` is its one way in. DuckDB itself is
imported only when an index is opened.
"""

from modelmora.index.db import Index, IndexBusyError, RunRow, SnapshotRow
from modelmora.index.status import ArtifactRow, BenchRow, ModelStatus

__all__ = [
    "ArtifactRow",
    "BenchRow",
    "Index",
    "IndexBusyError",
    "ModelStatus",
    "RunRow",
    "SnapshotRow",
]
