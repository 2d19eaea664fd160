"""The shared message catalogue: complete for every id the code uses, chosen as gettext and HTTP do."""

from __future__ import annotations

from shared.errors import PLAIN_WORDS, ErrorCode
from shared.i18n import error_words, for_browser, gettext, locale_from_env, negotiate, translated_message
from shared.i18n.extract import missing, used_ids


def test_every_message_the_code_uses_is_translated() -> None:
    assert len(used_ids()) > 150
    assert missing() == {"zh-CN": []}, "translate them in shared/i18n/locale/zh_CN/LC_MESSAGES/clearcard.po"


def test_every_error_code_has_plain_words_in_both_languages() -> None:
    for code in ErrorCode:
        assert error_words(code, "en") == PLAIN_WORDS[code]
        chinese = error_words(code, "zh-CN")
        assert chinese != PLAIN_WORDS[code] and any("\u4e00" <= c <= "\u9fff" for c in chinese), code
    assert error_words("DEVICE_LOCKED", "zh-CN") == "设备已过锁死日期（开票截止日期）仍未清卡，须由主管税务机关解锁。"
    assert set(for_browser("zh-CN")["errors"]) == {c.value for c in ErrorCode}


def test_placeholders_survive_translation() -> None:
    assert gettext("as of {date}", "zh-CN", date="2026-11-05") == "截至 2026-11-05"
    assert gettext("as of {date}", "en", date="2026-11-05") == "as of 2026-11-05"


def test_a_detail_message_keeps_its_facts_behind_the_codes_words() -> None:
    detail = "The token does not cover branch wuhan."
    assert translated_message("PERMISSION_DENIED", detail, "en") == detail
    assert translated_message("PERMISSION_DENIED", detail, "zh-CN") == f"您无权对该分支机构执行此操作。（{detail}）"
    assert translated_message("TIMEOUT", PLAIN_WORDS[ErrorCode.TIMEOUT], "zh-CN") == "操作超时，已停止。"


def test_the_cli_follows_lc_all_then_lc_messages_then_lang() -> None:
    assert locale_from_env({}) == "en"
    assert locale_from_env({"LANG": "zh_CN.UTF-8"}) == "zh-CN"
    assert locale_from_env({"LANG": "zh_CN.UTF-8", "LC_MESSAGES": "en_US.UTF-8"}) == "en"
    assert locale_from_env({"LC_ALL": "zh_TW.UTF-8", "LANG": "en_GB"}) == "zh-CN"
    assert locale_from_env({"LANG": "C"}) == "en" and locale_from_env({"LANG": "fr_FR.UTF-8"}) == "en"


def test_http_negotiation_honours_weights() -> None:
    assert negotiate(None) == "zh-CN" and negotiate(None, default="en") == "en"
    assert negotiate("en-US,en;q=0.9,zh-CN;q=0.8") == "en"
    assert negotiate("fr;q=1, zh;q=0.5, en;q=0.1") == "zh-CN"
    assert negotiate("zh-CN;q=0, en;q=0.2") == "en"
