"""Message decoding at the edge: strict where the contract is, tolerant of unknown fields."""

import contextlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.messages.base import taxpayer_id_valid
from shared.messages.clear import ClearProgress, ClearRequest, Step, step_percent
from shared.messages.codec import MAX_MESSAGE_BYTES, DecodeError, decode, encode


def test_minimal_request_and_unknown_fields() -> None:
    body = json.dumps({"request_id": "r:1", "branch_id": "wuhan", "period": "2026-10", "extra": 1}).encode()
    request = decode(ClearRequest, body)
    assert request.mode == "auto" and request.device_ids == [] and not request.preview


@pytest.mark.parametrize(
    "fields",
    [
        {"request_id": "", "branch_id": "b", "period": "2026-10"},
        {"request_id": "x" * 65, "branch_id": "b", "period": "2026-10"},
        {"request_id": "a b", "branch_id": "b", "period": "2026-10"},
        {"request_id": "r", "branch_id": "b", "period": "2026-13"},
        {"request_id": "r", "branch_id": "b", "period": "2026-10", "mode": "manualish"},
        {"request_id": "r", "branch_id": "b", "period": "2026-10", "invoice_types": ["999"]},
        {"request_id": "r", "branch_id": "b", "period": "2026-10", "device_ids": ["12"]},
        {"request_id": "r", "branch_id": "b'; DROP TABLE devices; --", "period": "2026-10"},
    ],
)
def test_malformed_requests_are_decode_errors_naming_the_request(fields: dict[str, object]) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(ClearRequest, json.dumps(fields).encode())
    if fields["request_id"] == "r":
        assert caught.value.request_id == "r"


def test_oversized_and_non_json_bodies() -> None:
    with pytest.raises(DecodeError, match="limit"):
        decode(ClearRequest, b"{" + b" " * MAX_MESSAGE_BYTES + b"}")
    for body in (b"\xff\xfe", b"[1,2]", b"null", b"{", b"[" * 100_000):
        with pytest.raises(DecodeError):
            decode(ClearRequest, body)


@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_escape_as_other_errors(body: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode(ClearRequest, body)


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.dictionaries(st.sampled_from(["request_id", "branch_id", "period", "mode", "device_ids",
                                         "invoice_types", "preview", "confirm"]),
                       st.one_of(st.none(), st.integers(), st.text(max_size=80),
                                 st.lists(st.text(max_size=14), max_size=3), st.booleans())))
def test_arbitrary_json_objects_decode_or_fail_cleanly(fields: dict[str, object]) -> None:
    with contextlib.suppress(DecodeError):
        decode(ClearRequest, json.dumps(fields).encode())


def test_event_shape() -> None:
    event = ClearProgress(request_id="r", trace_id="a" * 32, device_id="661500000001",
                          step=Step.REPORTED, percent=step_percent(Step.REPORTED))
    body = json.loads(encode(event))
    assert body["event"] == "clear.progress"
    assert body["at"].endswith("Z")
    assert set(body) == {"event", "request_id", "at", "trace_id", "device_id", "step", "percent"}
    assert step_percent(Step.VERIFIED) == 100


def test_taxpayer_check_character() -> None:
    assert taxpayer_id_valid("91420100MA4K0001XK")
    assert not taxpayer_id_valid("91420100MA4K0001XX")
    assert not taxpayer_id_valid("91420100MA4K0001X")
