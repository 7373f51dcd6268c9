"""Datasets: the list, and per dataset its size, class balance and a few samples."""
from __future__ import annotations

from dataclasses import dataclass, field

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Static

from tui.messages import StoreChanged
from tui.widgets.bars import BalanceBars
from tui.widgets.disk import DiskUse
from tui.widgets.intents import run_intent
from tui.widgets.polling import PollingPanel
from tui.widgets.preview import SamplePreview

ORDER = 10


@dataclass
class DatasetsData:
    datasets: list[dict]
    preview_for: str | None = None
    preview: list[dict] | None = None
    preview_error: str | None = None
    disk: dict | None = None


def summary_lines(row: dict) -> list[str]:
    """What a user asks first about a dataset, one fact per line."""
    shape = "×".join(str(d) for d in row.get("input_shape") or []) or "?"
    lines = [
        f"{row['name']}  ({row['kind']})",
        f"{row['rows']:,} rows · {row['n_classes']} classes · input {shape}",
    ]
    if row.get("source"):
        lines.append(f"from {row['source']}")
    return lines


class Panel(PollingPanel):
    """Datasets: list, detail with class balance and preview; add and delete."""

    TITLE = "Datasets"
    SHORT = "Data"
    KEY = "d"
    POLL_INTERVAL = 2.0  # datasets change only when someone adds or deletes one
    BINDINGS = [
        Binding("n", "add", "Add"),
        Binding("x", "delete", "Delete"),
    ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rows: dict[str, dict] = {}
        self.selected: str | None = None
        self.preview_for: str | None = None
        self.preview: list[dict] = []

    def compose(self) -> ComposeResult:
        with Horizontal(classes="panel-body"):
            table = DataTable(id="datasets-table", classes="panel-list", cursor_type="row", zebra_stripes=True)
            table.add_column("Name", key="name")
            table.add_column("Kind", key="kind")
            table.add_column("Rows", key="rows")
            table.add_column("Cls", key="classes")
            yield table
            with VerticalScroll(id="dataset-detail", classes="panel-detail"):
                yield Static("Loading datasets…", id="dataset-summary")
                yield DiskUse(id="datasets-disk")
                yield Static("Samples", classes="section-title")
                yield SamplePreview(id="dataset-preview")
                yield Static("Class balance", classes="section-title")
                yield BalanceBars(id="dataset-balance")

    # -- polling ------------------------------------------------------------------------
    def poll_args(self):
        return self.selected, self.selected != self.preview_for

    def fetch(self, db, args) -> DatasetsData:
        from store import datasets as store_datasets
        from store.retention import disk_use

        selected, need_preview = args
        data = DatasetsData(store_datasets.list_all(db), disk=disk_use(db))
        names = [d["name"] for d in data.datasets]
        target = selected if selected in names else (names[0] if names else None)
        if target is not None and (need_preview or target != selected):
            from core.datasets import preview  # numpy: in this thread, never at import
            from core.errors import DatasetError

            data.preview_for = target
            try:
                data.preview = preview(next(d for d in data.datasets if d["name"] == target), n=4)
            except (DatasetError, OSError, ValueError, KeyError) as exc:
                data.preview_error = str(exc)
        return data

    def update_view(self, data: DatasetsData) -> None:
        table = self.query_one("#datasets-table", DataTable)
        fresh = {d["name"]: d for d in data.datasets}
        if list(fresh) != list(self.rows):
            table.clear()
            for name, row in fresh.items():
                table.add_row(name, row["kind"], f"{row['rows']:,}", str(row["n_classes"]), key=name)
        self.rows = fresh
        self.query_one("#datasets-disk", DiskUse).set_use(data.disk)
        if self.selected not in fresh:
            self.selected = next(iter(fresh), None)
        if self.selected is not None:
            index = table.get_row_index(self.selected)
            if table.cursor_row != index:
                table.move_cursor(row=index)
        if data.preview_for is not None and data.preview_for == self.selected:
            self.preview_for = data.preview_for
            self.preview = data.preview or []
            self.query_one("#dataset-preview", SamplePreview).set_samples(self.preview, data.preview_error or "")
        self.show_detail()

    def show_detail(self) -> None:
        summary = self.query_one("#dataset-summary", Static)
        row = self.rows.get(self.selected or "")
        if row is None:
            summary.update("No datasets yet. Press n (or tap Add) to add a CSV, an image folder or a text CSV.")
            self.query_one("#dataset-balance", BalanceBars).set_counts([], [])
            return
        summary.update("\n".join(summary_lines(row)))
        self.query_one("#dataset-balance", BalanceBars).set_counts(row.get("classes") or [], row.get("class_counts") or [])

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        name = event.row_key.value if event.row_key is not None else None
        if name and name != self.selected:
            self.selected = name
            self.query_one("#dataset-preview", SamplePreview).set_samples([], "Loading samples…")
            self.show_detail()
            self.poll_now()

    # -- actions ------------------------------------------------------------------------
    def action_add(self) -> None:
        from tui.dialogs import AddDatasetDialog

        def added(row: dict | None) -> None:
            if row:
                self.notify(f"Dataset {row['name']!r} added: {row['rows']:,} rows, {row['n_classes']} classes")
                self.selected = row["name"]
                self.post_message(StoreChanged("datasets"))

        self.app.push_screen(AddDatasetDialog(self.app.db_path), added)

    def action_delete(self) -> None:
        from tui.dialogs import ConfirmDialog

        name = self.selected
        if name is None:
            self.notify("No dataset selected.", severity="warning")
            return

        def deleted(_result) -> None:
            self.notify(f"Dataset {name!r} deleted (its arrays file stays on disk).")
            self.post_message(StoreChanged("datasets"))

        def answered(yes: bool | None) -> None:
            if yes:
                from core.datasets import delete_dataset

                run_intent(self, delete_dataset, name, then=deleted, title="Not deleted")

        self.app.push_screen(ConfirmDialog(f"Delete dataset {name!r}? Its arrays file stays on disk.", yes="Delete"),
                             answered)
