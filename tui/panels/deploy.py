"""Deploy: every deployment line (target + name) with version, status, URL, health, cold start.

Actions are intents: each queues its job kind (``deploy``, ``deploy-status``, ``deploy-rollback``,
``deploy-stop``; core.jobkinds) from a thread worker, and the worker runs it through
``deployers.service``; the deploy form asks the worker for the plan first (a ``deploy-plan`` job:
the dashboard never loads onnxruntime). Rollback and stop ask for confirmation. No secret is
ever shown: API keys live in the worker's environment, tokens in their own stores.
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
from textual.worker import get_current_worker

from deployers import targets as deploy_targets
from tui.format import release_label, render_plan  # noqa: F401  (render_plan: the form's, and the tests')
from tui.messages import JobUpdate, StoreChanged
from tui.widgets.intents import IntentHandler, run_intent
from tui.widgets.polling import PollingPanel

ORDER = 40
TARGETS = [(t.label, t.name) for t in deploy_targets.TARGETS.values()]
SHORT_TARGET = {t.name: t.short for t in deploy_targets.TARGETS.values()}
# The job kinds the panel lists under a line (a plan is the form's own business).
ACTION_KINDS = {"deploy": "deploy", "deploy-status": "status", "deploy-rollback": "rollback", "deploy-stop": "stop"}
MASK = "••••••"


@dataclass
class DeployData:
    lines: list[dict]
    history: list[dict] = field(default_factory=list)
    jobs: list[dict] = field(default_factory=list)


def fmt_ms(value: float | None) -> str:
    return "–" if value is None else (f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms")


def line_key(row: dict) -> str:
    return f"{row['target']}|{row['name']}"


def detail_lines(row: dict, history: list[dict]) -> list[str]:
    """What a user checks on a release, one fact per line (pure: tested without an app)."""
    meta = row.get("meta") or {}
    lines = [f"{row['target']} · {row['name']}" if row["name"] != row["target"] else row["target"],
             f"v{row['version']} {row['status']} · variant {row.get('variant_id') or '–'}",
             f"URL: {row.get('url') or '–'}",
             f"health {fmt_ms(row.get('health_latency_ms'))} · cold start {fmt_ms(row.get('cold_start_ms'))}"]
    if meta.get("bundle_version"):
        lines.append(f"bundle {meta['bundle_version']}")
    if meta.get("api_key_required"):
        lines.append(f"API key: {MASK} (from the worker's POCKETOPS_API_KEY)")
    if meta.get("rolled_back_from"):
        lines.append(f"rollback of #{meta['rolled_back_from']} to v{meta.get('restores_version', '?')}")
    if meta.get("reason"):
        lines.append(f"reason: {meta['reason']}")
    if row.get("error"):
        lines.append(f"error: {row['error']}")
    if row.get("paused_reason"):
        lines.append(f"stopped by budget: {row['paused_reason']} (resume in Costs)")
    lines.append(f"updated {time.strftime('%Y-%m-%d %H:%M', time.localtime(row['updated_at']))}")
    newer = [h for h in history if h["id"] > row["id"]]
    if newer and newer[0]["status"] == "failed":
        # The line shows the release that serves; say that a later attempt failed, and why.
        lines.append(f"last attempt v{newer[0]['version']} failed: {newer[0].get('error') or '?'}")
    if len(history) > 1:
        lines.append("history: " + ", ".join(f"v{h['version']} {h['status']}" for h in history[:6]))
    return lines


def job_line(job: dict) -> str:
    payload = job["payload"]
    what = ACTION_KINDS.get(job["kind"], job["kind"])
    target = payload.get("target") or f"#{payload.get('deployment_id')}"
    if job["status"] == "failed":
        return f"{what} {target} failed: {job.get('error')}"
    return f"{what} {target}: {job['status']}…"


def recommended_variant(db, variants: list[dict]) -> int | None:
    """The variant the Quantize panel recommends for the newest run offered (its stored preference and budget)."""
    from core.recommend import pick
    from store import variants as store_variants

    run_id = next((v["run_id"] for v in variants if v.get("run_id")), None)
    if run_id is None:
        return None
    return pick(db, store_variants.latest_for_run(db, run_id), run_id).variant_id


class Panel(PollingPanel):
    """Deploy: lines with live status; deploy (plan first), status, rollback, stop."""

    TITLE = "Deploy"
    SHORT = "Depl"
    KEY = "p"
    POLL_INTERVAL = 1.0
    BINDINGS = [
        Binding("n", "deploy", "Deploy"),
        Binding("s", "status", "Status"),
        Binding("r", "rollback", "Rollback"),
        Binding("x", "stop", "Stop"),
    ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rows: dict[str, dict] = {}
        self.selected: str | None = None
        self.history: list[dict] = []
        self.jobs: list[dict] = []

    def compose(self) -> ComposeResult:
        with Horizontal(classes="panel-body"):
            table = DataTable(id="deploy-table", classes="panel-list", cursor_type="row", zebra_stripes=True)
            table.add_column("Target", key="target")
            table.add_column("Ver", key="version")
            table.add_column("Status", key="status")
            table.add_column("Health", key="health")
            table.add_column("Cold", key="cold")
            yield table
            with VerticalScroll(id="deploy-detail", classes="panel-detail"):
                yield Static("Loading deployments…", id="deploy-summary")
                yield Static("", id="deploy-jobs")

    # -- polling ------------------------------------------------------------------------
    def poll_args(self):
        return self.selected

    def fetch(self, db, selected) -> DeployData:
        from store import deployments, jobs

        data = DeployData(deployments.latest_per_line(db))
        keys = [line_key(r) for r in data.lines]
        target = selected if selected in keys else (keys[0] if keys else None)
        if target is not None:
            t, name = target.split("|", 1)
            data.history = [r for r in deployments.list_all(db, target=t, limit=50) if r["name"] == name]
        recent = time.time() - 120
        data.jobs = [j for j in jobs.list_jobs(db, limit=30) if j["kind"] in ACTION_KINDS
                     and (j["status"] in ("queued", "running") or (j["status"] == "failed" and (j.get("finished_at") or 0) > recent))]
        return data

    def update_view(self, data: DeployData) -> None:
        table = self.query_one("#deploy-table", DataTable)
        fresh = {line_key(r): r for r in data.lines}
        table.clear()
        targets = [r["target"] for r in data.lines]
        for key, row in fresh.items():
            label = SHORT_TARGET.get(row["target"], row["target"])
            if targets.count(row["target"]) > 1:  # several lines on one target: tell them apart, briefly
                label = f"{label} {row['name'].split('/')[-1][:8]}"
            health = row.get("health_latency_ms") if row["status"] in ("running", "sleeping") else None  # not stale
            table.add_row(label, f"v{row['version']}", row["status"], fmt_ms(health),
                          fmt_ms(row.get("cold_start_ms")), key=key)
        self.rows = fresh
        if self.selected not in fresh:
            self.selected = next(iter(fresh), None)
        if self.selected is not None:
            table.move_cursor(row=table.get_row_index(self.selected))
        self.history = data.history
        self.jobs = data.jobs
        self.show_detail()

    def show_detail(self) -> None:
        summary = self.query_one("#deploy-summary", Static)
        row = self.rows.get(self.selected or "")
        if row is None:
            summary.update("No deployments yet. Press n (or tap Deploy) to pick a variant and a target; "
                           "you see the plan (files, cost, requirements) before anything happens.")
        else:
            summary.update("\n".join(detail_lines(row, self.history)))
        self.query_one("#deploy-jobs", Static).update("\n".join(job_line(j) for j in self.jobs))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value if event.row_key is not None else None
        if key and key != self.selected:
            self.selected = key
            self.show_detail()
            self.poll_now()

    # -- actions ------------------------------------------------------------------------
    def _queue(self, kind: str, payload: dict, said: str) -> None:
        """Queue a ``kind`` job from a thread worker; ``said`` (with ``{job}``) is the notice once it is queued."""
        from core import jobkinds

        def queued(job_id: int) -> None:
            self.notify(said.format(job=job_id))
            self.post_message(StoreChanged("deployments"))
            self.poll_now()

        run_intent(self, jobkinds.queue, kind, payload, then=queued, title="Not queued")

    def _current(self) -> dict | None:
        row = self.rows.get(self.selected or "")
        if row is None:
            self.notify("No deployment selected.", severity="warning")
        return row

    def action_deploy(self) -> None:
        def offer(found: tuple[list[dict], int | None]) -> None:
            variants, initial = found
            if not variants:
                self.notify("No variants yet: export a run first (Quantize panel, or pocketops export RUN_ID).",
                            severity="warning", timeout=6)
                return
            self.app.push_screen(DeployDialog(self.app.db_path, variants, initial=initial), chosen)

        def chosen(choice: dict | None) -> None:
            if choice:
                self._queue("deploy", choice,
                            f"Deploy of variant {choice['variant_id']} to {choice['target']} queued (job {{job}}).")

        run_intent(self, deploy_choices, then=offer, title="Cannot deploy")

    def action_status(self) -> None:
        row = self._current()
        if row is not None:
            self._queue("deploy-status", {"deployment_id": row["id"]}, f"Checking {release_label(row)}… (job {{job}})")

    def _confirmed(self, row: dict, kind: str, question: str, yes: str) -> None:
        from tui.dialogs import ConfirmDialog

        def answered(ok: bool | None) -> None:
            if ok:
                self._queue(kind, {"deployment_id": row["id"]}, f"{yes} of {release_label(row)} queued (job {{job}}).")

        self.app.push_screen(ConfirmDialog(question.format(label=release_label(row)), yes=yes), answered)

    def action_rollback(self) -> None:
        from store import deployments

        row = self._current()
        if row is None:
            return

        def ask(previous: dict | None) -> None:
            if previous is None:
                self.notify(f"{release_label(row)} has no earlier release to roll back to.", severity="warning")
                return
            to = f"v{previous['version']} (variant {previous.get('variant_id') or '–'})"
            self._confirmed(row, "deploy-rollback", f"Roll back {{label}} to {to}?", "Rollback")

        run_intent(self, deployments.previous_served, row["target"], row["name"], row["id"], then=ask,
                   title="Cannot roll back")

    def action_stop(self) -> None:
        row = self._current()
        if row is not None:
            self._confirmed(row, "deploy-stop", "Stop {label}? It stops serving.", "Stop")


def deploy_choices(db) -> tuple[list[dict], int | None]:
    """The variants the deploy form offers and the one it picks first (read in a thread worker)."""
    from store import deployments

    variants = deployments.variants(db)
    return variants, (recommended_variant(db, variants) if variants else None)


class DeployDialog(IntentHandler, ModalScreen["dict | None"]):
    """Pick a variant and a target, see the plan (computed by the worker), then deploy."""

    BINDINGS = [Binding("escape", "close", "Close")]
    # Three buttons side by side in 40 columns (each as wide as its label, not the default 16),
    # docked so that a long plan scrolls under them and Deploy stays one tap away.
    DEFAULT_CSS = """
    DeployDialog .dialog-buttons { dock: bottom; margin-top: 0; padding-top: 1; background: $surface; }
    DeployDialog .dialog-buttons Button { min-width: 0; width: auto; margin-right: 1; }
    """
    PLAN_POLL_S = 0.3

    def __init__(self, db_path, variants: list[dict], initial: int | None = None):
        super().__init__(classes="dialog-screen")
        self.db_path = db_path
        self.variants = variants
        self.initial = initial if any(v["id"] == initial for v in variants) else None
        self.plan_job: int | None = None
        self.planned_for: tuple | None = None

    def compose(self) -> ComposeResult:
        options = [(f"#{v['id']} {v['name']}" + (f" (run {v['run_id']})" if v.get("run_id") else ""), v["id"])
                   for v in self.variants]
        with VerticalScroll(classes="dialog", id="deploy-form"):
            yield Label("Deploy a variant", classes="dialog-title")
            with Grid(classes="form"):
                yield Label("Variant")
                yield Select(options, value=self.initial or options[0][1], allow_blank=False, id="variant", compact=True)
                yield Label("Target")
                yield Select(TARGETS, value="local", allow_blank=False, id="target", compact=True)
                yield Label("Name")
                yield Input(placeholder="line / Space id / function", id="name", compact=True)
                yield Label("Port")
                yield Input(placeholder="local: 8765", id="port", compact=True, type="integer")
            yield Static("Press Plan to see files, cost and requirements.", id="plan")
            yield Static("", id="error", classes="form-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Plan", id="plan-button", compact=True)
                yield Button("Deploy", id="deploy-button", variant="primary", compact=True, disabled=True)
                yield Button("Cancel", id="cancel", compact=True)

    def action_close(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

    def read_form(self) -> dict:
        target = self.query_one("#target", Select).value
        options: dict = {}
        name = self.query_one("#name", Input).value.strip()
        if name:
            options.update(deploy_targets.line_options(target, name))
        port = self.query_one("#port", Input).value.strip()
        if port:
            options["port"] = int(port)
        return {"variant_id": int(self.query_one("#variant", Select).value), "target": target, "options": options}

    @on(Select.Changed)
    @on(Input.Changed)
    def _changed(self) -> None:
        self.query_one("#deploy-button", Button).disabled = True  # the plan shown is for other values now

    @on(Button.Pressed, "#plan-button")
    def plan(self) -> None:
        form = self.read_form()
        self.planned_for = (form["variant_id"], form["target"], tuple(sorted(form["options"].items())))
        self.query_one("#plan", Static).update("Planning… (the worker builds the bundle)")
        self.query_one("#deploy-button", Button).disabled = True
        self._plan_thread(form)

    @work(thread=True, exclusive=True, group="plan", exit_on_error=False)
    def _plan_thread(self, form: dict) -> None:
        """Queue the ``deploy-plan`` job and follow it until it ends, posting each change (own connection)."""
        import store
        from core import jobkinds
        from core.errors import PocketopsError
        from store import jobs
        from tui.messages import IntentFailed

        worker = get_current_worker()
        db = store.connect(self.db_path, migrate=False)
        try:
            try:
                self.plan_job = jobkinds.queue(db, "deploy-plan", form)
            except PocketopsError as exc:
                self.post_message(IntentFailed("Not planned", str(exc), self._show_error))
                return
            seen = None
            while not worker.is_cancelled:
                job = jobs.get(db, self.plan_job)
                if job is not None and job["status"] != seen:
                    seen = job["status"]
                    self.post_message(JobUpdate(job))
                if job is None or job["status"] in jobs.FINAL:
                    return
                time.sleep(self.PLAN_POLL_S)
        finally:
            db.conn.close()

    def _show_error(self, error: str) -> None:
        self.query_one("#plan", Static).update("")
        self.query_one("#error", Static).update(error)
        self.query_one("#error").set_class(True, "-shown")

    def on_job_update(self, message: JobUpdate) -> None:
        job = message.job
        if job["id"] != self.plan_job:
            return
        if job["status"] in ("queued", "running"):
            waiting = " (is a worker running? `pocketops worker`)" if job["status"] == "queued" else ""
            self.query_one("#plan", Static).update(f"Planning…{waiting}")
            return
        if job["status"] != "done":
            self._show_error(job.get("error") or job["status"])
            return
        self.query_one("#error").set_class(False, "-shown")
        self.query_one("#plan", Static).update(render_plan(job["result"]["plan"]))
        self.query_one("#deploy-button", Button).disabled = False

    @on(Button.Pressed, "#deploy-button")
    def deploy(self) -> None:
        self.dismiss(self.read_form())
