"""Polling panels: read the store in a thread, render on the main thread, never overlap.

A :class:`PollingPanel` subclass implements three methods:

* ``poll_args()`` — main thread: a snapshot of what to fetch (selection, cursors);
* ``fetch(db, args)`` — a worker thread with its own store connection: read and return data
  (store reads only; never touch widgets here);
* ``update_view(data)`` — main thread: render ``data``.

The loop: a timer fires → ``fetch`` runs in an exclusive thread worker → a :class:`Polled`
message → ``update_view`` → the timer is re-armed. So polls never overlap, a slow disk just
slows the refresh rate, and nothing is fetched while a modal dialog is open or the panel is
hidden. A failing ``fetch`` (a locked or corrupt database, a bug) becomes :class:`PollFailed`:
the panel shows the message (``show_error``) and keeps polling.
"""
from __future__ import annotations

import sqlite3
import traceback
from typing import Any

from textual import work
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widget import Widget
from textual.worker import get_current_worker

from tui.messages import PollFailed, Polled
from tui.widgets.intents import IntentHandler

DEFAULT_INTERVAL_S = 0.5


class PollingPanel(IntentHandler, Widget):
    """Base for panels that show store data; see the module docstring for the contract."""

    POLL_INTERVAL: float | None = None  # seconds; None = the app's poll interval

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._poll_timer: Timer | None = None
        self._poll_seq = 0
        self._last_error: str | None = None
        self.polls = 0  # completed polls, for tests and the status line

    # -- to implement ---------------------------------------------------------------------
    def poll_args(self) -> Any:
        return None

    def fetch(self, db, args: Any) -> Any:
        raise NotImplementedError

    def update_view(self, data: Any) -> None:
        raise NotImplementedError

    def show_error(self, message: str | None) -> None:
        """Show (or with None clear) a poll error; the default is a notification per new message."""
        if message:
            self.notify(message, title="Could not read the store", severity="error", timeout=6)

    # -- the loop -------------------------------------------------------------------------
    @property
    def poll_interval(self) -> float:
        return self.POLL_INTERVAL or getattr(self.app, "poll_interval", DEFAULT_INTERVAL_S)

    @property
    def db_path(self):
        return self.app.db_path

    def start_polling(self) -> None:
        """Poll now and keep polling; the app calls this once after the first frame."""
        self.poll_now()

    def poll_now(self) -> None:
        """Fetch as soon as possible (after a selection change or a write of ours)."""
        if self._poll_timer is not None:
            self._poll_timer.stop()
            self._poll_timer = None
        self._tick()

    def _arm(self) -> None:
        if self._poll_timer is not None:
            self._poll_timer.stop()
        self._poll_timer = self.set_timer(self.poll_interval, self._tick, name="poll")

    def _paused(self) -> bool:
        # A modal owns the screen (and the user's attention); a hidden panel needs no data.
        return isinstance(self.app.screen, ModalScreen) or not self.display or not self.is_attached

    def _tick(self) -> None:
        self._poll_timer = None
        if self._paused():
            self._arm()
            return
        self._poll_seq += 1
        self._poll_thread(self._poll_seq, self.poll_args())

    @work(thread=True, exclusive=True, group="poll", exit_on_error=False)
    def _poll_thread(self, seq: int, args: Any) -> None:
        import store  # lazily: the first frame does not need it

        worker = get_current_worker()
        db = None
        try:
            db = store.connect(self.db_path, migrate=False)
            data = self.fetch(db, args)
        except sqlite3.Error as exc:
            message: Any = PollFailed(seq, f"{self.db_path}: {exc}")
        except Exception as exc:  # a bug in a fetch must not stop the dashboard: show it whole
            message = PollFailed(seq, f"{type(exc).__name__}: {exc} ({traceback.extract_tb(exc.__traceback__)[-1].name})")
        else:
            message = Polled(seq, data)
        finally:
            if db is not None:
                db.conn.close()
        if not worker.is_cancelled:
            self.post_message(message)

    def on_polled(self, message: Polled) -> None:
        if message.seq != self._poll_seq:
            return  # superseded by a newer poll, which re-arms the timer itself
        self.polls += 1
        if self._last_error:
            self._last_error = None
            self.show_error(None)
        try:
            self.update_view(message.data)
        finally:
            self._arm()

    def on_poll_failed(self, message: PollFailed) -> None:
        if message.seq != self._poll_seq:
            return
        if message.error != self._last_error:  # once per distinct error, not every half second
            self._last_error = message.error
            self.show_error(message.error)
        self._arm()
