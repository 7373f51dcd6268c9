"""Costs: month-to-date and projected spend per platform and deployment, budgets as burn-down bars.

Every figure says where it came from (measured usage, or the plan's estimate) and the date of
the price table. The phone's own cost is its CPU-seconds and battery percent. Budgets are set
by taps (``b``: a dialog); a deployment a hard budget stopped shows why, and ``r`` queues its
resume (a ``costs`` job: the worker makes the platform call) after a confirmation. Writes run
in thread workers.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Input, Label, Select, Static

from tui.messages import StoreChanged
from tui.widgets.bars import bar
from tui.widgets.polling import PollingPanel

ORDER = 60
PLATFORM_LABEL = {"local": "phone", "spaces": "Spaces", "gcp": "Google"}
SCOPE_CHOICES = [("all platforms", "all"), ("phone (local)", "local"), ("HF Spaces", "spaces"),
                 ("Google Cloud", "gcp")]
KIND_CHOICES = [("soft: warn only", "soft"), ("hard: stop spending", "hard")]


@dataclass
class CostsData:
    summary: dict
    log: list[dict] = field(default_factory=list)
    paused: list[dict] = field(default_factory=list)


def usd(value: float | None) -> str:
    """``$1.23`` (``$0.004`` shows as ``<$0.01``)."""
    if value is None:
        return "–"
    return "<$0.01" if 0 < value < 0.005 else f"${value:,.2f}"


def budget_lines(summary: dict, width: int) -> list[str]:
    """One burn-down bar per budget: spent against the limit, then the projection (pure)."""
    lines = []
    for b in summary["budgets"]:
        fraction = b["spent_fraction"]
        label = f"{b['scope']}{' hard' if b['hard'] else ''}"
        lines.append(f"{label}: {usd(b['spent_usd'])} of {usd(b['amount_usd'])} ({fraction * 100:.0f}%)")
        lines.append(f" {bar(fraction, max(8, width - 4))}")
        over = " over!" if b["projected_usd"] > b["amount_usd"] else ""
        lines.append(f" projected {usd(b['projected_usd'])}{over}")
    return lines or ["No budgets. Tap Budget (b) to set one."]


def phone_lines(summary: dict) -> list[str]:
    """The phone's own cost this month (pure)."""
    local = summary["local_compute"]
    return [f"phone: {local['cpu_s']:,.0f} CPU-s, {local['battery_pct']:.1f}% battery",
            f"served here: {local.get('requests', 0):,} requests"]


def source_line(summary: dict) -> str:
    """Where the figures come from, and the price table's date (pure)."""
    sources = {p["source"] for p in summary["platforms"].values() if p["deployments"]}
    said = "measured" if sources <= {"measured"} else "measured + estimated (plan's assumption, < 24 h of data)"
    return f"{said}; prices of {summary['price_table_date']}; estimates, not bills"


def free_line(summary: dict) -> str:
    free = summary["platforms"]["gcp"].get("free_tier_left") or {}
    if not free:
        return ""
    return f"Google free tier left: {free['requests']:,.0f} req, {free['vcpu_seconds']:,.0f} vCPU-s"


def log_lines(entries: list[dict], limit: int = 6) -> list[str]:
    return [f"{time.strftime('%m-%d %H:%M', time.localtime(e['ts']))} {e['who']} {e['action']}: {e['message']}"
            for e in entries[:limit]]


class Panel(PollingPanel):
    """Costs: per platform and deployment, budgets with burn-down bars, the phone's own cost, the audit log."""

    TITLE = "Costs"
    SHORT = "Cost"
    KEY = "c"
    POLL_INTERVAL = 2.0
    BINDINGS = [
        Binding("b", "budget", "Budget"),
        Binding("r", "resume", "Resume"),
        Binding("f", "refresh", "Refresh"),
    ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.data: CostsData | None = None
        self.selected: str | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(classes="panel-body"):
            table = DataTable(id="costs-table", classes="panel-list", cursor_type="row", zebra_stripes=True)
            # Fixed widths: the rows are rebuilt every poll, and auto widths would shift under the header.
            table.add_column("What", key="what", width=12)
            table.add_column("Month", key="mtd", width=7)
            table.add_column("Proj", key="proj", width=7)
            table.add_column("Src", key="src", width=4)
            yield table
            with VerticalScroll(id="costs-detail", classes="panel-detail"):
                yield Static("Loading costs…", id="costs-head")
                yield Static("", id="costs-selected")
                yield Static("", id="costs-budgets")
                yield Static("", id="costs-phone")
                yield Static("", id="costs-log")

    # -- polling ------------------------------------------------------------------------
    def fetch(self, db, args) -> CostsData:
        from deployers import costs
        from store import costs as store_costs

        return CostsData(costs.month_summary(db), store_costs.audit_log(db, limit=8), store_costs.paused(db))

    def update_view(self, data: CostsData) -> None:
        self.data = data
        table = self.query_one("#costs-table", DataTable)
        table.clear()
        summary = data.summary
        for name, plat in summary["platforms"].items():
            table.add_row(PLATFORM_LABEL[name], usd(plat["month_to_date_usd"]), usd(plat["projected_usd"]),
                          "est" if plat["source"] == "estimated" else "meas", key=f"platform:{name}")
            for d in plat["deployments"]:
                mark = "■ " if d.get("paused_reason") else " "
                label = f"{mark}#{d['deployment_id']} {(d.get('name') or d.get('target') or '').split('/')[-1][:7]}"
                table.add_row(label, usd(d["month_to_date_usd"]), usd(d["projected_usd"]),
                              "est" if d["source"] == "estimated" else "meas", key=f"deployment:{d['deployment_id']}")
        keys = [f"platform:{n}" for n in summary["platforms"]] + [
            f"deployment:{d['deployment_id']}" for p in summary["platforms"].values() for d in p["deployments"]]
        if self.selected not in keys:
            paused = [f"deployment:{p['id']}" for p in data.paused if f"deployment:{p['id']}" in keys]
            self.selected = paused[0] if paused else keys[0]
        table.move_cursor(row=table.get_row_index(self.selected))
        width = max(20, (self.size.width or 40) // (2 if self.size.width >= 80 else 1) - 2)
        head = [f"{summary['month']}: {usd(summary['total_usd'])} so far, {usd(summary['projected_usd'])} projected",
                source_line(summary)]
        free = free_line(summary)
        self.query_one("#costs-head", Static).update("\n".join(head + ([free] if free else [])))
        self.query_one("#costs-budgets", Static).update("\n".join(budget_lines(summary, width)))
        self.query_one("#costs-phone", Static).update("\n".join(phone_lines(summary)))
        log = log_lines(data.log)
        self.query_one("#costs-log", Static).update("\n".join(["audit log:", *log]) if log else "audit log: empty")
        self.show_selected()

    def _entry(self) -> dict | None:
        if self.data is None or not (self.selected or "").startswith("deployment:"):
            return None
        dep_id = int(self.selected.split(":", 1)[1])
        return next((d for p in self.data.summary["platforms"].values() for d in p["deployments"]
                     if d["deployment_id"] == dep_id), None)

    def show_selected(self) -> None:
        entry = self._entry()
        text = ""
        if entry is not None:
            parts = [f"#{entry['deployment_id']} {entry.get('target')} {entry.get('name') or ''}: "
                     f"{entry.get('status')} ({entry['source']})"]
            usage = entry.get("usage") or {}
            hours = usage.get("hours_by_hardware") or {}
            if hours:
                parts.append("hours: " + ", ".join(f"{h} {v:.1f} h" for h, v in hours.items()))
            if usage.get("requests"):
                parts.append(f"requests: {usage['requests']:,.0f}")
            if entry.get("paused_reason"):
                parts.append(f"STOPPED: {entry['paused_reason']}; tap Resume (r) to restart it")
            text = "\n".join(parts)
        self.query_one("#costs-selected", Static).update(text)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value if event.row_key is not None else None
        if key and key != self.selected:
            self.selected = key
            self.show_selected()

    # -- actions (writes in thread workers) ------------------------------------------------
    def action_budget(self) -> None:
        def chosen(values: dict | None) -> None:
            if values:
                self._write("budget", values)

        current = {b["scope"]: b for b in (self.data.summary["budgets"] if self.data else [])}
        self.app.push_screen(BudgetDialog(current), chosen)

    def action_resume(self) -> None:
        from tui.dialogs import ConfirmDialog

        entry = self._entry()
        if entry is None or not entry.get("paused_reason"):
            self.notify("Select a deployment a budget stopped (■) to resume it.", severity="warning")
            return

        def answered(ok: bool | None) -> None:
            if ok:
                self._write("resume", {"deployment_id": entry["deployment_id"]})

        self.app.push_screen(ConfirmDialog(f"Resume #{entry['deployment_id']}? It spends money again "
                                           f"({entry['paused_reason']}).", yes="Resume"), answered)

    def action_refresh(self) -> None:
        self._write("refresh", {})

    @work(thread=True, exit_on_error=False)
    def _write(self, what: str, values: dict) -> None:
        import store
        from core.errors import PocketopsError
        from deployers import costs

        db = store.connect(self.app.db_path)
        try:
            if what == "budget":
                row = costs.set_budget(db, values["scope"], values["amount"], hard=values["hard"],
                                       warn=values["warn"], who="dashboard")
                message = f"Budget {row['scope']} set: ${row['amount_usd']:.2f}/month"
            else:
                # Platform calls run in the worker, not in the dashboard's process.
                from core import jobkinds

                if what == "resume":
                    job_id = jobkinds.queue(db, "costs", refresh=False, who="dashboard",
                                            resume_deployment_id=values["deployment_id"])
                    message = f"Resume of #{values['deployment_id']} queued (job {job_id})"
                else:
                    job_id = jobkinds.queue(db, "costs", refresh=True, who="dashboard")
                    message = f"Costs refresh queued (job {job_id})"
        except (PocketopsError, ValueError, OSError) as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error", timeout=8)
        else:
            self.app.call_from_thread(self._written, message)
        finally:
            db.conn.close()

    def _written(self, message: str) -> None:
        self.notify(message)
        self.post_message(StoreChanged("costs"))
        self.poll_now()


class BudgetDialog(ModalScreen["dict | None"]):
    """Set a monthly budget: scope, amount, soft or hard, warn levels. Bad input stays in the form."""

    BINDINGS = [Binding("escape", "close", "Close")]

    def __init__(self, current: dict | None = None):
        super().__init__(classes="dialog-screen")
        self.current = current or {}

    def compose(self) -> ComposeResult:
        existing = self.current.get("all") or {}
        with VerticalScroll(classes="dialog", id="budget-dialog"):
            yield Label("Monthly budget", classes="dialog-title")
            with Grid(classes="form"):
                yield Label("Scope")
                yield Select(SCOPE_CHOICES, value="all", allow_blank=False, id="scope", compact=True)
                yield Label("USD/mo")
                yield Input(value=f"{existing['amount_usd']:g}" if existing else "10", id="amount", compact=True)
                yield Label("Kind")
                yield Select(KIND_CHOICES, value="hard" if existing.get("hard", True) else "soft",
                             allow_blank=False, id="kind", compact=True)
                yield Label("Warn %")
                yield Input(value="50,90", id="warn", compact=True)
            yield Static("", id="error", classes="form-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Set", id="set", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def action_close(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    @on(Button.Pressed, "#set")
    def _set(self) -> None:
        from deployers.costs import parse_budget

        scope = self.query_one("#scope", Select).value
        amount = self.query_one("#amount", Input).value.strip()
        warn = self.query_one("#warn", Input).value.strip()
        try:
            parse_budget(str(scope), amount, warn)     # checked here; written by the panel's thread
        except ValueError as exc:
            error = self.query_one("#error", Static)
            error.update(str(exc))
            error.set_class(True, "-shown")
            return
        self.dismiss({"scope": str(scope), "amount": amount, "warn": warn,
                      "hard": self.query_one("#kind", Select).value == "hard"})
