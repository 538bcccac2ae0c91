"""`embedstore backbones`: the registered backbones, their dims, input sizes and availability here."""

import json

import click

from embedstore.backbones import describe_backbones, format_backbones

from ..options import json_option


@click.command("backbones")
@json_option
def command(as_json: bool) -> None:
    """List the backbones embedstore can embed with, and whether each is usable on this machine."""
    rows = describe_backbones()
    click.echo(json.dumps(rows, indent=2) if as_json else format_backbones(rows))
