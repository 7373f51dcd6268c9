"""The training loop: small batches + gradient accumulation, validation every epoch, early
stopping, self-describing atomic checkpoints, resume, and pausing on a low battery.

``TrainConfig`` and ``Callbacks`` import no torch, so the CLI and the dashboard can build and
validate configs; ``Trainer.fit`` and ``load_checkpoint`` import it when they run.
"""
from __future__ import annotations

import hashlib
import io
import math
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from core import models, telemetry
from core.atomic import write_bytes
from core.datasets import Arrays, split_indices
from core.errors import ConfigError, JobStopped

CHECKPOINT_FORMAT = "pocketops-checkpoint"
CHECKPOINT_VERSION = 1
BATTERY_EVERY = 200      # batches between battery readings (the reading itself is cached 30 s)
PAUSE_POLL_S = 5.0       # while paused: re-read the battery this often...
PAUSE_CHECK_S = 0.25     # ...and call check() this often, so stop/cancel stay prompt
RESUME_MARGIN = 5        # resume when the battery is this many points above min_battery
EVAL_BATCH = 256
AUTO_ONE_THREAD_BELOW = 1_000_000  # parameters; see auto_threads
_TORCH_DEFAULT_THREADS: int | None = None


@dataclass
class TrainConfig:
    """What to train and how; stored as JSON in ``runs.config`` and in every checkpoint."""

    dataset: str
    model: str = "cnn"
    preset: str = "small"
    epochs: int = 10
    batch_size: int = 8
    accum: int = 1
    lr: float | None = None          # None: the family's default (models.DEFAULT_LR)
    weight_decay: float = 1e-4
    seed: int = 0
    patience: int = 5                # epochs without a better val accuracy before stopping
    log_every: int = 10              # optimizer steps between train points
    threads: int | None = None       # torch threads; None: auto (see auto_threads)
    min_battery: float = 20.0
    pause_on_low_battery: bool = True
    val: float = 0.15
    test: float = 0.15
    arch: dict | None = None         # overrides of the preset's layers/widths (models.ARCH_FIELDS); a sweep sets it

    def to_dict(self) -> dict:
        """The settings as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """Settings from a dict; ConfigError naming any unknown key."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)

    def validate(self) -> "TrainConfig":
        """Raise ConfigError naming the first setting that cannot work."""
        if self.model not in models.FAMILIES:
            raise ConfigError(f"unknown model {self.model!r}; choose one of {', '.join(models.FAMILIES)}")
        if self.preset not in models.PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}; choose one of {', '.join(models.PRESETS)}")
        for name in ("epochs", "batch_size", "accum", "log_every", "patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a whole number ≥ 1, got {value!r}")
        if self.lr is not None and not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ConfigError(f"lr must be a positive number, got {self.lr!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"threads must be a whole number ≥ 1, got {self.threads!r}")
        models.check_arch(self.model, self.arch)
        if not (0 <= self.val < 1 and 0 <= self.test < 1 and self.val + self.test < 1):
            raise ConfigError(f"val ({self.val}) and test ({self.test}) fractions must be in [0, 1) and sum below 1")
        return self

    @property
    def learning_rate(self) -> float:
        """``lr``, or the model family's default when it is None."""
        return float(self.lr) if self.lr is not None else models.DEFAULT_LR[self.model]


class Callbacks:
    """Hooks the loop calls; override what you need. ``check`` may raise JobStopped/JobCancelled."""

    def on_start(self, *, epoch: int, step: int, resumed: bool) -> None:
        """Training starts after ``epoch`` finished epochs and ``step`` optimizer steps."""

    def on_train_point(self, step: int, epoch: int, loss: float, accuracy: float, samples_per_s: float) -> None:
        """Every ``log_every`` optimizer steps: the running train loss, accuracy and speed."""
        pass

    def on_epoch_end(self, epoch: int, metrics: dict, checkpoint_path: Path) -> None:
        """An epoch finished: its validation metrics and the checkpoint just written."""
        pass

    def on_checkpoint(self, path: Path) -> None:
        """A checkpoint file was (re)written."""

    def before_checkpoint(self, path: Path, sha256: str) -> None:
        """``path`` is about to be rewritten with bytes of this sha256 (so a kill right after
        the rename does not make the new file look corrupted)."""

    def checkpoint_problem(self, path: Path) -> str | None:
        """Why the file at ``path`` must not be resumed from (e.g. its sha256 differs from the
        one recorded), or None when nothing is known against it."""
        return None

    def on_checkpoint_rejected(self, path: Path, reason: str, fallback: str) -> None:
        """A checkpoint could not be used; training goes on from ``fallback`` instead."""

    def check(self) -> None:
        """Called between steps; raise JobStopped or JobCancelled to end training there."""
        pass

    def on_pause(self, reason: str) -> None:
        """Training waits (low battery, not charging); ``reason`` says why."""
        pass

    def on_resume(self) -> None:
        """Training continues after a pause."""
        pass


def _serialize(ckpt: dict) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(ckpt, buf)
    return buf.getvalue()


class _Writer:
    """Writes an epoch's checkpoint files in a background thread, so their fsync overlaps the
    next epoch's training instead of stalling it. At most one batch of files is in flight;
    ``wait()`` returns the paths made durable and the write's error (None if all went well)."""

    def __init__(self):
        self._thread: threading.Thread | None = None
        self._paths: list[Path] = []
        self._error: BaseException | None = None

    def submit(self, items: list[tuple[Path, bytes]]) -> None:
        if self._thread is not None:
            raise RuntimeError("checkpoint writer busy: call wait() first")

        def work():
            try:
                for path, data in items:  # best.pt before last.pt, which names the best epoch
                    write_bytes(path, data, what="checkpoint")
                    self._paths.append(path)
            except BaseException as exc:  # handed to the training thread by wait()
                self._error = exc

        self._paths = []
        self._thread = threading.Thread(target=work, name="checkpoint-writer")
        self._thread.start()

    def wait(self) -> tuple[list[Path], BaseException | None]:
        if self._thread is None:
            return [], None
        self._thread.join()
        self._thread = None
        paths, self._paths = self._paths, []
        error, self._error = self._error, None
        return paths, error


def read_checkpoint(path) -> dict:
    """The checkpoint dict at ``path`` (tensors on CPU); ConfigError if it is not one of ours."""
    import torch

    try:
        ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or garbled: zip, pickle and EOF errors alike
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: cannot read checkpoint ({reason})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path}: not a pocketops checkpoint")
    return ckpt


def load_checkpoint(path) -> tuple:
    """``(model in eval mode, checkpoint dict)`` from a checkpoint written by the Trainer."""
    from core.optional import require

    require("torch", "loading a checkpoint")
    ckpt = read_checkpoint(path)
    model = models.build_model(ckpt["model_args"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt


class Trainer:
    """Train one model on one dataset; ``fit()`` returns the summary."""

    def __init__(self, cfg: TrainConfig, arrays: Arrays, ckpt_dir, callbacks: Callbacks | None = None):
        self.cfg = cfg.validate()
        self.arrays = arrays
        self.ckpt_dir = Path(ckpt_dir)
        self.cb = callbacks or Callbacks()
        self.last_path = self.ckpt_dir / "last.pt"
        self.best_path = self.ckpt_dir / "best.pt"
        self.sizes = models.check_config(cfg.model, arrays.input_shape, len(arrays.classes), cfg.preset, arrays.input_dtype,
                                          cfg.arch)

    # -- pieces --------------------------------------------------------------------------
    def _tensors(self):
        import torch

        a = self.arrays
        tr, va, te = split_indices(a.y, seed=self.cfg.seed, val=self.cfg.val, test=self.cfg.test)
        dtype = torch.long if a.input_dtype == "int64" else torch.float32
        X = torch.as_tensor(a.X, dtype=dtype)
        y = torch.as_tensor(a.y, dtype=torch.long)
        return {name: (X[idx], y[idx]) for name, idx in (("train", tr), ("val", va), ("test", te))}, tr

    def _evaluate(self, model, X, y) -> tuple[float | None, float | None]:
        import torch
        import torch.nn.functional as F

        if len(y) == 0:
            return None, None
        model.eval()
        loss_sum, correct = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(y), EVAL_BATCH):
                logits = model(X[i:i + EVAL_BATCH])
                loss_sum += F.cross_entropy(logits, y[i:i + EVAL_BATCH], reduction="sum").item()
                correct += int((logits.argmax(1) == y[i:i + EVAL_BATCH]).sum())
        model.train()
        return correct / len(y), loss_sum / len(y)

    def _checkpoint(self, model, opt, state: dict) -> dict:
        a = self.arrays
        return {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "model_args": self.model_args, "state_dict": model.state_dict(), "optimizer": opt.state_dict(),
            "config": self.cfg.to_dict(), "classes": list(a.classes), "dataset": a.name,
            "dataset_fingerprint": a.fingerprint,
            "input": {"shape": list(a.input_shape), "dtype": a.input_dtype, "meta": a.meta},
            **state,
        }

    def _wait_for_power(self) -> None:
        """Pause while the battery is low and not charging; check() keeps stop/cancel prompt."""
        cfg = self.cfg
        if not cfg.pause_on_low_battery:
            return
        reading = telemetry.battery()
        if not _low(reading, cfg.min_battery):
            return
        self.cb.on_pause(f"battery at {reading['battery_percent']:.0f}% and not charging (minimum {cfg.min_battery:.0f}%)")
        while True:
            deadline = time.monotonic() + PAUSE_POLL_S
            while time.monotonic() < deadline:
                self.cb.check()
                time.sleep(PAUSE_CHECK_S)
            reading = telemetry.battery(max_age=PAUSE_POLL_S / 2)
            if not _low(reading, cfg.min_battery + RESUME_MARGIN):
                break
        self.cb.on_resume()

    # -- the loop ------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train (resuming from the last checkpoint) until the epochs are done or patience runs out; the summary: best val and test figures, sizes, speed, the best checkpoint."""
        from core.optional import require

        torch = require("torch", "training")
        import torch.nn.functional as F

        cfg, a = self.cfg, self.arrays
        # 1. threads, seeds, data
        global _TORCH_DEFAULT_THREADS
        if _TORCH_DEFAULT_THREADS is None:  # before any run of this process changed it
            _TORCH_DEFAULT_THREADS = torch.get_num_threads()
        torch.set_num_threads(cfg.threads or auto_threads(self.sizes["params"], _TORCH_DEFAULT_THREADS))
        torch.manual_seed(cfg.seed)
        data, train_idx = self._tensors()
        # 2. model (tabular models carry the training split's standardisation) and optimizer
        self.model_args = models.model_args(cfg.model, a.input_shape, len(a.classes), cfg.preset, a.input_dtype, cfg.arch)
        model = models.build_model(self.model_args)
        if a.kind == "csv":
            models.set_standardization(model, a.X[train_idx].mean(0), a.X[train_idx].std(0))
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        # 3. resume from last.pt when there is one
        st = {"epoch": 0, "step": 0, "batch_in_epoch": 0, "best": {"epoch": 0, "val_accuracy": -1.0, "val_loss": None},
              "history": [], "stopped_early": False, "train_time_s": 0.0, "samples_seen": 0, "resumes": []}
        ckpt = self._resume_point()
        resumed = ckpt is not None
        if resumed:
            model.load_state_dict(ckpt["state_dict"])
            opt.load_state_dict(ckpt["optimizer"])
            for g in opt.param_groups:  # a resumed run may have been given another lr
                g["lr"] = cfg.learning_rate
            for key in st:
                st[key] = ckpt.get(key, st[key])
            st["resumes"] = list(st["resumes"]) + [{"epoch": st["epoch"], "step": st["step"],
                                                      "batch_in_epoch": st["batch_in_epoch"], "ts": time.time()}]
        self.cb.on_start(epoch=st["epoch"], step=st["step"], resumed=resumed)
        wake = telemetry.wake_lock(True)
        self._writer = _Writer()
        self._best_state = None
        try:
            self._loop(torch, F, model, opt, data, st)
        finally:
            try:
                self._drain()
            finally:
                if wake:
                    telemetry.wake_lock(False)
        # 4. the best epoch's weights on the held-out test split
        if self._best_state is not None:  # this process trained the best epoch: no file read
            model.load_state_dict(self._best_state)
            best_model = model
        else:
            best_model = load_checkpoint(self.best_path)[0] if self.best_path.exists() else model
        test_acc, test_loss = self._evaluate(best_model, *data["test"])
        best = st["best"]
        return {
            "val_accuracy": best["val_accuracy"], "val_loss": best["val_loss"], "test_accuracy": test_acc,
            "test_loss": test_loss, "best_epoch": best["epoch"], "epochs_done": st["epoch"],
            "samples_per_s": round(st["samples_seen"] / st["train_time_s"], 1) if st["train_time_s"] else None,
            "train_time_s": round(st["train_time_s"], 3), "params": self.sizes["params"],
            "size_bytes": self.sizes["size_bytes"], "stopped_early": st["stopped_early"],
            "steps": st["step"], "checkpoint": str(self.best_path), "resumed": resumed,
        }

    def _drain(self) -> None:
        """Record the files the background writer finished, then raise its error if any
        (a full disk after best.pt but before last.pt still records best.pt's new sha256)."""
        paths, error = self._writer.wait()
        for path in paths:
            self.cb.on_checkpoint(path)
        if error is not None:
            raise error

    def _resume_point(self) -> dict | None:
        """The newest usable checkpoint (last.pt, else best.pt) or None to start from scratch.

        A file that is truncated, garbled or not the one the store recorded is skipped and
        reported through ``on_checkpoint_rejected``; one for other data or settings is an error.
        """
        candidates = [p for p in (self.last_path, self.best_path) if p.exists()]
        for i, path in enumerate(candidates):
            problem = self.cb.checkpoint_problem(path)
            ckpt = None
            if problem is None:
                try:
                    ckpt = read_checkpoint(path)
                except ConfigError as exc:
                    problem = str(exc)
            if ckpt is not None:
                self._check_compatible(ckpt, path)
                return ckpt
            rest = candidates[i + 1:]
            self.cb.on_checkpoint_rejected(path, problem, rest[0].name if rest else "scratch")
        return None

    def _check_compatible(self, ckpt: dict, path: Path | None = None) -> None:
        path = path or self.last_path
        if ckpt.get("dataset_fingerprint") != self.arrays.fingerprint:
            raise ConfigError(f"{path}: checkpoint was trained on other data (dataset fingerprint differs); "
                              "start a new run instead of resuming")
        if ckpt.get("model_args") != self.model_args:
            raise ConfigError(f"{path}: checkpoint holds another model ({ckpt.get('model_args')}); start a new run")
        old = ckpt.get("config", {})
        for key in ("batch_size", "accum", "seed", "val", "test"):
            if key in old and old[key] != getattr(self.cfg, key):
                raise ConfigError(f"{path}: cannot resume with {key}={getattr(self.cfg, key)!r}, "
                                  f"the checkpoint used {old[key]!r}")

    def _loop(self, torch, F, model, opt, data, st: dict) -> None:
        cfg = self.cfg
        X_tr, y_tr = data["train"]
        n_train, bs, accum = len(y_tr), cfg.batch_size, cfg.accum
        n_batches = (n_train + bs - 1) // bs
        if st["stopped_early"]:  # a run that stopped early is finished, even if re-run after a kill
            return
        model.train()
        self._wait_for_power()
        for epoch in range(st["epoch"] + 1, cfg.epochs + 1):
            # Each epoch's order depends only on (seed, epoch), so a resumed epoch replays it.
            gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
            order = torch.randperm(n_train, generator=gen)
            start_batch = st["batch_in_epoch"]
            t_start = time.perf_counter()
            seen = 0
            # Per-batch bookkeeping stays off the hot path: keep the tensors, reduce at a point.
            pt_losses: list = []
            pt_preds: list = []
            pt_targets: list = []
            pt_t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            pending = 0
            try:
                for b in range(start_batch, n_batches):
                    self.cb.check()
                    if b and b % BATTERY_EVERY == 0:
                        t_pause = time.perf_counter()
                        self._wait_for_power()
                        t_start += time.perf_counter() - t_pause  # a pause is not training time
                    idx = order[b * bs:(b + 1) * bs]
                    xb, yb = X_tr[idx], y_tr[idx]
                    logits = model(xb)
                    loss = F.cross_entropy(logits, yb)
                    if accum > 1:
                        # Weigh each batch by its share of its group's samples, so a group of
                        # ``accum`` batches steps with exactly the gradient of one batch of
                        # ``accum × batch_size`` (a short last batch included).
                        group = b - b % accum
                        group_n = min((group + accum) * bs, n_train) - group * bs
                        (loss * (len(yb) / group_n)).backward()
                    else:
                        loss.backward()
                    pending += 1
                    seen += len(yb)
                    pt_losses.append(loss.detach())
                    pt_preds.append(logits.detach().argmax(1))
                    pt_targets.append(yb)
                    if pending == accum or b == n_batches - 1:
                        opt.step()
                        opt.zero_grad(set_to_none=True)
                        pending = 0
                        st["step"] += 1
                        st["batch_in_epoch"] = b + 1
                        if st["step"] % cfg.log_every == 0:
                            t = time.perf_counter()
                            targets = torch.cat(pt_targets)
                            sizes = torch.tensor([len(y_) for y_ in pt_targets], dtype=torch.float32)
                            loss_mean = float((torch.stack(pt_losses) * sizes).sum() / sizes.sum())
                            accuracy = float((torch.cat(pt_preds) == targets).float().mean())
                            if not math.isfinite(loss_mean):
                                raise ConfigError(f"training diverged: the loss became {loss_mean} at step {st['step']} "
                                                  f"(epoch {epoch}); lower the learning rate (now {cfg.learning_rate:g})")
                            self.cb.on_train_point(st["step"], epoch, loss_mean, accuracy, len(targets) / max(t - pt_t, 1e-9))
                            pt_losses, pt_preds, pt_targets, pt_t = [], [], [], t
            except JobStopped:
                # Keep the position at the last finished optimizer step; a half-accumulated
                # group is simply redone.
                st["train_time_s"] += time.perf_counter() - t_start
                st["samples_seen"] += seen
                self._drain()
                data = _serialize(self._checkpoint(model, opt, dict(st)))
                self.cb.before_checkpoint(self.last_path, hashlib.sha256(data).hexdigest())
                write_bytes(self.last_path, data, what="checkpoint")
                self.cb.on_checkpoint(self.last_path)
                raise
            train_s = time.perf_counter() - t_start
            st["train_time_s"] += train_s
            st["samples_seen"] += seen
            # validation, best, checkpoints, early stopping
            val_acc, val_loss = self._evaluate(model, *data["val"])
            st["epoch"], st["batch_in_epoch"] = epoch, 0
            improved = val_acc is not None and (
                val_acc > st["best"]["val_accuracy"]
                or (val_acc == st["best"]["val_accuracy"] and (st["best"]["val_loss"] is None or val_loss < st["best"]["val_loss"]))
            )
            if improved or st["best"]["epoch"] == 0:
                st["best"] = {"epoch": epoch, "val_accuracy": val_acc, "val_loss": val_loss}
                self._best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            entry = {"epoch": epoch, "step": st["step"], "val_accuracy": val_acc, "val_loss": val_loss,
                     "samples_per_s": round(seen / max(train_s, 1e-9), 1) if seen else None}
            st["history"] = list(st["history"]) + [entry]
            st["stopped_early"] = epoch - st["best"]["epoch"] >= cfg.patience and epoch < cfg.epochs
            self._drain()  # the previous epoch's files are on disk now
            last = _serialize(self._checkpoint(model, opt, dict(st)))
            files = [(self.best_path, last)] if st["best"]["epoch"] == epoch else []
            files.append((self.last_path, last))
            digest = hashlib.sha256(last).hexdigest()
            for path, _ in files:
                self.cb.before_checkpoint(path, digest)
            self._writer.submit(files)
            metrics = dict(entry, best_epoch=st["best"]["epoch"], best_val_accuracy=st["best"]["val_accuracy"],
                           best_val_loss=st["best"]["val_loss"], stopped_early=st["stopped_early"])
            self.cb.on_epoch_end(epoch, metrics, self.last_path)
            if st["stopped_early"]:
                break


def auto_threads(params: int, available: int) -> int:
    """Torch threads when the config does not say: 1 for small models.

    At batch 8 a model under a million parameters is bound by per-op dispatch, so more
    threads only add synchronisation: here digits cnn/small ran at 1,850 samples/s on 1
    thread vs 1,300 on 2 — and ~150 on 2 while other processes kept the cores busy, as
    OpenMP threads wait on each other (a phone's background load does the same).
    """
    return 1 if params < AUTO_ONE_THREAD_BELOW else max(1, available)


def _low(reading: dict, threshold: float) -> bool:
    """Battery known, below ``threshold`` and known not to be charging."""
    pct, charging = reading.get("battery_percent"), reading.get("charging")
    return pct is not None and pct < threshold and charging == 0

