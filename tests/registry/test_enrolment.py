"""Enrolment files checked row by row (no database): every bad row named with its line."""

from __future__ import annotations

import pytest

from device_registry.enrolment import CsvRow, Enrolment, ImportRefused, RowError, read_rows, to_csv_line
from shared.messages.base import taxpayer_check_char

GOOD_TAXPAYER = "91420100MA4K0001X" + taxpayer_check_char("91420100MA4K0001X")
WRONG_CHECK = GOOD_TAXPAYER[:17] + ("0" if GOOD_TAXPAYER[17] != "0" else "1")
HEADER = "device_id,family,taxpayer_id,branch,machine_no\n"


def rows(text: str) -> list[CsvRow | RowError]:
    return list(read_rows(text.splitlines(keepends=True)))


def test_good_rows_with_their_lines_blank_lines_and_a_bom() -> None:
    got = rows("\ufeff" + HEADER + f"661500000001,ukey,{GOOD_TAXPAYER},wuhan-hankou,0\n\n"
               f" 539900000004 , tax_control_disk ,{GOOD_TAXPAYER}, wuhan-hankou ,12\n")
    assert got == [
        CsvRow(2, Enrolment("661500000001", "ukey", GOOD_TAXPAYER, "wuhan-hankou", 0)),
        CsvRow(4, Enrolment("539900000004", "tax_control_disk", GOOD_TAXPAYER, "wuhan-hankou", 12)),
    ]
    assert to_csv_line(got[0].enrolment) == f"661500000001,ukey,{GOOD_TAXPAYER},wuhan-hankou,0\r\n"


def test_columns_in_another_order() -> None:
    got = rows(f"branch,machine_no,device_id,taxpayer_id,family\nb1,1,661500000001,{GOOD_TAXPAYER},ukey\n")
    assert got == [CsvRow(2, Enrolment("661500000001", "ukey", GOOD_TAXPAYER, "b1", 1))]


@pytest.mark.parametrize(("row", "words"), [
    (f"66150000001,ukey,{GOOD_TAXPAYER},b1,0", "device id '66150000001' is not a 12-digit device number"),
    (f"661500000001,usb_stick,{GOOD_TAXPAYER},b1,0", "family 'usb_stick' is not one of"),
    (f"661500000001,ukey,{WRONG_CHECK},b1,0", f"taxpayer id {WRONG_CHECK} has a wrong check character"),
    ("661500000001,ukey,12345,b1,0", "is not an 18-character unified social credit code"),
    (f"661500000001,ukey,{GOOD_TAXPAYER},wuhan hankou,0", "branch 'wuhan hankou' must be"),
    (f"661500000001,ukey,{GOOD_TAXPAYER},b1,-1", "machine number '-1' is not a whole number from 0 to 999"),
    (f"661500000001,ukey,{GOOD_TAXPAYER},b1,1000", "machine number '1000'"),
    (f"661500000001,ukey,{GOOD_TAXPAYER},b1", "4 field(s) where the header has 5"),
])
def test_each_kind_of_bad_row_is_named_with_its_line(row: str, words: str) -> None:
    [error] = rows(HEADER + f"661500000009,ukey,{GOOD_TAXPAYER},b1,0\n" + row + "\n")[1:]
    assert isinstance(error, RowError) and error.line == 3 and words in error.message, error


def test_every_problem_of_a_row_in_one_message() -> None:
    [error] = rows(HEADER + "x,y,z,b b,q\n")
    assert isinstance(error, RowError)
    assert error.message.count(";") == 4 and str(error).startswith("line 2: device id 'x'")


def test_a_quoted_field_over_two_lines_keeps_the_line_numbers_right() -> None:
    got = rows(HEADER + f'661500000001,ukey,{GOOD_TAXPAYER},"b\n1",0\n' + f"661500000002,ukey,{WRONG_CHECK},b1,0\n")
    assert [(type(r).__name__, r.line) for r in got] == [("RowError", 2), ("RowError", 4)]


@pytest.mark.parametrize(("text", "words"), [
    ("", "the file is empty"),
    ("device_id,family,taxpayer_id,branch_id,machine_no\n", "unknown column(s) 'branch_id'; missing branch"),
    ("device_id,family,taxpayer_id,branch,branch,machine_no\n", "named twice: branch"),
])
def test_a_bad_header_refuses_the_file_at_once(text: str, words: str) -> None:
    with pytest.raises(ImportRefused) as refused:
        rows(text)
    assert refused.value.errors[0].line == 1 and words in refused.value.errors[0].message
