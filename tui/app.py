"""The pocketops dashboard: a tab bar, one panel at a time, footer keys.

``make_app`` builds the app for the CLI, the tests and the screenshot script alike. The app
imports no torch, onnx or numpy: panels read the store in worker threads (which import the
store lazily, after the first frame) and write only intents (queue a job, request a cancel).
"""
from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid
from collections import deque
from pathlib import Path

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import ContentSwitcher, Footer, Label

from tui import panels as panel_registry
from tui.messages import ShowPanel, StoreChanged
from tui.widgets.polling import DEFAULT_INTERVAL_S, PollingPanel

PANELS = panel_registry.discover()
WIDE_FROM = 80  # columns: below this the screen is "-narrow" (a phone), from it "-wide"
# The dashboard's heartbeat in the store: a worker it started stays while it beats (see
# core.worker.DASHBOARD_ALIVE_S) and leaves when idle after the dashboard closes.
DASHBOARD_BEAT_S = 2.0
# A worker we started may take this long to register (imports on a slow phone) before we start another.
WORKER_START_GRACE_S = 20.0


def _panel_bindings() -> list[Binding]:
    found = []
    for number, info in enumerate(PANELS, start=1):
        action = f"show_panel('{info.name}')"
        if info.key:
            found.append(Binding(info.key, action, info.title, show=False))
        if number <= 9:
            found.append(Binding(str(number), action, info.title, show=False))
    return found


class PanelTab(Widget, can_focus=False):
    """One tab: tapping it shows its panel. The full title with room, the short one on a phone."""

    def __init__(self, info: panel_registry.PanelInfo):
        super().__init__(id=f"tab-{info.name}", classes="panel-tab")
        self.info = info
        title, key = info.title, info.key
        at = title.lower().find(key) if key else -1
        # The panel's key is underlined in its title, so the shortcut is discoverable.
        self.long = Content.assemble(title[:at], (title[at], "underline"), title[at + 1:]) if at >= 0 else Content(title)
        self.short = Content(info.short)

    def render(self) -> Content:
        return self.short if self.app.size.width < WIDE_FROM else self.long

    def on_click(self) -> None:
        self.post_message(ShowPanel(self.info.name))


class PocketopsApp(App):
    """Datasets, Training and the panels that plug in after them."""

    CSS_PATH = "app.tcss"
    # The demo store's mark: shown at every width (the app name hides on a phone), right of the tabs.
    CSS = """
    #demo-mark { dock: right; display: none; padding: 0 1; background: $warning; color: $background; text-style: bold; }
    #demo-mark.-shown { display: block; }
    .-narrow.-demo .panel-tab { padding: 0 0 0 1; }
    """
    TITLE = "pocketops"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (WIDE_FROM, "-wide")]
    # Escape is on Termux's extra-keys row (ctrl+q needs two taps there): it asks before quitting.
    BINDINGS = _panel_bindings() + [Binding("escape", "ask_quit", "Quit", show=False)]

    def __init__(self, db_path: str | os.PathLike, *, poll_interval: float = DEFAULT_INTERVAL_S,
                 panel: str | None = None, sample_device: bool = True, start_worker: bool = False):
        super().__init__()
        self.db_path = Path(db_path)
        self.poll_interval = poll_interval
        self.sample_device = sample_device  # sample CPU/RAM here when no worker records telemetry
        # $POCKETOPS_PANEL (a panel's name or key) opens another panel first, e.g. "training".
        self.start_panel = panel or _env_panel() or PANELS[0].name
        self.start_worker = start_worker
        self.ready = False  # the store is set up (built-in datasets, worker) and panels poll
        self.demo = False  # the store is the seeded demo (its figures are recorded or typed demo values)
        self._db = None
        self._wide: bool | None = None  # which side of WIDE_FROM the last resize was on
        self.first_frame_at: float | None = None
        self.dashboard_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._attached = False
        self._beat_lock = threading.Lock()  # one heartbeat (and worker check) at a time
        self._worker_proc = None  # the background worker this dashboard started last (subprocess.Popen)
        self._worker_started_at = 0.0
        self.fatal: str | None = None  # why the dashboard closed itself (printed after it exits)
        self.data_shown_at: float | None = None  # when a panel first drew store data
        self.notices: deque[tuple[str, str]] = deque(maxlen=50)  # (severity, message) as shown, newest last

    def notify(self, message, *, title: str = "", severity: str = "information", **kwargs) -> None:
        """Show a toast and remember it (the tests and a future log view read ``notices``)."""
        self.notices.append((severity, f"{title}: {message}" if title else str(message)))
        super().notify(message, title=title, severity=severity, **kwargs)

    @property
    def db(self):
        """The main thread's store connection, for intents (opened on first use)."""
        if self._db is None:
            import store

            self._db = store.connect(self.db_path)
        return self._db

    def existing_store(self):
        """A connection to the store when it exists with the current schema, else None (no waiting, no writes).

        The start panel reads its first data with it before the first frame, so that frame
        shows the user's runs; a new or older store is set up by ``_set_up_store`` as before.
        """
        import sqlite3

        if not self.db_path.is_file():
            return None
        import store
        from store.migrations import MIGRATIONS, version

        try:
            db = store.connect(self.db_path, migrate=False)
        except sqlite3.Error:
            return None
        try:
            if version(db) == len(MIGRATIONS):
                return db
        except sqlite3.Error:
            pass
        db.close()
        return None

    def compose(self) -> ComposeResult:
        start = self._info(self.start_panel)
        # Textual sets the breakpoint class on the screen's first Resize, after the first layout:
        # every widget would be styled and laid out twice (~25 ms). With the class set now, that
        # Resize changes nothing and the first frame already has the right layout.
        wide = self.size.width >= WIDE_FROM
        self.screen.update_classes({"-wide": wide, "-narrow": not wide}, animate=False)
        with Horizontal(id="panel-bar"):
            yield Label("pocketops", id="app-name")
            yield Label("demo", id="demo-mark")
            for info in PANELS:
                # Classes set before mounting cost no second styling pass.
                yield PanelTab(info).set_class(info is start, "-active")
        # Only the first panel is built now; the others on first show (a lean first frame).
        with ContentSwitcher(initial=start.widget_id, id="panels"):
            yield start.panel_class(id=start.widget_id)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._focus_panel(self.current_panel)
        self.call_after_refresh(self._after_first_frame)

    def on_resize(self) -> None:
        wide = self.size.width >= WIDE_FROM
        if wide == self._wide:
            return  # same side of the breakpoint: nothing to relabel (and no extra layout at start)
        first = self._wide is None
        self._wide = wide
        # On a phone the footer needs every column for the panel's own keys.
        self.query_one(Footer).show_command_palette = wide
        if not first:  # the first frame already renders the right titles
            for tab in self.query(PanelTab):  # long or short titles
                tab.clear_cached_dimensions()
                tab.refresh(layout=True)

    def _after_first_frame(self) -> None:
        import gc

        gc.enable()  # run_dashboard turns it off for the first frame
        self.first_frame_at = time.monotonic()
        self._focus_panel(self.current_panel)
        self._set_up_store()

    def data_shown(self) -> None:
        """A panel drew store data for the first time: note when (and report it to a start-up benchmark)."""
        if self.data_shown_at is not None:
            return
        self.data_shown_at = time.monotonic()
        if os.environ.get("POCKETOPS_STARTUP_PROBE"):
            # After the refresh that paints it: the user sees the data in that frame.
            self.call_after_refresh(report_first_frame, self)

    @work(thread=True, exclusive=True, group="setup", exit_on_error=False)
    def _set_up_store(self) -> None:
        """After the first frame: migrate, add the built-in dataset, start a worker if asked."""
        import sqlite3

        import store
        from core.errors import PocketopsError
        from core.optional import MissingDependency

        problems = []
        demo = False
        try:
            db = store.connect(self.db_path)
            try:
                from store import datasets as store_datasets
                from store.demo import is_demo

                demo = is_demo(db)
                # core.datasets pulls in numpy (~0.15 s, ~20 MB): only when the built-in is missing.
                if store_datasets.by_name(db, "digits") is None:
                    from core.datasets import ensure_builtin

                    ensure_builtin(db, self.db_path)
                from store import dashboards

                dashboards.attach(db, self.dashboard_id, os.getpid(), socket.gethostname())
                self._attached = True
                with self._beat_lock:
                    pid = self._keep_a_worker(db, at_start=True)
                if pid:
                    self.call_from_thread(self.notify, f"Started a background worker (pid {pid}).", timeout=3)
            finally:
                db.conn.close()
        except (sqlite3.Error, OSError, PocketopsError, MissingDependency) as exc:
            if store.db.is_corruption(exc):  # nothing on screen could work: leave with the way to restore
                self.fatal = str(store.db.as_corruption(exc, self.db_path))
                self.call_from_thread(self.exit, return_code=1)
                return
            problems.append(f"{self.db_path}: {exc}")
        self.call_from_thread(self._store_ready, problems, demo)

    def _store_ready(self, problems: list[str], demo: bool = False) -> None:
        if demo:
            self.demo = True
            self.title = "pocketops · demo"  # the window title too (screenshots carry it)
            self.screen_stack[0].query_one("#demo-mark", Label).add_class("-shown")  # under any dialog
            self.screen_stack[0].add_class("-demo")  # on a phone the tabs close up to leave the mark room
        for problem in problems:
            self.notify(problem, title="Store setup failed", severity="error", timeout=10)
        self.ready = True
        for panel in self.query(PollingPanel):
            panel.start_polling()
        if self._attached:
            self.set_interval(DASHBOARD_BEAT_S, self._dashboard_beat, name="dashboard-beat")

    # -- heartbeat and the background worker ----------------------------------------------
    def _keep_a_worker(self, db, *, at_start: bool = False) -> int | None:
        """Start a background worker when none is alive and (after start-up) a job waits; its pid.

        Only with ``start_worker``. A worker we started that has not registered yet counts as alive
        for a while, so a slow start is not doubled.
        """
        if not self.start_worker:
            return None
        from core.worker import live_workers, start_background
        from store import jobs

        if live_workers(db) or not (at_start or jobs.pending(db)):
            return None
        proc = self._worker_proc
        if proc is not None and proc.poll() is None and time.monotonic() - self._worker_started_at < WORKER_START_GRACE_S:
            return None
        self._worker_proc = start_background(self.db_path)
        self._worker_started_at = time.monotonic()
        return self._worker_proc.pid

    @work(thread=True, group="dashboard-beat", exit_on_error=False)
    def _dashboard_beat(self) -> None:
        """Tell workers this dashboard is open, and start a worker if a job waits without one."""
        if not self._beat_lock.acquire(blocking=False):
            return  # the previous beat is still running (a slow disk): skip this one
        import sqlite3

        import store
        from core.errors import PocketopsError
        from store import dashboards

        db = None
        try:
            db = store.connect(self.db_path, migrate=False)
            dashboards.beat(db, self.dashboard_id, os.getpid(), socket.gethostname())
            pid = self._keep_a_worker(db)
            if pid:
                self.call_from_thread(self.notify, f"Started a background worker (pid {pid}) for the queued job.",
                                      timeout=3)
        except (sqlite3.Error, OSError, PocketopsError) as exc:
            self.call_from_thread(self.notify, f"{self.db_path}: {exc}", title="Dashboard heartbeat failed",
                                  severity="warning", timeout=6)
        finally:
            if db is not None:
                db.conn.close()
            self._beat_lock.release()

    def detach(self) -> None:
        """Remove this dashboard's row: its worker may now leave when idle (called on close)."""
        if not self._attached:
            return
        self._attached = False
        import sqlite3

        import store
        from store import dashboards

        try:
            db = store.connect(self.db_path, migrate=False)
            try:
                dashboards.detach(db, self.dashboard_id)
            finally:
                db.conn.close()
        except sqlite3.Error:
            pass  # the row goes stale within core.worker.DASHBOARD_ALIVE_S anyway

    def on_unmount(self) -> None:
        self.detach()

    def action_ask_quit(self) -> None:
        """Quit after a yes; training and other jobs go on in the background worker."""
        from tui.dialogs import ConfirmDialog

        def answered(yes: bool | None) -> None:
            if yes:
                self.exit()

        self.push_screen(ConfirmDialog("Quit the dashboard? Jobs go on in the background worker.",
                                       yes="Quit", no="Stay"), answered)

    # -- panels ---------------------------------------------------------------------------
    @staticmethod
    def _info(name: str) -> panel_registry.PanelInfo:
        for info in PANELS:
            if info.name == name or info.key == name:
                return info
        raise KeyError(f"no panel {name!r}; panels: {', '.join(p.name for p in PANELS)}")

    @property
    def current_panel(self) -> Widget:
        switcher = self.query_one("#panels", ContentSwitcher)
        return switcher.get_child_by_id(switcher.current)

    async def action_show_panel(self, name: str) -> None:
        """Show a panel by module name (``training``) or key (``t``), building it on first show."""
        info = self._info(name)
        widget_id = info.widget_id
        switcher = self.query_one("#panels", ContentSwitcher)
        if not switcher.query_children(f"#{widget_id}"):
            await switcher.mount(info.panel_class(id=widget_id))
        switcher.current = widget_id
        self._mark_tab(widget_id.removeprefix("panel-"))
        panel = self.current_panel
        self._focus_panel(panel)
        if isinstance(panel, PollingPanel) and self.ready:
            panel.poll_now()

    def _mark_tab(self, name: str) -> None:
        for tab in self.query(PanelTab):
            tab.set_class(tab.info.name == name, "-active")

    def _focus_panel(self, panel: Widget) -> None:
        target = next((w for w in panel.query("*") if w.focusable), None)
        if target is not None:
            target.focus()

    async def on_show_panel(self, message: ShowPanel) -> None:
        await self.action_show_panel(message.name)

    def on_store_changed(self, message: StoreChanged) -> None:
        for panel in self.query(PollingPanel):
            if panel.display:
                panel.poll_now()
        if self._attached:
            self._dashboard_beat()  # a job was probably queued: have a worker for it now


def _env_panel() -> str | None:
    name = os.environ.get("POCKETOPS_PANEL", "").strip()
    return name if any(name in (p.name, p.key) for p in PANELS) else None


def report_first_frame(app: App) -> None:
    """Benchmark hook: append "wall-s-since-$POCKETOPS_STARTUP_T0 rss-MB cpu-s" to $POCKETOPS_STARTUP_PROBE, exit."""
    import resource

    elapsed = time.time() - float(os.environ.get("POCKETOPS_STARTUP_T0", "nan"))
    import psutil

    usage = resource.getrusage(resource.RUSAGE_SELF)
    try:
        rss_mb = psutil.Process().memory_info().rss / 2**20  # the current RSS
    except (OSError, psutil.Error):
        rss_mb = usage.ru_maxrss / 1024  # KiB; the peak, where the current one cannot be read
    with open(os.environ["POCKETOPS_STARTUP_PROBE"], "a") as out:
        out.write(f"{elapsed:.4f} {rss_mb:.1f} {usage.ru_utime + usage.ru_stime:.4f}\n")
    app.exit()


def make_app(db_path: str | os.PathLike, *, poll_interval: float = DEFAULT_INTERVAL_S,
             panel: str | None = None, sample_device: bool = True, start_worker: bool = False) -> PocketopsApp:
    """The dashboard on the database at ``db_path`` (the one factory for CLI, tests and screenshots)."""
    return PocketopsApp(db_path, poll_interval=poll_interval, panel=panel, sample_device=sample_device,
                        start_worker=start_worker)


def run_dashboard(db_path: str | os.PathLike, *, start_worker: bool = False) -> int:
    """Open the dashboard in this terminal until the user quits; the exit code.

    The store setup (migrations, the built-in dataset, a background worker with
    ``start_worker``) runs in a thread after the first frame, so the CLI need not do it first.
    """
    import gc

    # Building and painting the first screen allocates many small objects that all stay alive:
    # the cyclic collector would scan them over and over (~10% of start-up). It is back on
    # after the first frame.
    gc.disable()
    try:
        app = make_app(db_path, start_worker=start_worker)
        try:
            app.run()
        finally:
            app.detach()  # also when the app ended without unmounting (an exception)
    finally:
        gc.enable()  # also when the app never reached its first frame
    if app.fatal:
        print(f"pocketops: {app.fatal}", file=sys.stderr)
    return app.return_code or 0
