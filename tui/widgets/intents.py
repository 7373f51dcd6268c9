"""Intents off the main thread: a store write (or a read the next screen needs) runs in a thread worker.

``run_intent(widget, fn, *args, then=..., title=...)`` runs ``fn(db, *args)`` in a thread with
a store connection of its own and posts :class:`~tui.messages.IntentDone` (``then(result)`` runs
on the main thread) or :class:`~tui.messages.IntentFailed` (a one-line notification, or
``on_error(message)``) back to ``widget``. A widget gone meanwhile (a dialog dismissed) drops
the message. Widgets that run intents inherit :class:`IntentHandler` (every ``PollingPanel`` does).
"""
from __future__ import annotations

import sqlite3
from typing import Any, Callable

from tui.messages import IntentDone, IntentFailed


def run_intent(widget, fn: Callable[..., Any], *args: Any, then: Callable[[Any], None] | None = None,
               title: str = "Not done", on_error: Callable[[str], None] | None = None) -> None:
    """Run ``fn(db, *args)`` in a thread worker of ``widget``; see the module docstring."""
    db_path = widget.app.db_path

    def in_thread() -> None:
        import store
        from core.errors import PocketopsError
        from core.optional import MissingDependency

        db = None
        try:
            db = store.connect(db_path, migrate=False)
            result = fn(db, *args)
        except (PocketopsError, MissingDependency) as exc:
            message: Any = IntentFailed(title, str(exc), on_error)
        except (sqlite3.Error, OSError) as exc:  # a locked or full store: say so, the dashboard goes on
            message = IntentFailed(title, f"{db_path}: {exc}", on_error)
        else:
            message = IntentDone(then, result)
        finally:
            if db is not None:
                db.conn.close()
        widget.post_message(message)

    widget.run_worker(in_thread, thread=True, group="intent", exit_on_error=False)


class IntentHandler:
    """Mixin for a widget that runs intents: handles their answers on the main thread."""

    def on_intent_done(self, message: IntentDone) -> None:
        if message.then is not None:
            message.then(message.result)

    def on_intent_failed(self, message: IntentFailed) -> None:
        if message.then is not None:
            message.then(message.error)
        else:
            self.notify(message.error, title=message.title, severity="error", timeout=8)
