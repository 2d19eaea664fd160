"""Hypothesis fuzzing of message decoding for every consumer's model: whatever arrives, decoding
either gives a valid model or raises DecodeError (the one reject-and-dead-letter path)."""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from services.audit.service import storable
from shared.bus.api import Reject
from shared.messages.audit import AuditRecord
from shared.messages.authority import DeclarationQuery, OfflineInvoicesUpload, PackageRequest, ReportSubmission
from shared.messages.backup import TakeBackup, VerifyBackup
from shared.messages.clear import ClearRequest
from shared.messages.codec import DecodeError, decode
from shared.messages.device import DeviceCommand, PeriodCommand, WritebackCommand
from shared.messages.rpc import Reply

MODELS: list[type[BaseModel]] = [ClearRequest, AuditRecord, DeviceCommand, PeriodCommand, WritebackCommand,
                                 TakeBackup, VerifyBackup, OfflineInvoicesUpload, ReportSubmission,
                                 DeclarationQuery, PackageRequest, Reply]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

KEYS = st.sampled_from(["request_id", "branch_id", "period", "device_id", "device_ids", "invoice_types", "mode",
                        "preview", "confirm", "record_id", "service", "subject", "action", "detail", "at",
                        "package", "backup_id", "gateway_id", "taxpayer_id", "summaries", "invoices", "ok",
                        "result", "error", "challenge", "machine_no", "family"])
JSON: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(KEYS | st.text(max_size=10), children,
                                                                      max_size=8),
    max_leaves=30)


def check(model: type[BaseModel], body: bytes) -> None:
    try:
        decoded = decode(model, body)
    except DecodeError:
        return
    if isinstance(decoded, ClearRequest):  # what got through is what the contract allows
        assert ID.match(decoded.request_id) and ID.match(decoded.branch_id)
        assert decoded.mode in ("auto", "manual")
    if isinstance(decoded, AuditRecord):
        with contextlib.suppress(Reject):
            storable(decoded)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@FUZZ
@given(body=st.binary(max_size=2000))
def test_arbitrary_bytes(model: type[BaseModel], body: bytes) -> None:
    check(model, body)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@FUZZ
@given(doc=st.dictionaries(KEYS, JSON, max_size=10))
def test_arbitrary_json_objects(model: type[BaseModel], doc: dict[str, Any]) -> None:
    check(model, json.dumps(doc).encode())


VALID_REQUEST = {"request_id": "r-1", "branch_id": "wuhan", "period": "2026-10", "mode": "auto",
                 "device_ids": ["661500000001"], "invoice_types": ["004"]}


@FUZZ
@given(key=st.sampled_from(sorted(VALID_REQUEST)), value=JSON)
def test_clear_request_with_one_field_replaced(key: str, value: Any) -> None:
    check(ClearRequest, json.dumps({**VALID_REQUEST, key: value}).encode())


@FUZZ
@given(text=st.text(max_size=300))
def test_text_bodies(text: str) -> None:
    for model in MODELS:
        check(model, text.encode("utf-8", "surrogatepass"))


def test_huge_integer_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode(ClearRequest, b'{"request_id": "r", "branch_id": "b", "period": 1' + b"9" * 5000 + b"}")
