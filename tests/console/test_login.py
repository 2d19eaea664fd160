"""`POST /api/login` (contract §6) through the auth service on the bus: tokens, refusals, lockout."""

from __future__ import annotations

from datetime import UTC, datetime

import pyotp

from shared.authz.roles import Role
from tests.console.conftest import BRANCH, Console, add_person

PASSWORD = "correct horse battery"


async def test_password_and_totp_give_a_token_the_api_takes(signin: Console) -> None:
    secret = await add_person(signin.db, "li.na", Role.OPERATOR, [BRANCH], PASSWORD)
    async with signin.client(role=None) as http:
        answer = await http.post("/api/login", json={"username": "li.na", "password": PASSWORD,
                                                      "totp": pyotp.TOTP(secret).now()})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["subject"] == "li.na" and body["role"] == "operator" and body["branches"] == [BRANCH]
        assert "clear.manual" in body["can"]
        me = await http.get("/api/me", headers={"authorization": f"Bearer {body['token']}"})
        assert me.status_code == 200 and me.json()["subject"] == "li.na"
        # contract §6: the TOTP code is optional; a password alone still signs in
        alone = await http.post("/api/login", json={"username": "li.na", "password": PASSWORD})
        assert alone.status_code == 200 and alone.json()["token"]


async def test_wrong_credentials_are_401_auth_invalid_in_the_callers_language(signin: Console) -> None:
    secret = await add_person(signin.db, "wang.fang", Role.VIEWER, [BRANCH], PASSWORD)
    async with signin.client(role=None) as http:
        for body in ({"username": "wang.fang", "password": "not the password"},
                     {"username": "nobody", "password": PASSWORD},
                     {"username": "wang.fang", "password": PASSWORD, "totp": "000000"
                      if pyotp.TOTP(secret).now() != "000000" else "111111"},
                     {"username": "", "password": ""}):
            answer = await http.post("/api/login", json=body)
            assert answer.status_code == 401, (body, answer.text)
            assert answer.json()["error"]["code"] == "AUTH_INVALID"
            assert answer.json()["error"]["message"] == "Wrong user name, password or one-time code."
        chinese = await http.post("/api/login", json={"username": "nobody", "password": "x"},
                                  headers={"accept-language": "zh-CN,zh;q=0.9"})
        assert chinese.status_code == 401 and chinese.json()["error"]["message"] == "用户名、密码或动态口令不正确。"
        malformed = await http.post("/api/login", json={"password": "x"})
        assert malformed.status_code == 422 and malformed.json()["error"]["code"] == "INVALID_REQUEST"


async def test_lockout_is_said_in_plain_words_with_the_time_in_china(signin: Console) -> None:
    await add_person(signin.db, "zhao.lei", Role.VIEWER, [BRANCH], PASSWORD)
    async with signin.client(role=None) as http:
        for _ in range(4):
            assert (await http.post("/api/login", json={"username": "zhao.lei", "password": "wrong!"})
                    ).json()["error"].get("reason") == "wrong_credentials"
        fifth = await http.post("/api/login", json={"username": "zhao.lei", "password": "wrong!"},
                                headers={"accept-language": "zh-CN"})
        error = fifth.json()["error"]
        assert fifth.status_code == 401 and error["reason"] == "locked"
        until = datetime.fromisoformat(error["locked_until"])
        assert until > datetime.now(UTC)
        assert "账户已锁定" in error["message"] and "北京时间" in error["message"]
        # even the right password is refused while locked, and says until when
        locked = await http.post("/api/login", json={"username": "zhao.lei", "password": PASSWORD})
        assert locked.status_code == 401 and locked.json()["error"]["reason"] == "locked"
        assert "locked until" in locked.json()["error"]["message"]
