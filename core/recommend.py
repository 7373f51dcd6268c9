"""Which variant to ship: the fastest (or smallest) whose accuracy drop stays within a budget.

:func:`recommend` is a pure function of the benchmark table, so tests need no model. The reason
is said in words, including why a tempting variant lost (e.g. "int8-dynamic is 4.9× slower than
fp32 on this device: ConvInteger").

Variants of several runtimes (ONNX Runtime, ExecuTorch, LiteRT: ``core.runtimes``) are judged
together, and the reason names the best variant of each other runtime with a ratio; a user who
ships inside an app is committed to one runtime, and the ``runtime`` preference restricts the pick.

The user's preference (fastest or smallest), accuracy budget and runtime are stored: a global default
and, per run, its own (:func:`load_prefs`, :func:`save_prefs`). :func:`pick` judges a run's
variants with them, and every place that names a recommended variant calls it (the Quantize
panel, the Deploy form, ``pocketops export``/``bench``/``models``, the export and bench jobs),
so they all name the same one.

:func:`reference_of` is the one rule for the fp32 reference that agreement, max |Δlogit| and the
accuracy drop are measured against (``core.bench.measure`` uses it too).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePath

from core.errors import ConfigError
from core.runtimes import RUNTIMES, SUFFIXES

PREFERENCES = ("latency", "size")
DEFAULT_PREFER = "latency"
DEFAULT_BUDGET_POINTS = 1.0
REFERENCE_NAME = "fp32"
# The export summary's per-variant fields (``pocketops export --json``), then the extra ones.
SUMMARY_FIELDS = ("variant_id", "name", "path", "size_bytes", "load_ms", "latency_p50_ms", "latency_p95_ms",
                  "accuracy", "agreement", "max_abs_logit_diff")
EXTRA_FIELDS = ("throughput_per_s", "peak_memory_mb", "threads", "status", "error", "runtime", "batch_method",
                "zip_bytes")
SLOWER_MARGIN = 1.10        # a variant more than 10 % slower than fp32 gets a note saying so
# Ops that exist because of quantization or fp16 (ConvInteger, QLinearConv, QGemm, DynamicQuantizeLinear,
# Cast, ...): the ones to name first when a variant is slower than fp32.
QUANT_MARKS = ("Integer", "Quant", "QLinear", "QGemm", "QAttention", "Cast")
LATENCY_TIE = 0.05          # latencies within 5 % are the same speed: timing noise on a busy phone
ANY_RUNTIME = "any"
RUNTIME_CHOICES = (ANY_RUNTIME, *RUNTIMES)   # the ``runtime`` preference: any, or the one the app ships
DEFAULT_RUNTIME = ANY_RUNTIME
# Where a column is narrow (the Quantize panel, `models list`): ORT, ET, LiteRT.
SHORT_LABELS = {"onnxruntime": "ORT", "executorch": "ET", "litert": "LiteRT"}


@dataclass(frozen=True)
class Recommendation:
    """The variant to deploy (None if none qualifies), why, notes for the user, and the rows it was picked from."""

    name: str | None
    variant_id: int | None
    reason: str
    notes: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)   # the input rows with derived figures

    def as_dict(self) -> dict:
        """The pick and its reason for JSON (notes and rows left out)."""
        return {"variant_id": self.variant_id, "name": self.name, "reason": self.reason}


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}×" if b else "∞×"


def runtime_name(row: dict) -> str:
    """The ``core.runtimes`` name of a row: its ``runtime``, else its file's suffix, else its name's prefix
    (``executorch-int8``: rows the benchmark harness names without a path), else onnxruntime (every
    variant made before the app runtimes came)."""
    if row.get("runtime") in RUNTIMES:
        return row["runtime"]
    found = SUFFIXES.get(PurePath(str(row.get("path") or "")).suffix.lower())
    if found is not None:
        return found.name
    name = str(row.get("name") or "")
    return next((rt for rt in RUNTIMES if name.startswith(f"{rt}-")), "onnxruntime")


def runtime_label(name: str) -> str:
    """What a runtime is called in sentences: ONNX Runtime, ExecuTorch, LiteRT."""
    return RUNTIMES[name].label if name in RUNTIMES else name


def _new_op(row: dict, reference: dict | None) -> str | None:
    """The op that costs this variant most time and that the reference does not run at all."""
    ops = row.get("ops_us") or {}
    known = set((reference or {}).get("ops_us") or {})
    def quantish(op: str) -> bool:
        return any(mark in op for mark in QUANT_MARKS)

    fresh = [(quantish(op), us, op) for op, us in ops.items() if op not in known]
    if fresh:
        return max(fresh)[2]
    return max(((quantish(op), us, op) for op, us in ops.items()), default=(0, 0, None))[2]


def _derive(rows: list[dict], reference: dict | None, budget_points: float) -> list[dict]:
    out = []
    ref_acc = reference.get("accuracy") if reference else None
    ref_lat = reference.get("latency_p50_ms") if reference else None
    ref_size = reference.get("size_bytes") if reference else None
    for row in rows:
        row = dict(row)
        row["runtime"] = runtime_name(row)
        measured = row.get("latency_p50_ms") is not None and row.get("accuracy") is not None
        row["drop_points"] = (ref_acc - row["accuracy"]) * 100 if measured and ref_acc is not None else None
        row["speedup"] = ref_lat / row["latency_p50_ms"] if measured and ref_lat else None
        row["size_ratio"] = row["size_bytes"] / ref_size if ref_size and row.get("size_bytes") else None
        # A hair of float noise must not push a variant that matches fp32 out of a zero budget.
        row["eligible"] = measured and (row["drop_points"] is None or row["drop_points"] <= budget_points + 1e-9)
        out.append(row)
    return out


def reference_of(rows: list[dict], name: str | None = None) -> dict | None:
    """The fp32 reference among ``rows`` (dicts with ``name``, and ``accuracy`` once measured).

    The one rule: the row called ``name`` when the caller names one (``pocketops bench
    --reference``); else the row named ``fp32``; else the first whose name contains ``fp32``
    (``cnn/fp32``, ``laptop-fp32``), an ONNX Runtime one before another runtime's
    (``executorch-fp32`` is the reference only of a table without an ONNX fp32); else the most
    accurate (the first one when none has an accuracy yet). None only for no rows.
    """
    if name is not None:
        named = next((r for r in rows if r.get("name") == name), None)
        if named is not None:
            return named
    exact = next((r for r in rows if r.get("name") == REFERENCE_NAME), None)
    if exact is not None:
        return exact
    like = [r for r in rows if REFERENCE_NAME in str(r.get("name") or "")]
    if like:
        return next((r for r in like if runtime_name(r) == "onnxruntime"), like[0])
    if not rows:
        return None
    return max(rows, key=lambda r: -1.0 if r.get("accuracy") is None else r["accuracy"])


def measured_rows(rows: list[dict]) -> list[dict]:
    """The rows with both a batch-1 latency and an accuracy (the ones a recommendation can judge)."""
    return [r for r in rows if r.get("latency_p50_ms") is not None and r.get("accuracy") is not None]


def _best(rows: list[dict], prefer: str) -> dict:
    """The pick among eligible ``rows``: the fastest (the smaller file among those within noise) or the smallest."""
    if prefer == "latency":
        fastest = min(r["latency_p50_ms"] for r in rows)
        rows = [r for r in rows if r["latency_p50_ms"] <= fastest * (1 + LATENCY_TIE)]
    return min(rows, key=lambda r: (r["size_bytes"] or 0, r["latency_p50_ms"], r["name"]))


def _versus(best: dict, other: dict, prefer: str) -> str | None:
    """How ``best`` compares with ``other`` (another runtime's best) on what the user optimises."""
    what = f"the best {runtime_label(other['runtime'])} variant ({other['name']})"
    if prefer == "latency":
        ratio = other["latency_p50_ms"] / best["latency_p50_ms"] if best["latency_p50_ms"] else None
        if ratio is None:
            return None
        if abs(ratio - 1) <= LATENCY_TIE:
            return f"as fast as {what} (within {LATENCY_TIE:.0%})"
        return f"{_ratio(ratio, 1)} faster than {what}" if ratio > 1 else f"{what} is {_ratio(1, ratio)} faster"
    if not best.get("size_bytes") or not other.get("size_bytes"):
        return None
    ratio = other["size_bytes"] / best["size_bytes"]
    if abs(ratio - 1) < 0.05:
        return f"about the size of {what}"
    return f"{_ratio(ratio, 1)} smaller than {what}" if ratio > 1 else f"{what} is {_ratio(1, ratio)} smaller"


def recommend(rows: list[dict], *, prefer: str = DEFAULT_PREFER, budget_points: float = DEFAULT_BUDGET_POINTS,
              reference_name: str | None = None, torch_latency_p50_ms: float | None = None,
              runtime: str = DEFAULT_RUNTIME) -> Recommendation:
    """Pick a variant from benchmark rows.

    Each row has ``name`` and, once benchmarked, ``latency_p50_ms`` (at batch 1, whatever the
    runtime's ``batch_method``), ``accuracy`` (0..1) and ``size_bytes``; optional ``variant_id``,
    ``runtime`` (else told by :func:`runtime_name`) and ``ops_us`` (time per op type, to name a
    slow op). The accuracy drop is measured against the measured row :func:`reference_of` picks.
    Every runtime competes unless ``runtime`` names the one the app ships with; either way the
    reason compares the pick with the best variant of each other runtime.
    """
    if prefer not in PREFERENCES:
        raise ValueError(f"prefer must be one of {PREFERENCES}, not {prefer!r}")
    if budget_points < 0:
        raise ValueError(f"budget_points must be ≥ 0, not {budget_points}")
    if runtime not in RUNTIME_CHOICES:
        raise ValueError(f"runtime must be one of {RUNTIME_CHOICES}, not {runtime!r}")
    measured = measured_rows(rows)
    reference = reference_of(measured, reference_name)
    table = _derive(rows, reference, budget_points)
    if not measured:
        return Recommendation(None, None, "no variant has been benchmarked yet", [], table)
    ref_name = reference["name"]
    # Runtime labels and per-runtime comparisons only where runtimes compete (an ONNX-only table reads as before).
    several = len({r["runtime"] for r in measured_rows(table)}) > 1

    eligible = [r for r in table if r["eligible"]]
    candidates = eligible if runtime == ANY_RUNTIME else [r for r in eligible if r["runtime"] == runtime]
    if not candidates:
        label = runtime_label(runtime)
        if any(r["runtime"] == runtime for r in measured_rows(table)):
            why = f"no {label} variant is within the {budget_points:g}-point accuracy budget"
        else:
            why = f"no {label} variant has been benchmarked"
        return Recommendation(None, None, f"{why} (runtime preference {runtime}; set it to any to judge every "
                              "runtime)", [], table)
    best = _best(candidates, prefer)
    fastest = min(r["latency_p50_ms"] for r in candidates)

    kind = f"{runtime_label(runtime)} variant" if runtime != ANY_RUNTIME else "variant"
    who = f"{best['name']} ({runtime_label(best['runtime'])})" if several and runtime == ANY_RUNTIME else best["name"]
    within = f"within the {budget_points:g}-point accuracy budget"
    if runtime != ANY_RUNTIME:
        within += " (runtime preference)"
    if prefer == "latency":
        if best["latency_p50_ms"] <= fastest:
            lead = f"{who} is the fastest {kind} {within}"
        else:
            lead = f"{who} is as fast as the fastest (within {LATENCY_TIE:.0%}) and the smallest of those {within}"
    else:
        lead = f"{who} is the smallest {kind} {within}"
    facts = [f"p50 {best['latency_p50_ms']:.3f} ms at batch 1"]
    # The best of every other runtime, so a user choosing the app's runtime sees what each one costs.
    others, versus_ref = [], False
    for rt in RUNTIMES:
        pool = [r for r in eligible if r["runtime"] == rt]
        if rt != best["runtime"] and pool:
            contender = _best(pool, prefer)
            said = _versus(best, contender, prefer)
            if said:
                others.append(said)
                versus_ref = versus_ref or (contender["name"] == ref_name and prefer == "latency")
    if others:
        facts.append(" and ".join(others))
    if best["name"] != ref_name:
        if best["speedup"] and not versus_ref:  # else just said: the reference is another runtime's best
            if abs(best["speedup"] - 1) <= LATENCY_TIE:
                facts.append(f"as fast as {ref_name} (within {LATENCY_TIE:.0%})")
            elif best["speedup"] > 1:
                facts.append(f"{_ratio(best['speedup'], 1)} faster than {ref_name}")
            else:
                facts.append(f"{_ratio(1, best['speedup'])} slower than {ref_name}")
        if best["size_ratio"]:
            facts.append(f"{best['size_ratio']:.2f}× " + (f"the size of {ref_name}" if versus_ref else "its size"))
        if best["drop_points"] is not None:
            facts.append("the same accuracy" if abs(best["drop_points"]) < 0.05
                         else f"accuracy {-best['drop_points']:+.1f} points")
    if torch_latency_p50_ms:
        facts.append(f"{_ratio(torch_latency_p50_ms, best['latency_p50_ms'])} faster than torch eager")

    notes = []
    for row in table:
        if row["name"] in (best["name"], ref_name) or row.get("latency_p50_ms") is None or row.get("accuracy") is None:
            continue
        if row["speedup"] and row["speedup"] < 1 / SLOWER_MARGIN:
            op = _new_op(row, reference)
            notes.append(f"{row['name']} is {_ratio(1, row['speedup'])} slower than {ref_name} on this device"
                         + (f": {op}" if op else ""))
        if not row["eligible"]:
            notes.append(f"{row['name']} loses {row['drop_points']:.1f} points of accuracy (budget {budget_points:g})")
    int8 = [r for r in table if r["name"].startswith("int8") and r.get("accuracy") is not None]
    if int8 and not any(r["eligible"] for r in int8):
        notes.append(f"no int8 variant is within the {budget_points:g}-point budget")
    for rt in RUNTIMES:
        tried = [r for r in measured_rows(table) if r["runtime"] == rt]
        if several and tried and not any(r["eligible"] for r in tried):
            notes.append(f"no {runtime_label(rt)} variant is within the {budget_points:g}-point budget")
    reason = f"{lead}: {', '.join(facts)}"
    if notes:
        reason += "; " + "; ".join(notes)
    return Recommendation(best["name"], best.get("variant_id"), reason, notes, table)


# -- rows from the store ---------------------------------------------------------------------

def bench_rows(variants: list[dict]) -> list[dict]:
    """Variant rows flattened with their benchmark figures (what recommend() and the panel read).

    ``runtime`` is the one the export stored in the variant's meta (else told by its file's
    suffix: rows made before the app runtimes), ``zip_bytes`` its zip-compressed size when the
    export measured it, ``batch_method`` how its batch-8 throughput was measured.
    """
    out = []
    for v in variants:
        b = v.get("bench") or {}
        meta = v.get("meta") or {}
        row = {"variant_id": v["id"], "name": v["name"], "path": v["path"], "size_bytes": v["size_bytes"],
               "status": v["status"], **{k: b.get(k) for k in SUMMARY_FIELDS[4:] + EXTRA_FIELDS[:3]},
               "ops_us": b.get("ops_us") or {}, "error": b.get("error"), "runtime": meta.get("runtime") or b.get("runtime"),
               "batch_method": b.get("batch_method"), "zip_bytes": meta.get("zip_bytes")}
        row["runtime"] = runtime_name(row)
        out.append(row)
    return out


def baseline_of(variants: list[dict]) -> dict:
    """The torch eager baseline the export job stored on the fp32 variant ({} when none)."""
    for v in variants:
        if (v.get("meta") or {}).get("baseline"):
            return v["meta"]["baseline"]
    return {}


# -- stored preferences ----------------------------------------------------------------------

@dataclass(frozen=True)
class Prefs:
    """What the recommendation optimises, how many accuracy points it may give up, and which runtime it may pick."""

    prefer: str = DEFAULT_PREFER
    budget_points: float = DEFAULT_BUDGET_POINTS
    # Where they came from: "run" (its own), "global" (the default), "default" (none stored), "given" (one call).
    scope: str = "default"
    runtime: str = DEFAULT_RUNTIME   # "any", or the one runtime the app ships with (core.runtimes.RUNTIMES)


def check_prefs(prefer: str | None, budget_points: float | None, runtime: str | None = None) -> None:
    """A one-line ConfigError for a preference that is not ``latency``/``size``, a negative budget or an unknown runtime."""
    if prefer is not None and prefer not in PREFERENCES:
        raise ConfigError(f"prefer must be one of {', '.join(PREFERENCES)}, not {prefer!r}")
    if budget_points is not None and not float(budget_points) >= 0:
        raise ConfigError(f"budget_points must be ≥ 0, not {budget_points}")
    if runtime is not None and runtime not in RUNTIME_CHOICES:
        raise ConfigError(f"runtime must be one of {', '.join(RUNTIME_CHOICES)}, not {runtime!r}")


def load_prefs(db, run_id: int | None = None) -> Prefs:
    """The preferences for ``run_id``: its own, else the global default, else latency / 1 point / any runtime."""
    from store import prefs as store_prefs

    own, default = store_prefs.lookup(db, run_id)
    row, scope = (own, "run") if own else ((default, "global") if default else (None, "default"))
    if row is None:
        return Prefs()
    return Prefs(row["prefer"], float(row["budget_points"]), scope, row.get("runtime") or DEFAULT_RUNTIME)


def save_prefs(db, *, prefer: str | None = None, budget_points: float | None = None, runtime: str | None = None,
               run_id: int | None = None, as_default: bool = False) -> Prefs:
    """Store the preferences for ``run_id`` (None: the global default); what is not given keeps its value.

    ``as_default`` also makes them the global default (the Quantize panel: the choice a user
    made last is the one new runs start with). Returns what now applies to ``run_id``.
    """
    from store import prefs as store_prefs
    from store.db import transaction

    check_prefs(prefer, budget_points, runtime)
    with transaction(db):
        current = load_prefs(db, run_id)
        new = Prefs(prefer if prefer is not None else current.prefer,
                    float(budget_points) if budget_points is not None else current.budget_points,
                    "run" if run_id else "global", runtime if runtime is not None else current.runtime)
        targets = {int(run_id or store_prefs.GLOBAL)} | ({store_prefs.GLOBAL} if as_default else set())
        for target in sorted(targets):
            store_prefs.put(db, target, new.prefer, new.budget_points, new.runtime)
    return new


def run_of(variants: list[dict]) -> int | None:
    """The run all ``variants`` belong to, or None when they have none or several."""
    runs = {v.get("run_id") for v in variants}
    return runs.pop() if len(runs) == 1 else None


def override(db, variants: list[dict], prefer: str | None = None, budget_points: float | None = None,
             runtime: str | None = None) -> Prefs | None:
    """The stored preferences of ``variants``' run with ``prefer``/``budget_points``/``runtime`` replacing them for
    one call (``pocketops bench --prefer``); None when none is given (then the stored ones apply as they are)."""
    if prefer is None and budget_points is None and runtime is None:
        return None
    check_prefs(prefer, budget_points, runtime)
    stored = load_prefs(db, run_of(variants))
    return Prefs(prefer or stored.prefer, float(budget_points) if budget_points is not None else stored.budget_points,
                 "given", runtime or stored.runtime)


def pick(db, variants: list[dict], run_id: int | None = None, *, prefs: Prefs | None = None) -> Recommendation:
    """THE recommendation: store variant rows judged with the stored preferences of their run.

    ``run_id`` defaults to the run the variants share (the global default applies when they
    share none); ``prefs`` overrides the stored ones for this call only (``pocketops bench
    --prefer``). The torch baseline, when the export measured one, is named in the reason.
    """
    prefs = prefs or load_prefs(db, run_id if run_id is not None else run_of(variants))
    return judge(bench_rows(variants), prefs, baseline_of(variants))


def judge(rows: list[dict], prefs: Prefs, baseline: dict | None = None) -> Recommendation:
    """:func:`recommend` for :func:`bench_rows` with ``prefs`` (pure): what :func:`pick` computes, and what
    the Quantize panel renders from the rows and preferences it fetched."""
    return recommend(rows, prefer=prefs.prefer, budget_points=prefs.budget_points, runtime=prefs.runtime,
                     torch_latency_p50_ms=(baseline or {}).get("torch_latency_p50_ms"))
