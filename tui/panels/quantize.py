"""Quantize: per run, fp32 / fp16 / int8 variants (ONNX Runtime, ExecuTorch, LiteRT) measured on this device,
and which to ship.

Rendering is a pure function of the fetched rows (``render_detail``); the recommendation is
:func:`core.recommend.judge` of those rows with the run's stored preference (fastest or
smallest), budget and runtime (any, or the one the app ships with), the same pick the Deploy form and the CLI read, and it fills in as the
worker's results arrive. Toggling the preference, the budget or the runtime stores it (for the run, and as
the default for runs without their own) in a thread worker. Actions only queue jobs (export,
re-benchmark) or request a cancel, each in a thread worker; no torch or onnx is imported in
this process.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Static

from core.fmt import compact_bytes
from core.recommend import SHORT_LABELS
from tui.messages import StoreChanged
from tui.widgets.bars import bar
from tui.widgets.intents import run_intent
from tui.widgets.polling import PollingPanel

ORDER = 30
BUDGET_STEPS = (0.0, 0.1, 0.5, 1.0, 2.0, 5.0)
# The runtime column's labels: short, so the table fits a phone.
RUNTIME_SHORT = SHORT_LABELS
NAME_MIN = 12   # the runtime column shows only while names keep this many cells


@dataclass
class QuantizeData:
    runs: list[dict]                       # finished runs (with a checkpoint), newest first
    run_id: int | None
    variants: list[dict] = field(default_factory=list)   # bench_rows() of the run's newest variants
    baseline: dict = field(default_factory=dict)
    job: dict | None = None                # the run's newest export/bench job
    prefer: str = "latency"                # the run's stored preference, budget and runtime (core.recommend.load_prefs)
    budget: float = 1.0
    runtime: str = "any"


@dataclass
class PrefsSaved(Message):
    """The preferences of toggle number ``generation`` are in the store (or ``error`` says why not)."""

    generation: int
    error: str | None = None


def _ms(value) -> str:
    return "–" if value is None else (f"{value * 1000:.0f}µs" if value < 0.1 else f"{value:.2f}ms")


def _rate(per_s: float) -> str:
    """Samples per second, short: 850/s, 7.5k/s, 120k/s."""
    if per_s < 1000:
        return f"{per_s:.0f}/s"
    return f"{per_s / 1000:.1f}k/s" if per_s < 10_000 else f"{per_s / 1000:.0f}k/s"


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def run_cells(run: dict, n_variants: int | None = None) -> tuple[str, ...]:
    preset = (run.get("config") or {}).get("preset", "")
    acc = (run.get("metrics") or {}).get("test_accuracy") or (run.get("metrics") or {}).get("val_accuracy")
    return (str(run["id"]), f"{run['model']}" + (f"/{preset}" if preset else ""), _pct(acc))


def _wrap(tokens: list[str], width: int, indent: str = "  ") -> list[str]:
    lines, line = [], indent
    for tok in tokens:
        if len(line) + len(tok) + 1 > width and line.strip():
            lines.append(line.rstrip())
            line = indent
        line += tok + "  "
    if line.strip():
        lines.append(line.rstrip())
    return lines


def runtime_short(v: dict) -> str:
    """The runtime column's label of a row (ORT, ET, LiteRT)."""
    rt = v.get("runtime") or "onnxruntime"
    return RUNTIME_SHORT.get(rt, rt)


# On a phone the two dynamic variants would both be cut to "int8-dynam…": shorter names keep them apart.
PHONE_NAMES = {"int8-dynamic": "int8-dyn", "int8-dynamic-conv": "int8-dyn-cv"}


def _compact(name: str, runtime: str | None) -> str:
    """``executorch-int8`` → ``ET-int8``, ``int8-dynamic-conv`` → ``int8-dyn-cv``: where the runtime column gives
    way (a phone), the name still says it and two names never cut to the same text."""
    if runtime in RUNTIME_SHORT and name.startswith(f"{runtime}-"):
        return RUNTIME_SHORT[runtime] + name[len(runtime):]
    return PHONE_NAMES.get(name, name)


def table_lines(variants: list[dict], recommended: str | None, torch_ms: float | None, *,
                active: bool = True, width: int = 60) -> list[str]:
    """One line per variant with what a user compares first: runtime, size (zipped), p50 at batch 1, accuracy.

    ``active``: a job is still measuring; otherwise a variant without figures was not measured
    (its job was cancelled or failed) and says so. The runtime column shows where names keep
    ``NAME_MIN`` cells (else names say it: ``ET-int8``), the zip column where no name is cut.
    """
    from rich.markup import escape

    # Columns after the name take 22 cells; on a phone long names (int8-dynamic-conv) are cut with "…".
    avail = width - 2 - 22
    rt_w = max(len("rt"), max(len(runtime_short(v)) for v in variants))
    show_rt = avail - (rt_w + 1) >= NAME_MIN
    if show_rt:
        avail -= rt_w + 1
    shown = {v["name"]: v["name"] if show_rt else _compact(v["name"], v.get("runtime")) for v in variants}
    longest = max(len(n) for n in shown.values())
    show_zip = any(v.get("zip_bytes") for v in variants) and avail - 7 >= longest
    if show_zip:
        avail -= 7
    name_w = max(len("torch eager"), min(longest, avail))

    def cols(v: dict | None) -> tuple[str, str]:
        """The runtime and zip cells of row ``v`` (None: the torch line); empty where the column is not shown."""
        rt = f" {runtime_short(v) if v else '':<{rt_w}}" if show_rt else ""
        if not show_zip:
            return rt, ""
        zipped = "" if v is None else compact_bytes(v["zip_bytes"]) if v.get("zip_bytes") else "–"
        return rt, f" {zipped:>6}"

    head_rt = f" {'rt':<{rt_w}}" if show_rt else ""
    head_zip = f" {'zip':>6}" if show_zip else ""
    lines = [f"[$text-muted]  {'variant':<{name_w}}{head_rt} {'size':>6}{head_zip} {'p50':>7} {'acc':>6}[/]"]
    for v in variants:
        star = "★ " if v["name"] == recommended else "  "
        label = shown[v["name"]]
        short = label if len(label) <= name_w else label[:name_w - 1] + "…"
        name = f"{escape(short):<{name_w}}"
        if v["name"] == recommended:
            name = f"[b]{name}[/b]"
        rt, zipped = cols(v)
        if v.get("status") == "failed":
            lines.append(f"{star}{name}{rt} [$error]failed[/]")
        elif v.get("latency_p50_ms") is None:
            state = "measuring…" if active else "not measured"
            lines.append(f"{star}{name}{rt} {compact_bytes(v.get('size_bytes')):>6}{zipped} [$text-muted]{state}[/]")
        else:
            lines.append(f"{star}{name}{rt} {compact_bytes(v.get('size_bytes')):>6}{zipped} "
                         f"{_ms(v['latency_p50_ms']):>7} {_pct(v.get('accuracy')):>6}")
    if torch_ms is not None:
        rt, zipped = cols(None)
        row = f"  {'torch eager':<{name_w}}{rt} {'':>6}{zipped} {_ms(torch_ms):>7}"
        # "baseline" only where it fits: a wrapped table line is harder to read than a shorter one.
        tail = " [$text-muted]baseline[/]" if len(row) + len(" baseline") <= width else ""
        lines.append(row + tail)
    return lines


def variant_lines(v: dict, width: int) -> list[str]:
    """The rest of one variant's figures (or why it failed), wrapped to ``width``; the head names its runtime."""
    from rich.markup import escape

    from core.recommend import runtime_label

    head = f"[b]{escape(v['name'])}[/b] [$text-muted]{escape(runtime_label(v.get('runtime') or 'onnxruntime'))}[/]"
    if v.get("status") == "failed":
        return [head, *[f"  [$error]{escape(line)}[/]" for line in
                        _wrap([str(v.get("error") or "no reason recorded")], width, "")]]
    if v.get("latency_p50_ms") is None:
        return []
    rest = [f"p95 {_ms(v.get('latency_p95_ms'))}", f"load {_ms(v.get('load_ms'))}",
            f"zip {compact_bytes(v['zip_bytes'])}" if v.get("zip_bytes") else "",
            f"agree {_pct(v.get('agreement'))}",
            "max|Δ| " + ("–" if v.get("max_abs_logit_diff") is None else f"{v['max_abs_logit_diff']:.2g}"),
            f"mem {v['peak_memory_mb']:.{0 if v['peak_memory_mb'] >= 10 else 1}f}MB" if v.get("peak_memory_mb") is not None else "",
            # A loop's batch-8 figure is batch-1 latency times 8 (core.runtimes): said, so nobody compares it as native.
            (f"{_rate(v['throughput_per_s'])} at batch 8" + (" (loop)" if v.get("batch_method") == "loop" else ""))
            if v.get("throughput_per_s") else ""]
    return [head, *_wrap([t for t in rest if t], width)]


def bar_lines(title: str, items: list[tuple[str, float | None, str]], width: int, *, invert: bool = False) -> list[str]:
    """``title`` then one bar per (label, value, text), scaled to the largest value."""
    shown = [(label, value, text) for label, value, text in items if value is not None]
    if not shown:
        return []
    label_w = min(17, max(len(label) for label, _, _ in shown))
    text_w = max(len(text) for _, _, text in shown)
    bar_w = max(4, width - label_w - text_w - 3)
    top = max(value for _, value, _ in shown) or 1.0
    lines = [f"[b]{title}[/b]"]
    for label, value, text in shown:
        lines.append(f"{label[:label_w]:<{label_w}} [$accent]{bar(value / top, bar_w)}[/] {text:>{text_w}}")
    return lines


def render_detail(data: QuantizeData, *, width: int = 60, prefer: str | None = None, budget: float | None = None,
                  runtime: str | None = None) -> str:
    """The selected run's comparison as content markup (pure: no app, no store).

    ``prefer``/``budget``/``runtime`` default to the stored ones the data was fetched with.
    """
    from rich.markup import escape

    from core.recommend import Prefs, judge, runtime_label

    prefer = data.prefer if prefer is None else prefer
    budget = data.budget if budget is None else budget
    runtime = data.runtime if runtime is None else runtime

    if data.run_id is None:
        return ("No finished run to export yet. Train one on the Training panel (t); "
                "then press e here to export and compare fp32, fp16 and int8 on this device.")
    run = next((r for r in data.runs if r["id"] == data.run_id), None)
    name = f"{run['model']} on {run.get('dataset_name', '?')}" if run else ""
    lines = [f"[b]Run #{data.run_id}[/b] · {escape(name)}"]
    job = data.job
    if job and job["status"] in ("queued", "running"):
        p = job.get("progress") or {}
        step = f"{p.get('stage', 'starting')} {p.get('variant', '')}".strip()
        lines.append(f"[$warning]{job['kind']} job {job['id']} {job['status']}: {escape(step)} "
                     f"({p.get('done', 0)}/{p.get('total', '?')})[/]")
    elif job and job["status"] == "failed":
        lines.append(f"[$error]{job['kind']} job {job['id']} failed: {escape(str(job.get('error')))}[/]")
    elif job and job["status"] == "cancelled":
        lines.append(f"[$warning]{job['kind']} job {job['id']} cancelled[/]")
    if not data.variants:
        if not (job and job["status"] in ("queued", "running")):
            lines.append("No variants yet: press e to export this run and benchmark each variant here.")
        return "\n".join(lines)

    torch_ms = data.baseline.get("torch_latency_p50_ms")
    rec = judge(data.variants, Prefs(prefer, budget, runtime=runtime), data.baseline)
    threads = next((v.get("threads") for v in data.variants if v.get("threads")), None)
    facts = [f"prefer {prefer}", f"budget {budget:g} pt"]
    if runtime != "any" or len({v.get("runtime") for v in data.variants}) > 1:
        facts.append("any runtime" if runtime == "any" else f"{runtime_label(runtime)} only")
    if threads:
        facts.append(f"{threads} thread{'s' if threads > 1 else ''}")
    lines.append(" · ".join(facts))
    if rec.name:
        chosen = next(v for v in data.variants if v["name"] == rec.name)
        gain = f" · {torch_ms / chosen['latency_p50_ms']:.1f}× faster than torch" if torch_ms else ""
        lines.append(f"[b $success]Recommended: {escape(rec.name)}[/]{gain}")
    elif any(v.get("latency_p50_ms") is not None for v in data.variants):  # e.g. none of the preferred runtime
        lines.append(f"[$warning]No recommendation: {escape(rec.reason)}[/]")
    active = bool(job and job["status"] in ("queued", "running"))
    lines += ["", *table_lines(data.variants, rec.name, torch_ms, active=active, width=width)]
    if not active and any(v.get("latency_p50_ms") is None and v.get("status") != "failed" for v in data.variants):
        lines.append("[$text-muted]Some variants were not measured: press b to benchmark them on this device.[/]")
    measured = [v for v in data.variants if v.get("latency_p50_ms") is not None]
    if measured:
        lines.append("")
        lines += bar_lines("size", [(v["name"], v.get("size_bytes"), compact_bytes(v.get("size_bytes"))) for v in measured], width)
        lat = [(v["name"], v["latency_p50_ms"], _ms(v["latency_p50_ms"])) for v in measured]
        if torch_ms is not None:
            lat.append(("torch eager", torch_ms, _ms(torch_ms)))
        lines += bar_lines("p50 latency (batch 1)", lat, width)
        lines += bar_lines("accuracy", [(v["name"], v.get("accuracy"), _pct(v.get("accuracy"))) for v in measured], width)
    if rec.name:
        lines += ["", "[b]Why[/b]", escape(rec.reason)]
    details = [line for v in data.variants for line in variant_lines(v, width)]
    if details:
        lines += ["", *details]
    return "\n".join(lines)


class Panel(PollingPanel):
    """Variants of a run measured on this device; export, re-benchmark, fastest or smallest, which runtime."""

    TITLE = "Quantize"
    SHORT = "Quant"
    KEY = "q"
    BINDINGS = [
        # Short labels: all six footer buttons must fit (and be tappable) at 40 columns (40 cells exactly).
        Binding("e", "export", "Export", tooltip="export the run to ONNX, build and benchmark the variants"),
        Binding("b", "rebench", "Bench", tooltip="re-benchmark the run's variants on this device"),
        Binding("z", "toggle_prefer", "Opt", tooltip="recommend the fastest or the smallest variant"),
        Binding("u", "budget", "Acc", tooltip="allowed accuracy drop: 0, 0.1, 0.5, 1, 2, 5 points"),
        Binding("r", "cycle_runtime", "RT", tooltip="recommend from any runtime, or only the one your app ships: "
                "ONNX Runtime, ExecuTorch, LiteRT"),
        Binding("x", "cancel", "Stop", tooltip="cancel the run's export or re-benchmark"),
    ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.runs: dict[int, dict] = {}
        self.selected: int | None = None
        self.prefer = "latency"
        self.budget = 1.0
        self.runtime = "any"
        self.data: QuantizeData | None = None
        # Toggles are numbered; a poll sent before the newest toggle was stored must not undo it on screen.
        self._prefs_generation = 0
        self._saved_generation = 0
        self._poll_generation = 0
        self._prefs_lock = threading.Lock()

    def compose(self) -> ComposeResult:
        with Horizontal(classes="panel-body"):
            table = DataTable(id="quantize-runs", classes="panel-list", cursor_type="row", zebra_stripes=True)
            for label, key in (("#", "id"), ("Model", "model"), ("Acc", "acc")):
                table.add_column(label, key=key)
            yield table
            with VerticalScroll(id="quantize-detail", classes="panel-detail"):
                yield Static("Loading runs…", id="quantize-view")

    # -- polling ------------------------------------------------------------------------
    def poll_args(self):
        self._poll_generation = self._saved_generation
        return self.selected

    def fetch(self, db, selected) -> QuantizeData:
        from core.recommend import baseline_of, bench_rows, load_prefs
        from store import jobs as store_jobs
        from store import runs as store_runs
        from store import variants as store_variants

        runs = [r for r in store_runs.list_all(db, limit=100) if r.get("checkpoint_path") or r["status"] == "done"]
        with_variants = set(store_variants.runs_with_variants(db))
        ids = [r["id"] for r in runs]
        if selected not in ids:
            selected = next((i for i in ids if i in with_variants), ids[0] if ids else None)
        if selected is None:
            return QuantizeData(runs, None)
        rows = store_variants.latest_for_run(db, selected)
        export_job = store_jobs.latest_for_run(db, selected, "export")
        bench_job = store_jobs.latest_for_run(db, selected, "bench")
        job = max((j for j in (export_job, bench_job) if j), key=lambda j: j["id"], default=None)
        prefs = load_prefs(db, selected)
        return QuantizeData(runs, selected, bench_rows(rows), baseline_of(rows), job, prefs.prefer, prefs.budget_points,
                            prefs.runtime)

    def update_view(self, data: QuantizeData) -> None:
        table = self.query_one("#quantize-runs", DataTable)
        fresh = {r["id"]: r for r in data.runs}
        if list(fresh) != list(self.runs):
            table.clear()
            for run_id, run in fresh.items():
                table.add_row(*run_cells(run), key=str(run_id))
        self.runs = fresh
        if self.selected is None or self.selected not in fresh:
            self.selected = data.run_id
        if data.run_id != self.selected:
            return  # the user picked another run meanwhile; the next poll fetches it
        if self.selected is not None and str(self.selected) in table.rows:
            index = table.get_row_index(str(self.selected))
            if table.cursor_row != index:
                table.move_cursor(row=index)
        self.data = data
        if self._poll_generation == self._prefs_generation:  # no toggle newer than what this poll read
            self.prefer, self.budget, self.runtime = data.prefer, data.budget, data.runtime
        self.render_view()

    def render_view(self) -> None:
        if self.data is None:
            return
        detail = self.query_one("#quantize-detail")
        # content_size still counts the vertical scrollbar's cells, and the bar appears only once the
        # view overflows (after this render): keep its cells free always, or every table line wraps.
        width = (detail.content_size.width or 60) - detail.styles.scrollbar_size_vertical
        self.query_one("#quantize-view", Static).update(
            render_detail(self.data, width=max(30, width - 1), prefer=self.prefer, budget=self.budget,
                          runtime=self.runtime))

    def on_resize(self) -> None:
        self.render_view()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is None or event.row_key.value is None:
            return
        run_id = int(event.row_key.value)
        if run_id != self.selected:
            self.selected = run_id
            self.poll_now()

    # -- actions (intents only) ---------------------------------------------------------
    def _queue(self, what: str, queue) -> None:
        """Queue ``queue(db, run_id)`` for the selected run in a thread worker; the answer is a notification."""
        run_id = self.selected
        if run_id is None:
            self.notify(f"No run selected to {what}.", severity="warning")
            return

        def queued(job_id: int) -> None:
            self.notify(f"Run #{run_id}: {what} queued (job {job_id}); results appear as the worker measures them.")
            self.post_message(StoreChanged("variants"))
            self.poll_now()

        run_intent(self, queue, run_id, then=queued, title=f"Not queued: {what}")

    def action_export(self) -> None:
        from core.export_job import queue_export

        def export(db, run_id: int) -> int:
            # Under the prefs lock, reading the values there: queue_export stores the preference in the
            # enqueue's transaction, so whichever of it and a toggle's save runs last stores the last toggle.
            with self._prefs_lock:
                return queue_export(db, run_id, prefer=self.prefer, budget_points=self.budget, runtime=self.runtime)

        self._queue("export", export)

    def action_rebench(self) -> None:
        from core.export_job import queue_bench

        self._queue("re-benchmark", queue_bench)

    def action_cancel(self) -> None:
        """Cancel the selected run's export or re-benchmark (an intent: the worker stops between variants)."""
        from core.export_job import cancel

        run_id = self.selected
        if run_id is None:
            self.notify("No run selected.", severity="warning")
            return

        def answered(done: dict) -> None:
            what = "cancelled" if done["status"] == "cancelled" else "cancel requested; the worker stops after the current variant"
            self.notify(f"Run #{run_id}: {done['kind']} job {done['job_id']} {what}.")
            self.poll_now()

        def refused(message: str) -> None:
            self.notify(message, title="Nothing cancelled", severity="warning")

        run_intent(self, cancel, run_id, then=answered, title="Nothing cancelled", on_error=refused)

    def action_toggle_prefer(self) -> None:
        self.prefer = "size" if self.prefer == "latency" else "latency"
        self.notify(f"Recommending the {'smallest' if self.prefer == 'size' else 'fastest'} variant within budget.")
        self._prefs_changed()

    def action_budget(self) -> None:
        """Cycle the allowed accuracy drop: 0 → 0.1 → 0.5 → 1 → 2 → 5 points."""
        later = [b for b in BUDGET_STEPS if b > self.budget]
        self.budget = later[0] if later else BUDGET_STEPS[0]
        self.notify(f"Accuracy budget: {self.budget:g} point{'s' if self.budget != 1 else ''} below fp32.")
        self._prefs_changed()

    def action_cycle_runtime(self) -> None:
        """Cycle the runtime the pick may come from: any → ONNX Runtime → ExecuTorch → LiteRT → any."""
        from core.recommend import RUNTIME_CHOICES, runtime_label

        at = RUNTIME_CHOICES.index(self.runtime) if self.runtime in RUNTIME_CHOICES else -1
        self.runtime = RUNTIME_CHOICES[(at + 1) % len(RUNTIME_CHOICES)]
        self.notify("Recommending from every runtime." if self.runtime == "any"
                    else f"Recommending only {runtime_label(self.runtime)} variants (the runtime your app ships).")
        self._prefs_changed()

    def _prefs_changed(self) -> None:
        """Show the new pick at once; store the choice in a thread (the main thread never writes)."""
        self._prefs_generation += 1
        self.render_view()
        self._store_prefs(self.selected, self._prefs_generation)

    @work(thread=True, group="prefs", exit_on_error=False)
    def _store_prefs(self, run_id: int | None, generation: int) -> None:
        import store
        from core.recommend import save_prefs

        # One writer at a time, reading the values under the lock: the last write stores the last toggle.
        error = None
        with self._prefs_lock:
            db = None
            try:
                db = store.connect(self.db_path, migrate=False)
                save_prefs(db, prefer=self.prefer, budget_points=self.budget, runtime=self.runtime, run_id=run_id,
                           as_default=True)
            except Exception as exc:  # a locked or full store: say so, keep the choice on screen
                error = f"{type(exc).__name__}: {exc}"
            finally:
                if db is not None:
                    db.conn.close()
        self.post_message(PrefsSaved(generation, error))

    def on_prefs_saved(self, message: PrefsSaved) -> None:
        if message.error:
            self.notify(f"Preference not stored: {message.error}", severity="error", timeout=8)
        self._saved_generation = max(self._saved_generation, message.generation)
        self.post_message(StoreChanged("prefs"))
        self.poll_now()
