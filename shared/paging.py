"""Checking one page of a period's invoices as a device answered it (pure).

A period travels in pages, one device command each; a page that names another type, holds more
than was asked, is out of order, or would not move the cursor on is the device's fault. The
gateway refuses such a page before it leaves, and the backup service checks each page again as
it arrives, together with what spans pages (order across pages, the count the period
announced, the summary: services/backup/pages.py).
"""

from __future__ import annotations

from itertools import pairwise

from shared.errors import ClearCardError, ErrorCode
from shared.messages.device import InvoicePage, InvoicePageCommand


def page_problem(cmd: InvoicePageCommand, page: InvoicePage) -> str | None:
    """What is wrong with a page answered to `cmd`, or None."""
    if page.invoice_type != cmd.invoice_type:
        return f"it holds type {page.invoice_type}, not {cmd.invoice_type}"
    if len(page.invoices) > cmd.limit:
        return f"it holds {len(page.invoices)} invoices, more than the {cmd.limit} asked for"
    strays = {i.invoice_type for i in page.invoices} - {cmd.invoice_type}
    if strays:
        return f"it holds invoices of type {sorted(strays)}"
    keys = [(i.code, i.number) for i in page.invoices]
    if any(a >= b for a, b in pairwise(keys)):
        return "its invoices are not in (code, number) order"
    if page.next_cursor is not None and (not page.invoices or page.next_cursor == cmd.cursor):
        return "it does not move the cursor on"
    return None


def checked_page(device_id: str, cmd: InvoicePageCommand, page: InvoicePage) -> InvoicePage:
    """The page, or INTERNAL naming what the device got wrong."""
    problem = page_problem(cmd, page)
    if problem is not None:
        raise ClearCardError(ErrorCode.INTERNAL,
                             f"device {device_id} answered a bad page of its {cmd.invoice_type} invoices "
                             f"for {cmd.period}: {problem}")
    return page
