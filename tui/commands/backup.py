"""`pocketops backup PATH`: a consistent copy of the database, safe while workers run.

Restore: stop the workers (and the dashboard), then copy the backup over the database file
(``--db PATH`` or ``$POCKETOPS_HOME/pocketops.db``) and delete any ``-wal``/``-shm`` beside it.
The files directory (checkpoints, variants, bundles) is not part of the backup.
"""
from __future__ import annotations

import time
from pathlib import Path

from tui.commands._common import CliError, add_parser, emit, fmt_bytes, path_arg


def register(sub) -> None:
    p = add_parser(sub, "backup", "copy the database to PATH (safe while workers run); restore by copying it back "
                                  "over the database file with the workers stopped")
    p.add_argument("path", type=path_arg, help="file to write, or an existing folder (then pocketops-YYYYMMDD-HHMMSS.db inside)")
    p.set_defaults(func=run)


def run(args) -> int:
    import store
    from core import paths
    from store.db import backup

    db_path = paths.db_path(getattr(args, "db", None))
    if not db_path.is_file():
        raise CliError(f"{db_path}: no database to back up (pass --db PATH or set POCKETOPS_HOME)")
    dest = Path(args.path)
    if dest.is_dir():
        dest = dest / time.strftime("pocketops-%Y%m%d-%H%M%S.db")
    dest = dest.resolve()
    if dest == db_path:
        raise CliError(f"{dest}: that is the database itself; pick another path for the backup")
    if not dest.parent.is_dir():
        raise CliError(f"{dest.parent}: no such folder; create it or pick another path for the backup")
    db = store.connect(db_path)
    try:
        result = backup(db, dest)
    except OSError as exc:
        raise CliError(f"{dest}: cannot write the backup ({exc.strerror or exc})") from None
    finally:
        db.close()
    result = {"source": str(db_path), **result}
    emit(args, result, f"backed up {db_path} to {result['path']} ({fmt_bytes(result['size_bytes'])}, integrity ok)")
    return 0
