"""Training: runs with status, live loss/accuracy curves, samples/s and the device's load."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Static

from core.fmt import fmt_bytes
from tui.messages import StoreChanged
from tui.widgets.chart import CurveChart, Series, lttb
from tui.widgets.device import DeviceStrip
from tui.widgets.disk import DiskUse
from tui.widgets.intents import run_intent
from tui.widgets.polling import PollingPanel

ORDER = 20
TELEMETRY_FRESH_S = 15.0   # the worker records every 5 s; older means no worker is sampling
LOCAL_SAMPLE_EVERY_S = 2.0
ACTIVE = ("queued", "running")
# Points kept per curve: past this a curve is thinned (LTTB) to half, still more than a wide
# chart has dot columns. So a 100,000-point run costs about the memory and drawing time of a
# short one, and keeps its first, last and peak points.
MAX_CURVE_POINTS = 800
RUNS_PAGE = 100  # rows the runs table loads; "More" adds a page (a year of runs is never read at once)


@dataclass
class RunSeries:
    """A run's metric points as chart series, grown by cursor (the last metric ``id`` seen)."""

    run_id: int | None = None
    cursor: int = 0
    train_loss: list[tuple[float, float]] = field(default_factory=list)
    train_acc: list[tuple[float, float]] = field(default_factory=list)
    val_loss: list[tuple[float, float]] = field(default_factory=list)
    val_acc: list[tuple[float, float]] = field(default_factory=list)
    epoch_end_step: dict[int, int] = field(default_factory=dict)
    last_step: int = 0
    samples_per_s: float | None = None

    def add(self, points: list[dict]) -> int:
        """Append points (in ``id`` order); returns how many were new."""
        added = 0
        for p in points:
            if p["id"] <= self.cursor:
                continue
            self.cursor = p["id"]
            added += 1
            if p["kind"] == "train":
                x = float(p["step"])
                self.last_step = max(self.last_step, int(p["step"]))
                self.epoch_end_step[int(p["epoch"])] = max(self.epoch_end_step.get(int(p["epoch"]), 0), int(p["step"]))
                if p.get("samples_per_s") is not None:
                    self.samples_per_s = p["samples_per_s"]
                loss, acc = self.train_loss, self.train_acc
            else:
                # A validation point's step is its epoch: place it where that epoch's training ended.
                x = float(self.epoch_end_step.get(int(p["epoch"]), self.last_step or p["step"]))
                loss, acc = self.val_loss, self.val_acc
            if p.get("loss") is not None:
                loss.append((x, float(p["loss"])))
            if p.get("accuracy") is not None:
                acc.append((x, float(p["accuracy"])))
        for curve in (self.train_loss, self.train_acc, self.val_loss, self.val_acc):
            if len(curve) > MAX_CURVE_POINTS:
                curve[:] = lttb(curve, MAX_CURVE_POINTS // 2)
        return added

    def loss_series(self) -> list[Series]:
        return [Series("train", self.train_loss), Series("val", self.val_loss)]

    def accuracy_series(self) -> list[Series]:
        return [Series("train", self.train_acc), Series("val", self.val_acc)]


@dataclass
class TrainingData:
    runs: list[dict]
    run_id: int | None
    points: list[dict]
    device: dict | None
    device_source: str
    workers: int | None  # None: not known yet (no "no worker" warning)
    progress: dict = field(default_factory=dict)
    total_runs: int = 0
    disk: dict | None = None  # bytes on disk by kind (None: not read yet)


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


# The run's name comes last: on a phone the table is wider than the screen, and status,
# epoch and accuracy are what a glance needs.
COLUMNS = (("#", "id"), ("Status", "status"), ("Ep", "epoch"), ("Acc", "acc"), ("Run", "run"))


def run_cells(run: dict) -> tuple[str, ...]:
    """The runs table's cells for one run, in ``COLUMNS`` order."""
    preset = (run.get("config") or {}).get("preset", "")
    return (
        str(run["id"]),
        run["status"],
        f"{run['epochs_done']}/{run['epochs_total']}",
        _pct((run.get("metrics") or {}).get("val_accuracy")),
        f"{run.get('dataset_name', '?')} {run['model']}" + (f"/{preset}" if preset else ""),
    )


def summary_text(run: dict | None, series: RunSeries, progress: dict, workers: int | None) -> str:
    """The selected run in two or three lines, as Textual content markup."""
    if run is None:
        return "No runs yet. Press n for a new run, or s to start digits/cnn with defaults."
    from rich.markup import escape

    preset = (run.get("config") or {}).get("preset", "")
    lines = [f"[b]Run #{run['id']}[/b] · {escape(run.get('dataset_name', '?'))} · {run['model']}"
             + (f"/{preset}" if preset else "") + f" · [b]{run['status']}[/b]"]
    facts = [f"epoch {run['epochs_done']}/{run['epochs_total']}"]
    best = (run.get("metrics") or {}).get("val_accuracy")
    if best is not None:
        facts.append(f"best val acc {100 * best:.1f}%")
    if series.last_step:
        facts.append(f"step {series.last_step:,}")
    if series.samples_per_s is not None and run["status"] == "running":
        facts.append(f"{series.samples_per_s:,.0f} samples/s")
    if run.get("params"):
        facts.append(f"{run['params']:,} params · {fmt_bytes(run.get('size_bytes'))}")
    lines.append(" · ".join(facts))
    if run["status"] == "running" and progress.get("paused"):
        lines.append(f"[$warning]Paused: {escape(str(progress['paused']))}. It resumes when charging.[/]")
    if run["status"] in ACTIVE and workers == 0:
        lines.append("[$warning]No worker is running: start one with `pocketops worker`"
                     + (" (the run resumes from its checkpoint)" if run["status"] == "running" else "") + ".[/]")
    if run.get("error"):
        lines.append(f"[$error]{escape(str(run['error']))}[/]")
    return "\n".join(lines)


class Panel(PollingPanel):
    """Training runs: curves that grow while the worker trains; new, cancel, resume."""

    TITLE = "Training"
    SHORT = "Train"
    KEY = "t"
    BINDINGS = [
        Binding("n", "new_run", "New"),
        Binding("s", "quick_start", "Start"),
        Binding("x", "cancel_run", "Cancel"),
        Binding("r", "resume_run", "Resume"),
        Binding("m", "more_runs", "More"),
    ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.runs: dict[int, dict] = {}
        self.selected: int | None = None
        self.series = RunSeries()
        self.progress: dict = {}
        self.alive_workers = 0
        self._local_sample_at = 0.0
        self.page_rows = RUNS_PAGE  # how many of the newest runs the table shows
        self.total_runs = 0

    def compose(self) -> ComposeResult:
        with Horizontal(classes="panel-body"):
            table = DataTable(id="runs-table", classes="panel-list", cursor_type="row", zebra_stripes=True)
            for label, key in COLUMNS:
                table.add_column(label, key=key)
            yield table
            with VerticalScroll(id="run-detail", classes="panel-detail"):
                yield DeviceStrip(id="device")
                yield DiskUse(id="training-disk")
                yield Static("Loading runs…", id="run-summary")
                yield CurveChart("loss", id="loss-chart")
                yield CurveChart("accuracy", y_range=(0.0, 1.0), id="acc-chart")

    def on_mount(self) -> None:
        # The first frame shows the runs and the selected run's curves: read them here (a few
        # ms on an existing store) rather than one poll later. Device and worker liveness wait
        # for the first poll, which starts once the store is set up.
        import sqlite3

        opener = getattr(self.app, "existing_store", None)
        db = opener() if opener is not None else None
        if db is None:
            return
        try:
            # A screenful of rows, not the page: the first poll fills in the rest of the page.
            data = self.fetch(db, (None, 0, "none", min(self.page_rows, max(20, self.app.size.height))), quick=True)
        except sqlite3.Error:
            return  # the first poll reports it
        finally:
            db.close()
        self.update_view(data)

    # -- polling ------------------------------------------------------------------------
    def poll_args(self):
        # Without fresh worker telemetry: "sample" here (every few seconds), "keep" the last one, or show "none".
        if not getattr(self.app, "sample_device", True):
            local = "none"
        elif time.monotonic() - self._local_sample_at >= LOCAL_SAMPLE_EVERY_S:
            local = "sample"
        else:
            local = "keep"
        return self.selected, self.series.cursor if self.series.run_id == self.selected else 0, local, self.page_rows

    def fetch(self, db, args, *, quick: bool = False) -> TrainingData:
        from store import jobs as store_jobs
        from store import runs as store_runs
        from store import telemetry as store_telemetry
        from store.db import now

        selected, cursor, local, page_rows = args
        runs = store_runs.list_all(db, limit=page_rows)
        total = store_runs.count(db) if len(runs) == page_rows else len(runs)
        ids = [r["id"] for r in runs]
        if selected not in ids:
            running = [r["id"] for r in runs if r["status"] == "running"]
            selected, cursor = (running or ids or [None])[0], 0
        points = store_runs.metrics_since(db, selected, cursor) if selected is not None else []
        progress = {}
        if selected is not None:
            job = store_jobs.latest_for_run(db, selected, "train")
            progress = (job or {}).get("progress") or {}
        device, source = store_telemetry.latest(db), "worker"
        if device is None or now() - device["ts"] > TELEMETRY_FRESH_S:
            device, source = None, local
            if local == "sample":
                from core.telemetry import sample

                device, source = sample(), "this process"
        if quick:  # the first frame: liveness (core.worker and its imports) comes with the first poll
            return TrainingData(runs, selected, points, device, "keep" if device is None else source, None, progress, total)
        from core.worker import live_workers  # a worker killed with signal 9 still has a recent heartbeat

        from store.retention import disk_use

        return TrainingData(runs, selected, points, device, source, len(live_workers(db)), progress, total,
                            disk=disk_use(db))

    def update_view(self, data: TrainingData) -> None:
        self.alive_workers = data.workers
        self.total_runs = data.total_runs
        if data.disk is not None:
            self.query_one("#training-disk", DiskUse).set_use(data.disk)
        self.update_table(data.runs)
        if data.run_id != self.selected:
            if self.selected is not None and self.selected in self.runs:
                return  # the user picked another run while this poll ran; the next poll fetches it
            self.select(data.run_id, poll=False)
        if self.series.run_id != data.run_id:
            self.series = RunSeries(run_id=data.run_id)
        if self.series.add(data.points) or not self.query_one("#loss-chart", CurveChart).series:
            self.query_one("#loss-chart", CurveChart).set_series(self.series.loss_series())
            self.query_one("#acc-chart", CurveChart).set_series(self.series.accuracy_series())
        self.progress = data.progress
        if data.device_source == "this process":
            self._local_sample_at = time.monotonic()
        if data.device_source != "keep":
            self.query_one("#device", DeviceStrip).set_sample(data.device, data.device_source)
        self.show_summary()
        shown = getattr(self.app, "data_shown", None)
        if shown is not None:  # the runs table and the selected run's curves are in: a frame with data
            shown()

    def update_table(self, runs: list[dict]) -> None:
        table = self.query_one("#runs-table", DataTable)
        fresh = {r["id"]: r for r in runs}
        if list(fresh) != list(self.runs):
            table.clear()
            for run_id, run in fresh.items():
                table.add_row(*run_cells(run), key=str(run_id))
            if self.selected in fresh:
                table.move_cursor(row=table.get_row_index(str(self.selected)))
        else:
            for run_id, run in fresh.items():
                old = run_cells(self.runs[run_id])
                for (_, key), before, after in zip(COLUMNS, old, run_cells(run)):
                    if before != after:  # "queued" → "cancelled" is wider: the column grows
                        table.update_cell(str(run_id), key, after, update_width=True)
        self.runs = fresh

    def show_summary(self) -> None:
        self.query_one("#run-summary", Static).update(
            summary_text(self.runs.get(self.selected) if self.selected is not None else None,
                         self.series, self.progress, self.alive_workers))

    def select(self, run_id: int | None, *, poll: bool = True) -> None:
        """Show ``run_id``'s curves (from its first point) and highlight it in the table."""
        if run_id == self.selected and self.series.run_id == run_id:
            return
        self.selected = run_id
        self.series = RunSeries(run_id=run_id)
        self.query_one("#loss-chart", CurveChart).set_series([])
        self.query_one("#acc-chart", CurveChart).set_series([])
        table = self.query_one("#runs-table", DataTable)
        if run_id is not None and str(run_id) in table.rows:
            index = table.get_row_index(str(run_id))
            if table.cursor_row != index:
                table.move_cursor(row=index)
        self.show_summary()
        if poll:
            self.poll_now()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value is not None:
            self.select(int(event.row_key.value))

    # -- actions (intents only) ---------------------------------------------------------
    def _selected_run(self, verb: str) -> dict | None:
        run = self.runs.get(self.selected) if self.selected is not None else None
        if run is None:
            self.notify(f"No run selected to {verb}.", severity="warning")
        return run

    def action_more_runs(self) -> None:
        """Load the next page of older runs into the table."""
        shown = len(self.runs)
        if shown >= self.total_runs:
            self.notify(f"All {self.total_runs:,} runs are shown.")
            return
        self.page_rows = shown + RUNS_PAGE
        self.notify(f"Showing up to {min(self.page_rows, self.total_runs):,} of {self.total_runs:,} runs.")
        self.poll_now()

    def _queued(self, ids) -> None:
        if ids:
            run_id, job_id = ids
            self.notify(f"Run #{run_id} queued (job {job_id}).")
            self.select(run_id, poll=False)
            self.post_message(StoreChanged("runs"))

    def action_new_run(self) -> None:
        from store import datasets as store_datasets
        from tui.dialogs import NewRunDialog

        datasets = store_datasets.list_all(self.app.db)
        run = self.runs.get(self.selected) if self.selected is not None else None
        dataset = run.get("dataset_name", "digits") if run else "digits"
        self.app.push_screen(NewRunDialog(datasets, dataset=dataset, model=run["model"] if run else "cnn"), self._queued)

    def action_quick_start(self) -> None:
        """Queue digits/cnn (or the first dataset) with the default settings (in a thread worker)."""

        def started(ids) -> None:
            if ids is None:
                self.notify("No dataset to train on: add one on the Datasets panel (d).", severity="warning")
            else:
                self._queued(ids)

        run_intent(self, quick_start, then=started, title="Run not started")

    def action_cancel_run(self) -> None:
        from tui.dialogs import ConfirmDialog

        run = self._selected_run("cancel")
        if run is None:
            return
        if run["status"] not in ACTIVE:
            self.notify(f"Run #{run['id']} is {run['status']}: nothing to cancel.", severity="warning")
            return

        def cancelled(status: str) -> None:
            self.notify(f"Run #{run['id']}: cancel requested ({status}).")
            self.post_message(StoreChanged("runs"))

        def answered(yes: bool | None) -> None:
            if yes:
                from core.runs import cancel_run

                # In a thread: cancelling may reap a dead worker's claim (process work, store writes).
                run_intent(self, cancel_run, run["id"], then=cancelled, title="Not cancelled")

        self.app.push_screen(ConfirmDialog(f"Cancel run #{run['id']} ({run['status']})? "
                                           "It stops after the current step; its checkpoint stays.",
                                           yes="Cancel run", no="Keep"), answered)

    def action_resume_run(self) -> None:
        from core.runs import resume_run

        run = self._selected_run("resume")
        if run is None:
            return

        def resumed(job_id: int) -> None:
            self.notify(f"Run #{run['id']} resumes (job {job_id}).")
            self.post_message(StoreChanged("runs"))

        run_intent(self, resume_run, run["id"], then=resumed, title="Not resumed")


def quick_start(db) -> tuple[int, int] | None:
    """Queue digits/cnn (or an mlp on the first dataset) with the defaults; (run_id, job_id), None with no dataset."""
    from core.runs import new_run
    from store import datasets as store_datasets

    names = [d["name"] for d in store_datasets.list_all(db)]
    if not names:
        return None
    dataset = "digits" if "digits" in names else names[0]
    return new_run(db, dataset=dataset, model="cnn" if dataset == "digits" else "mlp")
