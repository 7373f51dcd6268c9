"""`pocketops datasets list | add PATH | show NAME | delete NAME`."""
from __future__ import annotations

from tui.commands._common import CliError, add_parser, console, emit, open_db


def register(sub) -> None:
    p = add_parser(sub, "datasets", "list, add, inspect and delete datasets")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    add_parser(actions, "list", "list datasets").set_defaults(func=list_cmd)
    a = add_parser(actions, "add", "add a CSV, an image folder (one sub-folder per class) or a text CSV")
    a.add_argument("path")
    a.add_argument("--name", help="dataset name (default: the file or folder name)")
    a.add_argument("--label-column", help="CSV column holding the class (default: 'label', else the last column)")
    a.add_argument("--kind", choices=("csv", "images", "text"), help="default: inferred from the path")
    a.set_defaults(func=add_cmd)
    s = add_parser(actions, "show", "show a dataset's classes, balance and a preview")
    s.add_argument("name")
    s.set_defaults(func=show_cmd)
    d = add_parser(actions, "delete", "delete a dataset's row (its files stay; refused while runs use it)")
    d.add_argument("name")
    d.set_defaults(func=delete_cmd)


def _public(row: dict) -> dict:
    return {
        "name": row["name"], "kind": row["kind"], "rows": row["rows"], "n_classes": row["n_classes"],
        "classes": row["classes"], "class_counts": row["class_counts"], "input_shape": row["input_shape"],
        "fingerprint": row["fingerprint"], "source": row["source"],
    }


def list_cmd(args) -> int:
    from store import datasets

    db, _ = open_db(args)
    found = [_public(r) for r in datasets.list_all(db)]
    if args.json:
        emit(args, {"datasets": found})
        return 0
    from rich.table import Table

    table = Table("name", "kind", "rows", "classes", "input", box=None)
    for d in found:
        table.add_row(d["name"], d["kind"], str(d["rows"]), str(d["n_classes"]), "×".join(map(str, d["input_shape"])))
    console().print(table)
    return 0


def add_cmd(args) -> int:
    from core.datasets import add_dataset

    db, db_path = open_db(args)
    row = add_dataset(db, db_path, args.path, name=args.name, kind=args.kind, label_column=args.label_column)
    emit(args, _public(row), f"added {row['name']}: {row['kind']}, {row['rows']} rows, {row['n_classes']} classes")
    return 0


def _get(db, name: str) -> dict:
    from store import datasets

    row = datasets.by_name(db, name)
    if row is None:
        known = ", ".join(d["name"] for d in datasets.list_all(db)) or "none"
        raise CliError(f"no dataset named {name!r} (known: {known})")
    return row


def show_cmd(args) -> int:
    db, _ = open_db(args)
    row = _get(db, args.name)
    if args.json:
        emit(args, _public(row))
        return 0
    out = console()
    out.print(f"[bold]{row['name']}[/]  {row['kind']}, {row['rows']} rows, input {'×'.join(map(str, row['input_shape']))}")
    for line in balance_lines(row["classes"], row["class_counts"]):
        out.print("  " + line)
    from core.datasets import preview

    for sample in preview(row, n=3):
        out.print(f"[dim]label[/] {sample['label']}")
        if sample.get("image") is not None:
            for line in _blocks(sample["image"]):
                out.print("  " + line)
        elif sample.get("features"):
            out.print("  " + ", ".join(f"{k}={v}" for k, v in list(sample["features"].items())[:8]))
        elif sample.get("text"):
            out.print("  " + sample["text"][:76])
    return 0


def balance_lines(classes, counts, width: int = 30) -> list[str]:
    """One line per class: name, count, share and a bar scaled to the largest class."""
    total = max(1, sum(counts))
    biggest = max(1, max(counts, default=1))
    name_w = min(20, max((len(str(c)) for c in classes), default=1))
    return [f"{str(name)[:name_w]:>{name_w}} {count:>6} {100 * count / total:5.1f}%  "
            + "█" * max(1 if count else 0, round(width * count / biggest))
            for name, count in zip(classes, counts)]


def _blocks(image) -> list[str]:
    """An image in [0, 1] as shade characters, each pixel two cells wide so it looks square."""
    shades = " ░▒▓█"
    rows = [[shades[min(4, int(v * 4.999))] for v in r] for r in image]
    return ["".join(ch * 2 for ch in r) for r in rows]


def delete_cmd(args) -> int:
    from core.datasets import delete_dataset

    db, _ = open_db(args)
    delete_dataset(db, args.name)
    emit(args, {"deleted": args.name}, f"deleted {args.name} (its files stay on disk)")
    return 0
