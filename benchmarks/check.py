"""Regression check: run every benchmark in its short mode, compare its figures with their targets.

    python benchmarks/check.py [SCRIPT ...]      # default: every script in TARGETS

Each script runs as ``python benchmarks/SCRIPT.py --short``; its output is passed through (kept
in the CI log) and its ``name: value`` lines are read. Every figure in ``TARGETS`` is printed
with its target and noise margin. The exit code is non-zero only on a clear regression: a figure
past its target by more than its margin (``<=`` target T, margin M: fails above T * (1 + M);
``>=``: fails below T * (1 - M)), a figure the script no longer prints, or a script that fails.
A figure past its target but inside the margin is reported as "noise?" and does not fail, so
noise never blocks a landing. A script that is not in this tree is skipped with a line.

The margins are what repeated short runs on a busy 2-core machine vary by: wall-clock ratios of
fresh processes ±20%, RSS ±5%, short (2-epoch) training throughput ratios ±15% (per-repeat
ratios of one run spread 0.65-1.05 at load average 7), quantized latency ±25%, absolute
milliseconds on a shared machine ±50%.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Target:
    figure: str     # the line's name, before ": "
    op: str         # "<=" or ">="
    value: float
    margin: float   # relative noise margin
    why: str = ""

    def verdict(self, found: float) -> str:
        """"met", "noise?" (past the target, inside the margin) or "REGRESSION"."""
        if (found <= self.value) if self.op == "<=" else (found >= self.value):
            return "met"
        limit = self.value * (1 + self.margin) if self.op == "<=" else self.value * (1 - self.margin)
        inside = found <= limit if self.op == "<=" else found >= limit
        return "noise?" if inside else "REGRESSION"


# script -> its figures. A script with no figures here is judged by its exit status alone.
TARGETS: dict[str, list[Target]] = {
    "train_overhead": [Target("ratio", ">=", 0.95, 0.15, "worker samples/s over a bare PyTorch loop")],
    "dashboard_startup": [
        Target("time ratio", "<=", 1.3, 0.2, "first frame with data vs a sqlite3+DataTable Textual app"),
        Target("rss ratio", "<=", 1.3, 0.05, "RSS at that frame"),
    ],
    "quantization": [
        Target("cnn speedup ratio", ">=", 4.0, 0.25, "recommended variant vs torch eager, batch 1"),
        Target("cnn int8 size ratio", "<=", 0.30, 0.05, "int8 size / fp32 size"),
        Target("cnn int8 drop pt", "<=", 0.5, 1.0, "accuracy drop of that int8, points"),
    ],
    "cold_start": [Target("ratio", ">=", 5.0, 0.2, "torch server / bundle server, start to first prediction")],
    "scale": [
        Target("first frame ratio", "<=", 1.2, 0.2, "large store / small store"),
        Target("first frame rss ratio", "<=", 1.2, 0.05, "large store / small store"),
        Target("worst poll cycle ms", "<=", 20.0, 0.5, "slowest panel's poll cycle on the large store"),
        Target("runs list s", "<=", 0.5, 0.5, "`runs list --json` on the large store"),
        Target("draw ratio", "<=", 5.0, 0.5, "100,000-point run / 100-point run, fresh plot"),
    ],
    "serve_load": [],  # added by its own helper; figures judged once they are listed here
    "drift": [
        Target("false alarms per 10k", "<=", 1.0, 1.0, "ours on stable digits traffic (27,200 requests in --short)"),
        Target("missed novel class", "<=", 0.0, 0.0, "share of novel-class drifts ours never alarms on"),
        Target("missed noise 4", "<=", 0.0, 0.0, "share of strong-noise drifts ours never alarms on"),
        Target("overhead pct", "<=", 5.0, 0.5, "signals + detectors / a served request's loopback latency"),
    ],
    # One short run on a busy 2-core machine: 6.8 s to the first metric, 10.5 s in total over local
    # (package, upload, Ray's runtime env, the cluster's own torch import); absolute seconds ±50%.
    "remote": [Target("overhead_first_metric_s", "<=", 12.0, 0.5, "--on: submission to first metric, over local"),
               Target("overhead_total_s", "<=", 18.0, 0.5, "--on: total for 3 digits epochs, over local")],
}

LINE = re.compile(r"^(?P<name>[A-Za-z][\w ./-]*?): (?P<value>[-+]?\d+(?:\.\d+)?)\b")


def figures(output: str) -> dict[str, float]:
    """The ``name: number`` lines of a benchmark's output (the last one wins)."""
    found = {}
    for line in output.splitlines():
        match = LINE.match(line.strip())
        if match:
            found[match["name"]] = float(match["value"])
    return found


def run_script(name: str) -> tuple[int, str, float]:
    """Run ``benchmarks/NAME.py --short``, echoing its output; (exit code, output, seconds)."""
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--short"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        print(f"  {name}| {line}", end="", flush=True)
        lines.append(line)
    return proc.wait(), "".join(lines), time.monotonic() - t0


def check(names: list[str]) -> int:
    """Run the named scripts and print the verdicts; 1 on a clear regression, else 0."""
    rows: list[tuple[str, str, str, str, str]] = []
    failed = []
    for name in names:
        script = ROOT / "benchmarks" / f"{name}.py"
        if not script.exists():
            print(f"bench-check: {name}: benchmarks/{name}.py is not in this tree; skipped", flush=True)
            continue
        print(f"bench-check: {name} --short", flush=True)
        code, output, seconds = run_script(name)
        found = figures(output)
        print(f"bench-check: {name} finished in {seconds:.0f} s with exit code {code}", flush=True)
        if code != 0:
            failed.append(f"{name}: exited with {code}")
        for target in TARGETS.get(name, []):
            if target.figure not in found:
                rows.append((name, target.figure, "missing", f"{target.op} {target.value:g}", "REGRESSION"))
                failed.append(f"{name}: no '{target.figure}:' line")
                continue
            verdict = target.verdict(found[target.figure])
            rows.append((name, target.figure, f"{found[target.figure]:g}",
                         f"{target.op} {target.value:g} (±{target.margin:.0%})", verdict))
            if verdict == "REGRESSION":
                failed.append(f"{name}: {target.figure} {found[target.figure]:g}, target {target.op} {target.value:g} "
                              f"with a {target.margin:.0%} noise margin")
        if not TARGETS.get(name):
            for figure, value in found.items():
                if "ratio" in figure:
                    rows.append((name, figure, f"{value:g}", "(no target listed)", "-"))
    print("\nbench-check figures:")
    print(f"  {'script':<18} {'figure':<24} {'value':>9}  {'target (noise margin)':<22} verdict")
    for row in rows:
        print(f"  {row[0]:<18} {row[1]:<24} {row[2]:>9}  {row[3]:<22} {row[4]}")
    if failed:
        print("bench-check: FAILED: " + "; ".join(failed))
        return 1
    print("bench-check: no regression")
    return 0


def main(argv: list[str] | None = None) -> int:
    names = list(sys.argv[1:] if argv is None else argv) or list(TARGETS)
    unknown = [n for n in names if not re.fullmatch(r"[a-z_0-9]+", n)]
    if unknown:
        print(f"bench-check: not a benchmark name: {', '.join(unknown)} (expected e.g. scale, cold_start)", file=sys.stderr)
        return 2
    return check(names)


if __name__ == "__main__":
    sys.exit(main())
