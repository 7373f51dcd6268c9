"""Model families (mlp, cnn, transformer) in three sizes, and their size arithmetic.

``estimate_params`` is plain arithmetic so the dashboard can show a model's size before any
torch import; a test checks it against the real modules. ``build_model`` imports torch lazily.

Input conventions (from :mod:`core.datasets`): images ``(N, 1, H, W)`` float32 in [0, 1];
tabular ``(N, F)`` raw float32 (the model standardises with buffers set from the training
split, so an exported ONNX model takes raw features); text ``(N, L)`` int64 byte tokens
(0 = pad, byte + 1). Everything here exports with the dynamo ONNX exporter.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from core.errors import ConfigError
from core.fmt import fmt_bytes

FAMILIES = ("mlp", "cnn", "transformer")
PRESETS = ("tiny", "small", "base")
MAX_MODEL_BYTES = 50 * 2**20
TEXT_VOCAB = 257  # 256 byte values + 1, index 0 is padding


@dataclass(frozen=True)
class MLPSpec:
    """Hidden layer widths of an mlp preset."""
    hidden: tuple[int, ...]


@dataclass(frozen=True)
class CNNSpec:
    """Conv channels per block and the dense layer's width of a cnn preset."""
    channels: tuple[int, ...]
    hidden: int


@dataclass(frozen=True)
class TransformerSpec:
    """Width, depth, attention heads and feed-forward width of a transformer preset."""
    d_model: int
    layers: int
    heads: int
    ff: int


SPECS = {
    "mlp": {"tiny": MLPSpec((32,)), "small": MLPSpec((128, 64)), "base": MLPSpec((256, 128))},
    "cnn": {"tiny": CNNSpec((8, 16), 32), "small": CNNSpec((32, 64), 128), "base": CNNSpec((32, 64, 128), 256)},
    "transformer": {
        "tiny": TransformerSpec(64, 2, 4, 128),
        "small": TransformerSpec(96, 3, 4, 192),
        "base": TransformerSpec(128, 4, 4, 256),
    },
}
DEFAULT_LR = {"mlp": 1e-3, "cnn": 2e-3, "transformer": 5e-4}
# What an ``arch`` override may set per family (a sweep searches these): the spec's own fields.
ARCH_FIELDS = {family: tuple(f.name for f in fields(type(SPECS[family]["small"]))) for family in FAMILIES}
DROPOUT = 0.1


def data_kind(input_shape, input_dtype: str = "float32") -> str:
    """'text', 'image' or 'tabular' from an input spec."""
    if input_dtype == "int64":
        return "text"
    if len(input_shape) == 3:
        return "image"
    if len(input_shape) == 1:
        return "tabular"
    raise ConfigError(f"unsupported input shape {list(input_shape)}: expected [1, H, W] (images), [F] (tabular) or [L] int64 (text)")


def _cnn_plan(h: int, w: int, n_blocks: int) -> tuple[list[bool], int, int]:
    """Which blocks pool (halve while the result stays ≥ 2×2) and the final spatial size."""
    pools = []
    for _ in range(n_blocks):
        pool = min(h, w) >= 4
        pools.append(pool)
        if pool:
            h, w = h // 2, w // 2
    return pools, h, w


def _linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def estimate_params(family: str, input_shape, n_classes: int, preset: str = "small", input_dtype: str = "float32",
                    arch: dict | None = None) -> int:
    """Trainable parameters of ``build_model`` for this config — arithmetic only, no torch."""
    spec = _spec(family, preset, arch)
    kind = data_kind(input_shape, input_dtype)
    if family == "mlp":
        n_in = 1
        for d in input_shape:
            n_in *= int(d)
        total = 0
        for h in spec.hidden:
            total += _linear(n_in, h)
            n_in = h
        return total + _linear(n_in, n_classes)
    if family == "cnn":
        c_in, h, w = (int(d) for d in input_shape)
        pools, h, w = _cnn_plan(h, w, len(spec.channels))
        total = 0
        for c in spec.channels:
            total += c_in * c * 9 + c
            c_in = c
        return total + _linear(c_in * h * w, spec.hidden) + _linear(spec.hidden, n_classes)
    d, ff = spec.d_model, spec.ff
    if kind == "text":
        seq = int(input_shape[0])
        embed = TEXT_VOCAB * d
    elif kind == "image":
        seq = int(input_shape[1])
        embed = _linear(int(input_shape[2]), d)
    else:
        seq = int(input_shape[0])
        embed = seq * d  # per-feature value projection; the position table acts as its bias
    layer = (3 * d * d + 3 * d) + _linear(d, d) + _linear(d, ff) + _linear(ff, d) + 4 * d
    return embed + seq * d + spec.layers * layer + 2 * d + _linear(d, n_classes)


def estimate_size_bytes(params: int) -> int:
    """fp32 weights: 4 bytes per parameter."""
    return int(params) * 4


def _spec(family: str, preset: str, arch: dict | None = None):
    if family not in FAMILIES:
        raise ConfigError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    spec = SPECS[family][preset]
    return replace(spec, **check_arch(family, arch)) if arch else spec


def check_arch(family: str, arch: dict | None) -> dict:
    """An architecture override (fields of the family's spec) checked and normalised; ConfigError naming the field."""
    if not arch:
        return {}
    if not isinstance(arch, dict):
        raise ConfigError(f"arch must be an object of {', '.join(ARCH_FIELDS[family])}, not {arch!r}")
    known = ARCH_FIELDS[family]
    unknown = sorted(set(arch) - set(known))
    if unknown:
        raise ConfigError(f"arch: unknown field(s) {', '.join(unknown)} for the {family} family; known: {', '.join(known)}")
    out = {}
    for key, value in arch.items():
        many = isinstance(value, (list, tuple))
        values = list(value) if many else [value]
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
            raise ConfigError(f"arch: {key} must be {'a list of ' if many else ''}whole numbers ≥ 1, not {value!r}")
        out[key] = tuple(values) if many else value
    for key in ("hidden", "channels"):
        if family == "mlp" and key == "hidden" and key in out and not isinstance(out[key], tuple):
            raise ConfigError(f"arch: hidden of an mlp is a list of layer widths, not {arch[key]!r}")
        if family == "cnn" and key == "channels" and key in out and not isinstance(out[key], tuple):
            raise ConfigError(f"arch: channels of a cnn is a list of block widths, not {arch[key]!r}")
    if family == "transformer":
        d_model = out.get("d_model", SPECS[family]["small"].d_model)
        heads = out.get("heads", SPECS[family]["small"].heads)
        if d_model % heads:
            raise ConfigError(f"arch: d_model {d_model} must be a multiple of heads {heads}")
    return out


def check_config(family: str, input_shape, n_classes: int, preset: str = "small", input_dtype: str = "float32",
                 arch: dict | None = None) -> dict:
    """``{"params", "size_bytes"}`` of a config that fits the data and the 50 MB limit, else ConfigError."""
    _spec(family, preset, arch)
    kind = data_kind(input_shape, input_dtype)
    if n_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, the dataset has {n_classes}")
    if family == "cnn" and kind != "image":
        raise ConfigError(f"the cnn family needs image data, this dataset is {kind}; use mlp or transformer")
    if kind == "text" and family != "transformer":
        raise ConfigError(f"text data needs the transformer family (byte tokens), not {family}")
    if kind == "image" and int(input_shape[0]) != 1:
        raise ConfigError(f"images must be grayscale with 1 channel, found {input_shape[0]} channels")
    params = estimate_params(family, input_shape, n_classes, preset, input_dtype, arch)
    size = estimate_size_bytes(params)
    if size > MAX_MODEL_BYTES:
        what = f"{family} {_arch_text(arch)}" if arch else f"{family}/{preset}"
        raise ConfigError(
            f"{what} on input {list(input_shape)} has {params:,} parameters = {fmt_bytes(size)} (fp32), "
            f"over the {MAX_MODEL_BYTES / 2**20:.0f} MB limit; pick a smaller preset, the cnn family, or smaller inputs"
        )
    return {"params": params, "size_bytes": size}


def _arch_text(arch: dict) -> str:
    return ", ".join(f"{k}={list(v) if isinstance(v, (list, tuple)) else v}" for k, v in arch.items())


def model_args(family: str, input_shape, n_classes: int, preset: str = "small", input_dtype: str = "float32",
               arch: dict | None = None) -> dict:
    """The self-describing dict that ``build_model`` takes and checkpoints store."""
    args = {"family": family, "preset": preset, "input_shape": [int(d) for d in input_shape],
            "n_classes": int(n_classes), "input_dtype": input_dtype, "dropout": DROPOUT}
    if arch:  # only when given, so the model_args of runs without one stay as they were
        args["arch"] = {k: list(v) if isinstance(v, tuple) else v for k, v in check_arch(family, arch).items()}
    return args


def build_model(model_args: dict):
    """A fresh ``torch.nn.Module`` for ``model_args`` (see :func:`model_args`)."""
    from core.optional import require

    require("torch", "building a model")
    from core import nets as _nets

    family = model_args["family"]
    spec = _spec(family, model_args.get("preset", "small"), model_args.get("arch"))
    shape = list(model_args["input_shape"])
    n_classes = int(model_args["n_classes"])
    kind = data_kind(shape, model_args.get("input_dtype", "float32"))
    dropout = float(model_args.get("dropout", DROPOUT))
    if family == "mlp":
        return _nets.MLP(shape, n_classes, spec.hidden, dropout, standardize=kind == "tabular")
    if family == "cnn":
        pools, h, w = _cnn_plan(shape[1], shape[2], len(spec.channels))
        return _nets.CNN(shape[0], n_classes, spec.channels, pools, h * w, spec.hidden, dropout)
    return _nets.Transformer(kind, shape, n_classes, spec.d_model, spec.layers, spec.heads, spec.ff, dropout, TEXT_VOCAB)


def set_standardization(model, mean, std) -> None:
    """Store the training split's feature mean/std inside a tabular model (no-op otherwise)."""
    import torch

    if not hasattr(model, "feature_mean"):
        return
    mean = torch.as_tensor(mean, dtype=torch.float32)
    std = torch.as_tensor(std, dtype=torch.float32)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))  # a constant column stays as is
    model.feature_mean.copy_(mean)
    model.feature_std.copy_(std)
