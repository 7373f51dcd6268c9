"""Messages of the dashboard: small dataclasses, posted from worker threads, handled on the main thread."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message


@dataclass
class Polled(Message, bubble=False):
    """A panel's poll finished: ``data`` is what its ``fetch`` returned."""

    seq: int
    data: Any

    def can_replace(self, message: Message) -> bool:
        # Latest value wins: an older, unhandled poll result is stale.
        return isinstance(message, Polled)


@dataclass
class PollFailed(Message, bubble=False):
    """A panel's poll raised; ``error`` is a one-line description to show. Polling goes on."""

    seq: int
    error: str


@dataclass
class ShowPanel(Message):
    """Ask the app to show the panel registered under ``name`` (e.g. a tab was tapped)."""

    name: str


@dataclass
class StoreChanged(Message):
    """The dashboard wrote an intent (new run, cancel, dataset added): panels should poll now."""

    what: str = ""


@dataclass
class IntentDone(Message, bubble=False):
    """An intent run in a thread worker (``tui.widgets.intents.run_intent``) finished with ``result``."""

    then: Any  # called on the main thread with the result (None: nothing more to do)
    result: Any


@dataclass
class IntentFailed(Message, bubble=False):
    """An intent run in a thread worker refused or failed; ``error`` is one line to show."""

    title: str
    error: str
    then: Any = None  # called on the main thread with the error instead of the default notification


@dataclass
class JobUpdate(Message, bubble=False):
    """A job a screen follows (from a thread worker) changed status; ``job`` is its row."""

    job: dict
