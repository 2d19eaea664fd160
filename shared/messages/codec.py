"""Bytes <-> frozen models. One exception type for every decode failure."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

# contract §4: anything larger is rejected before parsing.
MAX_MESSAGE_BYTES = 64 * 1024

M = TypeVar("M", bound=BaseModel)


class DecodeError(ValueError):
    """A message body that cannot become the expected model; it is rejected and dead-lettered.

    `request_id` is set when one could still be read, so a rejection event can name it.
    """

    def __init__(self, reason: str, request_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.request_id = request_id


def _readable_request_id(raw: Any) -> str | None:
    if isinstance(raw, dict):
        rid = raw.get("request_id")
        if isinstance(rid, str) and 0 < len(rid) <= 64 and rid.isprintable():
            return rid
    return None


def decode(model: type[M], body: bytes) -> M:
    """Parse a UTF-8 JSON object body into `model`, or raise DecodeError."""
    if len(body) > MAX_MESSAGE_BYTES:
        raise DecodeError(f"message is {len(body)} bytes, over the {MAX_MESSAGE_BYTES} byte limit")
    try:
        raw = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: e.g. 5,000-digit ints
        raise DecodeError(f"body is not UTF-8 JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise DecodeError("body must be a JSON object")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        raise DecodeError(problems, _readable_request_id(raw)) from None


def encode(message: BaseModel) -> bytes:
    """Serialize a model as compact UTF-8 JSON."""
    return message.model_dump_json(exclude_none=True).encode("utf-8")
