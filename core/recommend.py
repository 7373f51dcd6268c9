"""Which variant to ship: the fastest (or smallest) whose accuracy drop stays within a budget.

A pure function of the benchmark table, so the panel, the CLI and the worker agree and tests
need no model. The reason is said in words, including why a tempting variant lost
(e.g. "int8-dynamic is 4.9× slower than fp32 on this device: ConvInteger").
"""
from __future__ import annotations

from dataclasses import dataclass, field

PREFERENCES = ("latency", "size")
DEFAULT_BUDGET_POINTS = 1.0
SLOWER_MARGIN = 1.10        # a variant more than 10 % slower than fp32 gets a note saying so
# Ops that exist because of quantization or fp16 (ConvInteger, QLinearConv, QGemm, DynamicQuantizeLinear,
# Cast, ...): the ones to name first when a variant is slower than fp32.
QUANT_MARKS = ("Integer", "Quant", "QLinear", "QGemm", "QAttention", "Cast")
LATENCY_TIE = 0.05          # latencies within 5 % are the same speed: timing noise on a busy phone


@dataclass(frozen=True)
class Recommendation:
    name: str | None
    variant_id: int | None
    reason: str
    notes: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)   # the input rows with derived figures

    def as_dict(self) -> dict:
        return {"variant_id": self.variant_id, "name": self.name, "reason": self.reason}


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}×" if b else "∞×"


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
        measured = row.get("latency_p50_ms") is not None and row.get("accuracy") is not None
        row["drop_points"] = (ref_acc - row["accuracy"]) * 100 if measured and ref_acc is not None else None
        row["speedup"] = ref_lat / row["latency_p50_ms"] if measured and ref_lat else None
        row["size_ratio"] = row["size_bytes"] / ref_size if ref_size and row.get("size_bytes") else None
        # A hair of float noise must not push a variant that matches fp32 out of a zero budget.
        row["eligible"] = measured and (row["drop_points"] is None or row["drop_points"] <= budget_points + 1e-9)
        out.append(row)
    return out


def recommend(rows: list[dict], *, prefer: str = "latency", budget_points: float = DEFAULT_BUDGET_POINTS,
              reference_name: str = "fp32", torch_latency_p50_ms: float | None = None) -> Recommendation:
    """Pick a variant from benchmark rows.

    Each row has ``name`` and, once benchmarked, ``latency_p50_ms``, ``accuracy`` (0..1) and
    ``size_bytes``; optional ``variant_id`` and ``ops_us`` (time per op type, to name a slow op).
    The accuracy drop is measured against the ``reference_name`` row (fp32), or against the
    most accurate row when there is none.
    """
    if prefer not in PREFERENCES:
        raise ValueError(f"prefer must be one of {PREFERENCES}, not {prefer!r}")
    if budget_points < 0:
        raise ValueError(f"budget_points must be ≥ 0, not {budget_points}")
    measured = [r for r in rows if r.get("latency_p50_ms") is not None and r.get("accuracy") is not None]
    reference = next((r for r in measured if r.get("name") == reference_name), None)
    if reference is None and measured:
        reference = max(measured, key=lambda r: r["accuracy"])
    table = _derive(rows, reference, budget_points)
    if not measured:
        return Recommendation(None, None, "no variant has been benchmarked yet", [], table)

    eligible = [r for r in table if r["eligible"]]
    if prefer == "latency":
        # Among variants as fast as the fastest (within noise), the smaller file wins.
        fastest = min(r["latency_p50_ms"] for r in eligible)
        tied = [r for r in eligible if r["latency_p50_ms"] <= fastest * (1 + LATENCY_TIE)]
        best = min(tied, key=lambda r: (r["size_bytes"] or 0, r["latency_p50_ms"], r["name"]))
    else:
        best = min(eligible, key=lambda r: (r["size_bytes"] or 0, r["latency_p50_ms"], r["name"]))
    ref_name = reference["name"]

    if prefer == "latency":
        if best["latency_p50_ms"] <= fastest:
            lead = f"{best['name']} is the fastest variant within the {budget_points:g}-point accuracy budget"
        else:
            lead = (f"{best['name']} is as fast as the fastest (within {LATENCY_TIE:.0%}) and the smallest of those "
                    f"within the {budget_points:g}-point accuracy budget")
    else:
        lead = f"{best['name']} is the smallest variant within the {budget_points:g}-point accuracy budget"
    facts = [f"p50 {best['latency_p50_ms']:.3f} ms at batch 1"]
    if best["name"] != ref_name:
        if best["speedup"]:
            if abs(best["speedup"] - 1) <= LATENCY_TIE:
                facts.append(f"as fast as {ref_name} (within {LATENCY_TIE:.0%})")
            elif best["speedup"] > 1:
                facts.append(f"{_ratio(best['speedup'], 1)} faster than {ref_name}")
            else:
                facts.append(f"{_ratio(1, best['speedup'])} slower than {ref_name}")
        if best["size_ratio"]:
            facts.append(f"{best['size_ratio']:.2f}× its size")
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
    reason = f"{lead}: {', '.join(facts)}"
    if notes:
        reason += "; " + "; ".join(notes)
    return Recommendation(best["name"], best.get("variant_id"), reason, notes, table)
