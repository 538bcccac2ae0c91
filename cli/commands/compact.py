"""`embedstore compact STORE`: merge fragments and drop old, untagged versions."""

import re
from datetime import timedelta

import click

from embedstore.errors import EmbedstoreError

from ..options import open_existing, store_argument


def parse_duration(text: str) -> timedelta:
    """'7d', '12h', '30m', '0s' or a combination like '1d12h'."""
    parts = re.fullmatch(r"(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text.strip())
    if not text.strip() or parts is None:
        raise EmbedstoreError(f"--older-than {text!r} is not a duration; use e.g. 7d, 12h, 30m or 0s")
    amounts = dict(zip(("weeks", "days", "hours", "minutes", "seconds"), parts.groups(), strict=True))
    return timedelta(**{unit: int(value) for unit, value in amounts.items() if value})


@click.command("compact")
@store_argument
@click.option(
    "--older-than",
    default="7d",
    show_default=True,
    help="Remove untagged versions older than this (e.g. 7d, 12h, 0s). Tagged versions are kept.",
)
def command(store: str, older_than: str) -> None:
    """Compact STORE's tables and remove old versions (tagged versions are never removed)."""
    report = open_existing(store).compact(parse_duration(older_than))
    for name, stats in report.items():
        click.echo(
            f"{name}: {stats['versions_before']} -> {stats['versions_after']} version(s), "
            f"{stats['bytes_removed'] / 2**20:.1f} MiB freed"
        )
