"""Common building blocks of message models."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, WithJsonSchema, model_validator

from shared.text import FIELD_LIMIT, MESSAGE_LIMIT, clean_text, clean_tree

# Invoice type codes (票种代码) the product knows.
INVOICE_TYPES: dict[str, str] = {
    "004": "special VAT invoice",
    "007": "ordinary VAT invoice",
    "026": "electronic ordinary invoice",
    "028": "electronic special invoice",
    "005": "motor-vehicle invoice",
    "025": "roll invoice",
}

FAMILIES = ("ukey", "golden_tax_disk", "tax_control_disk")


class Frozen(BaseModel):
    """Immutable; unknown fields ignored (contract §3)."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class FromOutside(Frozen):
    """A reply carrying what a device or the bureau said: every string in it is cleaned of NUL and
    control characters and bounded before anything stores or publishes it (shared/text.py)."""

    @model_validator(mode="before")
    @classmethod
    def _cleaned(cls, data: Any) -> Any:
        return clean_tree(data, FIELD_LIMIT)


# free text for a person (error messages): cleaned and bounded
PlainText = Annotated[str, AfterValidator(lambda v: clean_text(v, MESSAGE_LIMIT))]


def _period(value: str) -> str:
    year, month = int(value[:4]), int(value[5:7])
    if not (2000 <= year <= 2099 and 1 <= month <= 12):
        raise ValueError("period must be a real month, YYYY-MM")
    return value


def _invoice_type(value: str) -> str:
    if value not in INVOICE_TYPES:
        raise ValueError(f"unknown invoice type code {value!r}")
    return value


RequestId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
BranchId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
DeviceId = Annotated[str, StringConstraints(pattern=r"^[0-9]{12}$")]
# the pattern says all the validator checks (a real month of 2000-2099), so schemas tell clients the truth
Period = Annotated[str, StringConstraints(pattern=r"^20[0-9]{2}-(0[1-9]|1[0-2])$"), AfterValidator(_period)]
InvoiceType = Annotated[str, AfterValidator(_invoice_type),
                        WithJsonSchema({"type": "string", "enum": list(INVOICE_TYPES)})]
TraceId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]

_TAXPAYER_RE = re.compile(r"^[0-9A-HJ-NPQRTUWXY]{2}[0-9]{6}[0-9A-HJ-NPQRTUWXY]{10}$")
_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def taxpayer_id_valid(value: str) -> bool:
    """Check an 18-character unified social credit code, including its check character (GB 32100)."""
    if not _TAXPAYER_RE.match(value):
        return False
    total = sum(_USCC_ALPHABET.index(c) * w for c, w in zip(value[:17], _USCC_WEIGHTS, strict=True))
    check = (31 - total % 31) % 31
    return _USCC_ALPHABET[check] == value[17]


def taxpayer_check_char(first17: str) -> str:
    """The check character that completes a 17-character prefix."""
    total = sum(_USCC_ALPHABET.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return _USCC_ALPHABET[(31 - total % 31) % 31]


def utc_now() -> datetime:
    return datetime.now(UTC)
