"""The ``pocketops`` entry point.

No arguments opens the dashboard (and starts a background worker unless one is alive). Any
command runs headless: it never imports Textual, prints JSON with ``--json``, exits 0 on
success and non-zero with a one-line reason on stderr otherwise.

Commands are modules in ``tui/commands/``: each defines ``register(subparsers)`` that adds its
sub-parser and sets ``func`` (``func(args) -> int``). Adding a command means adding a module.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from tui import commands
from tui.commands._common import CliError, add_global_options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pocketops",
        description="ML ops from the phone in your pocket. Without a command: open the dashboard.",
    )
    add_global_options(parser)
    parser.add_argument("--no-worker", action="store_true", help="open the dashboard without starting a background worker")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"tui.commands.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command is None:
            return _dashboard(args)
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"pocketops: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("pocketops: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into e.g. `head` that closed early: not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        from core.errors import PocketopsError
        from core.optional import MissingDependency

        if isinstance(exc, (PocketopsError, MissingDependency)):
            print(f"pocketops: {exc}", file=sys.stderr)
            return 1
        raise


def _dashboard(args: argparse.Namespace) -> int:
    # The app opens the store, registers the built-in data and starts the background worker
    # itself, in a thread after its first frame: nothing here may delay that frame.
    from core import paths
    from tui.app import run_dashboard  # the only place the CLI imports Textual

    return run_dashboard(paths.db_path(args.db), start_worker=not args.no_worker) or 0


if __name__ == "__main__":
    sys.exit(main())
