"""The Costs panel by taps alone at 40×20, 48×24 and 120×40: see the bars and a paused
deployment, set a budget through the dialog, ask for a resume (a queued costs job)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

import store
from store import costs as store_costs
from store import jobs
from tests.test_touch_loop import assert_buttons_on_screen, has_footer_key, pick, tap, tap_key, wait_for
from tui.app import make_app

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.parametrize("size", [(40, 20), (48, 24), (120, 40)])
async def test_costs_panel_by_taps(tmp_path, size):
    from demo_costs import seed

    from tui.dialogs import ConfirmDialog
    from tui.panels.costs import BudgetDialog

    db_path = tmp_path / "c.db"
    db = store.connect(db_path)
    ids = seed(db)
    app = make_app(db_path, poll_interval=0.2, sample_device=False)
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: app.ready, "store set up", 60)
        await tap(pilot, app, "#tab-costs")
        panel = app.current_panel
        assert panel.id == "panel-costs"
        await wait_for(pilot, lambda: panel.polls >= 1 and panel.data is not None, "costs shown", 60)
        if size[0] == 40:
            # Every tab (Costs is the last) lies inside the phone's width, each tappable.
            tabs = list(app.screen.query(".panel-tab"))
            assert len(tabs) == 6 and all(t.region.width >= 4 for t in tabs)
            assert app.screen.query_one("#tab-costs").region.right <= size[0], tabs[-1].region
        budgets = str(panel.query_one("#costs-budgets").render())
        assert "█" in budgets and "spaces hard" in budgets
        # The paused Space is selected first and says why it stopped.
        await wait_for(pilot, lambda: "STOPPED" in str(panel.query_one("#costs-selected").render()),
                       "paused deployment shown", 30)
        assert "hard spaces budget" in str(panel.query_one("#costs-selected").render())

        # Set a budget by taps: Budget, pick Google Cloud, (type) 3, Set.
        await tap_key(pilot, app, "b")
        await wait_for(pilot, lambda: isinstance(app.screen, BudgetDialog), "budget dialog", 30)
        dialog = app.screen
        assert_buttons_on_screen(app, dialog)
        await pick(pilot, app, "#scope", 3)
        assert dialog.query_one("#scope").value == "gcp"
        dialog.query_one("#amount").value = "-2"              # bad input stays in the form
        await tap(pilot, app, "#set")
        assert isinstance(app.screen, BudgetDialog) and "non-negative" in str(dialog.query_one("#error").render())
        dialog.query_one("#amount").value = "3"
        # A button ignores a press during its pressed effect: wait for it to end.
        await wait_for(pilot, lambda: not dialog.query_one("#set").has_class("-active"), "Set released", 30)
        await tap(pilot, app, "#set")
        await wait_for(pilot, lambda: store_costs.get_budget(db, "gcp") is not None, "gcp budget stored", 60)
        budget = store_costs.get_budget(db, "gcp")
        assert budget["amount_usd"] == 3.0 and budget["hard"] and budget["warn"] == [50.0, 90.0]
        assert store_costs.audit_log(db, action="budget-set")[0]["who"] == "dashboard"
        await wait_for(pilot, lambda: "gcp hard" in str(panel.query_one("#costs-budgets").render()),
                       "new budget's bar", 30)

        # Resume the paused Space: Resume, confirm; the worker's job is queued.
        await wait_for(pilot, lambda: has_footer_key(app, "r"), "Costs footer", 30)
        await tap_key(pilot, app, "r")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), "confirm", 30)
        assert_buttons_on_screen(app, app.screen)
        await tap(pilot, app, "#yes")

        def resume_queued() -> bool:
            return any(j["kind"] == "costs" and j["payload"].get("resume_deployment_id") == ids["spaces"]
                       for j in jobs.list_jobs(db))

        await wait_for(pilot, resume_queued, "resume job queued", 60)
