"""`pocketops db tables | export TABLE`: the store's tables and their rows, for scripts and spreadsheets.

Your data stays yours: every table (runs, metrics, variants, deployments, alerts, costs...) can
be listed with its row count and written out as CSV, JSON or JSON lines. It reads through
sqlite-utils (``Database(conn).table_names()``, ``table.count``, ``table.rows_where``) on a
read-only connection, so it is safe while workers run and never changes the store. Secrets are
never in the store (tokens come from the libraries' own stores or the environment), so an export
carries none.
"""
from __future__ import annotations

import csv
import io
import json
import sqlite3

from tui.commands._common import CliError, add_parser, emit, path_arg

FORMATS = ("csv", "json", "jsonl")


def register(sub) -> None:
    p = add_parser(sub, "db", "list the store's tables, or export one as CSV/JSON (read-only)")
    verbs = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    t = add_parser(verbs, "tables", "each table with its row count")
    t.set_defaults(func=run_tables)
    e = add_parser(verbs, "export", "write one table's rows as CSV, JSON or JSON lines")
    e.add_argument("table", help="table name (see `pocketops db tables`)")
    e.add_argument("--format", choices=FORMATS, default="csv", help="output format (default csv)")
    e.add_argument("--where", metavar="SQL", help="an SQL condition on the table's columns, e.g. \"run_id = 3\"")
    e.add_argument("--out", type=path_arg, metavar="PATH", help="write to PATH (atomically) instead of stdout")
    e.set_defaults(func=run_export)


def _open(args):
    """A read-only sqlite-utils view of the store (no migration, no writes)."""
    import sqlite_utils

    from core import paths

    db_path = paths.db_path(getattr(args, "db", None))
    if not db_path.is_file():
        raise CliError(f"{db_path}: no database (pass --db PATH or set POCKETOPS_HOME)")
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    return sqlite_utils.Database(conn), db_path


def run_tables(args) -> int:
    db, db_path = _open(args)
    try:
        tables = [{"table": name, "rows": db[name].count} for name in db.table_names()
                  if not name.startswith("sqlite_")]
    finally:
        db.close()
    width = max((len(t["table"]) for t in tables), default=5)
    text = "\n".join(f"{t['table']:<{width}}  {t['rows']:>9,}" for t in tables)
    emit(args, tables, text)
    return 0


def run_export(args) -> int:
    db, db_path = _open(args)
    try:
        names = [n for n in db.table_names() if not n.startswith("sqlite_")]
        if args.table not in names:
            raise CliError(f"no table {args.table!r} in {db_path}; tables: {', '.join(names)}")
        table = db[args.table]
        columns = [c.name for c in table.columns]
        try:
            rows = list(table.rows_where(args.where) if args.where else table.rows)
        except sqlite3.Error as exc:
            raise CliError(f"--where {args.where!r}: {exc} (columns of {args.table}: {', '.join(columns)})") from None
    finally:
        db.close()
    out = io.StringIO()
    if args.format == "csv":
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    elif args.format == "json":
        json.dump(rows, out, default=str)
        out.write("\n")
    else:
        for row in rows:
            out.write(json.dumps(row, default=str) + "\n")
    if args.out:
        from core.atomic import write_text

        write_text(args.out, out.getvalue(), what=f"the export of {args.table}")
        emit(args, {"table": args.table, "rows": len(rows), "path": str(args.out)},
             f"wrote {len(rows)} rows of {args.table} to {args.out}")
    else:
        print(out.getvalue(), end="", flush=True)
    return 0
