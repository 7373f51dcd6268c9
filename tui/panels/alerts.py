"""Alerts: drift, confidence, down and budget alerts; one tap from an alert to its evidence and a retrain.

The detail shows the monitored signal over requests (threshold and alarm point drawn in), the
confidence histogram and the predicted-class shares before vs after the alarm, the quarantined
inputs (digits drawn as in the Datasets preview, texts, table rows), the deployment and variant.
Tap a class to label the shown sample; Ack, Resolve, Mute and Retrain are buttons and keys.
Every write runs in a thread worker (``core.alerts``) and posts :class:`ActionDone` back.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Button, DataTable, Static

from tui.messages import StoreChanged
from tui.widgets.bars import bar
from tui.widgets.chart import CurveChart, Series
from tui.widgets.polling import PollingPanel
from tui.widgets.preview import SamplePreview

ORDER = 50
SHORT_KIND = {"drift": "drift", "confidence": "conf", "down": "down", "budget": "budg"}


@dataclass
class AlertsData:
    alerts: list[dict]
    watch: list[str] = field(default_factory=list)
    detail: dict | None = None
    previews: list[dict] = field(default_factory=list)
    error: str | None = None


@dataclass
class ActionDone(Message):
    """A write from a thread worker finished: ``text`` to show, ``error`` if it was refused."""

    text: str
    error: bool = False
    ask_dataset_only: int | None = None   # retrain refused for lack of labels: offer the dataset alone


def watch_lines(rows: list[dict], cursors: dict[int, dict], at: float) -> list[str]:
    """One line per deployment line: how the monitor sees it (pure: tested without an app)."""
    from core.periodic import UNMONITORED_TARGETS

    out = []
    for r in rows:
        name = f"#{r['id']} {r['target']} v{r['version']}"
        if r["target"] in UNMONITORED_TARGETS:
            out.append(f"{name}: cannot be monitored (it runs in visitors' browsers)")
        elif r["status"] != "running":
            out.append(f"{name}: {r['status']}, not monitored")
        else:
            cur = cursors.get(r["id"]) or {}
            if cur.get("last_error") and cur.get("failures"):
                out.append(f"{name}: failing ×{cur['failures']}: {cur['last_error']}")
            elif cur.get("last_error"):
                out.append(f"{name}: {cur['last_error']}")
            elif cur.get("last_ok_at"):
                out.append(f"{name}: watched, request {cur.get('seq', 0)}, pulled {max(0, at - cur['last_ok_at']):.0f} s ago")
            else:
                out.append(f"{name}: watched, not pulled yet")
    return out


def notify_line() -> str:
    """Where alerts are sent, URLs masked (they carry tokens)."""
    from core import notify

    found = (["termux-notification"] if notify.termux_command() else []) + [u["url"] for u in notify.listing()]
    return ("Notifications: " + ", ".join(found)) if found else \
        "Notifications: none; add one with `pocketops alerts notify add URL`"


def summary_lines(d: dict) -> list[str]:
    """The alert's facts, one per line."""
    ev = d["evidence"]
    dep = ev["deployment"]
    value = "–" if d.get("value") is None else f"{d['value']:.3g}"
    threshold = "–" if d.get("threshold") is None else f"{d['threshold']:.3g}"
    lines = [f"#{d['alert_id']} {d['kind']} · {d['status']} · {d.get('detector') or '–'}",
             d["message"],
             f"value {value} / threshold {threshold}" + (f" at request {d['request_seq']}" if d.get("request_seq") else "")]
    if dep.get("deployment_id") is not None:
        lines.append(f"deployment #{dep['deployment_id']} {dep.get('target')} v{dep.get('version')} · "
                     f"variant {dep.get('variant_id') or '–'} ({dep.get('status_now') or '?'} now)")
    cal = ev.get("calibration") or {}
    if cal:
        lines.append(f"calibrated: ≥{cal.get('ert_target', '?')} requests between false alarms; "
                     f"held-out {cal.get('false_alarms_per_10k', '?')} per 10k")
    if ev.get("reason"):
        lines.append(f"reason: {ev['reason']}")
    lines.append("opened " + time.strftime("%Y-%m-%d %H:%M", time.localtime(d["opened_at"])))
    return lines


def signal_series(d: dict) -> list[Series]:
    """The signal, the threshold as a line (when it is on the signal's scale) and the alarm as a mark."""
    ev = d["evidence"]
    pts = [(float(x), float(y)) for x, y in ev["signal"]["points"] if y is not None]
    if not pts:
        return []
    series = [Series(ev["signal"]["name"], pts)]
    lo, hi = min(y for _, y in pts), max(y for _, y in pts)
    if ev.get("alarm_seq") is not None:
        series.append(Series(f"alarm@{ev['alarm_seq']}", [(float(ev["alarm_seq"]), hi), (float(ev["alarm_seq"]), lo)]))
    thr = d.get("threshold")
    if thr is not None and ev["signal"]["name"] != "pred" and lo - (hi - lo) <= thr <= hi + (hi - lo):
        series.append(Series("thr", [(pts[0][0], thr), (pts[-1][0], thr)]))
    return series


def before_after_lines(labels: list[str], before: list[int], after: list[int], width: int, *, rows: int = 10) -> list[str]:
    """``label ▇▇ b% │ ▇▇▇ a%`` per row: shares before vs after the alarm."""
    if not labels:
        return ["no data"]
    tb, ta = sum(before) or 1, sum(after) or 1
    order = sorted(range(len(labels)), key=lambda i: -(before[i] / tb + after[i] / ta))[:rows]
    label_w = min(6, max(len(labels[i]) for i in order))
    bar_w = max(3, (width - label_w - 14) // 2)
    return [f"{labels[i][:label_w]:<{label_w}} {bar(before[i] / tb, bar_w)}{100 * before[i] / tb:3.0f}% │"
            f"{bar(after[i] / ta, bar_w)}{100 * after[i] / ta:3.0f}%" for i in sorted(order)]


class Panel(PollingPanel):
    """Alerts: the list; the evidence of the one selected; label, retrain, ack, mute, resolve."""

    TITLE = "Alerts"
    SHORT = "Alrt"
    KEY = "a"
    POLL_INTERVAL = 2.0
    BINDINGS = [
        Binding("k", "ack", "Ack"),
        Binding("v", "resolve", "Resolve"),
        Binding("m", "mute", "Mute"),
        Binding("r", "retrain", "Retrain"),
        # Sample navigation also has buttons beside the sample; the footer has no room for these on a phone.
        Binding("left_square_bracket", "sample(-1)", "‹ sample", show=False),
        Binding("right_square_bracket", "sample(1)", "sample ›", show=False),
    ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rows: dict[int, dict] = {}
        self.selected: int | None = None
        self.detail: dict | None = None
        self.previews: list[dict] = []
        self.sample = 0
        self._label_classes: list[str] = []

    def compose(self) -> ComposeResult:
        with Horizontal(classes="panel-body"):
            table = DataTable(id="alerts-table", classes="panel-list", cursor_type="row", zebra_stripes=True)
            table.add_column("#", key="id")
            table.add_column("Kind", key="kind")
            table.add_column("Dep", key="dep")
            table.add_column("State", key="status")
            table.add_column("Seq", key="seq")
            yield table
            with VerticalScroll(id="alert-detail", classes="panel-detail"):
                with Horizontal(id="alert-actions", classes="alert-buttons"):
                    yield Button("Ack", id="alert-ack", compact=True)
                    yield Button("Resolve", id="alert-resolve", compact=True)
                    yield Button("Mute", id="alert-mute", compact=True)
                    yield Button("Retrain", id="alert-retrain", variant="primary", compact=True)
                yield Static("Loading alerts…", id="alert-summary")
                yield CurveChart("", id="alert-signal")
                yield Static("Quarantined inputs", classes="section-title", id="alert-samples-title")
                with Horizontal(id="alert-sample-nav", classes="alert-buttons"):
                    yield Button("‹ prev", id="alert-prev", compact=True)
                    yield Button("next ›", id="alert-next", compact=True)
                    yield Static("", id="alert-sample-pos")
                yield SamplePreview(id="alert-sample")
                yield Static("Tap a class to label this sample:", id="alert-label-hint")
                yield Horizontal(id="alert-label-buttons")
                yield Static("Confidence before │ after", classes="section-title", id="alert-confidence-title")
                yield Static("", id="alert-confidence")
                yield Static("Predicted classes before │ after", classes="section-title", id="alert-classes-title")
                yield Static("", id="alert-classes")
                yield Static("Deployments", classes="section-title")
                yield Static("", id="alert-watch")

    # -- polling ------------------------------------------------------------------------
    def poll_args(self):
        return self.selected

    def fetch(self, db, selected) -> AlertsData:
        from core import alerts as core_alerts
        from store import alerts as store_alerts
        from store import deployments as store_deployments

        found = store_alerts.list_alerts(db, include_resolved=True, limit=200)
        # Open and acked first (newest first), then the resolved ones.
        found.sort(key=lambda a: (a["status"] == "resolved", -a["id"]))
        lines = store_deployments.latest_per_line(db)
        cursors = {r["id"]: store_alerts.cursor(db, r["id"]) for r in lines}
        data = AlertsData([store_alerts.public(a) for a in found],
                          watch=watch_lines(lines, cursors, time.time()) + [notify_line()])
        ids = [a["alert_id"] for a in data.alerts]
        target = selected if selected in ids else (ids[0] if ids else None)
        if target is not None:
            try:
                data.detail = core_alerts.detail(db, target)
                data.previews = core_alerts.previews(db, target, data.detail)
            except (core_alerts.PocketopsError, ValueError, OSError) as exc:
                data.error = str(exc)
        return data

    def update_view(self, data: AlertsData) -> None:
        table = self.query_one("#alerts-table", DataTable)
        fresh = {a["alert_id"]: a for a in data.alerts}
        shown = [(a["alert_id"], a["status"]) for a in data.alerts]
        if shown != [(k, r["status"]) for k, r in self.rows.items()]:
            table.clear()
            for a in data.alerts:
                table.add_row(str(a["alert_id"]), SHORT_KIND.get(a["kind"], a["kind"]),
                              str(a["deployment_id"]) if a["deployment_id"] is not None else "–",
                              a["status"], str(a["request_seq"]) if a["request_seq"] is not None else "–",
                              key=str(a["alert_id"]))
        self.rows = fresh
        self.query_one("#alert-watch", Static).update("\n".join(data.watch))
        if self.selected not in fresh:
            self.selected = next(iter(fresh), None)
            self.sample = 0
        if self.selected is not None and self.selected in fresh:
            index = table.get_row_index(str(self.selected))
            if table.cursor_row != index:
                table.move_cursor(row=index)
        if data.detail is not None and data.detail["alert_id"] == self.selected:
            self.detail, self.previews = data.detail, data.previews
        elif self.selected is None:
            self.detail, self.previews = None, []
        self.show_detail(data.error)

    def show_detail(self, error: str | None = None) -> None:
        d = self.detail
        summary = self.query_one("#alert-summary", Static)
        has = d is not None
        for wid in ("#alert-actions", "#alert-signal", "#alert-confidence", "#alert-classes",
                    "#alert-confidence-title", "#alert-classes-title"):
            self.query_one(wid).display = has
        if d is None:
            summary.update(error or ("Loading the alert…" if self.selected is not None else
                                     "No alerts. The worker pulls every running deployment every 30 s "
                                     "(`pocketops monitor --once` does one pass now)."))
            for wid in ("#alert-sample-nav", "#alert-sample", "#alert-label-hint", "#alert-label-buttons",
                        "#alert-samples-title"):
                self.query_one(wid).display = False
            return
        ev = d["evidence"]
        summary.update("\n".join(summary_lines(d)))
        self.query_one("#alert-ack", Button).disabled = d["status"] != "open"
        self.query_one("#alert-resolve", Button).disabled = d["status"] == "resolved"
        self.query_one("#alert-signal", CurveChart).set_series(signal_series(d))
        width = max(20, (self.query_one("#alert-detail").content_size.width or 40) - 1)
        hist = ev["confidence_histogram"]
        bins = [f"{i / 10:.1f}" for i in range(10)]
        self.query_one("#alert-confidence", Static).update(
            "\n".join(before_after_lines(bins, hist["before"], hist["after"], width)))
        counts = ev["class_counts"]
        self.query_one("#alert-classes", Static).update(
            "\n".join(before_after_lines(ev["classes"], counts["before"], counts["after"], width, rows=6))
            if ev["classes"] else "no classes known")
        have = bool(self.previews)
        for wid in ("#alert-sample-nav", "#alert-sample", "#alert-label-hint", "#alert-label-buttons",
                    "#alert-samples-title"):
            self.query_one(wid).display = have
        if not have:
            return
        self.sample = min(self.sample, len(self.previews) - 1)
        shown = self.previews[self.sample]
        self.query_one("#alert-sample-pos", Static).update(
            f"{self.sample + 1}/{len(self.previews)} · request {shown['seq']} · {shown['seen']}")
        self.query_one("#alert-sample", SamplePreview).set_samples([self.previews[self.sample]])
        self._label_buttons(ev["classes"])

    def _label_buttons(self, classes: list[str]) -> None:
        if classes == self._label_classes:
            return
        self._label_classes = list(classes)
        box = self.query_one("#alert-label-buttons", Horizontal)
        box.remove_children()
        box.mount_all([Button(str(c)[:10], id=f"alert-label-{i}", classes="alert-class", compact=True)
                       for i, c in enumerate(classes[:40])])

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value if event.row_key is not None else None
        if key is not None and int(key) != self.selected:
            self.selected = int(key)
            self.sample = 0
            self.detail = None
            self.poll_now()

    # -- actions (writes in a thread worker) ------------------------------------------------
    @work(thread=True, exclusive=True, group="alert-write", exit_on_error=False)
    def _write(self, what: str, alert_id: int, *args) -> None:
        import store
        from core import alerts as core_alerts
        from core.errors import PocketopsError

        db = store.connect(self.app.db_path)
        try:
            if what == "ack":
                core_alerts.ack(db, alert_id)
                text = f"Alert {alert_id} acknowledged."
            elif what == "resolve":
                core_alerts.resolve(db, alert_id)
                text = f"Alert {alert_id} resolved."
            elif what == "mute":
                deployment_id, detector = args
                core_alerts.mute(db, deployment_id, detector)
                text = f"Detector {detector} muted for deployment {deployment_id}."
            elif what == "label":
                sample, label = args
                core_alerts.label(db, alert_id, sample, label)
                text = f"Sample {sample} labelled {label!r}."
            else:
                made = core_alerts.retrain(db, self.app.db_path, alert_id, dataset_only=bool(args and args[0]))
                text = (f"Run {made['run_id']} queued on {made['dataset']}"
                        + (f" ({made['parent_dataset']} + {made['added_rows']} labelled)." if made["added_rows"] else "."))
        except PocketopsError as exc:
            offer = alert_id if what == "retrain" and "no labelled samples" in str(exc) else None
            self.post_message(ActionDone(str(exc), error=True, ask_dataset_only=offer))
        else:
            self.post_message(ActionDone(text))
        finally:
            db.close()

    def on_action_done(self, message: ActionDone) -> None:
        if message.ask_dataset_only is not None:
            from tui.dialogs import ConfirmDialog

            alert_id = message.ask_dataset_only

            def answered(yes: bool | None) -> None:
                if yes:
                    self._write("retrain", alert_id, True)

            self.app.push_screen(ConfirmDialog(f"{message.text.split(':')[0]}. Retrain on the dataset alone?",
                                               yes="Retrain"), answered)
            return
        self.notify(message.text, severity="error" if message.error else "information", timeout=6 if message.error else 3)
        self.post_message(StoreChanged("alerts"))

    def _need(self) -> dict | None:
        if self.detail is None:
            self.notify("No alert selected.", severity="warning")
        return self.detail

    def action_ack(self) -> None:
        if (d := self._need()) is not None:
            self._write("ack", d["alert_id"])

    def action_resolve(self) -> None:
        if (d := self._need()) is not None:
            self._write("resolve", d["alert_id"])

    def action_mute(self) -> None:
        d = self._need()
        if d is None:
            return
        if d.get("deployment_id") is None or not d.get("detector"):
            self.notify("This alert has no deployment detector to mute.", severity="warning")
            return
        self._write("mute", d["alert_id"], d["deployment_id"], d["detector"])

    def action_retrain(self) -> None:
        if (d := self._need()) is not None:
            self._write("retrain", d["alert_id"])

    @on(Button.Pressed, "#alert-ack")
    def _ack(self) -> None:
        self.action_ack()

    @on(Button.Pressed, "#alert-resolve")
    def _resolve(self) -> None:
        self.action_resolve()

    @on(Button.Pressed, "#alert-mute")
    def _mute(self) -> None:
        self.action_mute()

    @on(Button.Pressed, "#alert-retrain")
    def _retrain(self) -> None:
        self.action_retrain()

    def action_sample(self, step: int) -> None:
        """Show the previous (-1) or next (+1) quarantined sample."""
        if self.previews:
            self.sample = (self.sample + step) % len(self.previews)
            self.show_detail()

    @on(Button.Pressed, "#alert-prev")
    def _prev(self) -> None:
        self.action_sample(-1)

    @on(Button.Pressed, "#alert-next")
    def _next(self) -> None:
        self.action_sample(1)

    @on(Button.Pressed, ".alert-class")
    def _label(self, event: Button.Pressed) -> None:
        d = self.detail
        if d is None or not self.previews:
            return
        index = int((event.button.id or "").rsplit("-", 1)[-1])
        self._write("label", d["alert_id"], self.previews[self.sample]["index"], self._label_classes[index])
