"""Entry point of the `embedstore` command: a click group that loads each command only when it runs.

Errors the user can fix (EmbedstoreError, click's own usage errors, and OS-level failures: a refused
write, a full disk, too little memory) print as one line on stderr with exit code 2, never a traceback.
Any other exception is a bug: one line saying so, exit code 70; EMBEDSTORE_DEBUG=1 shows its traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from cli.commands import SUMMARIES
from embedstore.core.errors import EmbedstoreError, first_line, os_error_line

BUG_EXIT_CODE = 70  # EX_SOFTWARE: an internal error, not the user's input


class EmbedstoreGroup(click.Group):
    """Lazy commands (`--help`, `info` and friends never import torch) and one-line errors."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(SUMMARIES)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUMMARIES:
            return None
        return importlib.import_module(f"cli.commands.{name.replace('-', '_')}").command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl(list(SUMMARIES.items()))

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,  # ignored: errors are always reported here, as one line
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            code = super().main(
                args,
                prog_name or "embedstore",
                complete_var=complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
        except EmbedstoreError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(2)
        except click.exceptions.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        except click.ClickException as error:
            ctx = getattr(error, "ctx", None)  # a UsageError's
            where = f" (see `{ctx.command_path} --help`)" if ctx else ""
            click.echo(f"error: {error.format_message()}{where}", err=True)
            sys.exit(2)
        except Exception as error:  # the last resort: OS-level failures in one line, bugs marked as such
            if os.environ.get("EMBEDSTORE_DEBUG", "") not in ("", "0"):
                raise
            line = os_error_line(error)
            if line is not None:
                click.echo(f"error: {line}", err=True)
                _exit_now(2)
            click.echo(
                f"error: {type(error).__name__}: {first_line(error)} "
                "(this is a bug; set EMBEDSTORE_DEBUG=1 for the traceback)",
                err=True,
            )
            sys.exit(BUG_EXIT_CODE)
        sys.exit(code or 0)


def _exit_now(code: int) -> None:
    """Exit at once, after flushing stdout and stderr, without interpreter shutdown: after an OS-level
    failure (a full disk) native reader threads may still be running, and tearing them down at shutdown
    was seen to abort the process ("terminate called without an active exception", exit -6) after the
    one-line error had been printed. Everything this process wrote was committed or cleaned up while
    the error unwound. Only as the `embedstore` command (`main`): in-process callers (click's CliRunner)
    get SystemExit as before."""
    if not _AS_COMMAND:
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


_AS_COMMAND = False  # set by `main`, the console entry point


@click.group(cls=EmbedstoreGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="embedstore")
def app() -> None:
    """embedstore: an embedding store and vector database for histology tiles."""


def main() -> None:
    global _AS_COMMAND
    _AS_COMMAND = True
    app.main()


if __name__ == "__main__":
    main()
