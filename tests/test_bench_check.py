"""benchmarks/check.py: figures parsed from output, judged against targets with a noise margin."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def check_mod():
    spec = importlib.util.spec_from_file_location("bench_check", ROOT / "benchmarks" / "check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_check"] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("bench_check", None)


def test_figures_are_the_last_name_value_lines(check_mod):
    out = "warming up\ncpu ratio: 1.02  (ours/bare)\nratio: 0.97\ntime ratio: 1.25\ncnn int8 drop pt: -0.30\nratio: 0.99\n"
    assert check_mod.figures(out) == {"cpu ratio": 1.02, "ratio": 0.99, "time ratio": 1.25, "cnn int8 drop pt": -0.3}


def test_only_a_miss_beyond_the_margin_is_a_regression(check_mod):
    at_most = check_mod.Target("time ratio", "<=", 1.3, 0.2)
    assert at_most.verdict(1.1) == "met" and at_most.verdict(1.5) == "noise?" and at_most.verdict(1.6) == "REGRESSION"
    at_least = check_mod.Target("ratio", ">=", 5.0, 0.2)
    assert at_least.verdict(6) == "met" and at_least.verdict(4.2) == "noise?" and at_least.verdict(3.9) == "REGRESSION"


def test_every_registered_script_has_a_short_mode():
    for name in ("train_overhead", "dashboard_startup", "quantization", "cold_start", "scale"):
        assert "--short" in (ROOT / "benchmarks" / f"{name}.py").read_text(), name


def _fake(tmp_path: Path, name: str, text: str, code: int = 0) -> None:
    (tmp_path / "benchmarks").mkdir(exist_ok=True)
    (tmp_path / "benchmarks" / f"{name}.py").write_text(
        f"import sys\nassert sys.argv[1:] == ['--short']\nprint({text!r})\nsys.exit({code})\n")


def test_runner_fails_on_a_regression_a_missing_figure_or_a_crash_and_skips_absent_scripts(check_mod, tmp_path,
                                                                                           monkeypatch, capsys):
    monkeypatch.setattr(check_mod, "ROOT", tmp_path)
    monkeypatch.setattr(check_mod, "TARGETS", {
        "good": [check_mod.Target("ratio", ">=", 1.0, 0.1)],
        "noisy": [check_mod.Target("time ratio", "<=", 1.3, 0.2)],
        "slow": [check_mod.Target("time ratio", "<=", 1.3, 0.2)],
        "absent": [check_mod.Target("ratio", ">=", 1.0, 0.1)],
    })
    _fake(tmp_path, "good", "ratio: 1.20")
    _fake(tmp_path, "noisy", "time ratio: 1.45")
    _fake(tmp_path, "slow", "time ratio: 1.70")
    assert check_mod.check(["good", "noisy", "absent"]) == 0
    out = capsys.readouterr().out
    assert "absent.py is not in this tree; skipped" in out
    assert "1.45" in out and "noise?" in out and "<= 1.3 (±20%)" in out and "no regression" in out
    assert check_mod.check(["good", "slow"]) == 1
    assert "FAILED: slow: time ratio 1.7, target <= 1.3 with a 20% noise margin" in capsys.readouterr().out
    _fake(tmp_path, "good", "nothing to report")
    assert check_mod.check(["good"]) == 1
    _fake(tmp_path, "good", "ratio: 1.20", code=3)
    assert check_mod.check(["good"]) == 1
    assert "good: exited with 3" in capsys.readouterr().out
