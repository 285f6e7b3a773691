"""Validated types for what a user sends: ids, deployment refs, regions, provider slugs,
job ids, key names, dates, `since` windows and free text. One set, used at every boundary
(the API's routes, the dashboard's forms and queries, the CLI), so that nothing a user
types reaches the database or date arithmetic unchecked.

Each is a pydantic `Annotated` type: in a FastAPI signature or a request model it rejects
bad input with a 422 naming the field; elsewhere `TypeAdapter(Type).validate_python(v)`
(or the `check_*` functions) raise `ValueError`/`ValidationError`. The rules, and why:

- ids are positive and fit the column: every id column is `Integer`, which is int4 on
  PostgreSQL (at most 2**31 - 1) and 64-bit on SQLite; the smaller bound holds for both.
  A larger number cannot name a row and would make the driver fail (a 500).
- only ASCII digits make a numeric id: `"²"` or `"١٢"` are names, never ids
  (`str.isdigit` is true for them and `int()` fails or reads them as digits).
- text holds no control characters (C0, DEL, C1) and no lone surrogates: PostgreSQL
  refuses NUL in text, and surrogates cannot be encoded; its length is bounded.
- dates and times lie between 1970-01-01 and 9000-12-31, so that adding a day or a
  validity period, or subtracting a window, never overflows.
- `since` windows (`30m`, `12h`, `7d`, `2w`) reach at most a few centuries back, and
  its dates are real dates from 1970 to 8999 (the pattern spells them out).

The JSON schema of each type says as much (`pattern`, `minimum`/`maximum`,
`minLength`/`maxLength`), so the OpenAPI contract describes exactly what is accepted.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

# Column ranges. Every id column of the schema is `Integer` (store/models.py).
INT4_MAX = 2**31 - 1  # PostgreSQL `integer`
SQLITE_INTEGER_MAX = 2**63 - 1  # SQLite INTEGER (64-bit signed)
ID_MAX = min(INT4_MAX, SQLITE_INTEGER_MAX)

DATE_MIN = date(1970, 1, 1)
DATE_MAX = date(9000, 12, 31)
DATETIME_MIN = datetime(1970, 1, 1, tzinfo=UTC)
DATETIME_MAX = datetime(9000, 12, 31, 23, 59, 59, tzinfo=UTC)

# Lengths, from the columns they are compared with.
REF_MAX = 300  # deployments.provider_model_id (or slug/model-id)
REGION_MAX = 64
SLUG_MAX = 64
JOB_ID_MAX = 36
KEY_NAME_MAX = 100
SEARCH_MAX = 200
SINCE_TEXT_MAX = 40

# What text may not contain, as a regular expression class that Python's `re` and JSON
# Schema validators (ECMA 262, Rust's regex) read alike: control characters. Lone
# surrogates are refused too (`check_text`), but no regex engine but Python's can name
# them, and no UTF-8 request can carry one but a JSON escape. `\s` is white space to all
# three; U+FEFF only to ECMA 262, hence named.
_FORBIDDEN = r"\x00-\x1f\x7f-\x9f"
TEXT_PATTERN = rf"^[^{_FORBIDDEN}]*$"
# Non-empty, no white space at either end: refs, names.
TRIMMED_PATTERN = rf"^[^\s\ufeff{_FORBIDDEN}]([^{_FORBIDDEN}]*[^\s\ufeff{_FORBIDDEN}])?$"
REGION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
SLUG_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
KEY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]*$"
# `since`: a window (minutes and hours up to 6 digits, days 5, weeks 4: at most about 270
# years back, far from datetime.min) or an ISO 8601 date, optionally with a time, from
# 1970 to 8999, every match a real date (month lengths and leap years spelt out).
_YEAR = r"(19[7-9][0-9]|[2-8][0-9]{3})"
_MONTH_DAY = (
    r"((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)"
    r"|02-(0[1-9]|1[0-9]|2[0-8]))"
)
_LEAP_DAY = (
    r"(19(7[26]|8[048]|9[26])|[2-8][0-9](0[48]|[2468][048]|[13579][26])"
    r"|([2468][048]|[3579][26])00)-02-29"
)
_TIME = (
    r"(T([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?)?"
)
DATE_PATTERN = rf"^({_YEAR}-{_MONTH_DAY}|{_LEAP_DAY})$"
SINCE_PATTERN = (
    rf"^([0-9]{{1,6}}[mh]|[0-9]{{1,5}}d|[0-9]{{1,4}}w|({_YEAR}-{_MONTH_DAY}|{_LEAP_DAY}){_TIME})$"
)


def is_digit_id(text: str) -> bool:
    """True when `text` is a numeric id: ASCII digits only (`"²"` is not)."""
    return text.isascii() and text.isdigit()


def id_in_range(value: int) -> bool:
    """True when `value` can be the id of a row (1 to ID_MAX)."""
    return 1 <= value <= ID_MAX


def forbidden_character(text: str) -> str | None:
    """The first control character or lone surrogate in `text`, or None."""
    for char in text:
        if unicodedata.category(char) in ("Cc", "Cs"):
            return char
    return None


def check_text(value: str) -> str:
    """`value` unless it holds a control character or a lone surrogate."""
    bad = forbidden_character(value)
    if bad is not None:
        raise ValueError(f"must not contain control characters (found U+{ord(bad):04X})")
    return value


def _matches(pattern: str, message: str) -> AfterValidator:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        check_text(value)
        if not compiled.fullmatch(value):
            raise ValueError(message)
        return value

    return AfterValidator(check)


def check_date(value: date) -> date:
    """`value` if it lies from DATE_MIN to DATE_MAX."""
    if isinstance(value, datetime):
        value = value.date()
    if not DATE_MIN <= value <= DATE_MAX:
        raise ValueError(f"must be a date from {DATE_MIN} to {DATE_MAX}")
    return value


def check_datetime(value: datetime) -> datetime:
    """`value` (UTC if naive) if it lies from DATETIME_MIN to DATETIME_MAX; in UTC."""
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value
    if not DATETIME_MIN <= aware <= DATETIME_MAX:
        raise ValueError(f"must be a time from {DATE_MIN} to {DATE_MAX}")
    return aware.astimezone(UTC)


_SINCE_RE = re.compile(SINCE_PATTERN)
_SINCE_MESSAGE = "must be a window (30m, 12h, 7d, 2w) or an ISO 8601 date or time from 1970 to 8999"


def check_since(value: str) -> str:
    """A `since` window or date (SINCE_PATTERN), for `reports.build.parse_since`."""
    if not _SINCE_RE.fullmatch(value):
        raise ValueError(_SINCE_MESSAGE)
    return value


def _empty_is_none(value: Any) -> Any:
    # An HTML form sends an empty field as "": it means "not given".
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _ref_text(value: Any) -> Any:
    # A deployment is named by its numeric id or `provider/model-id`: accept 12 and "12".
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class _Schema:
    """Extra JSON-schema keywords for a type (its pattern, say), so that the OpenAPI
    document states what the validators next to it check."""

    def __init__(self, **keywords: Any) -> None:
        self.keywords = keywords

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        value = handler(schema)
        handler.resolve_ref_schema(value).update(self.keywords)
        return value

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.keywords.items())))


# Positive ids of Integer columns: runs, deployments, providers…
RowId = Annotated[int, Field(ge=1, le=ID_MAX)]

# A deployment: its numeric id or `provider/model-id` (or a model id unique across
# providers); no white space at either end. Digits beyond ID_MAX name no deployment: a
# lookup answers "not found" (api/queries.py), never a driver error.
DeploymentRef = Annotated[
    str,
    BeforeValidator(_ref_text),
    Field(min_length=1, max_length=REF_MAX),
    _matches(
        TRIMMED_PATTERN,
        "must be a deployment id or provider/model-id, without control "
        "characters or surrounding white space",
    ),
    _Schema(pattern=TRIMMED_PATTERN),
]
RegionName = Annotated[str, Field(min_length=1, max_length=REGION_MAX, pattern=REGION_PATTERN)]
ProviderSlug = Annotated[str, Field(min_length=1, max_length=SLUG_MAX, pattern=SLUG_PATTERN)]
JobId = Annotated[str, Field(min_length=1, max_length=JOB_ID_MAX, pattern=JOB_ID_PATTERN)]
KeyName = Annotated[str, Field(min_length=1, max_length=KEY_NAME_MAX, pattern=KEY_NAME_PATTERN)]

# Free text (search boxes, filters): no control characters, bounded.
_TEXT = _matches(TEXT_PATTERN, "must not contain control characters")
SearchText = Annotated[str, Field(max_length=SEARCH_MAX), _TEXT, _Schema(pattern=TEXT_PATTERN)]
RefText = Annotated[str, Field(max_length=REF_MAX), _TEXT, _Schema(pattern=TEXT_PATTERN)]
ShortText = Annotated[str, Field(max_length=64), _TEXT, _Schema(pattern=TEXT_PATTERN)]

Day = Annotated[date, AfterValidator(check_date)]
Moment = Annotated[datetime, AfterValidator(check_datetime)]
# An optional date from a form field: "" (or white space) is None.
FormDay = Annotated[Day | None, BeforeValidator(_empty_is_none)]
Since = Annotated[
    str,
    Field(min_length=1, max_length=SINCE_TEXT_MAX),
    _matches(SINCE_PATTERN, _SINCE_MESSAGE),
    _Schema(pattern=SINCE_PATTERN),
]
