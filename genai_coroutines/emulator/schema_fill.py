"""One JSON value valid against a JSON Schema: what both emulated services fill in.

Datalab fills `page_schema` with what it extracts from a document; OpenAI fills
`json_schema` answers and tool arguments. The emulator fills both here, so the two stay
alike. Given the input `text`, it is a deterministic extractor (no language model):
each property of an object takes the value the text states for it (see `_Grounds`):
a "Label: value" segment whose label matches the property's name, `title` or
`description` ("invoice_number" ~ "Invoice No.", "total" ~ "Total due"), a date for a
date field (ISO-normalised), an amount for a number field, an enum member (or a
currency code behind its symbol) that appears in the text, the header line for a
vendor-like field. Only what the text does not state is generated: every choice from
the caller's seeded `random.Random` (the same request always gets the same value) and
every string from the caller's words (a test can tell which input a value belongs to).
Array items are always generated.

Covers what schema generators emit: objects, arrays (`prefixItems`, min/maxItems),
numbers (bounds, exclusive bounds, `multipleOf`), booleans, null, `enum`, `const`,
local `$ref`, `allOf`, `anyOf`/`oneOf`, type lists, string formats and min/maxLength.
`pattern` is honoured by grounded values only (a generated one ignores it), and
`uniqueItems` not at all.
"""

from __future__ import annotations

import datetime
import html
import math
import random
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any, TypeGuard

Json = dict[str, Any]

MAX_DEPTH = 6
"""Past this depth only required properties, minimum items and null branches are made,
so recursive schemas end."""

UNBOUNDED_SPAN = 100
"""How wide the range a number is drawn from is when the schema leaves a side open."""

_FORMATS = {
    "date": "2024-05-17",
    "date-time": "2024-05-17T09:30:00Z",
    "time": "09:30:00Z",
    "email": "someone@example.com",
    "uri": "https://example.com/item",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
}


def instance(schema: Any, rng: random.Random, words: Sequence[str], text: str | None = None) -> Any:
    """A value valid against `schema`: what `text` states where it states it, the rest drawn
    with `rng` (plain strings picked from `words`)."""
    grounds = _Grounds(text) if text else None
    return _Filler(schema, rng, list(words) or ["value"], grounds).fill(schema, 0)


class _Filler:
    """One fill: keeps the root for `$ref` lookups, the caller's RNG and words, the text."""

    def __init__(
        self, root: Any, rng: random.Random, words: list[str], grounds: _Grounds | None = None
    ) -> None:
        self.root = root
        self.rng = rng
        self.words = words
        self.grounds = grounds

    def fill(self, schema: Any, depth: int, name: str | None = None) -> Any:
        """A value for `schema` nested `depth` levels down (the depth ends recursion);
        `name` is the property it fills, whose value the text may state."""
        schema = self._plain(schema)
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                rest = {name: value for name, value in schema.items() if name != key}
                merged = _merge(rest, self._branch(schema[key], depth))
                return self.fill(merged, depth + 1, name)
        if "const" in schema:
            return schema["const"]
        if self.grounds is not None and name is not None:
            found = self.grounds.find(schema, _kind(schema, depth), _Field.of(name, schema))
            if found is not _NOTHING:
                return found
        if schema.get("enum"):
            return self.rng.choice(schema["enum"])
        kind = _kind(schema, depth)
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        if kind in ("integer", "number"):
            return self._number(schema, kind)
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        return self._string(schema)

    def _plain(self, schema: Any) -> Json:
        """`schema` with `$ref` followed and `allOf` merged in; `true` becomes `{}` (anything)."""
        if not isinstance(schema, dict):
            return {}
        if "$ref" in schema:
            rest = {key: value for key, value in schema.items() if key != "$ref"}
            return self._plain(_merge(self._resolve(schema["$ref"]), rest))
        if "allOf" in schema:
            merged = {key: value for key, value in schema.items() if key != "allOf"}
            for part in schema["allOf"]:
                merged = _merge(merged, self._plain(part))
            return merged
        return schema

    def _resolve(self, ref: str) -> Json:
        """Follow a local JSON pointer such as `#/$defs/Item`; anything else resolves to `{}`."""
        target: Any = self.root
        for part in ref.removeprefix("#").strip("/").split("/"):
            key = part.replace("~1", "/").replace("~0", "~")
            if isinstance(target, list) and key.isdigit() and int(key) < len(target):
                target = target[int(key)]
            elif isinstance(target, dict) and key in target:
                target = target[key]
            elif part:
                return {}
        return target if isinstance(target, dict) else {}

    def _branch(self, branches: list[Any], depth: int) -> Json:
        """The first non-null branch, or a null one past `MAX_DEPTH` so recursion ends."""
        options = [self._plain(branch) for branch in branches]
        nulls = [option for option in options if option.get("type") == "null"]
        if depth >= MAX_DEPTH and nulls:
            return nulls[0]
        return next((option for option in options if option.get("type") != "null"), options[0])

    def _object(self, schema: Json, depth: int) -> Json:
        properties: Json = schema.get("properties") or {}
        required: list[str] = schema.get("required") or []
        value = {
            name: self.fill(sub, depth + 1, name)
            for name, sub in properties.items()
            if depth < MAX_DEPTH or name in required
        }
        for name in required:
            if name not in value:  # required but not described: `additionalProperties` rules
                value[name] = self.fill(schema.get("additionalProperties"), depth + 1)
        return value

    def _array(self, schema: Json, depth: int) -> list[Any]:
        prefix: list[Any] = schema.get("prefixItems") or []
        low = int(schema.get("minItems", 0))
        high = int(schema.get("maxItems", max(low, 3)))
        count = (
            self.rng.randint(min(max(low, 1), high), min(max(low, 3), high))
            if depth < MAX_DEPTH
            else low
        )
        return [
            self.fill(prefix[i] if i < len(prefix) else schema.get("items"), depth + 1)
            for i in range(count)
        ]

    def _number(self, schema: Json, kind: str) -> int | float:
        """A random multiple of `multipleOf` (else of 1, or 0.01 for numbers) within the bounds.

        Worked out in exact fractions of the schema's decimals, so float rounding never lands
        on an exclusive bound; for integers the step is the least integer multiple of it.
        """
        declared = schema.get("multipleOf")
        step = _exact(declared) if _is_number(declared) and declared > 0 else Fraction(1, 100)
        if kind == "integer":
            step = Fraction(step.numerator if _is_number(declared) and declared > 0 else 1)
        first, last = _multiples_in_bounds(schema, step)
        span = int(UNBOUNDED_SPAN / step)
        if first is None:
            first = 0 if last is None or last >= 0 else last - span
        if last is None:
            last = first + span
        value = (self.rng.randint(first, last) if first <= last else first) * step
        return int(value) if kind == "integer" else float(value)

    def _string(self, schema: Json) -> str:
        fmt = schema.get("format", "")
        if fmt == "uuid":
            text = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        else:
            text = _FORMATS.get(fmt) or self.rng.choice(self.words)
        low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
        text = text.ljust(low, "x")
        return text if high is None else text[: int(high)]


def _kind(schema: Json, depth: int) -> str:
    """The type to make: a declared one (null only past `MAX_DEPTH`), else inferred."""
    declared = schema.get("type")
    if isinstance(declared, list):
        kinds = [kind for kind in declared if kind != "null"]
        ending = "null" in declared and (depth >= MAX_DEPTH or not kinds)
        declared = "null" if ending else next(iter(kinds), None)
    if declared:
        return str(declared)
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return "string"


def _merge(left: Json, right: Json) -> Json:
    """Both schemas' keywords, with `properties` and `required` combined rather than replaced."""
    merged = {**left, **right}
    if "properties" in left and "properties" in right:
        merged["properties"] = {**left["properties"], **right["properties"]}
    if "required" in left and "required" in right:
        merged["required"] = list(dict.fromkeys([*left["required"], *right["required"]]))
    return merged


def _multiples_in_bounds(schema: Json, step: Fraction) -> tuple[int | None, int | None]:
    """The least and greatest `n` with `n * step` within the bounds (None where unbounded)."""
    lows: list[int] = []
    highs: list[int] = []
    minimum, maximum = schema.get("minimum"), schema.get("maximum")
    below, above = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if _is_number(minimum):  # draft 4 spells an exclusive bound `exclusiveMinimum: true`
        ratio = _exact(minimum) / step
        lows.append(math.floor(ratio) + 1 if below is True else math.ceil(ratio))
    if _is_number(below):
        lows.append(math.floor(_exact(below) / step) + 1)
    if _is_number(maximum):
        ratio = _exact(maximum) / step
        highs.append(math.ceil(ratio) - 1 if above is True else math.floor(ratio))
    if _is_number(above):
        highs.append(math.ceil(_exact(above) / step) - 1)
    return (max(lows) if lows else None), (min(highs) if highs else None)


def _exact(number: int | float) -> Fraction:
    """The decimal the schema wrote (0.1 is 1/10, not the float nearest to it)."""
    return Fraction(str(number))


def _is_number(value: Any) -> TypeGuard[int | float]:
    """A JSON number; booleans (draft 4's exclusive flags) are not."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# -- grounding: what the text states ---------------------------------------------------

_NOTHING: Any = object()
"""`_Grounds.find` found nothing (None, False and 0 are values)."""

MAX_TEXT = 200_000
"""Characters of the input read for grounding; the rest is ignored."""

_STOP = frozenset({"the", "a", "an", "of", "or", "and", "for", "in", "is", "this", "its"})
_SYNONYMS = {"no": "number", "nr": "number", "num": "number", "#": "number", "id": "number"}
_IDENTIFIER_ENDS = frozenset({"number", "code", "ref", "reference"})
_DOCUMENT_WORDS = frozenset(
    {
        "invoice", "receipt", "order", "statement", "quote", "quotation", "document", "bill",
        "reference", "ref", "ticket", "booking", "contract", "policy", "claim", "po",
    }
)  # fmt: skip
"""What a document's own number follows ("Invoice INV-1042", "Receipt 5531")."""
_VENDOR_WORDS = frozenset(
    {
        "vendor", "supplier", "seller", "merchant", "company", "issuer", "biller", "provider",
        "business", "store", "shop", "payee", "from", "sold",
    }
)  # fmt: skip
_CURRENCIES = frozenset(
    {
        "EUR", "USD", "GBP", "JPY", "CHF", "CAD", "AUD", "NZD", "CNY", "INR", "SEK", "NOK",
        "DKK", "PLN", "CZK", "HUF", "BRL", "MXN", "ZAR", "SGD", "HKD", "KRW", "TRY", "AED",
    }
)  # fmt: skip
_SYMBOLS = {"€": "EUR", "£": "GBP", "$": "USD", "¥": "JPY", "₹": "INR"}
_TRUE_WORDS = frozenset({"yes", "y", "true", "x", "paid", "1", "on"})
_FALSE_WORDS = frozenset({"no", "n", "false", "none", "unpaid", "0", "off"})
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH = "(" + "|".join(_MONTHS) + r")[a-z]*\.?"

_TAG = re.compile(r"<[^>]*>")
_BLOCK_TAG = re.compile(
    r"</?(?:p|div|br|li|ul|ol|tr|table|thead|tbody|h[1-6]|section|article|header|footer"
    r"|blockquote|pre|hr|content-ref)\b[^>]*>",
    re.IGNORECASE,
)
_CELL_TAG = re.compile(r"<t[dh]\b[^>]*>", re.IGNORECASE)
"""HTML is read as lines: block tags end one, a table cell is a `|` cell, other tags go."""
_MD_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_MD_NOISE = re.compile(r"\*\*|__|`")
_LINE_START = re.compile(r"^(?:#{1,6}\s+|>\s*|[-*+]\s+|\d+[.)]\s+)")
_RULE = re.compile(r"^(?:\{\d+\})?[-=_*|:\s]{3,}$")
"""Page separators (`{3}------`), horizontal rules and table separator rows."""
_SPLIT = re.compile(r"\s+[-–—|]\s+|(?<=[a-z0-9)%])[.;!?]\s+(?=[A-Z])|\t+")
_PAIR = re.compile(r"^([^:：]{1,60}?)\s*[:：]\s*(\S.*)$")
_NUMBER = re.compile(r"(?<![\w.,\-/])(-?)(\d[\d,.']*\d|\d)(?![\w/]|[.,]\d)")
_ID_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9\-_/.]*$")
_ID_PREFIX = re.compile(r"^(?:no\.?|nr\.?|number|#|:)\s*", re.IGNORECASE)
_ISO_DATETIME = re.compile(
    r"(?<!\d)(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2})(:\d{2}(?:\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?"
)
_DATES = (
    ("ymd", re.compile(r"(?<!\d)(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?!\d)")),
    ("dmy", re.compile(r"(?<!\d)(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})(?!\d)")),
    (
        "d_month_y",
        re.compile(rf"(?<!\d)(\d{{1,2}})(?:st|nd|rd|th)?\.?\s+{_MONTH},?\s+(\d{{4}})", re.I),
    ),
    ("month_d_y", re.compile(rf"\b{_MONTH}\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+(\d{{4}})", re.I)),
)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(r"https?://[^\s<>\"')]+")
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)


def _tokens(text: str) -> tuple[str, ...]:
    """Words of a label or a property name, compared case-, space- and underscore-blind."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text)
    words = re.findall(r"[a-z0-9]+|#", spaced.lower())
    return tuple(_SYNONYMS.get(word, word) for word in words if word not in _STOP)


@dataclass(frozen=True)
class _Field:
    """The property being filled: the words that name and describe it."""

    name: tuple[str, ...]
    phrases: tuple[tuple[float, tuple[str, ...]], ...]
    """(weight, words): the name counts fully, its title and description a little less."""

    @classmethod
    def of(cls, name: str, schema: Json) -> _Field:
        phrases = [(1.0, _tokens(name))]
        for key, weight in (("title", 0.9), ("description", 0.8)):
            if isinstance(schema.get(key), str):
                phrases.append((weight, _tokens(schema[key])))
        return cls(_tokens(name), tuple((w, p) for w, p in phrases if p))

    @property
    def identifier(self) -> bool:
        return bool(self.name) and self.name[-1] in _IDENTIFIER_ENDS

    @property
    def vendor(self) -> bool:
        return bool(_VENDOR_WORDS & set(self.name))

    def score(self, label: tuple[str, ...]) -> float:
        """How well `label` names this field: 3 same words, 2 one's words within the
        other's, 1 same first word, 0 unrelated (the best over name, title, description)."""
        best = 0.0
        words = set(label)
        if not words:
            return best
        if self.vendor and words & _VENDOR_WORDS:
            best = 2.0
        for weight, phrase in self.phrases:
            mine = set(phrase)
            if mine == words:
                score = 3.0
            elif words <= mine or mine <= words:
                score = 2.0
            elif phrase[0] == label[0]:
                score = 1.0
            else:
                continue
            best = max(best, score * weight)
        return best


@dataclass(frozen=True)
class _Pair:
    label: tuple[str, ...]
    value: str
    spaced: bool
    """Written "Label value", without a colon: only identifiers, numbers and dates are read."""


class _Grounds:
    """The input text, read once: its labelled values, dates, amounts and header."""

    def __init__(self, text: str) -> None:
        self.lines = _clean_lines(text[:MAX_TEXT])
        self.flat = "\n".join(self.lines)
        self.segments = [segment for line in self.lines for segment in _segments(line)]
        self.pairs = [pair for line in self.lines for pair in _row_pair(line)]
        self.pairs += [pair for segment in self.segments for pair in _pairs(segment)]
        self.dates = _find_dates(self.flat)
        self.amounts = _find_numbers(self.flat)

    def find(self, schema: Json, kind: str, field: _Field) -> Any:
        """The value the text states for `field`, valid against `schema`, else `_NOTHING`."""
        if kind in ("object", "array", "null"):
            return _NOTHING
        enum = schema.get("enum")
        candidates = sorted(
            ((field.score(pair.label), position, pair) for position, pair in enumerate(self.pairs)),
            key=lambda item: (-item[0], item[1]),
        )
        strong = kind in ("number", "integer", "boolean") or bool(enum) or _is_date(schema, field)
        for score, _, pair in candidates:
            if score < 1 or (score < 2 and not strong):
                break
            if pair.spaced and not (strong or field.identifier):
                continue
            value = self._parse(pair.value, schema, kind, field, pair.spaced)
            if value is not _NOTHING:
                return value
        return self._anywhere(schema, kind, field)

    def _parse(self, text: str, schema: Json, kind: str, field: _Field, spaced: bool) -> Any:
        """`text` (a labelled value) as a value of `schema`, else `_NOTHING`."""
        enum = schema.get("enum")
        if enum:
            return _first_member(enum, text)
        if kind in ("number", "integer"):
            for _, number, _ in _find_numbers(text):
                value = _fit_number(schema, kind, number)
                if value is not _NOTHING:
                    return value
            return _NOTHING
        if kind == "boolean":
            word = (text.split() or [""])[0].lower().strip(".,;")
            return True if word in _TRUE_WORDS else False if word in _FALSE_WORDS else _NOTHING
        if kind != "string":
            return _NOTHING
        if _is_date(schema, field) or schema.get("format") in ("email", "uri", "uuid"):
            return self._formatted(schema, field, text)
        if spaced or field.identifier:
            text = _ID_PREFIX.sub("", text).strip()
            if spaced and not (_ID_TOKEN.match(text) and re.search(r"\d", text)):
                return _NOTHING
        return _fit_string(schema, text.strip().rstrip(",;").strip())

    def _formatted(self, schema: Json, field: _Field, text: str) -> Any:
        fmt = schema.get("format")
        if fmt == "date-time":
            stamp = _ISO_DATETIME.search(text)
            if stamp:
                seconds = stamp.group(3) or ":00"
                return f"{stamp.group(1)}T{stamp.group(2)}{seconds}{stamp.group(4) or 'Z'}"
        if _is_date(schema, field):
            dates = _find_dates(text)
            if not dates:
                return _NOTHING
            day = dates[0][1]
            return f"{day}T00:00:00Z" if fmt == "date-time" else _fit_string(schema, day)
        pattern = {"email": _EMAIL, "uri": _URL, "uuid": _UUID}[str(fmt)]
        found = pattern.search(text)
        return _fit_string(schema, found.group(0)) if found else _NOTHING

    def _anywhere(self, schema: Json, kind: str, field: _Field) -> Any:
        """No label names the field: what the text as a whole says of its kind."""
        enum = schema.get("enum")
        if enum:
            return _first_member(enum, self.flat)
        if kind == "number":
            for _, number, money in self.amounts:
                value = _fit_number(schema, kind, number) if money else _NOTHING
                if value is not _NOTHING:
                    return value
            return _NOTHING
        if kind != "string":
            return _NOTHING
        if _is_date(schema, field) or schema.get("format") in ("email", "uri", "uuid"):
            return self._formatted(schema, field, self.flat)
        if "currency" in field.name:
            return _first_member(sorted(_CURRENCIES), self.flat)
        if field.identifier and set(field.name[:-1]) <= _DOCUMENT_WORDS:
            return self._document_number(schema)
        if field.vendor:
            return self._header(schema)
        return _NOTHING

    def _document_number(self, schema: Json) -> Any:
        """The number after a document word: "Invoice INV-1042", "Receipt No. 5531"."""
        for pair in self.pairs:
            if pair.spaced and len(pair.label) == 1 and pair.label[0] in _DOCUMENT_WORDS:
                value = _ID_PREFIX.sub("", pair.value).strip()
                if _ID_TOKEN.match(value) and re.search(r"\d", value):
                    return _fit_string(schema, value)
        return _NOTHING

    def _header(self, schema: Json) -> Any:
        """Who issued the document: the first short segment of its first lines, as in
        "ACME Supplies Ltd - Invoice INV-1042"."""
        for line in self.lines[:3]:
            first = _segments(line)[0]
            words = first.split()
            if (
                not first.endswith(":")
                and not _PAIR.match(first)
                and 0 < len(words) <= 8
                and re.search(r"[A-Za-z]", first)
                and _tokens(words[0])[:1] != ("invoice",)
                and not set(_tokens(words[0])) & _DOCUMENT_WORDS
            ):
                return _fit_string(schema, first.rstrip(".,;"))
        return _NOTHING


def _is_date(schema: Json, field: _Field) -> bool:
    fmt = schema.get("format")
    return fmt in ("date", "date-time") or (fmt is None and "date" in field.name)


def _clean_lines(text: str) -> list[str]:
    """The text's lines without markup: HTML tags break lines, markdown marks go, and so
    do page separators, image references and the emulator's OCR placeholders."""
    text = _CELL_TAG.sub(" | ", _BLOCK_TAG.sub("\n", text))
    text = html.unescape(_TAG.sub("", text))
    lines = []
    for raw in text.splitlines():
        if "[emulated OCR:" in raw:
            continue
        line = _MD_NOISE.sub("", _MD_IMAGE.sub(" ", raw)).strip()
        line = " ".join(_LINE_START.sub("", line).split())
        if line and not _RULE.match(line):
            lines.append(line)
    return lines


def _segments(line: str) -> list[str]:
    """A line cut where one statement ends and the next begins: " - ", " | ", sentences."""
    if line.startswith("|"):
        return [cell.strip() for cell in line.strip("|").split("|") if cell.strip()] or [line]
    return [part.strip() for part in _SPLIT.split(line) if part and part.strip()] or [line]


def _row_pair(line: str) -> Iterator[_Pair]:
    """A table row "| Total due | 320.00 EUR |" read as label and value."""
    if line.startswith("|"):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) >= 2 and re.search(r"[A-Za-z]", cells[0]) and cells[1]:
            yield _Pair(_tokens(cells[0].rstrip(":")), cells[1], spaced=False)


def _pairs(segment: str) -> Iterator[_Pair]:
    """The (label, value) readings of a segment: "Total due: 320.00 EUR", and, without a
    colon, each way of reading its first one to four words as a label ("Invoice INV-1042")."""
    match = _PAIR.match(segment)
    if match:
        label, value = match.group(1).strip(), match.group(2).strip()
        if re.search(r"[A-Za-z]", label) and len(label.split()) <= 6 and value[:2] != "//":
            yield _Pair(_tokens(label), value, spaced=False)
        return
    words = segment.split()
    for count in range(1, min(4, len(words) - 1) + 1):
        label = words[:count]
        if all(re.fullmatch(r"[A-Za-z][A-Za-z.#]*", word) for word in label):
            yield _Pair(_tokens(" ".join(label)), " ".join(words[count:]), spaced=True)


def _find_dates(text: str) -> list[tuple[int, str]]:
    """(position, ISO date) of each valid date in `text`, in order."""
    found: dict[int, str] = {}
    for style, pattern in _DATES:
        for match in pattern.finditer(text):
            a, b, c = match.groups()
            try:
                if style == "ymd":
                    day = datetime.date(int(a), int(b), int(c))
                elif style == "dmy":  # day first, unless only month-first is a date
                    first, second = (int(b), int(a)) if int(a) <= 12 < int(b) else (int(a), int(b))
                    day = datetime.date(int(c), second, first)
                elif style == "d_month_y":
                    day = datetime.date(int(c), _MONTHS.index(b[:3].lower()) + 1, int(a))
                else:
                    day = datetime.date(int(c), _MONTHS.index(a[:3].lower()) + 1, int(b))
            except ValueError:
                continue
            found.setdefault(match.start(), day.isoformat())
    return sorted(found.items())


def _find_numbers(text: str) -> list[tuple[int, Decimal, bool]]:
    """(position, value, looks like money) of each number in `text`, in order. Both
    "14,400.00" and "14.400,00" read as 14400; money has two decimals or a currency."""
    numbers = []
    for match in _NUMBER.finditer(text):
        value = _decimal(match.group(2))
        if value is None:
            continue
        if match.group(1):
            value = -value
        around = (
            text[max(0, match.start() - 4) : match.start()] + text[match.end() : match.end() + 5]
        )
        money = (
            bool(re.search(r"\.\d\d$|,\d\d$", match.group(2)))
            or any(symbol in around for symbol in _SYMBOLS)
            or any(code in around for code in _CURRENCIES)
        )
        numbers.append((match.start(), value, money))
    return numbers


def _decimal(token: str) -> Decimal | None:
    token = token.replace("'", "")
    if "," in token and "." in token:
        point = "," if token.rfind(",") > token.rfind(".") else "."
        token = token.replace("." if point == "," else ",", "").replace(point, ".")
    else:
        separator = "," if "," in token else "." if "." in token else None
        if separator is not None:
            parts = token.split(separator)
            if len(parts[0]) <= 3 and len(parts) > 1 and all(len(p) == 3 for p in parts[1:]):
                if separator == "," or len(parts) > 2:
                    token = "".join(parts)
            elif len(parts) == 2:
                token = f"{parts[0]}.{parts[1]}"
            else:
                return None
    try:
        return Decimal(token)
    except InvalidOperation:
        return None


def _fit_number(schema: Json, kind: str, number: Decimal) -> Any:
    """`number` as the schema's kind when it meets the schema's bounds, else `_NOTHING`."""
    exact = Fraction(number)
    if kind == "integer" and exact.denominator != 1:
        return _NOTHING
    minimum, maximum = schema.get("minimum"), schema.get("maximum")
    below, above = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    step = schema.get("multipleOf")
    if (
        (
            _is_number(minimum)
            and (exact < _exact(minimum) or (below is True and exact == _exact(minimum)))
        )
        or (
            _is_number(maximum)
            and (exact > _exact(maximum) or (above is True and exact == _exact(maximum)))
        )
        or (_is_number(below) and exact <= _exact(below))
        or (_is_number(above) and exact >= _exact(above))
        or (_is_number(step) and step > 0 and (exact / _exact(step)).denominator != 1)
    ):
        return _NOTHING
    return int(exact) if kind == "integer" else float(number)


def _fit_string(schema: Json, text: str) -> Any:
    """`text` cut to `maxLength`, or `_NOTHING` when too short, empty or off `pattern`."""
    high = schema.get("maxLength")
    if high is not None:
        text = text[: int(high)].rstrip()
    if not text or len(text) < int(schema.get("minLength", 0)):
        return _NOTHING
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        try:
            if re.search(pattern, text) is None:
                return _NOTHING
        except re.error:
            return _NOTHING
    return text


def _first_member(enum: list[Any], text: str) -> Any:
    """The string member of `enum` the text mentions first (a currency code also by its
    symbol), else `_NOTHING`. Members written as in the enum count before any other casing."""
    for flags in (0, re.IGNORECASE):
        best: tuple[int, Any] | None = None
        for member in enum:
            if not isinstance(member, str) or not member.strip():
                continue
            match = re.search(rf"(?<![A-Za-z0-9]){re.escape(member)}(?![A-Za-z0-9])", text, flags)
            places = [match.start()] if match else []
            places += [text.find(sign) for sign, code in _SYMBOLS.items() if code == member.upper()]
            places = [place for place in places if place >= 0]
            if places and (best is None or min(places) < best[0]):
                best = (min(places), member)
        if best is not None:
            return best[1]
    return _NOTHING
