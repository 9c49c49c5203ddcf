"""The server's moving parts (pool, schedulers, metrics) and what every route shares."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Mapping

from modelmora.serve.config import ServedModel, ServerSettings
from modelmora.serve.errors import BadRequest, ModelNotFound, ServeError
from modelmora.serve.metrics import ServeMetrics
from modelmora.serve.pool import WorkerPool
from modelmora.serve.scheduler import ModelScheduler

__all__ = ["ServeState", "parse_priority", "parse_timeout_ms"]

_MAX_TIMEOUT_MS = 24 * 3600 * 1000.0
_PRIORITY_RANGE = (-(2**31), 2**31 - 1)


class ServeState:
    def __init__(self, settings: ServerSettings, models: Mapping[str, ServedModel]) -> None:
        self.settings = settings
        self.models = dict(models)
        self.metrics = ServeMetrics()
        self.pool = WorkerPool(self.models, settings, self.metrics)
        self.schedulers = {
            name: ModelScheduler(m, self.pool, self.metrics) for name, m in self.models.items()
        }
        self.pool.is_idle = lambda name: self.schedulers[name].depth == 0
        self.ready = False
        self.started_at = int(time.time())
        for name in self.models:
            self.metrics.queue_depth.labels(name).set(0)
            self.metrics.model_loaded.labels(name).set(0)
            self.metrics.worker_restarts.labels(name)

    def model(self, name: str) -> ServedModel:
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFound(f"model {name!r} is not served here (served: {known})") from None

    async def start(self) -> None:
        await self.pool.start()
        for scheduler in self.schedulers.values():
            scheduler.start()
        for name in self.settings.preload:
            await self.pool.load(name)
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await asyncio.gather(*(s.close() for s in self.schedulers.values()))
        await self.pool.close()

    @contextlib.contextmanager
    def observe(self, model: str, endpoint: str) -> Iterator[None]:
        """Record the request's latency under its model and final status."""
        started = time.perf_counter()
        status = "200"
        try:
            yield
        except ServeError as exc:
            status = str(exc.status)
            raise
        except BaseException:
            status = "500"
            raise
        finally:
            label = model if model in self.models else "_unknown"
            self.metrics.request_seconds.labels(label, endpoint, status).observe(
                time.perf_counter() - started
            )


def parse_priority(value: object, source: str) -> int | None:
    """``X-Priority`` / v2 ``parameters.priority``: an integer; larger is served first."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise BadRequest(f"{source} must be an integer, got {value!r}")
    try:
        priority = int(value) if isinstance(value, int) else int(str(value).strip())
    except ValueError:
        raise BadRequest(f"{source} must be an integer, got {value!r}") from None
    if not _PRIORITY_RANGE[0] <= priority <= _PRIORITY_RANGE[1]:
        raise BadRequest(f"{source} must fit in 32 bits, got {priority}")
    return priority


def parse_timeout_ms(value: object, source: str) -> float | None:
    """A deadline in milliseconds → seconds; 0 or absent means none."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise BadRequest(f"{source} must be a number of milliseconds, got {value!r}")
    try:
        ms = float(value) if isinstance(value, int | float) else float(str(value).strip())
    except ValueError:
        raise BadRequest(f"{source} must be a number of milliseconds, got {value!r}") from None
    if not 0 <= ms <= _MAX_TIMEOUT_MS or ms != ms:
        raise BadRequest(f"{source} must be between 0 and {_MAX_TIMEOUT_MS:g} ms, got {value!r}")
    return ms / 1000.0 if ms > 0 else None
