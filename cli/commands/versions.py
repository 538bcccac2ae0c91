"""`embedstore versions STORE`: list, restore and tag table versions."""

import json
import shlex

import click

from ..options import json_option, open_existing, store_argument


@click.command("versions")
@store_argument
@click.option("--table", "table_name", help="Show one table's versions (default: a line per table).")
@click.option("--restore", "restore_version", help="Make this version (number or tag) of --table the newest.")
@click.option(
    "--tag",
    "tag_name",
    help="Tag the newest (or --version) version of --table, so compaction keeps it; a tag is letters, "
    "digits, '.', '_', '-', not all digits (digits are version numbers).",
)
@click.option("--version", "version", type=int, help="Version number for --tag.")
@json_option
def command(
    store: str,
    table_name: str | None,
    restore_version: str | None,
    tag_name: str | None,
    version: int | None,
    as_json: bool,
) -> None:
    """List table versions of STORE; with --table, also restore or tag one."""
    opened = open_existing(store)
    _check_combination(store, table_name, restore_version, tag_name, version)
    if restore_version is not None:
        assert table_name is not None  # _check_combination asks for --table
        new = opened.restore(table_name, restore_version)
        click.echo(f"{table_name}: version {restore_version} restored as version {new}")
        return
    if tag_name is not None:
        assert table_name is not None  # _check_combination asks for --table
        tagged = opened.tag(table_name, tag_name, version)
        click.echo(f"{table_name}: version {tagged} tagged {tag_name!r}")
        return
    names = [table_name] if table_name else opened.catalog.table_names()
    listing = {name: opened.versions(name) for name in names}
    if as_json:
        click.echo(json.dumps(listing if table_name is None else listing[table_name], indent=2))
        return
    for name, versions in listing.items():
        if table_name is None:
            newest = versions[-1]
            tags = sum(len(v["tags"]) for v in versions)
            click.echo(
                f"{name}: {len(versions)} version(s), newest {newest['version']} "
                f"({newest['rows']} rows, {newest['timestamp']}), {tags} tag(s)"
            )
            continue
        for v in versions:
            tagged_as = f"  [{', '.join(v['tags'])}]" if v["tags"] else ""
            click.echo(f"{v['version']:>6}  {v['timestamp']}  {v['rows']:>10} rows{tagged_as}")


def _check_combination(
    store: str, table: str | None, restore: str | None, tag: str | None, version: int | None
) -> None:
    """One action per run: --restore or --tag (with --version), each with --table."""
    if (restore is not None or tag is not None) and table is None:
        raise click.UsageError("--restore and --tag need --table NAME")
    if restore is not None and tag is not None:
        first = f"embedstore versions {shlex.quote(store)} --table {table}"
        raise click.UsageError(
            f"--restore and --tag go in two runs: `{first} --restore {shlex.quote(restore)}`, then "
            f"`{first} --tag {shlex.quote(tag)}` tags the restored version (the newest)"
        )
    if version is not None and tag is None:
        raise click.UsageError("--version says which version --tag names; pass --tag NAME with it")
