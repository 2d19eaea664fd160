"""The CLI's language: gettext's choice from LC_ALL, LC_MESSAGES or LANG (English otherwise)."""

from __future__ import annotations

import os
from typing import Any

from shared.i18n import Locale, gettext, locale_from_env, translated_message


def cli_locale() -> Locale:
    """The locale this command speaks, from the environment."""
    return locale_from_env(os.environ)


def words(text: str, **params: Any) -> str:
    """`text` (a catalogue id) in the CLI's language."""
    return gettext(text, cli_locale(), **params)


def error_line(error: dict[str, Any]) -> str:
    """`CODE: plain words` of an event's error, in the CLI's language."""
    code, message = str(error.get("code", "INTERNAL")), str(error.get("message", ""))
    return f"{code}: {translated_message(code, message, cli_locale())}"
