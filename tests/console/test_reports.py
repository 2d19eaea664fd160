"""A period's report as Excel and CSV: every device's outcome, read back with openpyxl."""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import datetime

from openpyxl import load_workbook

from shared.authz.roles import Role
from shared.china_time import format_china
from tests.console.conftest import Console
from tests.console.seed import PERIOD, attempt_at, branch_of, device_id, seed_month

DEVICES = 6_000
BRANCHES = 60
OUTCOME_OF_STATE = {**dict.fromkeys(range(6), "已清卡"), 6: "失败", 7: "失败", 8: "进行中", 9: "未开始"}


async def test_the_xlsx_report_holds_every_devices_outcome(console: Console) -> None:
    seeded = await seed_month(console.db, DEVICES, BRANCHES)
    async with console.client(Role.VIEWER) as http:
        answer = await http.get(f"/api/reports/{PERIOD}", params={"format": "xlsx", "lang": "zh-CN"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-disposition"] == f'attachment; filename="clearcard-{PERIOD}.xlsx"'
    book = load_workbook(io.BytesIO(answer.content), read_only=True)
    assert book.sheetnames == ["汇总", "设备明细"]
    summary = list(book["汇总"].iter_rows(values_only=True))
    assert summary[0][:4] == ("分支机构", "设备数", "已清卡", "失败")
    assert len(summary) == 1 + BRANCHES
    first = summary[1]  # branch-0000 holds devices 0, 60, 120 ...: state 0, all cleared
    assert first[0] == branch_of(0, BRANCHES) and first[1] == DEVICES // BRANCHES and first[2] == first[1]
    sixth = next(r for r in summary if r[0] == branch_of(6, BRANCHES))
    assert sixth[3] == DEVICES // BRANCHES and "一窗式比对未通过" in sixth[8] and "COMPARISON_FAILED" in sixth[8]
    rows = list(book["设备明细"].iter_rows(values_only=True))
    header, body = rows[0], rows[1:]
    assert header[:6] == ("分支机构", "设备编号", "设备类型", "纳税人识别号", "开票机号", "结果")
    assert len(body) == DEVICES
    by_device = {r[1]: r for r in body}
    assert set(by_device) == {device_id(i) for i in range(DEVICES)}
    for i in (0, 6, 7, 8, 9, 1234, DEVICES - 1):
        row = by_device[device_id(i)]
        assert row[5] == OUTCOME_OF_STATE[i % 10], (i, row)
    cleared = by_device[device_id(0)]
    assert cleared[13] == f"bk-{device_id(0)}" and cleared[15] == 2 and isinstance(cleared[10], datetime)
    # recorded times are shown as recorded, in China time
    assert cleared[11] == format_china(attempt_at(0, seeded.real_minus_fleet), seconds=True)
    failed = by_device[device_id(7)]
    assert failed[6] == "NOT_DECLARED" and failed[7] == "该所属期的增值税纳税申报尚未完成。"
    assert Counter(r[5] for r in body)["失败"] == DEVICES // 5


async def test_csv_report_in_english_and_branch_scopes(console: Console) -> None:
    await seed_month(console.db, 100, 10)
    mine = branch_of(7, 10)
    async with console.client(Role.OPERATOR, (mine,)) as http:
        answer = await http.get(f"/api/reports/{PERIOD}", params={"format": "csv"})
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(answer.content.decode("utf-8-sig"))))
        assert rows[0][:6] == ["Branch", "Device", "Family", "Taxpayer ID", "Machine no.", "Outcome"]
        assert {r[0] for r in rows[1:]} == {mine} and len(rows) == 11
        assert {r[5] for r in rows[1:]} == {"failed"} and {r[6] for r in rows[1:]} == {"NOT_DECLARED"}
        other = await http.get(f"/api/reports/{PERIOD}", params={"branch": branch_of(1, 10)})
        assert other.status_code == 403
        assert (await http.get("/api/reports/2026-1")).status_code == 422
