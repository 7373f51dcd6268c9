"""Import hygiene: headless commands never load Textual; the dashboard process never loads torch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "onnx", "onnxscript")

PROBE = """
import json, sys
from tui.cli import main
code = main({argv!r})
print(json.dumps({{"code": code, "loaded": sorted(m for m in {watch!r} if m in sys.modules)}}), file=sys.stderr)
"""


def _run_cli(argv: list[str], watch: tuple[str, ...], home: Path) -> dict:
    env = {**os.environ, "POCKETOPS_HOME": str(home)}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv, watch=watch)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    last = proc.stderr.strip().splitlines()[-1]
    return json.loads(last)


@pytest.mark.parametrize(
    "argv",
    [
        ["datasets", "list", "--json"],
        ["datasets", "show", "digits", "--json"],
        ["runs", "list", "--json"],
        ["train", "--dataset", "digits", "--model", "cnn", "--epochs", "1", "--json"],
        ["worker", "--once", "--json"],
        ["--help"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_headless_commands_never_import_textual(argv, tmp_path):
    """Each headless command runs without loading Textual (and the listing ones without torch)."""
    if argv == ["--help"]:
        proc = subprocess.run([sys.executable, "-c", "import sys\nfrom tui.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\nprint(sorted(m for m in ('textual',) if m in sys.modules))"],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.stdout.strip().splitlines()[-1] == "[]"
        return
    result = _run_cli(argv, ("textual", *HEAVY), tmp_path)
    assert result["code"] == 0
    assert "textual" not in result["loaded"]
    if argv[0] in ("datasets", "runs", "train"):
        assert not set(HEAVY) & set(result["loaded"]), f"{argv} loaded {result['loaded']}"


def test_core_and_store_modules_never_import_textual():
    """Every module of core/, store/ and deployers/ imports without Textual."""
    code = (
        "import importlib, pkgutil, sys\n"
        "import core, store, deployers\n"
        "for pkg in (core, store, deployers):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        if '.templates' in m.name:\n"
        "            continue\n"
        "        importlib.import_module(m.name)\n"
        "print('textual' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_dashboard_modules_never_import_torch():
    """The dashboard (tui.app, every panel and widget) loads no torch/onnx: they cost ~2 s and 220 MB on start."""
    code = (
        "import importlib, pkgutil, sys\n"
        "import tui\n"
        "for m in pkgutil.walk_packages(tui.__path__, 'tui.'):\n"
        "    if not m.name.endswith('__main__'):  # importing it would open the dashboard\n"
        "        importlib.import_module(m.name)\n"
        f"print(sorted(n for n in {HEAVY!r} if n in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
