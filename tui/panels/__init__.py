"""The dashboard's panels: one module each, discovered here. Adding a panel = adding one module.

The contract a panel module follows (read by ``tui.app`` and ``scripts/screenshots.py``):

* ``ORDER: int`` — position in the tab bar (Datasets 10, Training 20, Quantize 30, Deploy 40,
  Alerts 50, Costs 60). Modules whose name starts with ``_`` are skipped.
* ``Panel`` — a Textual ``Widget`` class with class attributes

  - ``TITLE`` — the tab label, e.g. ``"Quantize"`` (``SHORT``, optional: the label at narrow widths);
  - ``KEY`` — one unmodified key that shows the panel: ``d`` Datasets, ``t`` Training,
    ``q`` Quantize, ``p`` dePloy, ``a`` Alerts, ``c`` Costs. Digits ``1``…``9`` follow ``ORDER``.
    Never use another panel's key for a panel action (actions are bound on the panel and would
    shadow it while the panel has focus);
  - ``BINDINGS`` (optional) — the panel's actions, single unmodified keys; they show in the
    footer (tappable) while the panel is shown. Common verbs: ``n`` new, ``x`` delete/cancel
    (ask with ``tui.dialogs.ConfirmDialog``), ``r`` resume/retry, ``enter`` open.

* Write ``ORDER``, ``TITLE``, ``SHORT`` and ``KEY`` as plain literals (``KEY = "q"``): the registry reads
  them from the source so that a panel's module is imported only when it is first shown; anything
  else falls back to importing the module.
* Store data comes from polling: subclass ``tui.widgets.polling.PollingPanel`` and implement
  ``poll_args()`` (main thread), ``fetch(db, args)`` (worker thread, own connection, reads only;
  poll by cursor where data grows) and ``update_view(data)`` (main thread). The app starts
  polling once the store is set up (after the first frame); hidden panels and open modals
  pause it. A panel is built the first time it is shown, so keep ``__init__``/``compose`` cheap.
  After a write, ``self.post_message(tui.messages.StoreChanged("what"))`` makes the shown
  panels poll at once. Intents (a store write, process work, a read the next screen needs) run
  off the main thread: ``tui.widgets.intents.run_intent(self, fn, *args, then=...)`` calls
  ``fn(db, *args)`` in a thread worker with its own connection and posts a typed message back;
  ``self.app.notify`` shows errors (and keeps them in ``app.notices`` for tests).
* The panel never imports torch or onnx (a subprocess test checks); import numpy, onnxruntime
  or anything heavy lazily inside ``fetch`` or a worker, never at module level. Writes are
  intents only (queue a job, request a cancel) through ``core``/``store`` functions.
* Layout: the app sets ``-narrow`` (< 80 columns) or ``-wide`` on the screen; style
  ``.-narrow #your-id`` / ``.-wide #your-id`` in ``tui/app.tcss`` (one stylesheet). A panel
  usually composes a list widget and a detail container with classes ``panel-list`` and
  ``panel-detail``, inside a ``Horizontal``/``Vertical`` with class ``panel-body``: stacked
  at narrow widths, side by side at wide ones, without panel-specific CSS.
* Use theme variables (``$accent``, ``$error``…) in styles, never hex colours. Shared widgets:
  ``tui.widgets.chart.CurveChart`` (braille curves), ``tui.widgets.bars`` (bars, class balance),
  ``tui.widgets.device.DeviceStrip``.
* Screenshots: add a ``(KEY, (width, height), "name-WxH.svg")`` line to ``SHOTS`` in
  ``scripts/screenshots.py``.
"""
from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

# ``ORDER = 30`` at module level and ``    TITLE = "Quantize"`` (SHORT, KEY) in ``class Panel``.
_LITERAL = re.compile(r'^(?P<indent> *)(?P<name>ORDER|TITLE|SHORT|KEY)\s*=\s*(?:(?P<int>\d+)|"(?P<str>[^"\\]*)")\s*(?:#.*)?$', re.M)


@dataclass(frozen=True)
class PanelInfo:
    name: str          # module name, e.g. "training"; the panel widget's id is f"panel-{name}"
    order: int
    title: str
    short: str
    key: str

    @property
    def widget_id(self) -> str:
        return f"panel-{self.name}"

    @property
    def module(self) -> ModuleType:
        """The panel's module, imported on first use: a panel not shown yet costs nothing."""
        return importlib.import_module(f"{__name__}.{self.name}")

    @property
    def panel_class(self):
        panel = getattr(self.module, "Panel", None)
        if panel is None:
            raise TypeError(f"tui/panels/{self.name}.py defines no Panel class (see tui/panels/__init__.py)")
        return panel


def _read_literals(source: str) -> dict | None:
    """The tab bar's literals from a panel's source, or None when they are not plain literals.

    Importing every panel module (Textual builds each widget class as it is defined) cost
    ~45 ms before the first frame; reading four lines costs almost nothing. ``ast`` would be
    exact but parsing four modules took ~35 ms itself.
    """
    found: dict = {}
    for match in _LITERAL.finditer(source):
        module_level = match["name"] == "ORDER"
        if (match["indent"] == "") != module_level:
            continue
        found.setdefault(match["name"], int(match["int"]) if match["int"] else match["str"])
    return found if {"TITLE", "KEY"} <= set(found) and "class Panel" in source else None


def discover() -> list[PanelInfo]:
    """Every panel module in this package, ordered by ``ORDER`` (then name).

    Modules are not imported when their literals can be read from the source; otherwise
    (computed values, no ``class Panel`` statement) the module is imported and asked.
    """
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        literals = _read_literals((Path(__path__[0]) / f"{info.name}.py").read_text(encoding="utf-8"))
        if literals is None:
            module = importlib.import_module(f"{__name__}.{info.name}")
            panel = getattr(module, "Panel", None)
            if panel is None:
                raise TypeError(f"tui/panels/{info.name}.py defines no Panel class (see tui/panels/__init__.py)")
            literals = {"ORDER": getattr(module, "ORDER", 100), "TITLE": getattr(panel, "TITLE", info.name.title()),
                        "SHORT": getattr(panel, "SHORT", None), "KEY": getattr(panel, "KEY", "")}
        title = literals.get("TITLE") or info.name.title()
        found.append(PanelInfo(
            name=info.name,
            order=int(literals.get("ORDER", 100)),
            title=title,
            short=literals.get("SHORT") or title[:5],
            key=literals.get("KEY", ""),
        ))
    found.sort(key=lambda p: (p.order, p.name))
    keys = [p.key for p in found if p.key]
    if len(keys) != len(set(keys)):
        raise ValueError(f"two panels claim the same key: {keys}")
    return found
