"""`embedstore backbones`: the registered backbones, their dims, input sizes and availability here;
`--layers KEY`: the inner stages of KEY's architecture, usable as `KEY@stageN`."""

import json

import click

from embedstore.backbones import backbone_layers, describe_backbones, format_backbones

from ..options import json_option


@click.command("backbones")
@click.option("--layers", "layers_of", metavar="KEY", help="List KEY's layers and their widths instead.")
@json_option
def command(layers_of: str | None, as_json: bool) -> None:
    """List the backbones embedstore can embed with, and whether each is usable on this machine."""
    if layers_of is not None:
        layers, key = backbone_layers(layers_of), layers_of.strip().partition("@")[0]
        if as_json:
            rows = [{"name": name, "dim": dim} for name, dim in layers]
            click.echo(json.dumps({"key": key, "layers": rows}, indent=2))
        else:
            click.echo(format_layers(key, layers))
        return
    rows = describe_backbones()
    click.echo(json.dumps(rows, indent=2) if as_json else format_backbones(rows))


def format_layers(key: str, layers: list[tuple[str, int]]) -> str:
    """One `name  width` line per layer, then how to use them as backbone keys."""
    width = max(len(name) for name, _ in layers)
    lines = [f"{name.ljust(width)}  {dim}" for name, dim in layers]
    last = len(layers) - 1
    several = "+".join(str(i) for i in range(max(0, last - 2), last + 1))
    lines += ["", f"use one as --backbone {key}@stage{last}, several (concatenated) as {key}@stage{several}"]
    return "\n".join(lines)
