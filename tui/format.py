"""Plan and release text shared by the dashboard and the headless commands (no Textual here); sizes from core.fmt."""
from __future__ import annotations

from core.fmt import fmt_bytes
from deployers.targets import release_label  # noqa: F401  (the one release label, for tui)


def render_plan(plan: dict, *, full: bool = False) -> str:
    """A deploy plan (``Plan.to_dict()``) as lines that fit a phone: files, sizes, cost, requirements, notes.

    The Deploy form shows the short layout; ``full`` is ``pocketops deploy --dry-run``'s, with
    aligned sizes, a total line and headings.
    """
    total = sum(int(f["size_bytes"]) for f in plan["files"])
    if not full:
        lines = [f"{plan['target']}: {len(plan['files'])} files, {fmt_bytes(total)}"]
        lines += [f"  {f['path']}  {fmt_bytes(f['size_bytes'])}" for f in plan["files"]]
        lines.append(f"cost ≈ ${plan['estimated_monthly_cost_usd']:.2f}/month")
        lines += [f"needs: {r}" for r in plan.get("requirements", [])]
        lines += [f"note: {n}" for n in plan.get("notes", [])]
        return "\n".join(lines)
    lines = [f"plan: {plan['target']} (dry run, nothing changed)", "files:"]
    width = max((len(f["path"]) for f in plan["files"]), default=0)
    for f in plan["files"]:
        lines.append(f"  {f['path']:<{width}}  {fmt_bytes(f['size_bytes']):>9}")
    lines.append(f"  {'total':<{width}}  {fmt_bytes(total):>9}")
    lines.append(f"estimated cost: ${plan['estimated_monthly_cost_usd']:.2f}/month")
    if plan.get("requirements"):
        lines.append("requirements:")
        lines += [f"  - {r}" for r in plan["requirements"]]
    if plan.get("notes"):
        lines.append("notes:")
        lines += [f"  - {n}" for n in plan["notes"]]
    return "\n".join(lines)
