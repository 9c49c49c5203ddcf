"""Prometheus metrics of one server (its own registry, so tests can run several apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["ServeMetrics"]

_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServeMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self._image_generation(r)
        self.request_seconds = Histogram(
            "modelmora_request_duration_seconds",
            "Request latency, from the route's start to the response, per model and status.",
            ["model", "endpoint", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "modelmora_queue_depth", "Requests waiting in the model's queue.", ["model"], registry=r
        )
        self.batch_size = Histogram(
            "modelmora_batch_size",
            "Rows (sentences or tensor rows) per batch sent to a worker.",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.loaded_models = Gauge(
            "modelmora_loaded_models", "Worker processes currently loaded.", registry=r
        )
        self.model_loaded = Gauge(
            "modelmora_model_loaded", "1 while the model's worker is loaded.", ["model"], registry=r
        )
        self.worker_restarts = Counter(
            "modelmora_worker_restarts",
            "Workers started again after a crash or a failed load.",
            ["model"],
            registry=r,
        )
        self.evictions = Counter(
            "modelmora_evictions",
            "Workers stopped to free room (budget), for idleness (idle) or on request (explicit).",
            ["model", "reason"],
            registry=r,
        )
        self.dropped = Counter(
            "modelmora_requests_dropped",
            "Requests answered without running the model (deadline, queue_full, crash).",
            ["model", "reason"],
            registry=r,
        )
        self.worker_rss = Gauge(
            "modelmora_worker_rss_bytes", "Resident memory of the worker.", ["model"], registry=r
        )
        self.load_seconds = Histogram(
            "modelmora_model_load_seconds",
            "Worker start-up: spawn, session creation, warm-up.",
            ["model"],
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )

        # Text generation.
        self.ttft_seconds = Histogram(
            "modelmora_time_to_first_token_seconds",
            "From the request's arrival to its first generated token (queueing included).",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inter_token_seconds = Histogram(
            "modelmora_inter_token_seconds",
            "Between two consecutive tokens of one sequence.",
            ["model"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.generated_tokens = Counter(
            "modelmora_generated_tokens", "Tokens generated.", ["model"], registry=r
        )
        self.running_sequences = Gauge(
            "modelmora_running_sequences",
            "Sequences generating in the worker.",
            ["model"],
            registry=r,
        )
        self.waiting_sequences = Gauge(
            "modelmora_waiting_sequences",
            "Generation requests waiting for admission.",
            ["model"],
            registry=r,
        )
        self.kv_cache_bytes = Gauge(
            "modelmora_kv_cache_bytes",
            "KV cache the worker holds for its sequences (at its last token).",
            ["model"],
            registry=r,
        )
        self.decode_batch = Histogram(
            "modelmora_decode_batch_sequences",
            "Sequences in each model call of a worker step (continuous batching).",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.worker_step_seconds = Counter(
            "modelmora_worker_step_seconds",
            "Time a generating worker spent in its steps: inside model calls (part=model_calls)"
            " and in its own work between them (part=between_calls: sampling, detokenizing,"
            " joining and dropping rows). Against wall time it shows where serving's time goes.",
            ["model", "part"],
            registry=r,
        )

    def _image_generation(self, r: CollectorRegistry) -> None:
        self.denoising_steps = Counter(
            "modelmora_denoising_steps",
            "Denoising steps run (text-to-image).",
            ["model"],
            registry=r,
        )
        self.image_progress = Gauge(
            "modelmora_image_progress_ratio",
            "Share of its denoising steps the running text-to-image request has done.",
            ["model"],
            registry=r,
        )
        self.image_seconds = Histogram(
            "modelmora_image_generation_seconds",
            "A text-to-image request from its first step to its images.",
            ["model"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
            registry=r,
        )

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
