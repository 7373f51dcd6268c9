"""Trainer: a real digits run learns; checkpoints describe themselves; resume continues the
numbering with the optimizer state; a stop mid-epoch resumes at that batch; low battery pauses."""
from __future__ import annotations

import pytest

import os
from dataclasses import replace

from core import datasets, models, telemetry, trainer
from core.errors import ConfigError, JobStopped
from core.trainer import Callbacks, Trainer, TrainConfig, load_checkpoint
from store import datasets as store_datasets

torch = pytest.importorskip("torch")


class Recorder(Callbacks):
    def __init__(self, stop_after_batches: int | None = None):
        self.points, self.epochs, self.events, self.batches = [], [], [], 0
        self.stop_after = stop_after_batches

    def on_start(self, *, epoch, step, resumed):
        self.events.append(("start", epoch, step, resumed))

    def on_train_point(self, step, epoch, loss, accuracy, samples_per_s):
        self.points.append((step, epoch, loss, accuracy, samples_per_s))

    def on_epoch_end(self, epoch, metrics, checkpoint_path):
        self.epochs.append((epoch, metrics))

    def check(self):
        self.batches += 1
        if self.stop_after is not None and self.batches > self.stop_after:
            raise JobStopped()

    def on_pause(self, reason):
        self.events.append(("pause", reason))

    def on_resume(self):
        self.events.append(("resume",))


@pytest.fixture
def digits(digits_db):
    return datasets.load_arrays(store_datasets.by_name(digits_db[0], "digits"))


def cfg(**kw) -> TrainConfig:
    base = dict(dataset="digits", model="cnn", preset="small", epochs=3, threads=1, patience=10)
    return TrainConfig(**{**base, **kw})


def test_digits_cnn_learns_and_checkpoints_describe_themselves(digits, tmp_path):
    rec = Recorder()
    summary = Trainer(cfg(epochs=3), digits, tmp_path / "ck", rec).fit()
    assert summary["val_accuracy"] >= 0.90, summary
    assert summary["test_accuracy"] >= 0.88 and summary["epochs_done"] == 3 and not summary["stopped_early"]
    assert summary["params"] == 53002 and summary["samples_per_s"] > 0
    assert [e for e, _ in rec.epochs] == [1, 2, 3]
    steps = [p[0] for p in rec.points]
    assert steps == list(range(10, summary["steps"] + 1, 10))  # one point per log_every steps
    assert rec.points[-1][2] < rec.points[0][2]  # the loss went down
    model, ckpt = load_checkpoint(tmp_path / "ck" / "best.pt")
    assert not model.training
    assert ckpt["epoch"] == summary["best_epoch"] and ckpt["classes"] == [str(i) for i in range(10)]
    assert ckpt["model_args"]["family"] == "cnn" and ckpt["config"]["epochs"] == 3
    assert ckpt["dataset_fingerprint"] == digits.fingerprint and ckpt["input"]["shape"] == [1, 8, 8]
    assert ckpt["input"]["meta"]["scale"] == 1 / 16 and len(ckpt["history"]) == ckpt["epoch"]
    with torch.no_grad():  # the checkpoint's weights reproduce the recorded val accuracy
        _, va, _ = datasets.split_indices(digits.y)
        pred = model(torch.from_numpy(digits.X[va])).argmax(1).numpy()
    assert (pred == digits.y[va]).mean() == pytest.approx(summary["val_accuracy"])


def test_resume_continues_epochs_steps_and_optimizer_state(digits, tmp_path):
    first = Recorder()
    s1 = Trainer(cfg(epochs=2, preset="tiny"), digits, tmp_path / "ck", first).fit()
    second = Recorder()
    s2 = Trainer(cfg(epochs=4, preset="tiny"), digits, tmp_path / "ck", second).fit()
    assert second.events[0] == ("start", 2, s1["steps"], True)
    assert [e for e, _ in second.epochs] == [3, 4]
    assert second.points[0][0] == s1["steps"] + 10 - s1["steps"] % 10 and second.points[0][1] == 3
    assert s2["steps"] == 2 * s1["steps"] and s2["epochs_done"] == 4
    ckpt = trainer.read_checkpoint(tmp_path / "ck" / "last.pt")
    # Adam's per-parameter step counter carried over: a fresh optimizer would say s1["steps"]
    assert int(ckpt["optimizer"]["state"][0]["step"]) == s2["steps"]
    assert [h["epoch"] for h in ckpt["history"]] == [1, 2, 3, 4] and len(ckpt["resumes"]) == 1
    # the same run done again: nothing left to train, same numbers
    third = Recorder()
    s3 = Trainer(cfg(epochs=4, preset="tiny"), digits, tmp_path / "ck", third).fit()
    assert third.epochs == [] and s3["steps"] == s2["steps"] and s3["val_accuracy"] == s2["val_accuracy"]


def test_stop_mid_epoch_saves_position_and_resume_replays_the_same_order(digits, tmp_path):
    straight = Trainer(cfg(epochs=2, preset="tiny"), digits, tmp_path / "a").fit()
    with pytest.raises(JobStopped):
        Trainer(cfg(epochs=2, preset="tiny"), digits, tmp_path / "b", Recorder(stop_after_batches=200)).fit()
    ckpt = trainer.read_checkpoint(tmp_path / "b" / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["batch_in_epoch"] == 200 - 158  # 158 batches per epoch
    rec = Recorder()
    resumed = Trainer(cfg(epochs=2, preset="tiny"), digits, tmp_path / "b", rec).fit()
    assert rec.events[0] == ("start", 1, ckpt["step"], True)
    assert resumed["steps"] == straight["steps"]  # no batch trained twice, none skipped


def test_resume_refuses_another_dataset_or_model(digits, tmp_path):
    Trainer(cfg(epochs=1, preset="tiny"), digits, tmp_path / "ck").fit()
    with pytest.raises(ConfigError, match="another model"):
        Trainer(cfg(epochs=2, preset="small"), digits, tmp_path / "ck").fit()
    digits.fingerprint = "0" * 64
    with pytest.raises(ConfigError, match="fingerprint differs"):
        Trainer(cfg(epochs=2, preset="tiny"), digits, tmp_path / "ck").fit()


def test_low_battery_pauses_until_charging(digits, tmp_path, monkeypatch):
    readings = iter([{"battery_percent": 12.0, "charging": 0}] * 2 + [{"battery_percent": 13.0, "charging": 1}])
    last = {"battery_percent": 13.0, "charging": 1}
    monkeypatch.setattr(telemetry, "battery", lambda **_: next(readings, last))
    monkeypatch.setattr(trainer, "PAUSE_POLL_S", 0.05)
    rec = Recorder()
    summary = Trainer(cfg(epochs=1, preset="tiny", min_battery=20), digits, tmp_path / "ck", rec).fit()
    kinds = [e[0] for e in rec.events]
    assert kinds[:3] == ["start", "pause", "resume"] and "12%" in rec.events[1][1]
    assert rec.batches > 3 and summary["epochs_done"] == 1  # checked while paused, then trained


def test_tabular_mlp_learns_with_standardisation_inside(db, tmp_path):
    db, db_path = db
    rng = __import__("numpy").random.default_rng(0)
    lines = ["income,age,label"]
    for i in range(120):
        c = i % 2
        lines.append(f"{50_000 + 20_000 * c + rng.normal(0, 5000):.1f},{30 + rng.normal(0, 5):.1f},{'yes' if c else 'no'}")
    (tmp_path / "loans.csv").write_text("\n".join(lines))
    arrays = datasets.load_arrays(datasets.add_dataset(db, db_path, tmp_path / "loans.csv"))
    summary = Trainer(TrainConfig(dataset="loans", model="mlp", epochs=5, threads=1), arrays, tmp_path / "ck").fit()
    assert summary["val_accuracy"] >= 0.9
    model, _ = load_checkpoint(tmp_path / "ck" / "best.pt")
    assert 55_000 < float(model.feature_mean[0]) < 65_000  # raw features in, standardised inside


def test_config_round_trips_and_rejects_unknown_settings():
    c = cfg(lr=3e-3, accum=2)
    assert TrainConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="unknown training setting.*epoch_count"):
        TrainConfig.from_dict({"dataset": "digits", "epoch_count": 3})
    with pytest.raises(ConfigError, match="batch_size must be"):
        cfg(batch_size=0).validate()


def test_a_diverging_run_stops_with_the_reason(digits, tmp_path):
    with pytest.raises(ConfigError, match=r"loss became (nan|inf) at step \d+ \(epoch 1\); lower the learning rate \(now 1e\+08\)"):
        Trainer(cfg(epochs=1, preset="tiny", lr=1e8), digits, tmp_path / "ck").fit()


def _subset_with_short_last_group(digits, group: int, short: int):
    """The first N digits, N chosen so the training split leaves ``short`` samples over a multiple of ``group``."""
    for n in range(120, 400):
        sub = replace(digits, X=digits.X[:n], y=digits.y[:n])
        n_train = len(datasets.split_indices(sub.y)[0])
        if n_train % group == short:
            return sub, n_train
    raise AssertionError("no subset found")


def test_accumulation_steps_with_the_gradient_of_one_big_batch(digits, tmp_path, monkeypatch):
    """batch 4 × accum 2 trains exactly like batch 8 (the last group: a batch of 4 and a batch of 1)."""
    monkeypatch.setattr(models, "DROPOUT", 0.0)  # dropout masks differ between the two runs
    sub, n_train = _subset_with_short_last_group(digits, group=8, short=5)
    big = Trainer(cfg(epochs=1, batch_size=8, accum=1, preset="tiny"), sub, tmp_path / "big")
    small = Trainer(cfg(epochs=1, batch_size=4, accum=2, preset="tiny"), sub, tmp_path / "small")
    s_big, s_small = big.fit(), small.fit()
    assert s_big["steps"] == s_small["steps"] == -(-n_train // 8)  # one optimizer step per group
    a = trainer.read_checkpoint(tmp_path / "big" / "last.pt")["state_dict"]
    b = trainer.read_checkpoint(tmp_path / "small" / "last.pt")["state_dict"]
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    plain = Trainer(cfg(epochs=1, batch_size=4, accum=1, preset="tiny"), sub, tmp_path / "plain").fit()
    assert plain["steps"] == -(-n_train // 4)  # without accumulation: a step per batch


def test_fake_termux_battery_pauses_and_charging_resumes(digits, tmp_path, monkeypatch):
    """A `termux-battery-status` on PATH saying 12 %, unplugged pauses the run; 'CHARGING' resumes it within seconds."""
    state = tmp_path / "battery.json"
    state.write_text('{"percentage": 12, "plugged": "UNPLUGGED", "status": "DISCHARGING", "temperature": 31.5}')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "termux-battery-status"
    fake.write_text(f"#!/bin/sh\ncat '{state}'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    telemetry._termux_battery_cmd.cache_clear()
    monkeypatch.setattr(telemetry, "_battery_cache", None)
    monkeypatch.setattr(trainer, "PAUSE_POLL_S", 0.4)
    assert telemetry.battery()["charging"] == 0 and telemetry.sample()["temperature_c"] == 31.5

    class PlugInWhilePaused(Recorder):
        def on_pause(self, reason):
            super().on_pause(reason)
            state.write_text('{"percentage": 12, "plugged": "PLUGGED_USB", "status": "CHARGING"}')

    rec = PlugInWhilePaused()
    try:
        summary = Trainer(cfg(epochs=1, preset="tiny", min_battery=20), digits, tmp_path / "ck", rec).fit()
    finally:
        telemetry._termux_battery_cmd.cache_clear()
    assert [e[0] for e in rec.events][:3] == ["start", "pause", "resume"]
    assert rec.events[1][1] == "battery at 12% and not charging (minimum 20%)"
    assert summary["epochs_done"] == 1


def test_termux_battery_without_plug_fields_is_not_assumed_discharging(tmp_path, monkeypatch):
    """A reading that does not say whether it charges never pauses a run on a guess."""
    fake = tmp_path / "termux-battery-status"
    fake.write_text("#!/bin/sh\necho '{\"percentage\": 5}'\n")
    fake.chmod(0o755)
    monkeypatch.setattr(telemetry, "_termux_battery_cmd", lambda: str(fake))
    monkeypatch.setattr(telemetry, "_psutil_battery", lambda: {})
    monkeypatch.setattr(telemetry, "_battery_cache", None)
    reading = telemetry.battery()
    assert reading["battery_percent"] == 5 and reading["charging"] is None
    assert not trainer._low(reading, 20)


def test_early_stopping_ends_after_patience_epochs_without_improvement(digits, tmp_path):
    """patience=2: the run stops two epochs after its best one, keeps the best weights, and a
    re-run after a kill (same checkpoint) trains nothing more."""
    config = cfg(model="mlp", preset="tiny", epochs=40, patience=2, batch_size=32)
    rec = Recorder()
    summary = Trainer(config, digits, tmp_path / "ck", rec).fit()
    assert summary["stopped_early"] and summary["epochs_done"] < 40
    assert summary["epochs_done"] - summary["best_epoch"] == 2
    vals = [m["val_accuracy"] for _, m in rec.epochs]
    best = summary["best_epoch"]
    assert vals[best - 1] == summary["val_accuracy"] == max(vals)
    assert all(v <= vals[best - 1] for v in vals[best:])  # no better epoch after the best one
    assert trainer.read_checkpoint(tmp_path / "ck" / "best.pt")["epoch"] == best
    again = Recorder()
    s2 = Trainer(config, digits, tmp_path / "ck", again).fit()
    assert again.epochs == [] and s2["epochs_done"] == summary["epochs_done"]
