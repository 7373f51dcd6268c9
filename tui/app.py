"""The pocketops dashboard: a tab bar, one panel at a time, footer keys.

``make_app`` builds the app for the CLI, the tests and the screenshot script alike. The app
imports no torch, onnx or numpy: panels read the store in worker threads (which import the
store lazily, after the first frame) and write only intents (queue a job, request a cancel).
"""
from __future__ import annotations

import os
import time
from collections import deque
from pathlib import Path

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import ContentSwitcher, Footer, Label

from tui import panels as panel_registry
from tui.messages import ShowPanel, StoreChanged
from tui.widgets.polling import DEFAULT_INTERVAL_S, PollingPanel

PANELS = panel_registry.discover()


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
    """One tab: tapping it shows its panel. Long and short labels; the stylesheet picks one."""

    def __init__(self, info: panel_registry.PanelInfo):
        super().__init__(id=f"tab-{info.name}", classes="panel-tab")
        self.info = info

    def compose(self) -> ComposeResult:
        title, key = self.info.title, self.info.key
        at = title.lower().find(key) if key else -1
        long = f"{title[:at]}[u]{title[at]}[/u]{title[at + 1:]}" if at >= 0 else title
        yield Label(long, classes="tab-long", markup=True)
        yield Label(self.info.short, classes="tab-short")

    def on_click(self) -> None:
        self.post_message(ShowPanel(self.info.name))


class PocketopsApp(App):
    """Datasets, Training and the panels that plug in after them."""

    CSS_PATH = "app.tcss"
    TITLE = "pocketops"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (80, "-wide")]
    BINDINGS = _panel_bindings()

    def __init__(self, db_path: str | os.PathLike, *, poll_interval: float = DEFAULT_INTERVAL_S,
                 panel: str | None = None, sample_device: bool = True):
        super().__init__()
        self.db_path = Path(db_path)
        self.poll_interval = poll_interval
        self.sample_device = sample_device  # sample CPU/RAM here when no worker records telemetry
        self.start_panel = panel or PANELS[0].name
        self._db = None
        self.first_frame_at: float | None = None
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

    def compose(self) -> ComposeResult:
        with Horizontal(id="panel-bar"):
            yield Label("pocketops", id="app-name")
            for info in PANELS:
                yield PanelTab(info)
        with ContentSwitcher(initial=self._widget_id(self.start_panel), id="panels"):
            for info in PANELS:
                yield info.panel_class(id=info.widget_id)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._mark_tab(self._widget_id(self.start_panel).removeprefix("panel-"))
        self._focus_panel(self.current_panel)
        self.call_after_refresh(self._after_first_frame)

    def on_resize(self) -> None:
        # On a phone the footer needs every column for the panel's own keys.
        self.query_one(Footer).show_command_palette = self.size.width >= 80

    def _after_first_frame(self) -> None:
        self.first_frame_at = time.monotonic()
        self._focus_panel(self.current_panel)
        for panel in self.query(PollingPanel):
            panel.start_polling()

    # -- panels ---------------------------------------------------------------------------
    @staticmethod
    def _widget_id(name: str) -> str:
        for info in PANELS:
            if info.name == name or info.key == name:
                return info.widget_id
        raise KeyError(f"no panel {name!r}; panels: {', '.join(p.name for p in PANELS)}")

    @property
    def current_panel(self) -> Widget:
        switcher = self.query_one("#panels", ContentSwitcher)
        return switcher.get_child_by_id(switcher.current)

    def action_show_panel(self, name: str) -> None:
        """Show a panel by module name (``training``) or key (``t``)."""
        widget_id = self._widget_id(name)
        switcher = self.query_one("#panels", ContentSwitcher)
        switcher.current = widget_id
        self._mark_tab(widget_id.removeprefix("panel-"))
        panel = self.current_panel
        self._focus_panel(panel)
        if isinstance(panel, PollingPanel) and self.first_frame_at is not None:
            panel.poll_now()

    def _mark_tab(self, name: str) -> None:
        for tab in self.query(PanelTab):
            tab.set_class(tab.info.name == name, "-active")

    def _focus_panel(self, panel: Widget) -> None:
        target = next((w for w in panel.query("*") if w.focusable), None)
        if target is not None:
            target.focus()

    def on_show_panel(self, message: ShowPanel) -> None:
        self.action_show_panel(message.name)

    def on_store_changed(self, message: StoreChanged) -> None:
        for panel in self.query(PollingPanel):
            if panel.display:
                panel.poll_now()


def make_app(db_path: str | os.PathLike, *, poll_interval: float = DEFAULT_INTERVAL_S,
             panel: str | None = None, sample_device: bool = True) -> PocketopsApp:
    """The dashboard on the database at ``db_path`` (the one factory for CLI, tests and screenshots)."""
    return PocketopsApp(db_path, poll_interval=poll_interval, panel=panel, sample_device=sample_device)


def run_dashboard(db_path: str | os.PathLike) -> int:
    """Open the dashboard in this terminal until the user quits; the exit code."""
    app = make_app(db_path)
    app.run()
    return app.return_code or 0
