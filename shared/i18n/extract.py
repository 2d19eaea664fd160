"""The message ids the code uses, extracted with Babel: what the catalogue must translate.

`python -m shared.i18n.extract` lists the ids missing from a catalogue (tests/shared/test_i18n.py
fails on any). Python marks ids with `N_(...)` or `gettext(...)`; the web console with `t(...)`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from babel.messages.extract import extract_from_dir

from shared.errors import PLAIN_WORDS
from shared.i18n import LOCALES, catalogue

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("clearcard", "services/console", "shared/i18n")
KEYWORDS = {"N_": None, "gettext": None, "t": None}
HTML = ROOT / "services/console/static/index.html"
_HTML_IDS = re.compile(r'data-i18n(?:-placeholder|-title)?="([^"]+)"')
# Babel's JavaScript lexer misses calls nested in template literals inside template literals
_JS_IDS = re.compile(r'\b(?:t|N_)\("((?:[^"\\]|\\.)+)"')


def used_ids() -> dict[str, str]:
    """Every message id in the code, with where it is first used."""
    found: dict[str, str] = {text: "shared/errors.py" for text in PLAIN_WORDS.values()}
    for folder in SOURCES:
        method_map = [("**.py", "python"), ("**/static/**.js", "javascript")]
        options = {"**/static/**.js": {"parse_template_string": True}}
        for filename, lineno, message, _, _ in extract_from_dir(ROOT / folder, method_map=method_map,
                                                                options_map=options, keywords=KEYWORDS):
            if isinstance(message, str) and message:
                found.setdefault(message, f"{folder}/{filename}:{lineno}")
    for script in sorted(HTML.parent.glob("*.js")):
        for text in _JS_IDS.findall(script.read_text(encoding="utf-8")):
            found.setdefault(text, f"services/console/static/{script.name}")
    for text in _HTML_IDS.findall(HTML.read_text(encoding="utf-8")):
        found.setdefault(text.replace("&amp;", "&"), "services/console/static/index.html")
    return found


def missing() -> dict[str, list[str]]:
    """Per locale with a catalogue, the ids it does not translate."""
    ids = used_ids()
    return {locale: sorted(i for i in ids if i not in catalogue(locale)) for locale in LOCALES if locale != "en"}


if __name__ == "__main__":
    gaps = missing()
    for locale, ids in gaps.items():
        for text in ids:
            print(f"{locale}: {text!r}  ({used_ids()[text]})")
    sys.exit(1 if any(gaps.values()) else 0)
