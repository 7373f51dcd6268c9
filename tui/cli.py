"""The ``pocketops`` entry point.

No arguments opens the dashboard (and starts a background worker unless one is alive). Any
command runs headless: it never imports Textual, prints JSON with ``--json``, exits 0 on
success and non-zero with a one-line reason on stderr otherwise.

Commands are modules in ``tui/commands/``: each defines ``register(subparsers)`` that adds its
sub-parser and sets ``func`` (``func(args) -> int``). Adding a command means adding a module.
"""
from __future__ import annotations

import os
import sys
from types import SimpleNamespace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse


def _base_parser() -> argparse.ArgumentParser:
    import argparse

    from tui.commands._common import add_global_options

    class _Parser(argparse.ArgumentParser):
        """argparse with a one-line usage error (the headless contract), not usage + error."""

        def error(self, message: str):
            self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")

    parser = _Parser(
        prog="pocketops",
        description="ML ops from the phone in your pocket. Without a command: open the dashboard.",
    )
    add_global_options(parser)
    parser.add_argument("--no-worker", action="store_true", help="open the dashboard without starting a background worker")
    return parser


def _command_names() -> list[str]:
    import pkgutil

    from tui import commands

    return sorted(m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_"))


def build_parser() -> argparse.ArgumentParser:
    parser = _base_parser()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import importlib

    for name in _command_names():
        importlib.import_module(f"tui.commands.{name}").register(sub)
    return parser


def _dashboard_args(argv: list[str]) -> SimpleNamespace | None:
    """``argv``'s options when it names no command and argparse would accept it as is, else None.

    Read by hand: importing argparse, its first parse (gettext's catalogue search, its regexes) and the
    import of the commands' helpers cost ~10 ms that the dashboard's first frame need not wait for.
    Anything unusual (a value that looks like an option, ``--help``, an abbreviation) returns None
    and goes through argparse as before.
    """
    args = SimpleNamespace(db=None, json=False, no_worker=False, command=None)
    rest = list(argv)
    while rest:
        token = rest.pop(0)
        if token == "--db" and rest and not rest[0].startswith("-"):
            args.db = rest.pop(0)
        elif token.startswith("--db="):
            args.db = token.removeprefix("--db=")
        elif token == "--no-worker":
            args.no_worker = True
        elif token == "--json":
            args.json = True
        else:
            return None
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _dashboard_args(argv)
    if args is None:
        # Importing every command's parser costs ~40 ms the dashboard's first frame need not wait for,
        # so only a command (or anything the fast path does not read) builds the full parser.
        args = build_parser().parse_args(argv)
    try:
        if args.command is None:
            return _dashboard(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("pocketops: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into e.g. `head` that closed early: not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        from core.errors import PocketopsError
        from tui.commands._common import CliError

        if isinstance(exc, CliError):
            print(f"pocketops: {exc}", file=sys.stderr)
            return exc.code
        from core.optional import MissingDependency

        if isinstance(exc, (PocketopsError, MissingDependency)):
            print(f"pocketops: {exc}", file=sys.stderr)
            return 1
        problem = _store_problem(exc, args)
        if problem is not None:
            print(f"pocketops: {problem}", file=sys.stderr)
            return 1
        raise


def _store_problem(exc: BaseException, args: argparse.Namespace) -> str | None:
    """One line for a damaged store or a full disk under it (wherever SQLite noticed), else None."""
    import sqlite3

    if not isinstance(exc, sqlite3.DatabaseError):
        return None
    from core import paths
    from store.db import as_corruption, full_disk_message

    path = getattr(exc, "path", None) or paths.db_path(getattr(args, "db", None))
    corrupt = as_corruption(exc, path)
    return str(corrupt) if corrupt is not None else full_disk_message(exc, path)


def _dashboard(args: argparse.Namespace) -> int:
    # The app opens the store, registers the built-in data and starts the background worker
    # itself, in a thread after its first frame: nothing here may delay that frame.
    from core import paths
    from tui.app import run_dashboard  # the only place the CLI imports Textual

    return run_dashboard(paths.db_path(args.db), start_worker=not args.no_worker) or 0


if __name__ == "__main__":
    sys.exit(main())
