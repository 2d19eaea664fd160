"""Enrolment files (contract §2 `clearcard device import`): CSV rows checked one by one, no I/O.

The header is `device_id,family,taxpayer_id,branch,machine_no` (columns in any order, a UTF-8
byte order mark from spreadsheet programs tolerated). Every row is checked on its own and a bad
row is reported with its line number; rows are read as a stream so a file of a whole fleet is
never held in memory (duplicate ids across the file are found by the store, in PostgreSQL).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from shared.errors import ClearCardError, ErrorCode
from shared.messages.base import FAMILIES, taxpayer_check_char, taxpayer_id_valid

HEADER = ("device_id", "family", "taxpayer_id", "branch", "machine_no")
MACHINE_NO_MAX = 999
ERRORS_SHOWN = 1000  # a file that is wrong throughout (another delimiter) names this many rows

_DEVICE_ID = re.compile(r"^[0-9]{12}$")
_BRANCH = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_USCC_SHAPE = re.compile(r"^[0-9A-HJ-NPQRTUWXY]{2}[0-9]{6}[0-9A-HJ-NPQRTUWXY]{10}$")


@dataclass(frozen=True)
class Enrolment:
    """What the product knows of a device it drives: who it belongs to and where."""

    device_id: str
    family: str
    taxpayer_id: str
    branch_id: str
    machine_no: int


@dataclass(frozen=True)
class CsvRow:
    """One data row of an enrolment file and the line it starts on."""

    line: int
    enrolment: Enrolment


@dataclass(frozen=True)
class RowError:
    """A bad row: its line number and what is wrong with it, in plain words."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class ImportRefused(ClearCardError):
    """The file has bad rows; nothing was imported. `errors` names them (up to ERRORS_SHOWN)."""

    def __init__(self, errors: list[RowError], total: int) -> None:
        self.errors = errors
        self.total = total
        more = f" (the first {len(errors)} are listed)" if total > len(errors) else ""
        super().__init__(ErrorCode.INVALID_REQUEST,
                         f"{total} bad row(s){more}; nothing was imported. "
                         + "; ".join(str(e) for e in errors[:3]) + ("; ..." if len(errors) > 3 else ""))


def _taxpayer_problem(value: str) -> str | None:
    if taxpayer_id_valid(value):
        return None
    if len(value) == 18 and _USCC_SHAPE.match(value):
        return (f"taxpayer id {value} has a wrong check character "
                f"(the first 17 characters give {taxpayer_check_char(value[:17])!r})")
    return f"taxpayer id {value!r} is not an 18-character unified social credit code"


def check_fields(fields: dict[str, str]) -> Enrolment | list[str]:
    """The row's enrolment, or every problem found in it."""
    device_id, family = fields["device_id"], fields["family"]
    taxpayer, branch, machine = fields["taxpayer_id"], fields["branch"], fields["machine_no"]
    problems = []
    if not _DEVICE_ID.match(device_id):
        problems.append(f"device id {device_id!r} is not a 12-digit device number")
    if family not in FAMILIES:
        problems.append(f"family {family!r} is not one of {', '.join(FAMILIES)}")
    if (problem := _taxpayer_problem(taxpayer)) is not None:
        problems.append(problem)
    if not _BRANCH.match(branch):
        problems.append(f"branch {branch!r} must be 1 to 64 of A-Z a-z 0-9 . _ : -")
    if not (machine.isascii() and machine.isdigit() and int(machine) <= MACHINE_NO_MAX):
        problems.append(f"machine number {machine!r} is not a whole number from 0 to {MACHINE_NO_MAX} "
                        "(0 is the main machine)")
    if problems:
        return problems
    return Enrolment(device_id, family, taxpayer, branch, int(machine))


def _columns(header: list[str]) -> list[str]:
    names = [h.strip().lower() for h in header]
    if names:
        names[0] = names[0].removeprefix("\ufeff")
    unknown = [n for n in names if n not in HEADER]
    missing = [h for h in HEADER if h not in names]
    twice = sorted({n for n in names if names.count(n) > 1})
    if unknown or missing or twice:
        detail = "; ".join(part for part in (
            f"unknown column(s) {', '.join(repr(n) for n in unknown)}" if unknown else "",
            f"missing {', '.join(missing)}" if missing else "",
            f"named twice: {', '.join(twice)}" if twice else "") if part)
        raise ImportRefused([RowError(1, f"the header must be {','.join(HEADER)} ({detail})")], 1)
    return names


def read_rows(lines: Iterable[str]) -> Iterator[CsvRow | RowError]:
    """Each data row of the file, checked; ImportRefused at once for a missing or wrong header.

    Blank lines are skipped. A row's line number is where it starts in the file.
    """
    reader = csv.reader(iter(lines), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise ImportRefused([RowError(1, f"the file is empty; its first line must be the header "
                                         f"{','.join(HEADER)}")], 1) from None
    except csv.Error as exc:
        raise ImportRefused([RowError(1, f"the header cannot be read: {exc}")], 1) from None
    columns = _columns(header)
    line = reader.line_num + 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield RowError(line, f"not valid CSV: {exc}")
            line = reader.line_num + 1
            continue
        start, line = line, reader.line_num + 1
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) != len(columns):
            yield RowError(start, f"{len(fields)} field(s) where the header has {len(columns)} "
                                  f"({','.join(columns)})")
            continue
        checked = check_fields({name: value.strip() for name, value in zip(columns, fields, strict=True)})
        if isinstance(checked, Enrolment):
            yield CsvRow(start, checked)
        else:
            yield RowError(start, "; ".join(checked))


def to_csv_line(enrolment: Enrolment) -> str:
    """One row of `device export` (the import's header order; never a PIN)."""
    e = enrolment
    return f"{e.device_id},{e.family},{e.taxpayer_id},{e.branch_id},{e.machine_no}\r\n"
