"""A sweep's search space: what Optuna may choose per model family, checked before anything runs.

A space maps parameter names to a range (``{low, high, log?, step?}``), a list of choices
(``{choices: [...]}``) or one fixed value. Each family has a default space sized to the
dataset and the model-size limit (:func:`core.models.check_config`); a YAML/JSON file
overrides parameters of it (``--space FILE``). Every check names the file, the line and the
key, so a bad file is one line and nothing is queued. No optuna import here (the dashboard
builds spaces); :func:`distributions` converts lazily for the sweep job.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import models
from core.errors import ConfigError

# Parameters every family takes (training settings) and those of each family (its arch).
COMMON = ("lr", "weight_decay", "batch_size")
FAMILY_PARAMS = {"mlp": ("layers", "width"), "cnn": ("layers", "channels", "hidden"),
                 "transformer": ("layers", "d_model", "heads", "ff")}
FIXED_ONLY = ("epochs", "patience")  # may be set in a file, never searched
INT_PARAMS = {"batch_size", "layers", "width", "channels", "hidden", "d_model", "heads", "ff", "epochs", "patience"}
MAX_LAYERS = {"mlp": 4, "cnn": 4, "transformer": 6}


@dataclass(frozen=True)
class Param:
    """One searched parameter: a float/int range or a list of choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: int | None = None
    choices: tuple | None = None

    def values_at_extremes(self) -> list:
        """The smallest and largest values this parameter can take (for the size check)."""
        if self.choices is not None:
            return [min(self.choices), max(self.choices)]
        return [self.low, self.high]

    def as_dict(self) -> dict:
        """The parameter as the JSON stored with the sweep (range or choices)."""
        if self.choices is not None:
            return {"choices": list(self.choices)}
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


def known_params(family: str) -> tuple[str, ...]:
    """The names a space for ``family`` may hold."""
    return COMMON + FAMILY_PARAMS[family] + FIXED_ONLY


def default_space(family: str, input_shape, n_classes: int, input_dtype: str = "float32") -> dict:
    """The family's default space on this data, its widest model shrunk until it fits the size limit."""
    lr = models.DEFAULT_LR[family]
    space: dict[str, Any] = {
        "lr": {"low": lr / 10, "high": lr * 10, "log": True},
        "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
        "batch_size": {"choices": [8, 16, 32, 64]},
    }
    if family == "mlp":
        space.update(layers={"low": 1, "high": 3}, width={"choices": [32, 64, 128, 256]})
    elif family == "cnn":
        space.update(layers={"low": 1, "high": 3}, channels={"choices": [8, 16, 32]}, hidden={"choices": [32, 64, 128]})
    else:
        space.update(layers={"low": 1, "high": 3}, d_model={"choices": [32, 64, 96, 128]}, heads={"choices": [2, 4]},
                     ff={"choices": [64, 128, 256]})
    widths = [k for k in ("width", "channels", "hidden", "d_model", "ff") if k in space]
    for _ in range(8):  # drop the widest choices until the largest model fits (big inputs)
        try:
            _check_size(family, _parse(space, family, "default space"), input_shape, n_classes, input_dtype, "default space")
            break
        except ConfigError:
            for key in widths:
                if len(space[key]["choices"]) > 1:
                    space[key]["choices"] = space[key]["choices"][:-1]
    return space


# -- parsing and checks ----------------------------------------------------------------------

def _where(source: str, lines: dict, key: str) -> str:
    line = lines.get(key)
    return f"{source} line {line}, {key!r}" if line else f"{source}, {key!r}"


def _number(value, what: str, *, whole: bool) -> float | int:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and whole and not float(value).is_integer():
        ok = False
    if not ok:
        raise ConfigError(f"{what} must be a {'whole number' if whole else 'number'}, not {value!r}")
    return int(value) if whole else float(value)


def _parse(raw: dict, family: str, source: str, lines: dict | None = None) -> dict:
    """``{name: Param | fixed value}`` from a raw mapping, each entry checked on its own."""
    lines = lines or {}
    known = known_params(family)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        where = _where(source, lines, str(key))
        if key not in known:
            raise ConfigError(f"{where}: unknown parameter for the {family} family; known: {', '.join(known)}")
        whole = key in INT_PARAMS
        if not isinstance(value, dict):
            if isinstance(value, list):
                raise ConfigError(f"{where}: give choices as {{choices: [...]}} or a range as {{low: .., high: ..}}")
            fixed = _number(value, where, whole=whole)
            _check_value(family, key, fixed, where)
            out[key] = fixed
            continue
        if key in FIXED_ONLY:
            raise ConfigError(f"{where}: {key} is a fixed setting (one number), not searched")
        extra = sorted(set(value) - {"low", "high", "log", "step", "choices"})
        if extra:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(map(str, extra))}; use low/high/log/step or choices")
        if "choices" in value:
            if set(value) - {"choices"}:
                raise ConfigError(f"{where}: give either choices or low/high, not both")
            choices = value["choices"]
            if not isinstance(choices, list) or not choices:
                raise ConfigError(f"{where}: empty choices; list at least one value")
            parsed = tuple(_number(c, where, whole=whole) for c in choices)
            for c in parsed:
                _check_value(family, key, c, where)
            out[key] = Param(key, choices=tuple(dict.fromkeys(parsed)))
            continue
        if "low" not in value or "high" not in value:
            raise ConfigError(f"{where}: a range needs both low and high")
        low, high = _number(value["low"], f"{where} low", whole=whole), _number(value["high"], f"{where} high", whole=whole)
        if low > high:
            raise ConfigError(f"{where}: empty range, low {low:g} is above high {high:g}")
        log = value.get("log", False)
        if not isinstance(log, bool):
            raise ConfigError(f"{where}: log must be true or false, not {log!r}")
        step = value.get("step")
        if step is not None:
            step = _number(step, f"{where} step", whole=True)
            if step < 1 or not whole:
                raise ConfigError(f"{where}: step must be a whole number ≥ 1 on a whole-number parameter")
            if log:
                raise ConfigError(f"{where}: step and log cannot be combined")
        if log and low <= 0:
            raise ConfigError(f"{where}: a log range needs low > 0, not {low:g}")
        _check_value(family, key, low, where)
        _check_value(family, key, high, where)
        out[key] = Param(key, low=low, high=high, log=log, step=step)
    return out


def _check_value(family: str, key: str, value, where: str) -> None:
    """A value the family cannot take, named with where it came from."""
    if key in ("lr",) and value <= 0:
        raise ConfigError(f"{where}: the learning rate must be > 0, not {value:g}")
    if key == "weight_decay" and value < 0:
        raise ConfigError(f"{where}: weight decay must be ≥ 0, not {value:g}")
    if key in INT_PARAMS and value < 1:
        raise ConfigError(f"{where}: {key} must be 1 or more, not {value:g}")
    if key == "layers" and value > MAX_LAYERS[family]:
        raise ConfigError(f"{where}: a {family} takes at most {MAX_LAYERS[family]} layers here, not {value:g}")


def _extremes(parsed: dict, key: str, default):
    entry = parsed.get(key, default)
    return entry.values_at_extremes() if isinstance(entry, Param) else [entry, entry]


def _arch_at(family: str, parsed: dict, pick: int) -> dict:
    """The arch of the smallest (pick 0) or largest (pick 1) model the space holds."""
    spec = models.SPECS[family]["small"]
    if family == "mlp":
        layers = _extremes(parsed, "layers", len(spec.hidden))[pick]
        return {"hidden": [_extremes(parsed, "width", spec.hidden[0])[pick]] * int(layers)}
    if family == "cnn":
        layers = _extremes(parsed, "layers", len(spec.channels))[pick]
        first = _extremes(parsed, "channels", spec.channels[0])[pick]
        return {"channels": [int(first) * 2 ** i for i in range(int(layers))],
                "hidden": _extremes(parsed, "hidden", spec.hidden)[pick]}
    return {"layers": _extremes(parsed, "layers", spec.layers)[pick], "d_model": _extremes(parsed, "d_model", spec.d_model)[pick],
            "heads": _extremes(parsed, "heads", spec.heads)[0], "ff": _extremes(parsed, "ff", spec.ff)[pick]}


def _check_size(family: str, parsed: dict, input_shape, n_classes: int, input_dtype: str, source: str) -> None:
    """The largest model of the space must fit the model-size limit (the device's budget)."""
    arch = _arch_at(family, parsed, 1)
    try:
        models.check_config(family, input_shape, n_classes, "small", input_dtype, _int_arch(arch))
    except ConfigError as exc:
        keys = [k for k in ("width", "channels", "hidden", "d_model", "ff", "layers") if k in parsed]
        raise ConfigError(f"{source}: the largest model of this space does not fit "
                          f"({', '.join(keys) or 'the family'}): {exc}") from None


def _int_arch(arch: dict) -> dict:
    return {k: [int(x) for x in v] if isinstance(v, list) else int(v) for k, v in arch.items()}


def _check_heads(parsed: dict, source: str, lines: dict) -> None:
    """Every d_model the space can choose must split into every heads count it can choose."""
    heads, d_model = parsed.get("heads", models.SPECS["transformer"]["small"].heads), parsed.get("d_model")
    if d_model is None:
        d_model = models.SPECS["transformer"]["small"].d_model
    head_values = list(heads.choices) if isinstance(heads, Param) and heads.choices else (
        [heads] if not isinstance(heads, Param) else list(range(int(heads.low), int(heads.high) + 1)))
    if isinstance(d_model, Param):
        if d_model.choices:
            d_values = list(d_model.choices)
        else:
            step = d_model.step or 1
            d_values = list(range(int(d_model.low), int(d_model.high) + 1, step))
    else:
        d_values = [d_model]
    for d in d_values:
        for h in head_values:
            if int(d) % int(h):
                raise ConfigError(f"{_where(source, lines, 'd_model')}: d_model {int(d)} does not split into {int(h)} heads; "
                                  "use multiples of every heads choice (e.g. {choices: [32, 64, 128]})")


@dataclass
class Space:
    """A checked search space for one family on one dataset."""

    family: str
    params: dict  # name -> Param (searched) or a fixed value

    def searched(self) -> dict[str, Param]:
        """The parameters Optuna searches (name → Param)."""
        return {k: v for k, v in self.params.items() if isinstance(v, Param)}

    def fixed(self) -> dict:
        """The settings held fixed for every trial (name → value)."""
        return {k: v for k, v in self.params.items() if not isinstance(v, Param)}

    def as_dict(self) -> dict:
        """The space as it is stored in the sweep row (and read back by :func:`from_dict`)."""
        return {k: v.as_dict() if isinstance(v, Param) else v for k, v in self.params.items()}

    def train_settings(self, values: dict) -> dict:
        """TrainConfig fields (lr, weight_decay, batch_size, epochs, patience, arch) for one trial's values."""
        merged = {**self.fixed(), **values}
        spec = models.SPECS[self.family]["small"]
        out = {k: merged[k] for k in ("lr", "weight_decay", "batch_size", "epochs", "patience") if k in merged}
        if "lr" in out:
            out["lr"] = float(out["lr"])
        if "weight_decay" in out:
            out["weight_decay"] = float(out["weight_decay"])
        for key in ("batch_size", "epochs", "patience"):
            if key in out:
                out[key] = int(out[key])
        if self.family == "mlp":
            layers = int(merged.get("layers", len(spec.hidden)))
            out["arch"] = {"hidden": [int(merged.get("width", spec.hidden[0]))] * layers}
        elif self.family == "cnn":
            layers = int(merged.get("layers", len(spec.channels)))
            first = int(merged.get("channels", spec.channels[0]))
            out["arch"] = {"channels": [first * 2 ** i for i in range(layers)], "hidden": int(merged.get("hidden", spec.hidden))}
        else:
            out["arch"] = {k: int(merged.get(k, getattr(spec, k))) for k in ("layers", "d_model", "heads", "ff")}
        return out


def build(family: str, input_shape, n_classes: int, input_dtype: str = "float32", *,
          override: dict | None = None, source: str = "space", lines: dict | None = None) -> Space:
    """The default space of ``family`` with ``override``'s entries replacing its own, fully checked."""
    if family not in models.FAMILIES:
        raise ConfigError(f"unknown model family {family!r}; choose one of {', '.join(models.FAMILIES)}")
    models.check_config(family, input_shape, n_classes, "tiny", input_dtype)  # the family fits the data at all
    base = _parse(default_space(family, input_shape, n_classes, input_dtype), family, "default space")
    parsed = {**base, **_parse(override or {}, family, source, lines)}
    if family == "transformer":
        _check_heads(parsed, source, lines or {})
    _check_size(family, parsed, input_shape, n_classes, input_dtype, source)
    return Space(family, parsed)


def from_dict(family: str, data: dict) -> Space:
    """A space stored by :meth:`Space.as_dict` (already checked when the sweep was queued)."""
    return Space(family, _parse(data, family, "stored space"))


def read_file(path: str | Path) -> tuple[dict, dict]:
    """``(mapping, {key: line})`` from a YAML or JSON space file; one-line ConfigError otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the space file ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; expected YAML or JSON") from None
    try:
        import yaml  # PyYAML comes with optuna (the sweep extra); JSON is read as YAML, so lines are known
    except ImportError:
        yaml = None
    if yaml is None:
        import json

        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
        lines: dict = {}
    else:
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}{where}: not valid YAML/JSON ({getattr(exc, 'problem', None) or exc})") from None
        lines = {}
        if node is not None and isinstance(node, yaml.MappingNode):
            lines = {k.value: k.start_mark.line + 1 for k, _ in node.value}
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of parameter names to ranges, e.g. lr: {{low: 0.0001, high: 0.01, log: true}}")
    return data, lines


def distributions(space: Space) -> dict:
    """Optuna distributions of the searched parameters (imports optuna)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for name, p in space.searched().items():
        if p.choices is not None:
            out[name] = CategoricalDistribution(list(p.choices))
        elif name in INT_PARAMS:
            out[name] = IntDistribution(int(p.low), int(p.high), log=p.log, step=p.step or 1)
        else:
            out[name] = FloatDistribution(float(p.low), float(p.high), log=p.log)
    return out
