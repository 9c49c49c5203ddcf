"""Record formats: what each install stage produced, as it is kept in the store.

One package owns every install record — its schema, its file name and path, how it is read
and written — so that the pipeline (which writes them), the store, ``cache gc``, ``cache
verify`` and the index (which mirrors them and is rebuilt from them) agree by construction:

* :mod:`~modelmora.records.conversion` — ``ConversionResult``: one ONNX artifact;
* :mod:`~modelmora.records.validation` — ``ValidationReport``: the numeric gate's verdict;
* :mod:`~modelmora.records.benchmark` — ``BackendBenchmark``: one backend's measurements;
* :mod:`~modelmora.records.install` — the record files around them (``artifact.json``,
  ``validation-*.json``, ``benchmark-*.json``, ``links/*.json``).

Stages import the schema of what they produce from here; this package imports no stage.
"""

from modelmora.records.install import (
    ARTIFACT_RECORD,
    VARIANT_ORDER,
    ArtifactLinks,
    ArtifactRecord,
    BenchmarkRecord,
    LinkedArtifact,
    ValidationRecord,
    artifact_path,
    benchmark_path,
    digest_of,
    is_record_file,
    iter_artifact_dirs,
    iter_records,
    links_path,
    now,
    read_all_links,
    read_artifact,
    read_artifact_quietly,
    read_benchmark,
    read_json_records,
    read_validation,
    validation_path,
    validation_spec_digest,
    write_record,
)

__all__ = [
    "ARTIFACT_RECORD",
    "VARIANT_ORDER",
    "ArtifactLinks",
    "ArtifactRecord",
    "BenchmarkRecord",
    "LinkedArtifact",
    "ValidationRecord",
    "artifact_path",
    "benchmark_path",
    "digest_of",
    "is_record_file",
    "iter_artifact_dirs",
    "iter_records",
    "links_path",
    "now",
    "read_all_links",
    "read_artifact",
    "read_artifact_quietly",
    "read_benchmark",
    "read_json_records",
    "read_validation",
    "validation_path",
    "validation_spec_digest",
    "write_record",
]
