"""The panel registry: read from the sources without importing panels, and it agrees with them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tui import panels

ROOT = Path(__file__).resolve().parent.parent


def test_registry_matches_every_panel_module():
    """ORDER, TITLE, SHORT and KEY read from the source are what the imported modules say."""
    found = panels.discover()
    assert [p.key for p in found][:4] == ["d", "t", "q", "p"]
    for info in found:
        cls = info.panel_class
        assert cls.TITLE == info.title and cls.KEY == info.key
        assert getattr(cls, "SHORT", None) in (None, info.short)
        assert getattr(info.module, "ORDER", 100) == info.order


def test_discovery_imports_no_panel():
    """Building the tab bar loads no panel module: each is imported when first shown."""
    code = "import sys\nfrom tui import panels\npanels.discover()\nprint([m for m in sys.modules if m.startswith('tui.panels.')])"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_unusual_literals_fall_back_to_importing():
    """A computed title is not guessed from the text: the module is imported instead."""
    assert panels._read_literals('ORDER = 5\nclass Panel:\n    TITLE = NAME.title()\n    KEY = "z"\n') is None
    assert panels._read_literals('ORDER = 5\nclass Panel:\n    TITLE = "Zed"  # tab\n    KEY = "z"\n') == {"ORDER": 5, "TITLE": "Zed", "KEY": "z"}
    assert panels._read_literals('TITLE = "x"\nKEY = "y"\n') is None  # no Panel class, module-level names
