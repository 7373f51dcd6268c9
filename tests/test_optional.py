"""A missing optional package is a clear message naming it and how to get it, never a traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.optional import MissingDependency, require

pytestmark = pytest.mark.phone  # none of these need torch or onnx (make test-phone)

ROOT = Path(__file__).resolve().parent.parent

# Run the CLI with some packages made unimportable (a None entry in sys.modules raises ImportError).
BLOCKED_CLI = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None
from tui.cli import main
sys.exit(main({argv!r}))
"""


def test_require_names_the_package_and_both_platforms(monkeypatch):
    """The message names the pip package, the Linux command and the Termux way."""
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(MissingDependency) as info:
        require("onnx", "ONNX export")
    text = str(info.value)
    assert "ONNX export needs the Python package 'onnx'" in text
    assert "pip install 'pocketops[export]'" in text
    assert "On Termux" in text and "no Termux build" in text


def test_a_submodule_is_named_by_its_pip_package(monkeypatch):
    """A missing ``pkg.sub`` names the pip package ``pkg`` comes from, not the module path."""
    monkeypatch.setitem(sys.modules, "onnxconverter_common", None)
    monkeypatch.setitem(sys.modules, "onnxconverter_common.float16", None)  # in case an earlier test imported it
    with pytest.raises(MissingDependency) as info:
        require("onnxconverter_common.float16", "The fp16 variant")
    assert "'onnxconverter-common'" in str(info.value) and "pocketops[export]" in str(info.value)
    with pytest.raises(MissingDependency) as info:
        require("no_such_pkg_xyz.sub", "Something")
    assert "'no_such_pkg_xyz'" in str(info.value)


def test_require_returns_the_module_when_present():
    """An installed package is simply returned."""
    assert require("json", "anything").dumps([1]) == "[1]"


def test_training_without_torch_fails_with_a_message(tmp_path):
    """`train --wait` on a machine without torch exits 1 at once with a one-line reason, no traceback, no run queued."""
    env = {**os.environ, "POCKETOPS_HOME": str(tmp_path)}
    argv = ["train", "--dataset", "digits", "--model", "cnn", "--epochs", "1", "--wait"]
    proc = subprocess.run([sys.executable, "-c", BLOCKED_CLI.format(blocked=("torch",), argv=argv)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("pocketops: training needs the Python package")
    assert "torch==2.13.0" in line and "pkg install python-torch" in line
    import store
    from store import jobs

    assert jobs.list_jobs(store.connect(tmp_path / "pocketops.db")) == []
