"""Model search across registries: an optional, class-level capability of sources.

A :class:`~modelmora.sources.base.Source` subclass supports search by defining the
classmethod ``search(query, *, task, limit, context, registry) -> list[SearchHit]``
(:class:`Searchable`); plugins opt in the same way. Registries whose source has no such
method are reported as unsupported, never silently skipped, so ``modelmora search`` always
says where it did *not* look.

Hub search goes straight to ``GET /api/models`` with the shared HTTP client rather than
``HfApi.list_models``: that call takes no timeout, and a search against a hung mirror must
fail in bounded time like every other ModelMora request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelmora.errors import ModelMoraError, SourceError, UserInputError
from modelmora.sources.base import Credentials, SourceContext, answer_error

__all__ = [
    "RegistrySearch",
    "SearchHit",
    "Searchable",
    "search_hub",
    "search_registries",
    "search_targets",
]

MAX_LIMIT = 1000


class SearchHit(BaseModel):
    """One model a registry found; ``source`` is what to write under ``models.NAME.source``."""

    model_config = ConfigDict(frozen=True)

    registry: str
    id: str
    source: str
    task: str | None = None
    downloads: int | None = None
    likes: int | None = None
    updated: str | None = None
    """Last modification as the registry reports it (ISO 8601)."""


class RegistrySearch(BaseModel):
    """The outcome for one registry block: hits, "not supported", or an error."""

    registry: str
    scheme: str | None
    supported: bool
    results: list[SearchHit] = []
    reason: str | None = None
    """Why search is not supported here (``supported`` is false)."""
    error: str | None = None
    """The registry supports search but this one failed (unreachable, auth …)."""
    hint: str | None = None
    exit_code: int = Field(0, exclude=True)


@runtime_checkable
class Searchable(Protocol):
    def search(
        self, query: str, *, task: str | None, limit: int, context: SourceContext, registry: str
    ) -> list[SearchHit]: ...


class _HubModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str
    pipeline_tag: str | None = None
    downloads: int | None = None
    likes: int | None = None
    last_modified: str | None = Field(None, alias="lastModified")


def search_hub(
    context: SourceContext,
    block: str,
    registry: str,
    query: str,
    task: str | None,
    limit: int,
    author: str | None,
    to_source: Callable[[str], str],
) -> list[SearchHit]:
    """``GET {endpoint}/api/models?search=…`` on the HF-compatible hub of registry block
    ``block`` (hits named by ``registry``, repository ids written as sources by
    ``to_source``), with the source context's timeout and retries."""
    from modelmora.sources.hf import hub_connection

    endpoint, token, token_env = hub_connection(context, block)
    if context.offline:
        raise SourceError(f"{registry}: cannot search in offline mode")
    params: dict[str, str | int] = {"search": query, "limit": max(1, min(limit, MAX_LIMIT))}
    if task:
        params["pipeline_tag"] = task
    if author:
        params["author"] = author
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    from modelmora.sources.http import (
        raise_if_transient,
        retrying,
        shared_client,
        transient_failures,
    )

    url = f"{endpoint}/api/models"

    def call() -> list[SearchHit]:
        with transient_failures(context.timeout_s):
            resp = shared_client().get(
                url, params=params, headers=headers, timeout=context.timeout_s
            )
        if resp.status_code == 200:
            return _hits(resp, registry=registry, to_source=to_source, endpoint=endpoint)
        raise_if_transient(resp.status_code, resp.headers)
        hint = f"set ${token_env} to a valid token with read access"
        raise answer_error(
            resp.status_code,
            origin=registry,
            endpoint=endpoint,
            credentials=Credentials(
                sent=bool(token),
                named=f"${token_env}",
                needed="a token",
                set_hint=hint,
                check_hint=hint,
            ),
        )

    def unreachable(attempts: int, reason: str) -> SourceError:
        return SourceError(
            f"{registry}: hub unreachable at {endpoint} after {attempts} attempts: {reason}"
        )

    return retrying(call, retries=context.max_retries, unreachable=unreachable)


def _hits(
    resp: httpx.Response, *, registry: str, to_source: Callable[[str], str], endpoint: str
) -> list[SearchHit]:
    try:
        payload = resp.json()
        models = [_HubModel.model_validate(item) for item in payload]
    except (ValueError, TypeError, ValidationError) as exc:
        raise SourceError(
            f"{registry}: {endpoint} sent an unreadable search answer: {exc}"
        ) from exc
    return [
        SearchHit(
            registry=registry,
            id=m.id,
            source=to_source(m.id),
            task=m.pipeline_tag,
            downloads=m.downloads,
            likes=m.likes,
            updated=m.last_modified,
        )
        for m in models
    ]


def search_targets(
    registries: Iterable[str],
    model_specs: Iterable[Mapping[str, Any]],
    *,
    only: str | None = None,
) -> list[tuple[str, str | None]]:
    """``(registry block, scheme)`` pairs to search.

    The manifest's registry blocks (``hf`` when it has none). A block's scheme is its name
    when that is a source scheme, else the scheme of the models that use it
    (``registry: NAME``); ``None`` when nothing tells. ``only`` (``--registry``) picks one
    block or scheme.
    """
    from modelmora.sources import parse_source, source_schemes

    schemes = set(source_schemes())
    used_by: dict[str, str] = {}
    for spec in model_specs:
        block = spec.get("registry")
        if block:
            try:
                used_by.setdefault(str(block), parse_source(str(spec["source"]))[0])
            except ModelMoraError:
                continue
    names = list(dict.fromkeys(registries)) or ["hf"]

    def scheme_of(name: str) -> str | None:
        return name if name in schemes else used_by.get(name)

    if only is not None:
        if only not in names and only not in schemes:
            raise UserInputError(
                f"unknown registry {only!r}",
                hint=f"registry blocks in modelmora.yml: {', '.join(names)}; "
                f"source schemes: {', '.join(sorted(schemes))}",
            )
        return [(only, scheme_of(only))]
    return [(name, scheme_of(name)) for name in names]


def search_registries(
    query: str,
    targets: Iterable[tuple[str, str | None]],
    *,
    context: SourceContext,
    task: str | None = None,
    limit: int = 20,
) -> list[RegistrySearch]:
    """Search every target; one failing registry does not hide the others' results."""
    from modelmora.sources import _load_class, is_builtin

    outcomes = []
    for registry, scheme in targets:
        if scheme is None:
            outcomes.append(
                RegistrySearch(
                    registry=registry,
                    scheme=None,
                    supported=False,
                    reason="no model uses this registry block and its name is not a source "
                    "scheme, so its kind is unknown",
                )
            )
            continue
        try:
            cls = _load_class(scheme)
        except ModelMoraError as exc:
            outcomes.append(_failed(registry, scheme, exc))
            continue
        search = getattr(cls, "search", None)
        if not callable(search):
            outcomes.append(
                RegistrySearch(
                    registry=registry,
                    scheme=scheme,
                    supported=False,
                    reason=f"{scheme}:// sources have no search API",
                )
            )
            continue
        try:
            hits = search(query, task=task, limit=limit, context=context, registry=registry)
        except ModelMoraError as exc:
            outcomes.append(_failed(registry, scheme, exc))
            continue
        except Exception as exc:
            if is_builtin(scheme):
                raise  # our bug: keep the traceback
            failure = ModelMoraError(f"{registry}: search plugin {scheme!r} failed: {exc}")
            outcomes.append(_failed(registry, scheme, failure))
            continue
        outcomes.append(
            RegistrySearch(
                registry=registry, scheme=scheme, supported=True, results=list(hits)[:limit]
            )
        )
    return outcomes


def _failed(registry: str, scheme: str, exc: ModelMoraError) -> RegistrySearch:
    return RegistrySearch(
        registry=registry,
        scheme=scheme,
        supported=True,
        error=exc.message,
        hint=exc.hint,
        exit_code=exc.exit_code,
    )
