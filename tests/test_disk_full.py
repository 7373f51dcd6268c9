"""Out of space during a checkpoint, an export, a bundle and a dataset import: a one-line error
naming what could not be written and the bytes needed vs free; the previous files still match
the store; no temp file left; the store consistent and the worker alive.

Each case runs twice: with ENOSPC injected at the write (runs anywhere) and on a real, full
tmpfs mounted over the store's files directory (needs root; skipped with the reason otherwise).
"""
from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

import pytest

import core.atomic
import store
from core import paths
from core.atomic import sha256_file
from core.errors import DiskFull
from store.db import one, rows

MODES = ("injected", "tmpfs")


# -- helpers ---------------------------------------------------------------------------------

class _FullFile:
    """A file object whose write stores half the bytes, then fails as a full disk does."""

    def __init__(self, handle):
        self._handle = handle

    def write(self, data):
        self._handle.write(bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._handle.__exit__(*exc)


def inject_enospc(monkeypatch, name: str, after: int = 0) -> dict:
    """Atomic writes to a file called ``name`` fail with ENOSPC once ``after`` of them succeeded."""
    real_mkstemp, real_fdopen = core.atomic.tempfile.mkstemp, core.atomic.os.fdopen
    state = {"seen": 0, "failed": 0, "fds": set()}

    def mkstemp(*args, **kwargs):
        fd, tmp = real_mkstemp(*args, **kwargs)
        if Path(tmp).name.startswith(f".{name}"):
            state["seen"] += 1
            if state["seen"] > after:
                state["fds"].add(fd)
        return fd, tmp

    def fdopen(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)
        if fd in state["fds"]:
            state["fds"].discard(fd)
            state["failed"] += 1
            return _FullFile(handle)
        return handle

    monkeypatch.setattr(core.atomic.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(core.atomic.os, "fdopen", fdopen)
    return state


@contextlib.contextmanager
def small_tmpfs(directory: Path, size: str = "24m"):
    """A real tmpfs of ``size`` mounted at ``directory`` for the block (skips when it cannot be)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the injected-ENOSPC variant covers this case")
    directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); "
                    "the injected-ENOSPC variant covers this case")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def fill(directory: Path) -> Path:
    """Fill the filesystem holding ``directory`` until a write fails with ENOSPC."""
    filler = directory / "filler.bin"
    with open(filler, "wb", buffering=0) as handle:
        for chunk in (1 << 20, 1 << 14, 1 << 10, 1):
            block = b"\0" * chunk
            try:
                while True:
                    handle.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    assert core.atomic.free_bytes(directory) < 4096
    return filler


@pytest.fixture(params=MODES)
def space(request, tmp_path, monkeypatch):
    """``(mode, db_path, make_full)``: ``make_full(name, after=0)`` makes the writes of ``name`` fail."""
    db_path = tmp_path / "t.db"
    files = paths.files_dir(db_path)
    if request.param == "tmpfs":
        with small_tmpfs(files):
            yield request.param, db_path, lambda name, after=0: fill(files)
    else:
        yield request.param, db_path, lambda name, after=0: inject_enospc(monkeypatch, name, after)


def assert_one_line_disk_error(message: str, what: str, path_part: str) -> None:
    assert "\n" not in message and "Traceback" not in message
    assert f"cannot write {what}" in message and path_part in message, message
    assert "no space left" in message and "bytes" in message and "free" in message, message
    needs = message.split("needs ")[1].split(" bytes")[0]
    assert int(needs.replace(",", "")) > 0, message


def assert_store_consistent(db, files: Path) -> None:
    assert one(db, "PRAGMA integrity_check")["integrity_check"] == "ok"
    for art in rows(db, "SELECT * FROM artifacts"):
        path = Path(art["path"])
        target = path / "model.json" if art["kind"] == "bundle" else path
        assert target.is_file(), f"artifact {art['id']} ({art['kind']}) points at a missing {target}"
        assert sha256_file(target) == art["sha256"], f"{target} does not match its artifact row"
    leftovers = [p for p in files.rglob("*") if p.name.endswith(".tmp") or
                 (p.name.startswith(".") and p.is_dir())]
    assert leftovers == [], leftovers


# -- unit: the message -------------------------------------------------------------------------

def test_atomic_write_out_of_space_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "x.bin"
    core.atomic.write_bytes(target, b"old")
    state = inject_enospc(monkeypatch, "x.bin")
    with pytest.raises(DiskFull) as caught:
        core.atomic.write_bytes(target, b"n" * 5000, what="test file")
    assert state["failed"] == 1
    assert_one_line_disk_error(str(caught.value), "test file", str(target))
    assert caught.value.needed == 5000 and caught.value.free is not None
    assert "needs 5,000 bytes" in str(caught.value)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]


def test_other_os_errors_are_not_reported_as_a_full_disk(tmp_path):
    with pytest.raises(PermissionError):
        with core.atomic.no_space_as_error(tmp_path / "y"):
            raise PermissionError(errno.EACCES, "denied")


# -- (a) a training checkpoint -----------------------------------------------------------------

def test_checkpoint_out_of_space_fails_the_run_and_keeps_the_last_good_checkpoint(space, monkeypatch):
    pytest.importorskip("torch")
    from core import runs
    from core import train_job
    from core import worker as core_worker
    from core.datasets import ensure_builtin
    from core.trainer import read_checkpoint
    from store import jobs
    from store import runs as store_runs

    mode, db_path, make_full = space
    db = store.connect(db_path)
    ensure_builtin(db, db_path)
    monkeypatch.setattr(core_worker, "HEARTBEAT_S", 0.05)
    run_id, job_id = runs.new_run(db, dataset="digits", model="cnn", preset="tiny", epochs=3, batch_size=64, threads=1)
    if mode == "injected":
        make_full("last.pt", after=1)  # epoch 1's last.pt is written, epoch 2's is not
    else:
        real = train_job.StoreCallbacks.on_checkpoint

        def on_checkpoint(self, path):  # the disk fills up right after epoch 1's files landed
            real(self, path)
            if path.name == "last.pt" and not (path.parent.parent.parent / "filler.bin").exists():
                make_full("last.pt")

        monkeypatch.setattr(train_job.StoreCallbacks, "on_checkpoint", on_checkpoint)
    worker = core_worker.Worker(db_path, kinds=("train",))
    assert worker.run(once=True) == 1  # the worker records the failure and carries on
    job = jobs.get(db, job_id)
    assert job["status"] == "failed"
    assert_one_line_disk_error(job["error"], "checkpoint", f"runs/{run_id}/")
    assert job["error"].split(": no space")[0].endswith(("last.pt", "best.pt"))
    run = store_runs.get(db, run_id)
    assert run["status"] == "failed" and run["error"] == job["error"]
    last = Path(run["checkpoint_path"]).parent / "last.pt"
    assert read_checkpoint(last)["epoch"] == 1
    assert_store_consistent(db, paths.files_dir(db_path))
    assert worker.run(once=True) == 0  # still able to claim work: nothing left queued


# -- (b) an export / quantize variant ----------------------------------------------------------

def _trained_run(db, db_path) -> int:
    from core import runs
    from core import worker as core_worker
    from core.datasets import ensure_builtin

    ensure_builtin(db, db_path)
    run_id, _ = runs.new_run(db, dataset="digits", model="cnn", preset="tiny", epochs=1, batch_size=64, threads=1)
    assert core_worker.Worker(db_path, kinds=("train",)).run(once=True) == 1
    return run_id


def test_export_out_of_space_fails_the_job_and_keeps_the_earlier_variants(space):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from core import worker as core_worker
    from core.export_job import queue_export
    from store import jobs
    from store import variants as store_variants

    mode, db_path, make_full = space
    db = store.connect(db_path)
    run_id = _trained_run(db, db_path)
    first = queue_export(db, run_id, variants=["fp32", "int8-dynamic"])
    assert core_worker.Worker(db_path, kinds=("export",)).run(once=True) == 1
    assert jobs.get(db, first)["status"] == "done"
    before = {v["id"]: v["sha256"] for v in store_variants.for_job(db, first)}
    assert len(before) == 2
    second = queue_export(db, run_id, variants=["fp32", "int8-dynamic"])
    make_full("int8-dynamic.onnx")
    worker = core_worker.Worker(db_path, kinds=("export",))
    assert worker.run(once=True) == 1
    job = jobs.get(db, second)
    assert job["status"] == "failed", job
    # injected: fp32 fits and int8-dynamic does not; a full tmpfs refuses the first file already
    what, name = ("int8-dynamic variant", "int8-dynamic.onnx") if mode == "injected" else ("ONNX export", "fp32.onnx")
    assert_one_line_disk_error(job["error"], what, name)
    assert store_variants.for_job(db, second) == []
    assert not (paths.files_dir(db_path) / "runs" / str(run_id) / "onnx" / f"job-{second}").exists()
    for vid, sha in before.items():
        v = store_variants.get(db, vid)
        assert sha256_file(v["path"]) == sha == v["sha256"]
    assert_store_consistent(db, paths.files_dir(db_path))


# -- (c) a deploy bundle -----------------------------------------------------------------------

def test_bundle_out_of_space_is_one_line_and_keeps_the_previous_bundle(space):
    pytest.importorskip("onnxruntime")
    from deployers.bundle import build_bundle
    from store import artifacts
    from tests._deploy_helpers import make_variant

    mode, db_path, make_full = space
    db = store.connect(db_path)
    old = make_variant(db, db_path, seed=0)
    new = make_variant(db, db_path, seed=1)
    kept = build_bundle(db, db_path, old)
    kept_sha = artifacts.by_path(db, str(kept.path))["sha256"]
    make_full("reference.npz")
    with pytest.raises(DiskFull) as caught:
        build_bundle(db, db_path, new)
    assert_one_line_disk_error(str(caught.value), "deploy bundle", "variant-2-")
    if mode == "tmpfs":
        (paths.files_dir(db_path) / "filler.bin").unlink()
    assert sha256_file(kept.path / "model.json") == kept_sha
    for name, size in kept.files():
        assert (kept.path / name).stat().st_size == size
    bundles = sorted(p.name for p in (paths.files_dir(db_path) / "bundles").iterdir())
    assert bundles == [kept.path.name]  # no staging directory, no half bundle
    assert_store_consistent(db, paths.files_dir(db_path))


def test_a_deploy_that_runs_out_of_space_is_a_failed_release_with_the_reason(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from deployers import service
    from deployers.base import DeployError
    from store import deployments as store_deployments
    from tests._deploy_helpers import make_variant

    db_path = tmp_path / "t.db"
    db = store.connect(db_path)
    vid = make_variant(db, db_path)
    inject_enospc(monkeypatch, "reference.npz")
    with pytest.raises(DeployError) as caught:
        service.deploy(db, db_path, vid, "local", {"port": 0})
    assert "cannot write deploy bundle" in str(caught.value) and "\n" not in str(caught.value)
    (row,) = store_deployments.list_all(db)
    assert row["status"] == "failed" and "cannot write deploy bundle" in (row["error"] or "")
    assert_store_consistent(db, paths.files_dir(db_path))


# -- (d) a dataset import ----------------------------------------------------------------------

def _csv(path: Path) -> Path:
    lines = ["a,b,label"] + [f"{i},{i * 0.5},{'xy'[i % 2]}" for i in range(40)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_dataset_import_out_of_space_registers_nothing(space, tmp_path):
    from core.datasets import add_dataset, ensure_builtin, load_arrays
    from store import datasets as store_datasets

    _mode, db_path, make_full = space
    db = store.connect(db_path)
    ensure_builtin(db, db_path)
    digits = store_datasets.by_name(db, "digits")
    source = _csv(tmp_path / "pairs.csv")
    make_full("pairs-")  # the arrays file is named <name>-<fingerprint>.npz
    with pytest.raises(DiskFull) as caught:
        add_dataset(db, db_path, source)
    assert_one_line_disk_error(str(caught.value), "dataset arrays", "pairs-")
    assert store_datasets.by_name(db, "pairs") is None
    assert [r["name"] for r in store_datasets.list_all(db)] == ["digits"]
    assert len(load_arrays(digits).y) == digits["rows"]
    assert_store_consistent(db, paths.files_dir(db_path))


def test_cli_dataset_add_out_of_space_is_one_line_exit_1(tmp_path, monkeypatch, capsys):
    from tui.cli import main

    db_path = tmp_path / "t.db"
    source = _csv(tmp_path / "pairs.csv")
    assert main(["--db", str(db_path), "datasets", "list"]) == 0
    capsys.readouterr()
    inject_enospc(monkeypatch, "pairs-")
    assert main(["--db", str(db_path), "datasets", "add", str(source)]) == 1
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pocketops: cannot write dataset arrays"), out.err
    assert_one_line_disk_error(lines[0], "dataset arrays", "pairs-")


# -- the database's own disk -------------------------------------------------------------------

def test_a_full_disk_under_the_database_is_one_line_for_the_cli_and_the_worker(tmp_path):
    import sys

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONWARNINGS": "ignore"}
    with small_tmpfs(tmp_path / "small", size="3m") as small:
        db_path = small / "t.db"
        store.connect(db_path).close()
        fill(small)
        for argv, prefix in ((["-m", "tui.cli", "--db", str(db_path), "train", "--dataset", "digits", "--model", "mlp"],
                              "pocketops: "),
                             (["-m", "core.worker", "--db", str(db_path), "--once"], "pocketops worker: ")):
            done = subprocess.run([sys.executable, *argv], cwd=root, env=env, capture_output=True, text=True, timeout=120)
            lines = done.stderr.strip().splitlines()
            assert done.returncode == 1 and len(lines) == 1, done.stderr
            assert lines[0].startswith(f"{prefix}{db_path}: cannot write the database (") and "free" in lines[0], lines[0]
