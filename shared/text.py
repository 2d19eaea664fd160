"""Text from outside (devices, the bureau, their error details) made safe to store and publish.

PostgreSQL refuses NUL in `text` and `jsonb` and lone surrogates anywhere; control characters
garble logs and consoles; and a device or bureau may say far more than anyone should keep. So
such text is cleaned (each offending character becomes U+FFFD, tabs and line breaks stay) and
bounded (cut with an ellipsis) where it enters the product.
"""

from __future__ import annotations

import re
from typing import Any

MESSAGE_LIMIT = 1000  # characters of an error message for a person
FIELD_LIMIT = 16 * 1024  # characters of one field of a device's or the bureau's reply

_UNSAFE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def clean_text(value: str, limit: int = MESSAGE_LIMIT) -> str:
    """`value` without NUL, control characters or lone surrogates, at most `limit` characters."""
    if _UNSAFE.search(value) is not None:
        value = _UNSAFE.sub("\ufffd", value)
    if len(value) > limit:
        value = value[: max(0, limit - 1)] + "…"
    return value


def clean_tree(value: Any, limit: int = FIELD_LIMIT) -> Any:
    """Every string in a JSON-like value (keys too) cleaned and bounded; other values as they are."""
    if isinstance(value, str):
        return clean_text(value, limit)
    if isinstance(value, dict):
        return {clean_tree(k, limit): clean_tree(v, limit) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_tree(v, limit) for v in value]
    return value
