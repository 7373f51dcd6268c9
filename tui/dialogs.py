"""Modal dialogs: confirm, add a dataset, start a run. Each returns its result with ``dismiss``.

Forms keep themselves open on bad input and say exactly what is wrong inline; the store is
only written when the whole input is valid (the core functions guarantee that).
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from core.fmt import fmt_bytes
from tui.widgets.intents import IntentHandler, run_intent


# What the core raises for bad input; shown inline as the one-line message it carries.
def _user_errors() -> tuple[type[BaseException], ...]:
    from core.errors import PocketopsError
    from core.optional import MissingDependency

    return (PocketopsError, MissingDependency, OSError, sqlite3.Error, ValueError)


class ConfirmDialog(ModalScreen[bool]):
    """Ask a yes/no question; ``y``/``n``/``escape`` or tap a button."""

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n", "answer(False)", "No"),
                Binding("escape", "answer(False)", "No", show=False)]

    def __init__(self, question: str, *, yes: str = "Yes", no: str = "No"):
        super().__init__(classes="dialog-screen")
        self.question, self.yes, self.no = question, yes, no

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="confirm"):
            yield Static(self.question, classes="dialog-question")
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.yes} (y)", id="yes", variant="error", compact=True)
                yield Button(f"{self.no} (n)", id="no", compact=True)

    @on(Button.Pressed, "#yes")
    def _yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def _no(self) -> None:
        self.dismiss(False)

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


DATASET_KINDS = [("guess from the path", ""), ("CSV (numbers + label)", "csv"),
                 ("image folder", "images"), ("text CSV", "text")]


class AddDatasetDialog(ModalScreen[dict | None]):
    """Add a dataset: path, kind, name, label column. Errors stay in the form."""

    BINDINGS = [Binding("escape", "close", "Close")]

    def __init__(self, db_path):
        super().__init__(classes="dialog-screen")
        self.db_path = db_path

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="add-dataset"):
            yield Label("Add a dataset", classes="dialog-title")
            with Grid(classes="form"):
                yield Label("Path")
                yield Input(placeholder="file.csv or image folder", id="path", compact=True)
                yield Label("Kind")
                yield Select(DATASET_KINDS, value="", allow_blank=False, id="kind", compact=True)
                yield Label("Name")
                yield Input(placeholder="default: file name", id="name", compact=True)
                yield Label("Label col")
                yield Input(placeholder="default: label", id="label", compact=True)
            yield Static("", id="error", classes="form-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Add", id="add", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#path", Input).focus()

    def action_close(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    @on(Button.Pressed, "#add")
    def _add(self) -> None:
        path = self.query_one("#path", Input).value.strip()
        if not path:
            self.show_error("Path: enter the path of a CSV file or an image folder")
            return
        self.show_error("")
        self.query_one("#add", Button).disabled = True
        self._add_in_thread(
            path,
            self.query_one("#kind", Select).value or None,
            self.query_one("#name", Input).value.strip() or None,
            self.query_one("#label", Input).value.strip() or None,
        )

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _add_in_thread(self, path: str, kind: str | None, name: str | None, label: str | None) -> None:
        import store
        from core.datasets import add_dataset

        db = store.connect(self.db_path)
        try:
            row = add_dataset(db, self.db_path, path, name=name, kind=kind, label_column=label)
        except _user_errors() as exc:
            self.app.call_from_thread(self._failed, str(exc))
        else:
            self.app.call_from_thread(self.dismiss, row)
        finally:
            db.conn.close()

    def _failed(self, message: str) -> None:
        self.show_error(message)
        self.query_one("#add", Button).disabled = False

    def show_error(self, message: str) -> None:
        self.query_one("#error", Static).update(message)
        self.query_one("#error").set_class(bool(message), "-shown")


@dataclass
class RunForm:
    """The new-run form's values, parsed and checked."""

    dataset: str
    model: str
    preset: str
    epochs: int
    batch_size: int
    accum: int
    lr: float | None


def parse_int(field: str, text: str, *, low: int = 1, high: int = 100_000) -> int:
    """An integer form field within [low, high], or ValueError naming the field."""
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{field}: expected a whole number, found {text.strip()!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{field}: expected {low}–{high}, found {value}")
    return value


def parse_lr(text: str) -> float | None:
    if not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"Learning rate: expected a number like 0.001 (or empty for the default), found {text.strip()!r}") from None
    if not 0 < value < 10:
        raise ValueError(f"Learning rate: expected a value between 0 and 10, found {value}")
    return value


class NewRunDialog(IntentHandler, ModalScreen["tuple[int, int] | None"]):
    """Configure and queue a training run; shows parameters and size before it starts."""

    BINDINGS = [Binding("escape", "close", "Close")]

    def __init__(self, datasets: list[dict], *, dataset: str = "digits", model: str = "cnn", preset: str = "small"):
        super().__init__(classes="dialog-screen")
        self.datasets = {d["name"]: d for d in datasets}
        self.initial = (dataset if dataset in self.datasets else next(iter(self.datasets), None), model, preset)
        self.estimate: dict | None = None

    def compose(self) -> ComposeResult:
        from core.models import FAMILIES, PRESETS

        dataset, model, preset = self.initial
        with VerticalScroll(classes="dialog", id="new-run"):
            yield Label("New training run", classes="dialog-title")
            with Grid(classes="form"):
                yield Label("Dataset")
                yield Select([(n, n) for n in self.datasets], value=dataset if dataset else Select.BLANK,
                             allow_blank=dataset is None, id="dataset", compact=True)
                yield Label("Model")
                yield Select([(f, f) for f in FAMILIES], value=model, allow_blank=False, id="model", compact=True)
                yield Label("Size")
                yield Select([(p, p) for p in PRESETS], value=preset, allow_blank=False, id="preset", compact=True)
                yield Label("Epochs")
                yield Input("10", id="epochs", type="integer", compact=True)
                yield Label("Batch size")
                yield Input("8", id="batch", type="integer", compact=True)
                yield Label("Grad accum")
                yield Input("1", id="accum", type="integer", compact=True)
                yield Label("Learn rate")
                yield Input("", placeholder="default", id="lr", compact=True)
            yield Static("", id="estimate")
            yield Static("", id="error", classes="form-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Start", id="start", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.update_estimate()
        self.query_one("#start", Button).focus()

    def action_close(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

    @on(Select.Changed)
    @on(Input.Changed, "#batch, #accum")
    def _changed(self) -> None:
        self.update_estimate()

    def update_estimate(self) -> dict | None:
        """Parameters and fp32 size of the chosen config; the error (and no Start) if it cannot run."""
        from core.datasets import model_input
        from core.errors import ConfigError
        from core.models import DEFAULT_LR, check_config

        name = self.query_one("#dataset", Select).value
        model = self.query_one("#model", Select).value
        preset = self.query_one("#preset", Select).value
        estimate = self.query_one("#estimate", Static)
        self.estimate = None
        if name not in self.datasets:
            estimate.update("Pick a dataset (add one on the Datasets panel).")
        else:
            row = self.datasets[name]
            shape, dtype = model_input(row)
            try:
                self.estimate = check_config(model, shape, row["n_classes"], preset, dtype)
            except ConfigError as exc:
                estimate.update(str(exc))
            else:
                text = f"{self.estimate['params']:,} parameters · {fmt_bytes(self.estimate['size_bytes'])} (fp32)"
                try:  # what one optimizer step sees
                    batch = parse_int("Batch size", self.query_one("#batch", Input).value, high=65_536)
                    text += f" · {batch * parse_int('Grad accum', self.query_one('#accum', Input).value, high=1_024)} samples per step"
                except ValueError:
                    pass  # read_form names the bad field on Start
                estimate.update(text)
        if model in DEFAULT_LR:
            self.query_one("#lr", Input).placeholder = f"default {DEFAULT_LR[model]:g}"
        estimate.set_class(self.estimate is None, "-invalid")
        self.query_one("#start", Button).disabled = self.estimate is None
        return self.estimate

    def read_form(self) -> RunForm:
        """The form's values, or ValueError naming the first bad field."""
        return RunForm(
            dataset=str(self.query_one("#dataset", Select).value),
            model=str(self.query_one("#model", Select).value),
            preset=str(self.query_one("#preset", Select).value),
            epochs=parse_int("Epochs", self.query_one("#epochs", Input).value, high=10_000),
            batch_size=parse_int("Batch size", self.query_one("#batch", Input).value, high=65_536),
            accum=parse_int("Grad accum", self.query_one("#accum", Input).value, high=1_024),
            lr=parse_lr(self.query_one("#lr", Input).value),
        )

    @on(Input.Submitted)
    @on(Button.Pressed, "#start")
    def start(self) -> None:
        from core.runs import new_run

        if self.update_estimate() is None:
            return
        try:
            form = self.read_form()
        except _user_errors() as exc:
            self._failed(str(exc))
            return
        self.query_one("#start", Button).disabled = True  # one run per tap while the thread writes it

        def failed(message: str) -> None:
            self._failed(message)
            self.query_one("#start", Button).disabled = False

        run_intent(self, lambda db: new_run(db, dataset=form.dataset, model=form.model, preset=form.preset,
                                            epochs=form.epochs, batch_size=form.batch_size, accum=form.accum,
                                            lr=form.lr),
                   then=lambda ids: self.dismiss(tuple(ids)), on_error=failed)

    def _failed(self, message: str) -> None:
        self.query_one("#error", Static).update(message)
        self.query_one("#error").set_class(True, "-shown")
