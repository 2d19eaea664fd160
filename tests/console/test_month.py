"""The month at a glance over a large fleet: exact counts, a bounded answer, branch scopes."""

from __future__ import annotations

from shared.authz.roles import Role
from tests.console.conftest import Console
from tests.console.seed import PERIOD, branch_of, seed_month

DEVICES = 20_000
BRANCHES = 400


async def test_month_counts_every_device_and_stays_small(console: Console) -> None:
    want = await seed_month(console.db, DEVICES, BRANCHES)
    async with console.client(Role.VIEWER) as http:
        answer = await http.get("/api/month", params={"limit": 20})
        assert answer.status_code == 200, answer.text
        assert len(answer.content) < 40_000  # the same size for 20,000 devices as for 20
        month = answer.json()
    assert month["period"] == PERIOD and month["today"] == "2026-11-05"
    totals = month["totals"]
    assert totals["devices"] == want.devices and totals["cleared"] == want.cleared
    assert totals["remaining"] == want.devices - want.cleared
    assert totals["failing"] == want.comparison_failed + want.not_declared
    assert totals["running"] == want.running and totals["not_started"] == want.not_started
    # not started: lock date 2026-11-07, two days off (red); the others have ten days (green)
    assert totals["at_risk"] == want.not_started and totals["risk"]["red"] == want.not_started
    assert {f["code"]: f["devices"] for f in month["failures"]} == {
        "COMPARISON_FAILED": want.comparison_failed, "NOT_DECLARED": want.not_declared}
    chart = month["chart"]
    assert month["window"] == {"start": "2026-11-01", "end": "2026-11-15"} and len(chart["days"]) == 15
    assert len(chart["series"]) == 7 and chart["series"][-1] == "other"
    assert sum(sum(d["cleared"]) for d in chart["days"]) == want.cleared
    assert sum(d["failed"] for d in chart["days"]) == want.comparison_failed + want.not_declared
    assert [sum(d["cleared"]) > 0 for d in chart["days"][:5]] == [True, True, True, True, False]
    page = month["branches"]
    assert page["total"] == BRANCHES and len(page["rows"]) == 20
    assert sum(r["devices"] for r in page["rows"]) == 20 * DEVICES // BRANCHES
    assert page["rows"][0]["min_days_left"] == 2  # the most urgent first


async def test_a_branch_scoped_token_sees_its_branches_only(console: Console) -> None:
    await seed_month(console.db, 200, 10)
    mine = branch_of(3, 10)
    async with console.client(Role.OPERATOR, (mine,)) as http:
        month = (await http.get("/api/month")).json()
        assert month["totals"]["devices"] == 20 and [r["branch_id"] for r in month["branches"]["rows"]] == [mine]
        assert (await http.get("/api/month", params={"branch": branch_of(4, 10)})).status_code == 403
        assert (await http.get("/api/month", params={"period": "2026-13"})).status_code == 422
