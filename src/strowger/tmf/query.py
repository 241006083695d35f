"""TMF630 query conventions: attribute filtering, ``fields`` selection, ``sort`` and paging.

Every query parameter other than ``fields``, ``sort``, ``offset`` and ``limit``
is an attribute filter (TMF resources have an open content model, so any
attribute, including extension attributes, can be filtered on). Forms accepted::

    state=completed                 equality
    state=acknowledged,inProgress   comma list: any of the values (OR)
    relatedParty.id=C               dotted path into nested objects; arrays match
                                    when ANY element matches
    orderDate.gt=2024-01-01         .gt .gte .lt .lte .eq .ne suffixes
    orderDate[gte]=2024-01-01       the same operators in brackets
    orderDate>=2024-01-01           and as operators (>, >=, <, <=, !=)

Separate parameters are AND-ed. Values are compared by the type of the stored
value: numbers numerically, booleans as ``true``/``false``, strings that are
both RFC 3339 times chronologically, other strings exactly. A filter on an
attribute no resource carries matches nothing. Functions here are pure.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from strowger.tmf.errors import BadRequest

RESERVED = frozenset({"fields", "sort", "offset", "limit"})
ALWAYS_RETURNED = ("id", "href", "@type")
DEFAULT_LIMIT = 1000
MAX_LIMIT = 1000
MAX_PAGE_NUMBER = 2**63 - 1  # offset and limit go to SQL as 64-bit integers (INTEGER, BIGINT)

Document = Mapping[str, Any]
Path = tuple[str, ...]


class Op(enum.StrEnum):
    EQ = "eq"
    NE = "ne"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"


_SYMBOLS = {">=": Op.GTE, "<=": Op.LTE, "!=": Op.NE, ">": Op.GT, "<": Op.LT, "=": Op.EQ}
_SUFFIX = re.compile(r"^(?P<path>.+)\.(?P<op>eq|ne|gt|gte|lt|lte)$")
_BRACKET = re.compile(r"^(?P<path>.+)\[(?P<op>eq|ne|gt|gte|lt|lte)\]$")
_SEGMENT = re.compile(r"^[@A-Za-z_$][\w$@-]*$")


@dataclass(frozen=True, slots=True)
class Condition:
    """``path op value`` for any one of ``values`` (OR); a document matches if any value at path does."""

    path: Path
    op: Op
    values: tuple[str, ...]

    def matches(self, document: Document) -> bool:
        found = list(values_at(document, self.path))
        if self.op is Op.NE:
            # "not equal" holds when NO value at the path equals any listed value.
            return not any(_compare(v, Op.EQ, wanted) for v in found for wanted in self.values)
        return any(_compare(v, self.op, wanted) for v in found for wanted in self.values)


@dataclass(frozen=True, slots=True)
class SortKey:
    path: Path
    descending: bool = False


@dataclass(frozen=True, slots=True)
class ResourceQuery:
    """A parsed list request: what to match, how to order, which page, which fields."""

    conditions: tuple[Condition, ...] = ()
    sort: tuple[SortKey, ...] = ()
    offset: int = 0
    limit: int = DEFAULT_LIMIT
    fields: tuple[Path, ...] | None = None  # None: every field

    def matches(self, document: Document) -> bool:
        return all(condition.matches(document) for condition in self.conditions)


@dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0


def parse_query(params: Iterable[tuple[str, str]], *, max_limit: int = MAX_LIMIT) -> ResourceQuery:
    """A :class:`ResourceQuery` from decoded query parameters, or BadRequest naming the bad one."""
    conditions: list[Condition] = []
    sort: tuple[SortKey, ...] = ()
    offset, limit = 0, min(DEFAULT_LIMIT, max_limit)
    fields: tuple[Path, ...] | None = None
    for name, value in params:
        if name == "fields":
            fields = parse_fields(value)
        elif name == "sort":
            sort = parse_sort(value)
        elif name == "offset":
            offset = _non_negative(name, value)
        elif name == "limit":
            limit = _non_negative(name, value, max_limit)
        else:
            conditions.append(parse_condition(name, value))
    return ResourceQuery(tuple(conditions), sort, offset, limit, fields)


def parse_condition(name: str, value: str) -> Condition:
    """One filter parameter (``name=value`` as decoded from the query string)."""
    parameter = name
    op = Op.EQ
    # "a>=5" arrives as name "a>", value "5"; "a>5" as name "a>5", value "".
    if name and name[-1] in "<>!":
        op, name = _SYMBOLS[name[-1] + "="], name[:-1]
    elif value == "" and (symbol := re.search(r"(>=|<=|!=|>|<)", name)):
        op = _SYMBOLS[symbol.group(1)]
        name, value = name[: symbol.start()], name[symbol.end() :]
    elif match := _SUFFIX.match(name) or _BRACKET.match(name):
        op, name = Op(match.group("op")), match.group("path")
    path = parse_path(name)
    values = tuple(part.strip() for part in value.split(","))
    for part in values:
        if _DATE_SHAPED.match(part) and _as_time(part) is None:
            # Compared as text it would quietly match nothing (or everything): say so instead.
            raise BadRequest(
                f"{parameter}: {part!r} is not a date-time (RFC 3339, e.g. 2026-05-01T10:00:00Z)",
                field=parameter,
                code="invalidParameter",
            )
    return Condition(path, op, values)


# A full date at the start: the value is meant as a time. Shorter prefixes ("2026", "2026-05")
# stay text, which orders RFC 3339 times correctly by their leading fields.
_DATE_SHAPED = re.compile(r"^\d{4}-\d{2}-\d{2}")


def parse_path(text: str) -> Path:
    """``relatedParty.id`` -> ("relatedParty", "id"); BadRequest if a segment is not a name."""
    parts = tuple(part.strip() for part in text.split("."))
    if not parts or not all(_SEGMENT.match(part) for part in parts):
        raise BadRequest(f"{text!r} is not an attribute path", field=text, code="invalidParameter")
    return parts


def parse_fields(text: str) -> tuple[Path, ...]:
    """``fields=name,price.value``; ``fields=none`` selects only the always-returned fields."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    return tuple(parse_path(name) for name in names if name != "none")


def parse_sort(text: str) -> tuple[SortKey, ...]:
    """``sort=name,-lastUpdate``: comma list, ``-`` for descending (``+`` accepted for ascending)."""
    keys = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        descending = part.startswith("-")
        keys.append(SortKey(parse_path(part.lstrip("+-")), descending))
    return tuple(keys)


def _non_negative(name: str, value: str, maximum: int = MAX_PAGE_NUMBER) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if not 0 <= number <= maximum:
        raise BadRequest(
            f"{name}: expected an integer from 0 to {maximum}, got {value!r}",
            field=name,
            code="invalidParameter",
        )
    return number


def values_at(document: Any, path: Sequence[str]) -> Iterator[Any]:
    """Every value at ``path``, descending into each element of the arrays met on the way."""
    if isinstance(document, list):
        for element in document:
            yield from values_at(element, path)
        return
    if not path:
        yield document
        return
    if isinstance(document, Mapping) and path[0] in document:
        yield from values_at(document[path[0]], path[1:])


def _compare(actual: Any, op: Op, wanted: str) -> bool:
    typed = _coerce(actual, wanted)
    if typed is None:
        return False
    left, right = typed
    if op in (Op.EQ, Op.NE):
        return (left == right) is (op is Op.EQ)
    try:
        if op is Op.GT:
            return bool(left > right)
        if op is Op.GTE:
            return bool(left >= right)
        if op is Op.LT:
            return bool(left < right)
        return bool(left <= right)
    except TypeError:
        return False


def _coerce(actual: Any, wanted: str) -> tuple[Any, Any] | None:
    """The stored value and the query text as two comparable values, or None if they cannot be."""
    if isinstance(actual, bool):
        return (actual, wanted.lower() == "true") if wanted.lower() in ("true", "false") else None
    if isinstance(actual, int | float):
        try:
            return actual, float(wanted)
        except ValueError:
            return None
    if isinstance(actual, str):
        times = _as_time(actual), _as_time(wanted)
        if times[0] is not None and times[1] is not None:
            return times
        return actual, wanted
    return None  # objects, arrays and null never equal a query value


def _as_time(text: str) -> datetime | None:
    if len(text) < 10 or not text[:4].isdigit() or text[4:5] != "-":
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def select_fields(document: Document, fields: Sequence[Path] | None) -> dict[str, Any]:
    """``document`` reduced to ``fields`` (plus id, href and @type); arrays are projected per element."""
    if fields is None:
        return dict(document)
    selected: dict[str, Any] = {key: document[key] for key in ALWAYS_RETURNED if key in document}
    for path in fields:
        _project(document, path, selected)
    return selected


def _project(source: Any, path: Path, target: dict[str, Any]) -> None:
    head, rest = path[0], path[1:]
    if not isinstance(source, Mapping) or head not in source:
        return
    value = source[head]
    if not rest:
        target[head] = value
    elif isinstance(value, list):
        existing = target.setdefault(head, [{} for _ in value])
        for element, projected in zip(value, existing, strict=False):
            _project(element, rest, projected)
    elif isinstance(value, Mapping):
        _project(value, rest, target.setdefault(head, {}))


def sort_documents(documents: list[dict[str, Any]], keys: Sequence[SortKey]) -> list[dict[str, Any]]:
    """Stable multi-key sort; documents missing a key sort after those that have it, either way."""
    ordered = list(documents)
    for key in reversed(keys):
        keyed = [(_sort_value(d, key.path), d) for d in ordered]
        present = [(value, d) for value, d in keyed if value is not None]
        present.sort(key=lambda pair: pair[0], reverse=key.descending)
        ordered = [d for _, d in present] + [d for value, d in keyed if value is None]
    return ordered


def _sort_value(document: Document, path: Path) -> tuple[int, Any] | None:
    """A key that orders mixed types deterministically: booleans, numbers, times, then strings."""
    value = next(values_at(document, path), None)
    if value is None or isinstance(value, Mapping | list):
        return None
    if isinstance(value, bool):
        return (0, value)
    if isinstance(value, int | float):
        return (1, value)
    text = str(value)
    moment = _as_time(text)
    return (2, moment) if moment is not None else (3, text)


def page_of(documents: Iterable[dict[str, Any]], total: int, query: ResourceQuery) -> Page:
    """A page the database already filtered and cut, of ``total`` matches, with ``query``'s fields."""
    return Page([select_fields(d, query.fields) for d in documents], total)


def apply_query(documents: Iterable[dict[str, Any]], query: ResourceQuery) -> Page:
    """Filter, sort, page and project ``documents`` as ``query`` says."""
    matching = [d for d in documents if query.matches(d)]
    if query.sort:
        matching = sort_documents(matching, query.sort)
    window = matching[query.offset : query.offset + query.limit]
    return Page([select_fields(d, query.fields) for d in window], len(matching))
