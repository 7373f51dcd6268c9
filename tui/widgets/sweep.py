"""The Training panel's sweep view and its "new sweep" dialog.

Rendering is pure functions of the rows the panel's fetch thread read (``sweep_text``,
``best_so_far``, ``importance_text``); importances come precomputed from the sweep job, so the
dashboard imports neither optuna nor torch.
"""
from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from tui.widgets.chart import CurveChart, Series

SHOWN_TRIALS = 12  # newest trials listed; the chart shows them all
ABBREV = {"lr": "lr", "weight_decay": "wd", "batch_size": "bs", "layers": "L", "width": "w", "channels": "ch",
          "hidden": "h", "d_model": "d", "heads": "heads", "ff": "ff"}


def _fmt_param(key: str, value) -> str:
    name = ABBREV.get(key, key)
    if isinstance(value, float):
        return f"{name}={value:.2g}"
    return f"{name}={value}"


def params_text(params: dict) -> str:
    """A trial's parameters in a few characters each (lr=0.0023 bs=16 L=2 w=64)."""
    return " ".join(_fmt_param(k, v) for k, v in sorted(params.items(), key=lambda kv: list(ABBREV).index(kv[0])
                                                           if kv[0] in ABBREV else 99))


def best_so_far(trials: list[dict], maximize: bool = True) -> list[tuple[float, float]]:
    """(trial number, best value among finished trials up to it), one point per finished trial."""
    best, points = None, []
    for t in sorted(trials, key=lambda t: t["trial"]):
        if t["status"] != "done" or t["value"] is None:
            continue
        best = t["value"] if best is None else (max(best, t["value"]) if maximize else min(best, t["value"]))
        points.append((float(t["trial"]), float(best)))
    return points


def importance_text(importances: dict | None, width: int = 12) -> str:
    """Parameter importances as bars, most important first (or why there are none yet)."""
    if not importances:
        return "Parameter importance: after 4 finished trials."
    lines = ["Which parameters mattered:"]
    for key, value in sorted(importances.items(), key=lambda kv: -kv[1]):
        bar = "█" * max(1, round(value * width)) if value > 0 else ""
        lines.append(f"  {key:<12} {bar} {100 * value:.0f}%")
    return "\n".join(lines)


def sweep_text(sweep: dict | None, trials: list[dict]) -> str:
    """The sweep's header and its newest trials (status, metric, epoch pruned at, params), as markup."""
    if sweep is None:
        return "No sweep yet. Press w to search learning rate, layers and widths with Optuna."
    from rich.markup import escape

    cfg = sweep.get("config") or {}
    metric = cfg.get("metric", "val_accuracy")
    finished = [t for t in trials if t["status"] != "running"]
    lines = [f"[b]Sweep #{sweep['id']}[/b] · {escape(sweep.get('dataset_name') or '?')} · {sweep['model']} · "
             f"[b]{sweep['status']}[/b] · {len(finished)}/{cfg.get('trials', '?')} trials · {cfg.get('parallel', 1)} at once"]
    best = sweep.get("best")
    if best:
        lines.append(f"Best: trial {best['trial']} = run #{best['run_id']}, {metric} {best['value']:.4f} · "
                     f"{escape(params_text(best['params']))}")
    if sweep.get("error"):
        lines.append(f"[$error]{escape(str(sweep['error']))}[/]")
    for t in sorted(trials, key=lambda t: t["trial"])[-SHOWN_TRIALS:]:
        value = "  –   " if t["value"] is None else f"{t['value']:.4f}"
        status = f"pruned@{t['pruned_epoch']}" if t["status"] == "pruned" and t.get("pruned_epoch") else t["status"]
        lines.append(f"  {t['trial']:>3} {status:<10} {value} #{t['run_id']} {escape(params_text(t['params']))}")
    return "\n".join(lines)


class SweepView(Vertical):
    """The newest sweep: trials, the best-so-far curve over trials, parameter importances."""

    DEFAULT_CSS = """
    SweepView { height: auto; }
    SweepView #sweep-chart { height: 7; }
    """

    def compose(self) -> ComposeResult:
        yield Static("", id="sweep-summary")
        yield CurveChart("best so far (by trial)", id="sweep-chart")
        yield Static("", id="sweep-importance")

    def set_sweep(self, sweep: dict | None, trials: list[dict]) -> None:
        """Show ``sweep`` (a sweeps row) and its trial rows."""
        self.query_one("#sweep-summary", Static).update(sweep_text(sweep, trials))
        maximize = ((sweep or {}).get("config") or {}).get("direction", "maximize") == "maximize"
        chart = self.query_one("#sweep-chart", CurveChart)
        chart.display = sweep is not None
        chart.set_series([Series("best", best_so_far(trials, maximize))] if sweep else [])
        importance = self.query_one("#sweep-importance", Static)
        importance.display = sweep is not None
        importance.update(importance_text((sweep or {}).get("importances")))


@dataclass
class SweepForm:
    """The new-sweep form's values, parsed."""

    dataset: str
    model: str
    trials: int
    parallel: int
    epochs: int


class SweepDialog(ModalScreen["SweepForm | None"]):
    """Ask what to sweep; returns the form (the panel queues it in a thread)."""

    BINDINGS = [Binding("escape", "close", "Close")]

    def __init__(self, datasets: list[str], *, dataset: str = "digits", model: str = "mlp"):
        super().__init__(classes="dialog-screen")
        self.datasets = datasets
        self.initial = (dataset if dataset in datasets else next(iter(datasets), None), model)

    def compose(self) -> ComposeResult:
        from core.models import FAMILIES

        dataset, model = self.initial
        with VerticalScroll(classes="dialog", id="new-sweep"):
            yield Label("New sweep (Optuna: TPE + median pruning)", classes="dialog-title")
            with Grid(classes="form"):
                yield Label("Dataset")
                yield Select([(n, n) for n in self.datasets], value=dataset if dataset else Select.BLANK,
                             allow_blank=dataset is None, id="sweep-dataset", compact=True)
                yield Label("Model")
                yield Select([(f, f) for f in FAMILIES], value=model, allow_blank=False, id="sweep-model", compact=True)
                yield Label("Trials")
                yield Input("20", id="sweep-trials", type="integer", compact=True)
                yield Label("In parallel")
                yield Input("2", id="sweep-parallel", type="integer", compact=True)
                yield Label("Epochs")
                yield Input("10", id="sweep-epochs", type="integer", compact=True)
            yield Static("Each trial is an ordinary run; one worker trains one trial at a time.", id="sweep-hint")
            yield Static("", id="sweep-error", classes="form-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Start", id="sweep-start", variant="primary", compact=True)
                yield Button("Cancel", id="sweep-cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#sweep-start", Button).focus()

    def action_close(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#sweep-cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

    def read_form(self) -> SweepForm:
        """The form's values, or ValueError naming the first bad field."""
        from tui.dialogs import parse_int

        dataset = self.query_one("#sweep-dataset", Select).value
        if dataset is Select.BLANK or dataset is None:
            raise ValueError("Dataset: pick one (add one on the Datasets panel)")
        return SweepForm(
            dataset=str(dataset), model=str(self.query_one("#sweep-model", Select).value),
            trials=parse_int("Trials", self.query_one("#sweep-trials", Input).value, high=10_000),
            parallel=parse_int("In parallel", self.query_one("#sweep-parallel", Input).value, high=64),
            epochs=parse_int("Epochs", self.query_one("#sweep-epochs", Input).value, high=10_000),
        )

    @on(Input.Submitted)
    @on(Button.Pressed, "#sweep-start")
    def start(self) -> None:
        try:
            form = self.read_form()
        except ValueError as exc:
            self.query_one("#sweep-error", Static).update(str(exc))
            self.query_one("#sweep-error").set_class(True, "-shown")
            return
        self.dismiss(form)
