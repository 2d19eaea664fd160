"""Requests without a valid, unrevoked, permitted token in scope are rejected with the contract's
codes, audited, and cause no device work — also when they skip auth and go to the coordinator."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest
import trio

from clearcard.direct_audit import DirectAudit
from clearcard.runtime import identified
from services.audit.service import search
from services.auth.revocation import revoke
from shared.authz.roles import Role
from shared.authz.tokens import KeyRing
from shared.bus.topology import CLEAR_AUTHORIZED, CLEAR_REQUEST, COMMANDS, COORDINATOR_REQUESTS
from shared.messages.clear import ClearRequest
from shared.messages.codec import encode
from tests.security.conftest import System
from tests.support.fleets import BRANCH


def expired(keys: KeyRing) -> str:
    kid, key = keys.signing_key()
    now = int(time.time())
    return jwt.encode({"iss": "clearcard-auth", "aud": "clearcard", "sub": "old-operator", "role": "operator",
                       "branches": [BRANCH], "iat": now - 7200, "exp": now - 3600, "jti": "expired-1"},
                      key, algorithm="EdDSA", headers={"kid": kid})


def forged(tmp_path: Path) -> str:
    return KeyRing(tmp_path / "mallory").issue("mallory", Role.ADMIN, ["*"])


# case -> (token maker or None, request fields, expected code, subject the audit log names)
CASES: dict[str, tuple[Callable[[System, Path], str] | None, dict[str, object], str, str]] = {
    "no token": (None, {}, "AUTH_REQUIRED", "anonymous"),
    "forged token": (lambda s, p: forged(p), {}, "AUTH_INVALID", "anonymous"),
    "expired token": (lambda s, p: expired(s.keys), {}, "AUTH_INVALID", "anonymous"),
    "viewer role": (lambda s, p: s.keys.issue("vic", Role.VIEWER, ["*"]), {}, "PERMISSION_DENIED", "vic"),
    "auditor role": (lambda s, p: s.keys.issue("aud", Role.AUDITOR, ["*"]), {}, "PERMISSION_DENIED", "aud"),
    "requester manual": (lambda s, p: s.keys.issue("erp", Role.REQUESTER, [BRANCH]),
                         {"mode": "manual", "confirm": "cc1-x"}, "PERMISSION_DENIED", "erp"),
    "other branch": (lambda s, p: s.keys.issue("ops-sh", Role.OPERATOR, ["shanghai-pudong"]), {},
                     "PERMISSION_DENIED", "ops-sh"),
    "person without TOTP, manual": (
        lambda s, p: s.keys.issue("li.wei", Role.OPERATOR, [BRANCH], kind="person", amr=["pwd"]),
        {"mode": "manual", "confirm": "cc1-x"}, "PERMISSION_DENIED", "li.wei"),
    "service account, manual": (
        lambda s, p: s.keys.issue("svc", Role.ADMIN, ["*"], kind="service", amr=["pwd"]),
        {"mode": "manual", "confirm": "cc1-x"}, "PERMISSION_DENIED", "svc"),
}


def body(request_id: str, **fields: object) -> bytes:
    base: dict[str, object] = {"request_id": request_id, "branch_id": BRANCH, "period": "2026-10", "mode": "auto"}
    base.update(fields)
    return encode(ClearRequest.model_validate(base))


@pytest.mark.parametrize("case", list(CASES))
async def test_refused_request_is_audited_and_touches_no_device(system: System, tmp_path: Path, case: str) -> None:
    make, fields, code, subject = CASES[case]
    before = system.devices()
    request_id = f"sec-{uuid.uuid4().hex[:10]}"
    headers = {} if make is None else {"authorization": f"Bearer {make(system, tmp_path)}"}
    final = await system.send(COMMANDS, CLEAR_REQUEST, body(request_id, **fields), request_id, headers)
    assert final["event"] == "clear.rejected" and final["error"]["code"] == code, final
    [record] = await system.audit_of(request_id, "clear.rejected")
    assert (record["service"], record["error_code"], record["subject"]) == ("auth", code, subject)
    assert record["branch_id"] == BRANCH
    assert not await system.db.fetch("SELECT 1 FROM clear_requests WHERE request_id = $1", request_id)
    assert system.devices() == before


async def test_revoked_token_is_refused(system: System) -> None:
    token = system.keys.issue("ops-1", Role.OPERATOR, [BRANCH])
    await revoke(system.db, system.keys, token, DirectAudit(system.db), actor="admin-1", reason="laptop stolen")
    before = system.devices()
    request_id = f"sec-{uuid.uuid4().hex[:10]}"
    final = await system.send(COMMANDS, CLEAR_REQUEST, body(request_id), request_id,
                              {"authorization": f"Bearer {token}"})
    assert final["error"]["code"] == "AUTH_INVALID" and "revoked" in final["error"]["message"]
    [record] = await system.audit_of(request_id, "clear.rejected")
    assert record["error_code"] == "AUTH_INVALID" and record["subject"] == "ops-1"
    assert system.devices() == before
    # an unrevoked token of the same operator still clears
    fresh = system.keys.issue("ops-1", Role.OPERATOR, [BRANCH])
    request_id = f"sec-{uuid.uuid4().hex[:10]}"
    done = await system.send(COMMANDS, CLEAR_REQUEST, body(request_id), request_id,
                             {"authorization": f"Bearer {fresh}"})
    assert done["event"] == "clear.finished" and done["status"] == "succeeded", done


@pytest.mark.parametrize("case", ["no token", "forged token", "expired token", "other branch", "viewer role"])
async def test_clear_authorized_straight_to_the_coordinator_does_no_device_work(
        system: System, tmp_path: Path, case: str) -> None:
    """Skipping auth and publishing `clear.authorized` directly gets nowhere: the coordinator checks."""
    make, fields, code, _ = CASES[case]
    before = system.devices()
    request_id = f"sec-{uuid.uuid4().hex[:10]}"
    headers = {} if make is None else {"authorization": f"Bearer {make(system, tmp_path)}"}
    # an insider holding the auth service's identity: the coordinator's own token check must refuse
    insider = identified(system.bus, "auth", system.settings)
    final = await system.send(COMMANDS, CLEAR_AUTHORIZED, body(request_id, **fields), request_id, headers,
                              via=insider)
    assert final["event"] == "clear.rejected" and final["error"]["code"] == code, final
    [record] = await system.audit_of(request_id, "clear.rejected")
    assert record["service"] == "coordinator" and record["error_code"] == code
    assert not await system.db.fetch("SELECT 1 FROM device_clears WHERE request_id = $1", request_id)
    assert system.devices() == before


async def test_internal_message_without_service_identity_is_dead_lettered(system: System) -> None:
    """Publishing straight to an internal queue without a service identity reaches no handler."""
    before = system.devices()
    request_id = f"sec-{uuid.uuid4().hex[:10]}"
    token = system.keys.issue("ops", Role.ADMIN, ["*"])
    await system.bus.publish(COMMANDS, CLEAR_AUTHORIZED, body(request_id), message_id=request_id,
                             headers={"authorization": f"Bearer {token}"})
    with trio.fail_after(20):
        while True:  # the audit service appends asynchronously; PostgreSQL has nothing to wait on
            rejected = [r for r in await search(system.db) if r["action"] == "message.rejected"]
            if rejected:
                break
            await trio.sleep(0.02)
    assert rejected[0]["detail"]["routing_key"] == CLEAR_AUTHORIZED
    assert system.bus.depth(COORDINATOR_REQUESTS.dead_letter_queue) == 1
    assert not await system.db.fetch("SELECT 1 FROM clear_requests WHERE request_id = $1", request_id)
    assert system.devices() == before


async def test_revoked_token_straight_to_the_coordinator_is_refused(system: System) -> None:
    """The coordinator reads revocations itself: skipping auth with a revoked token gets nowhere."""
    token = system.keys.issue("ops-2", Role.OPERATOR, [BRANCH])
    await revoke(system.db, system.keys, token, DirectAudit(system.db), actor="admin-1", reason="left")
    before = system.devices()
    request_id = f"sec-{uuid.uuid4().hex[:10]}"
    insider = identified(system.bus, "auth", system.settings)
    final = await system.send(COMMANDS, CLEAR_AUTHORIZED, body(request_id), request_id,
                              {"authorization": f"Bearer {token}"}, via=insider)
    assert final["error"]["code"] == "AUTH_INVALID" and "revoked" in final["error"]["message"]
    [record] = await system.audit_of(request_id, "clear.rejected")
    assert record["service"] == "coordinator" and record["subject"] == "ops-2"
    assert system.devices() == before
