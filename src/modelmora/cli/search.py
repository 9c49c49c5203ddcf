"""``modelmora search QUERY``: find models in the registries the project uses."""

from __future__ import annotations

from typing import Any

import click

from modelmora.cli._common import echo_json, find_project_dir, status


@click.command()
@click.argument("query")
@click.option(
    "--registry",
    "-r",
    "registry",
    help="Search only this registry block of modelmora.yml (or a scheme, e.g. onnx-zoo).",
)
@click.option("--task", "-t", help="Only models with this task (pipeline tag), e.g. fill-mask.")
@click.option(
    "--limit",
    "-n",
    type=click.IntRange(1, 1000),
    default=20,
    show_default=True,
    help="Results per registry.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def search(
    ctx: click.Context,
    query: str,
    registry: str | None,
    task: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Search registries for models matching QUERY.

    Searches the registry blocks of modelmora.yml (the Hugging Face Hub when there is no
    manifest or it declares none). Registries that cannot search are listed as such. Exit
    code 1 (2 for auth) when a registry that supports search failed; other registries'
    results are still shown.
    """
    from modelmora.project import Project
    from modelmora.settings import offline_from_env
    from modelmora.sources import SourceContext
    from modelmora.sources.search import search_registries, search_targets

    project = Project(find_project_dir(ctx))
    names: list[str] = []
    specs: list[dict[str, Any]] = []
    if project.manifest_path.is_file():
        loaded = project.manifest
        names = list(loaded.manifest.registries)
        specs = [
            {"source": m.source, "registry": m.registry} for m in loaded.manifest.models.values()
        ]
        context = project.source_context()
    else:
        context = SourceContext(project_dir=project.dir, offline=offline_from_env())
    targets = search_targets(names, specs, only=registry)
    with status(f"Searching {', '.join(t[0] for t in targets)}…", quiet=as_json):
        outcomes = search_registries(query, targets, context=context, task=task, limit=limit)

    if as_json:
        echo_json(
            {
                "query": query,
                "task": task,
                "registries": [_as_json(o) for o in outcomes],
            }
        )
    else:
        _print(outcomes)
    code = max((o.exit_code for o in outcomes), default=0)
    if code:
        ctx.exit(code)


def _as_json(outcome: Any) -> dict[str, Any]:
    """``scheme`` always (null when unknown); ``results`` only where search ran."""
    data: dict[str, Any] = outcome.model_dump(mode="json")
    for key in ("reason", "error", "hint"):
        if data.get(key) is None:
            data.pop(key, None)
    if not outcome.supported or outcome.error:
        data.pop("results", None)
    return data


def _print(outcomes: list[Any]) -> None:
    for o in outcomes:
        label = (
            f"{o.registry} ({o.scheme}://)" if o.scheme and o.scheme != o.registry else o.registry
        )
        if not o.supported:
            click.echo(f"{label}: search not supported ({o.reason})")
            continue
        if o.error:
            click.echo(f"{label}: search failed")
            hint = f"\n  hint: {o.hint}" if o.hint else ""
            click.echo(f"error: {o.error}{hint}", err=True)
            continue
        click.echo(f"{label}: {len(o.results)} result(s)")
        width = max((len(h.source) for h in o.results), default=0)
        for h in o.results:
            extra = [h.task or "-"]
            if h.downloads is not None:
                extra.append(f"{h.downloads} downloads")
            if h.updated:
                extra.append(f"updated {h.updated[:10]}")
            click.echo(f"  {h.source:<{width}}  {'  '.join(extra)}")
