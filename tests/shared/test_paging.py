"""A period's invoices in pages: the largest page fits one bus message, and bad pages are named."""

from __future__ import annotations

import pytest

from shared.messages.clear import Error
from shared.messages.codec import MAX_MESSAGE_BYTES, decode, encode
from shared.messages.device import MAX_PAGE_INVOICES, Invoice, InvoicePage, InvoicePageCommand
from shared.messages.rpc import Reply
from shared.paging import page_problem

COMMAND = InvoicePageCommand(device_id="661500000001", period="2026-10", invoice_type="004", cursor="400",
                             limit=3)


def invoice(number: str, invoice_type: str = "004", code: str = "4226004000") -> Invoice:
    return Invoice(invoice_type=invoice_type, code=code, number=number, issued_at="2026-10-12T10:00:00+08:00",
                   amount="1000.00", tax="130.00")


def test_the_largest_possible_page_is_one_bus_message() -> None:
    widest = Invoice(invoice_type="004", code="Z" * 20, number="9" * 20, issued_at="2026-10-31T23:59:59.999999+08:00",
                     amount="-" + "9" * 15 + ".99", tax="-" + "9" * 15 + ".99", kind="negative", offline=True)
    page = InvoicePage(invoice_type="004", invoices=[widest] * MAX_PAGE_INVOICES, next_cursor="~" * 64)
    body = encode(Reply(ok=True, result=page.model_dump(mode="json")))
    assert len(body) <= MAX_MESSAGE_BYTES
    assert decode(Reply, body).result == page.model_dump(mode="json")
    assert len(encode(Reply(ok=False, error=Error.of("INTERNAL", "x" * 1000)))) < MAX_MESSAGE_BYTES


@pytest.mark.parametrize("fields", [
    {"code": "4226-004"}, {"number": "1" * 21}, {"amount": "12.345"}, {"tax": "1e5"},
    {"issued_at": "yesterday"}, {"invoice_type": "999"},
])
def test_invoice_fields_are_bounded(fields: dict[str, str]) -> None:
    base = invoice("00000001").model_dump()
    with pytest.raises(ValueError):
        Invoice.model_validate({**base, **fields})


def test_a_good_page_and_the_last_one_pass() -> None:
    page = InvoicePage(invoice_type="004", invoices=[invoice("00000401"), invoice("00000402")], next_cursor="402")
    assert page_problem(COMMAND, page) is None
    assert page_problem(COMMAND, InvoicePage(invoice_type="004", invoices=[])) is None


@pytest.mark.parametrize(("page", "words"), [
    (InvoicePage(invoice_type="007", invoices=[]), "holds type 007"),
    (InvoicePage(invoice_type="004", invoices=[invoice(f"0000040{n}") for n in range(4)]), "more than the 3"),
    (InvoicePage(invoice_type="004", invoices=[invoice("00000401", "007")]), "of type ['007']"),
    (InvoicePage(invoice_type="004", invoices=[invoice("00000402"), invoice("00000401")]), "not in (code, number)"),
    (InvoicePage(invoice_type="004", invoices=[invoice("00000401"), invoice("00000401")]), "not in (code, number)"),
    (InvoicePage(invoice_type="004", invoices=[invoice("00000401")], next_cursor="400"), "does not move the cursor"),
    (InvoicePage(invoice_type="004", invoices=[], next_cursor="401"), "does not move the cursor"),
])
def test_a_bad_page_is_named(page: InvoicePage, words: str) -> None:
    problem = page_problem(COMMAND, page)
    assert problem is not None and words in problem
