"""``modelmora export``: hand installed models to other serving stacks."""

from __future__ import annotations

from pathlib import Path

import click

from modelmora.cli._common import echo_json, find_project_dir, status


@click.group("export")
def export_group() -> None:
    """Export installed, validated models for other servers."""


@export_group.command("triton")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Replace model directories that already exist.")
@click.option("--json", "as_json", is_flag=True, help="Print what was exported as JSON.")
@click.pass_context
def triton(
    ctx: click.Context, out_dir: Path, names: tuple[str, ...], force: bool, as_json: bool
) -> None:
    """Write a Triton model repository to OUT_DIR (default: every locked model).

    Each model becomes OUT_DIR/NAME/config.pbtxt and OUT_DIR/NAME/1/model.onnx (plus its
    external data and tokenizer files): the artifact `modelmora serve` would load.
    """
    from modelmora.export import export_triton

    with status("Exporting to a Triton model repository…", quiet=as_json):
        exported = export_triton(find_project_dir(ctx), out_dir.resolve(), names, force=force)
    if as_json:
        echo_json([m.model_dump(mode="json") for m in exported])
        return
    for m in exported:
        cfg = m.config
        batching = f"max_batch_size {cfg.max_batch_size}" if cfg.max_batch_size else "no batching"
        click.echo(
            f"{m.name} → {m.directory} ({m.variant} artifact, sha256 {m.onnx_sha256[:12]}…, "
            f"{len(cfg.inputs)} inputs, {len(cfg.outputs)} outputs, {batching})"
        )
        for note in m.notes:
            click.echo(f"  note: {note}", err=True)
