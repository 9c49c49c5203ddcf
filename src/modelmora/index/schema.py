"""The tables of ``index.duckdb`` (documented table by table in docs/cache.md).

Bump ``SCHEMA_VERSION`` on any change: an index with an older version is rebuilt from the
store automatically. Timestamps are ``TIMESTAMP`` columns holding naive UTC
(:func:`modelmora.index.rows.utc` converts every value written; ``TIMESTAMPTZ`` would need
pytz).
"""

from __future__ import annotations

SCHEMA_VERSION = 3

# Tables filled by the cache (rebuilt from the store by reindex) ...
STORE_TABLES = ("models", "revisions", "files", "blobs", "snapshots", "projects")
# ... and tables of install's records (rebuilt from them too; only `runs`, a log, is
# carried over from the old file).
PIPELINE_TABLES = ("artifacts", "model_artifacts", "validations", "benchmarks", "runs")

SCHEMA = """
CREATE TABLE meta (
    key VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);
CREATE TABLE models (
    name VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    first_seen TIMESTAMP NOT NULL,
    last_seen TIMESTAMP NOT NULL,
    PRIMARY KEY (name, source)
);
CREATE TABLE revisions (
    name VARCHAR NOT NULL,
    content_digest VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    revision VARCHAR NOT NULL,
    entry_digest VARCHAR NOT NULL,
    file_count BIGINT NOT NULL,
    total_size BIGINT NOT NULL,
    metadata JSON NOT NULL,
    spec JSON NOT NULL,
    recorded_at TIMESTAMP NOT NULL,
    PRIMARY KEY (name, content_digest)
);
CREATE TABLE files (
    content_digest VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    size BIGINT NOT NULL,
    sha256 VARCHAR NOT NULL,
    PRIMARY KEY (content_digest, path)
);
CREATE TABLE blobs (
    sha256 VARCHAR PRIMARY KEY,
    size BIGINT NOT NULL,
    path VARCHAR NOT NULL,
    stored_at TIMESTAMP NOT NULL
);
CREATE TABLE snapshots (
    name VARCHAR NOT NULL,
    content_digest VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    link_mode VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (name, content_digest)
);
CREATE TABLE projects (
    project_dir VARCHAR PRIMARY KEY,
    lock_path VARCHAR NOT NULL,
    registered_at TIMESTAMP NOT NULL
);
CREATE TABLE artifacts (
    artifact_key VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    content_digest VARCHAR NOT NULL,
    entry_digest VARCHAR,
    kind VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    size BIGINT,
    sha256 VARCHAR,
    created_at TIMESTAMP NOT NULL,
    metadata JSON
);
CREATE TABLE validations (
    validation_id VARCHAR PRIMARY KEY,
    artifact_key VARCHAR NOT NULL,
    spec_digest VARCHAR NOT NULL,
    passed BOOLEAN NOT NULL,
    max_abs_diff DOUBLE,
    min_cosine DOUBLE,
    created_at TIMESTAMP NOT NULL,
    metrics JSON
);
CREATE TABLE model_artifacts (
    name VARCHAR NOT NULL,
    entry_digest VARCHAR NOT NULL,
    position INTEGER NOT NULL,
    artifact_key VARCHAR NOT NULL,
    PRIMARY KEY (name, entry_digest, position)
);
CREATE TABLE benchmarks (
    benchmark_id VARCHAR PRIMARY KEY,
    artifact_key VARCHAR NOT NULL,
    backend VARCHAR NOT NULL,
    provider VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    reason VARCHAR,
    batch_size INTEGER NOT NULL,
    seq_len INTEGER,
    iterations INTEGER,
    load_time_ms DOUBLE,
    latency_ms_p50 DOUBLE,
    latency_ms_p95 DOUBLE,
    latency_ms_p99 DOUBLE,
    throughput_per_s DOUBLE,
    created_at TIMESTAMP NOT NULL,
    metadata JSON
);
CREATE TABLE runs (
    run_id VARCHAR PRIMARY KEY,
    project_dir VARCHAR,
    model_name VARCHAR,
    step VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    message VARCHAR,
    metadata JSON
);
"""
