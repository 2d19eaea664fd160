"""Access tokens: signed, scoped, expiring, rotatable; and the decision on a clear request."""

import time
from collections.abc import Mapping
from pathlib import Path

import jwt
import pytest

from shared.authz import Principal, action_of, permit
from shared.authz.roles import Role
from shared.authz.tokens import KeyRing, bearer
from shared.errors import ClearCardError, ErrorCode
from shared.messages.clear import ClearRequest


def authorize(keys: KeyRing, headers: Mapping[str, str], req: ClearRequest) -> Principal:
    """The decision without revocations (tests/auth covers those on PostgreSQL)."""
    principal = keys.verify(bearer(headers.get("authorization")))
    permit(principal, action_of(req), req.branch_id)
    return principal


def request(**overrides: object) -> ClearRequest:
    fields: dict[str, object] = {"request_id": "r-1", "branch_id": "wuhan", "period": "2026-10", "mode": "auto"}
    fields.update(overrides)
    return ClearRequest.model_validate(fields)


def headers(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_operator_token_allows_its_branch(tmp_path: Path) -> None:
    keys = KeyRing(tmp_path)
    token = keys.issue("ops-1", Role.OPERATOR, ["wuhan"])
    principal = authorize(keys, headers(token), request())
    assert principal.subject == "ops-1"
    assert principal.role is Role.OPERATOR


@pytest.mark.parametrize(
    ("role", "branches", "overrides", "code"),
    [
        (Role.OPERATOR, ["shanghai"], {}, ErrorCode.PERMISSION_DENIED),
        (Role.VIEWER, ["*"], {}, ErrorCode.PERMISSION_DENIED),
        (Role.AUDITOR, ["*"], {}, ErrorCode.PERMISSION_DENIED),
        (Role.REQUESTER, ["wuhan"], {"mode": "manual"}, ErrorCode.PERMISSION_DENIED),
    ],
)
def test_roles_and_scope_are_enforced(
    tmp_path: Path, role: Role, branches: list[str], overrides: dict[str, object], code: ErrorCode
) -> None:
    keys = KeyRing(tmp_path)
    token = keys.issue("someone", role, branches)
    with pytest.raises(ClearCardError) as caught:
        authorize(keys, headers(token), request(**overrides))
    assert caught.value.code == code


def test_requester_may_submit_auto_clears(tmp_path: Path) -> None:
    keys = KeyRing(tmp_path)
    token = keys.issue("erp", Role.REQUESTER, ["wuhan"])
    assert authorize(keys, headers(token), request()).subject == "erp"


def test_missing_forged_and_expired_tokens(tmp_path: Path) -> None:
    keys = KeyRing(tmp_path)
    with pytest.raises(ClearCardError) as missing:
        authorize(keys, {}, request())
    assert missing.value.code == ErrorCode.AUTH_REQUIRED

    other = KeyRing(tmp_path / "elsewhere")
    forged = other.issue("mallory", Role.ADMIN, ["*"])
    with pytest.raises(ClearCardError) as bad:
        authorize(keys, headers(forged), request())
    assert bad.value.code == ErrorCode.AUTH_INVALID

    kid, key = keys.signing_key()
    now = int(time.time())
    expired = jwt.encode(
        {"iss": "clearcard-auth", "aud": "clearcard", "sub": "x", "role": "admin", "branches": ["*"],
         "iat": now - 100, "exp": now - 50, "jti": "j"},
        key, algorithm="EdDSA", headers={"kid": kid},
    )
    with pytest.raises(ClearCardError) as old:
        authorize(keys, headers(expired), request())
    assert old.value.code == ErrorCode.AUTH_INVALID
    assert "expired" in old.value.message


def test_rotation_keeps_old_tokens_valid(tmp_path: Path) -> None:
    keys = KeyRing(tmp_path)
    before = keys.issue("a", Role.ADMIN, ["*"])
    keys.rotate()
    after = keys.issue("b", Role.ADMIN, ["*"])
    assert jwt.get_unverified_header(before)["kid"] != jwt.get_unverified_header(after)["kid"]
    assert keys.verify(before).subject == "a"
    assert keys.verify(after).subject == "b"


def test_bearer_header_forms() -> None:
    assert bearer("Bearer abc") == "abc"
    assert bearer(b"bearer abc") == "abc"
    with pytest.raises(ClearCardError):
        bearer("Basic abc")
