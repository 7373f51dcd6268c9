"""The headless CLI end to end, in subprocesses: JSON shapes scripts rely on, exit codes, errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def cli(home: Path, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "POCKETOPS_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "tui.cli", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def last_json(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_train_wait_json_reaches_095_on_digits(tmp_path):
    """`train --dataset digits --model cnn --epochs 10 --wait --json` streams JSON lines and ends with val_accuracy ≥ 0.95."""
    proc = cli(tmp_path, "train", "--dataset", "digits", "--model", "cnn", "--epochs", "10", "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    vals = [p for p in lines[:-1] if p.get("event") == "metric" and p["kind"] == "val"]
    assert [p["epoch"] for p in vals] == sorted({p["epoch"] for p in vals}), "val points are streamed once each, in order"
    assert len(vals) >= 3
    summary = lines[-1]
    assert set(summary) >= {"run_id", "status", "metrics"}
    assert summary["status"] == "done"
    assert summary["metrics"]["val_accuracy"] >= 0.95
    assert "val_loss" in summary["metrics"]
    shown = last_json(cli(tmp_path, "runs", "show", str(summary["run_id"]), "--json"))
    assert shown["status"] == "done" and shown["epochs_done"] >= 1
    assert shown["metrics"]["val_accuracy"] == summary["metrics"]["val_accuracy"]


def test_queue_then_worker_once_then_show(tmp_path):
    """Queued without --wait, run by `worker --once`, then `runs show` reports it done."""
    queued = cli(tmp_path, "train", "--dataset", "digits", "--model", "mlp", "--epochs", "2", "--json")
    assert queued.returncode == 0, queued.stderr
    out = last_json(queued)
    assert out["status"] == "queued" and set(out) == {"run_id", "job_id", "status"}
    shown = last_json(cli(tmp_path, "runs", "show", str(out["run_id"]), "--json"))
    assert shown["status"] == "queued" and shown["epochs_done"] == 0
    worker = cli(tmp_path, "worker", "--once", "--json")
    assert worker.returncode == 0, worker.stderr
    assert last_json(worker)["jobs_run"] == 1
    shown = last_json(cli(tmp_path, "runs", "show", str(out["run_id"]), "--json"))
    assert shown["status"] == "done" and shown["epochs_done"] == 2
    assert 0 < shown["metrics"]["val_accuracy"] <= 1
    listed = last_json(cli(tmp_path, "runs", "list", "--json"))["runs"]
    assert [r["run_id"] for r in listed] == [out["run_id"]]


def test_queueing_without_a_worker_says_how_to_start_one(tmp_path):
    """A run queued with no worker alive tells the user it will not start by itself."""
    proc = cli(tmp_path, "train", "--dataset", "digits", "--model", "mlp")
    assert proc.returncode == 0, proc.stderr
    assert "no worker is running: start one with `pocketops worker`" in proc.stdout


def test_cancel_a_queued_run(tmp_path):
    """`runs cancel` on a queued run cancels it at once; cancelling it again is an error."""
    out = last_json(cli(tmp_path, "train", "--dataset", "digits", "--model", "mlp", "--json"))
    cancelled = cli(tmp_path, "runs", "cancel", str(out["run_id"]), "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    assert last_json(cancelled)["status"] == "cancelled"
    assert last_json(cli(tmp_path, "runs", "show", str(out["run_id"]), "--json"))["status"] == "cancelled"
    again = cli(tmp_path, "runs", "cancel", str(out["run_id"]))
    assert again.returncode != 0 and again.stderr.startswith("pocketops: ")


@pytest.mark.parametrize(
    "argv, needle",
    [
        (("train", "--dataset", "nope", "--model", "cnn"), "nope"),
        (("runs", "show", "999"), "999"),
        (("datasets", "show", "nope"), "known: digits"),
        (("datasets", "add", "/no/such/file.csv"), "/no/such/file.csv"),
        (("train", "--dataset", "digits", "--model", "cnn", "--epochs", "0"), "--epochs: expected 1 or more, found 0"),
        (("runs", "show", "abc"), "invalid int value: 'abc'"),
        (("runs",), "required: ACTION"),
    ],
    ids=["unknown dataset", "unknown run", "unknown dataset show", "missing file", "bad flag value", "bad id",
         "missing action"],
)
def test_errors_are_one_line_on_stderr(tmp_path, argv, needle):
    """Failures exit non-zero with one line on stderr that names the bad input; no traceback."""
    proc = cli(tmp_path, *argv)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pocketops")
    assert needle in lines[0] and "None" not in lines[0]


def test_bad_csv_names_row_and_column_and_keeps_the_store(tmp_path):
    """A malformed CSV is refused with file, row, column and the value found; nothing is added."""
    good = tmp_path / "good.csv"
    good.write_text("a,b,label\n" + "".join(f"{i},{i * 2},{'x' if i % 2 else 'y'}\n" for i in range(20)))
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,label\n1,2,x\n3,4,y\n5,oops,x\n6,7,y\n")
    assert cli(tmp_path, "datasets", "add", str(good), "--name", "good").returncode == 0
    before = last_json(cli(tmp_path, "datasets", "list", "--json"))
    proc = cli(tmp_path, "datasets", "add", str(bad), "--name", "bad")
    assert proc.returncode == 1
    line = proc.stderr.strip()
    assert str(bad) in line and "row 4" in line and "'b'" in line and "oops" in line
    assert last_json(cli(tmp_path, "datasets", "list", "--json")) == before
    shown = last_json(cli(tmp_path, "datasets", "show", "good", "--json"))
    assert shown["rows"] == 20 and shown["classes"] == ["x", "y"]


def test_db_flag_overrides_home(tmp_path):
    """`--db PATH` puts the store where asked, before or after the command name."""
    target = tmp_path / "elsewhere" / "mine.db"
    assert cli(tmp_path / "home", "--db", str(target), "runs", "list").returncode == 0
    assert target.exists()
    assert cli(tmp_path / "home", "datasets", "list", "--db", str(target), "--json").returncode == 0
    assert not (tmp_path / "home" / "pocketops.db").exists()


def test_train_wait_reports_a_battery_pause_and_a_kill_requeues_the_run(tmp_path):
    """With a fake `termux-battery-status` (12 %, unplugged) `train --wait --json` says it paused;
    SIGTERM then checkpoints and requeues the run with a one-line reason, and a worker finishes it."""
    import signal

    state = tmp_path / "battery.json"
    state.write_text('{"percentage": 12, "plugged": "UNPLUGGED", "status": "DISCHARGING"}')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "termux-battery-status").write_text(f"#!/bin/sh\ncat '{state}'\n")
    (bin_dir / "termux-battery-status").chmod(0o755)
    env = {**os.environ, "POCKETOPS_HOME": str(tmp_path), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "train", "--dataset", "digits", "--model", "cnn",
                             "--preset", "tiny", "--epochs", "1", "--wait", "--json"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(proc.stdout.readline())
        assert first == {"event": "paused", "run_id": 1, "reason": "battery at 12% and not charging (minimum 20%)"}
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert stderr.strip().splitlines() == [
        "pocketops: interrupted: run 1 is queued; `pocketops worker` resumes it from its checkpoint, "
        "`pocketops runs cancel 1` drops it"]
    assert last_json(cli(tmp_path, "runs", "show", "1", "--json"))["status"] == "queued"
    state.write_text('{"percentage": 12, "plugged": "PLUGGED_AC", "status": "CHARGING"}')
    worker = subprocess.run([sys.executable, "-m", "tui.cli", "worker", "--once"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert worker.returncode == 0, worker.stderr
    assert last_json(cli(tmp_path, "runs", "show", "1", "--json"))["status"] == "done"


def test_train_flags_reach_the_run_config(tmp_path):
    """--accum, --lr, --patience and --min-battery are stored in the run's config (0 % = never pause)."""
    out = last_json(cli(tmp_path, "train", "--dataset", "digits", "--model", "mlp", "--accum", "4", "--lr", "0.01",
                        "--patience", "2", "--min-battery", "0", "--batch-size", "4", "--json"))
    assert out["status"] == "queued" and set(out) == {"run_id", "job_id", "status"}
    config = last_json(cli(tmp_path, "runs", "show", str(out["run_id"]), "--json"))["config"]
    assert (config["accum"], config["lr"], config["patience"], config["batch_size"]) == (4, 0.01, 2, 4)
    assert config["pause_on_low_battery"] is False
    bad = cli(tmp_path, "train", "--dataset", "digits", "--model", "mlp", "--min-battery", "120")
    assert bad.returncode == 2 and "expected 0–100, found 120" in bad.stderr


def test_datasets_show_bars_are_scaled_to_the_largest_class():
    """90 vs 10 rows: the small class's bar is a ninth of the big one's, with the shares printed."""
    from tui.commands.datasets import balance_lines

    big, small = balance_lines(["big", "small"], [90, 10], width=27)
    assert big == "  big     90  90.0%  " + "█" * 27 and small == "small     10  10.0%  " + "█" * 3


def test_image_folder_and_text_csv_end_to_end(tmp_path):
    """add an image folder → train cnn and transformer → done; add a text CSV → train transformer → done."""
    import random

    import numpy as np
    from PIL import Image

    with np.load(ROOT / "core" / "data" / "digits.npz") as data:
        images, labels = data["images"], data["labels"]
    folder = tmp_path / "shapes"
    for digit, name in ((0, "zero"), (1, "one"), (7, "seven")):
        (folder / name).mkdir(parents=True)
        for k, i in enumerate(np.flatnonzero(labels == digit)[:40]):  # 8x8 0..16 → 24x24 RGB PNGs
            pixels = (images[i] * 15).astype(np.uint8)
            Image.fromarray(pixels).convert("RGB").resize((24, 24)).save(folder / name / f"{k}.png")
    rng = random.Random(0)
    good, bad = ["great", "lovely", "superb", "fun"], ["awful", "boring", "dreadful", "dull"]
    rows = ["text,label"]
    for i in range(160):
        label = "pos" if i % 2 else "neg"
        rows.append(f"\"the film was {rng.choice(good if label == 'pos' else bad)}, {rng.choice(['truly', 'quite'])}\",{label}")
    (tmp_path / "reviews.csv").write_text("\n".join(rows) + "\n")

    added = last_json(cli(tmp_path, "datasets", "add", str(folder), "--json"))
    assert (added["kind"], added["classes"], added["input_shape"]) == ("images", ["one", "seven", "zero"], [1, 16, 16])
    text = last_json(cli(tmp_path, "datasets", "add", str(tmp_path / "reviews.csv"), "--json"))
    assert (text["kind"], text["class_counts"]) == ("text", [80, 80])
    for dataset, model, floor in (("shapes", "cnn", 0.85), ("shapes", "transformer", 0.7), ("reviews", "transformer", 0.9)):
        proc = cli(tmp_path, "train", "--dataset", dataset, "--model", model, "--preset", "tiny", "--epochs", "6",
                   "--wait", "--json")
        assert proc.returncode == 0, proc.stderr
        summary = last_json(proc)
        assert summary["status"] == "done", summary
        assert summary["metrics"]["val_accuracy"] >= floor, (dataset, model, summary["metrics"])
