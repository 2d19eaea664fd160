"""The words for a device's per-invoice-type status (contract §2): one map for every reader.

Devices report each invoice type's state of the open period as a number; the product shows,
filters and publishes it as a word.
"""

from __future__ import annotations

from typing import Literal, get_args

StatusWord = Literal["needs_report", "reported", "cleared"]
STATUS_WORDS: dict[int, StatusWord] = dict(enumerate(get_args(StatusWord)))  # 0, 1, 2 as devices report them


def status_word(value: int | str) -> str:
    """The word for a reported status; an unknown number is shown as itself, not hidden."""
    return STATUS_WORDS.get(int(value), str(value))
