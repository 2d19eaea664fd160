"""One message catalogue for the console and the CLI: English source strings, translated per locale.

The catalogue is gettext's: `locale/<ll_CC>/LC_MESSAGES/clearcard.po`, read with Babel. A message
id is the English text itself (placeholders in `{braces}`), so English needs no catalogue of its
own. The console serves a locale's catalogue to the browser (`GET /i18n/{locale}`), the CLI
picks its locale from `LC_ALL` / `LC_MESSAGES` / `LANG`, and both give every error code the same
plain words. `scripts/i18n` re-extracts the ids from the code into the catalogue's template.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any, Literal

from babel.messages.pofile import read_po

from shared.errors import PLAIN_WORDS, ErrorCode

Locale = Literal["zh-CN", "en"]
LOCALES: tuple[Locale, ...] = ("zh-CN", "en")
CONSOLE_DEFAULT: Locale = "zh-CN"  # finance teams in Chinese branches
DOMAIN = "clearcard"
_CATALOGUE_DIRS: dict[Locale, str] = {"zh-CN": "zh_CN"}


def N_(text: str) -> str:
    """Marks `text` for the catalogue where it is translated later (babel extracts `N_`)."""
    return text


@cache
def catalogue(locale: Locale) -> Mapping[str, str]:
    """Message id -> translation for `locale` (empty for English: ids are English)."""
    folder = _CATALOGUE_DIRS.get(locale)
    if folder is None:
        return {}
    source = resources.files("shared.i18n") / "locale" / folder / "LC_MESSAGES" / f"{DOMAIN}.po"
    with source.open("rb") as handle:
        parsed = read_po(handle, locale=folder)
    return {str(m.id): str(m.string) for m in parsed if m.id and isinstance(m.id, str) and m.string
            and not m.fuzzy}


def gettext(text: str, locale: Locale, **params: Any) -> str:
    """`text` in `locale`, with `{name}` placeholders filled from `params`."""
    translated = catalogue(locale).get(text, text)
    return translated.format(**params) if params else translated


def error_words(code: ErrorCode | str, locale: Locale) -> str:
    """The plain words for an error code, in `locale`."""
    try:
        english = PLAIN_WORDS[ErrorCode(code)]
    except ValueError:
        return str(code)
    return gettext(english, locale)


def translated_message(code: ErrorCode | str, message: str, locale: Locale) -> str:
    """An error's message in `locale`: its translation when the catalogue has it, else the code's
    plain words followed by the original detail (names, numbers) so nothing is lost."""
    if locale == "en":
        return message
    known = catalogue(locale).get(message)
    if known is not None:
        return known
    words = error_words(code, locale)
    try:
        is_default = message == PLAIN_WORDS[ErrorCode(code)]
    except ValueError:
        is_default = False
    return words if is_default or not message else f"{words}（{message}）"


def for_browser(locale: Locale) -> dict[str, Any]:
    """What the web console needs to speak `locale`: its messages and every error code's words."""
    return {"locale": locale, "messages": dict(catalogue(locale)),
            "errors": {code.value: error_words(code, locale) for code in ErrorCode}}


def parse_locale(value: str | None) -> Locale | None:
    """`zh-CN` for any Chinese tag (zh, zh_CN.UTF-8, zh-Hans), `en` for English ones, else None."""
    if not value:
        return None
    tag = value.split(".")[0].split("@")[0].replace("_", "-").strip().lower()
    if tag.startswith("zh"):
        return "zh-CN"
    if tag.startswith("en"):
        return "en"
    return None


def locale_from_env(environ: Mapping[str, str]) -> Locale:
    """The CLI's locale, as gettext chooses it: the first of LC_ALL, LC_MESSAGES, LANG that is set."""
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = environ.get(name)
        if value:
            return parse_locale(value) or "en"  # C, POSIX and languages without a catalogue
    return "en"


def negotiate(accept_language: str | None, default: Locale = CONSOLE_DEFAULT) -> Locale:
    """The best of our locales for an HTTP `Accept-Language` header (weights honoured)."""
    choices: list[tuple[float, int, Locale]] = []
    for n, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        if params.strip().startswith("q="):
            try:
                weight = float(params.strip()[2:])
            except ValueError:
                weight = 0.0
        found = parse_locale(tag)
        if found is not None and weight > 0:
            choices.append((-weight, n, found))
    return min(choices)[2] if choices else default
