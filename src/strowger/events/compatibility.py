"""Schema evolution rules: may a new JSON Schema replace the old ones?

The modes mean what they mean in Confluent Schema Registry:

* BACKWARD — consumers on the NEW schema can read data written with the OLD one
  (the new schema accepts every document the old one accepted);
* FORWARD — consumers on the OLD schema can read data written with the NEW one;
* FULL — both; the ``_TRANSITIVE`` variants check against every earlier
  version, the others against the latest only; NONE checks nothing.

Both directions reduce to one question, asked by :class:`_Checker`: *does the
reader schema accept every document the writer schema accepts?* (BACKWARD: reader
= new, writer = old; FORWARD: reader = old, writer = new). Each way it can fail
is reported as an :class:`Incompatibility` naming the JSON path of the document
location, in the words of the evolution (old → new).

Two conventions follow TMF's open content model (docs/schema-registry.md):

* an object without ``additionalProperties: false`` accepts unknown members, so
  removing an optional field, or adding one, is compatible both ways;
* a field a schema does not declare is assumed not to be sent under that name
  with another meaning (extensions are declared through ``@type`` subtypes), so
  declaring a new optional field is not flagged against an open old schema.

The analysis is sound for the keywords it understands and conservative for the
rest: a change to ``not``, ``if``/``then``/``else``, ``patternProperties``... is
reported as unprovable rather than silently accepted.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft7Validator
from jsonschema.validators import validator_for

Schema = Mapping[str, Any] | bool
_ALL_TYPES = frozenset({"null", "boolean", "object", "array", "number", "integer", "string"})
_UPPER_BOUNDS = ("maxLength", "maximum", "exclusiveMaximum", "maxItems", "maxProperties")
_LOWER_BOUNDS = ("minLength", "minimum", "exclusiveMinimum", "minItems", "minProperties")
# Keywords whose effect this checker cannot compare: any change to them is reported.
_OPAQUE = (
    "not",
    "if",
    "then",
    "else",
    "patternProperties",
    "propertyNames",
    "dependencies",
    "dependentRequired",
    "dependentSchemas",
    "contains",
    "unevaluatedProperties",
    "unevaluatedItems",
    "prefixItems",
    "additionalItems",
)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Compatibility(enum.StrEnum):
    """A subject's compatibility level, as Confluent Schema Registry names them."""

    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"
    NONE = "NONE"

    @property
    def transitive(self) -> bool:
        return self.value.endswith("_TRANSITIVE")

    @property
    def backward(self) -> bool:
        return self.value.startswith(("BACKWARD", "FULL"))

    @property
    def forward(self) -> bool:
        return self.value.startswith(("FORWARD", "FULL"))


class Direction(enum.Enum):
    """Which side reads: BACKWARD = the new schema reads old data; FORWARD = the old reads new data."""

    BACKWARD = "backward"
    FORWARD = "forward"


@dataclass(frozen=True, slots=True)
class Incompatibility:
    """One breaking change: where (JSON path), what (a stable code) and why (a sentence)."""

    path: str
    kind: str
    message: str
    version: int | None = None  # the earlier version it breaks, when known

    def __str__(self) -> str:
        against = "" if self.version is None else f" (against version {self.version})"
        return f"{self.path}: {self.message}{against}"


def check(new: Schema, previous: Sequence[tuple[int, Schema]], mode: Compatibility) -> list[Incompatibility]:
    """Every way ``new`` breaks ``mode`` against ``previous`` ((version, schema), oldest first)."""
    if mode is Compatibility.NONE or not previous:
        return []
    against = previous if mode.transitive else previous[-1:]
    found: list[Incompatibility] = []
    for version, old in reversed(against):
        for issue in compare(old, new, mode):
            found.append(Incompatibility(issue.path, issue.kind, issue.message, version))
    return found


def compare(old: Schema, new: Schema, mode: Compatibility) -> list[Incompatibility]:
    """The breaking changes from ``old`` to ``new`` in the direction(s) ``mode`` checks."""
    found: list[Incompatibility] = []
    if mode.backward:
        found += _Checker(reader=new, writer=old, direction=Direction.BACKWARD).run()
    if mode.forward:
        found += _Checker(reader=old, writer=new, direction=Direction.FORWARD).run()
    return found


class _Checker:
    """Does ``reader`` accept every document ``writer`` accepts? Collects each reason it may not."""

    def __init__(self, reader: Schema, writer: Schema, direction: Direction) -> None:
        self.reader_root = reader
        self.writer_root = writer
        self.direction = direction
        self.found: list[Incompatibility] = []
        self._in_progress: set[tuple[str | None, str | None]] = set()
        self._clean: set[tuple[str, str]] = set()

    @property
    def backward(self) -> bool:
        return self.direction is Direction.BACKWARD

    def run(self) -> list[Incompatibility]:
        self._compare(self.reader_root, self.writer_root, "$")
        return self.found

    # -- reporting -------------------------------------------------------------------------------

    def _report(self, path: str, kind: str, message: str) -> None:
        self.found.append(Incompatibility(path, kind, message))

    def _old_new(self, reader: Any, writer: Any) -> tuple[Any, Any]:
        """(old, new) from (reader, writer): the evolution's words whatever the direction."""
        return (writer, reader) if self.backward else (reader, writer)

    # -- dispatch ---------------------------------------------------------------------------------

    def _compare(self, reader: Any, writer: Any, path: str) -> None:
        reader_ref, reader = _deref(reader, self.reader_root)
        writer_ref, writer = _deref(writer, self.writer_root)
        pair = (reader_ref, writer_ref)
        if reader_ref and writer_ref and pair in self._clean:
            return
        if pair in self._in_progress and (reader_ref or writer_ref):
            return  # a recursive structure: assumed compatible until shown otherwise (coinduction)
        self._in_progress.add(pair)
        before = len(self.found)
        try:
            self._compare_resolved(reader, writer, path)
        finally:
            self._in_progress.discard(pair)
        if reader_ref and writer_ref and len(self.found) == before:
            self._clean.add((reader_ref, writer_ref))

    def _compare_resolved(self, reader: Any, writer: Any, path: str) -> None:
        if reader is True or reader == {} or writer is False or (reader == writer and _no_refs(reader)):
            return
        if reader is False:
            self._report(path, "NOTHING_ACCEPTED", "the schema accepts nothing here any more")
            return
        writer = {} if writer is True else writer
        writer = _flatten(writer, self.writer_root)
        reader = _flatten(reader, self.reader_root)
        writer_branches = _branches(writer)
        if writer_branches is not None:
            for branch in writer_branches:
                self._compare(reader, branch, path)
            return
        reader_branches = _branches(reader)
        if reader_branches is not None:
            self._compare_to_alternatives(reader_branches, writer, path)
            return
        self._compare_plain(reader, writer, path)

    def _compare_to_alternatives(self, alternatives: list[Any], writer: Any, path: str) -> None:
        """``writer`` must be accepted by at least one reader alternative (oneOf/anyOf branch)."""
        best: list[Incompatibility] | None = None
        for alternative in alternatives:
            trial = _Checker(self.reader_root, self.writer_root, self.direction)
            trial._in_progress = set(self._in_progress)
            trial._compare(alternative, writer, path)
            if not trial.found:
                return
            if best is None or len(trial.found) < len(best):
                best = trial.found
        reasons = "; ".join(str(issue) for issue in best or [])
        label = _label(writer)
        if self.backward:
            self._report(
                path,
                "ALTERNATIVE_REMOVED",
                f"old alternative {label} is accepted by no alternative of the new schema "
                f"(closest: {reasons})",
            )
        else:
            self._report(
                path,
                "ALTERNATIVE_ADDED",
                f"new alternative {label} is accepted by no alternative of the old schema, "
                f"so old consumers reject it (closest: {reasons})",
            )

    def _compare_plain(self, reader: Mapping[str, Any], writer: Mapping[str, Any], path: str) -> None:
        if "enum" in writer or "const" in writer:
            self._compare_finite(reader, writer, path)
            return
        if "enum" in reader or "const" in reader:
            if self.backward:
                self._report(
                    path,
                    "NARROWED_TO_ENUM",
                    f"narrowed to the values {_show(_values(reader))}: old data may hold any other value",
                )
            else:
                self._report(
                    path,
                    "ENUM_REMOVED",
                    f"enumeration {_show(_values(reader))} removed: new data may hold "
                    "values old consumers reject",
                )
            return
        shared = self._compare_types(reader, writer, path)
        self._compare_bounds(reader, writer, path)
        self._compare_opaque(reader, writer, path)
        if "object" in shared:
            self._compare_objects(reader, writer, path)
        if "array" in shared:
            self._compare_arrays(reader, writer, path)

    # -- finite value sets ------------------------------------------------------------------------

    def _compare_finite(self, reader: Mapping[str, Any], writer: Mapping[str, Any], path: str) -> None:
        """A writer with an enum produces finitely many values: test each one against the reader."""
        writer_check = _validator(writer, self.writer_root)
        reader_check = _validator(reader, self.reader_root)
        rejected = [v for v in _values(writer) if writer_check.is_valid(v) and not reader_check.is_valid(v)]
        if not rejected:
            return
        if self.backward:
            self._report(
                path,
                "ENUM_VALUE_REMOVED",
                f"value(s) {_show(rejected)} no longer accepted: old data may hold them",
            )
        else:
            self._report(
                path, "ENUM_VALUE_ADDED", f"value(s) {_show(rejected)} added: old consumers reject them"
            )

    # -- types ------------------------------------------------------------------------------------

    def _compare_types(self, reader: Mapping[str, Any], writer: Mapping[str, Any], path: str) -> set[str]:
        """Report the writer types the reader refuses; return the types both accept."""
        reader_types, writer_types = _types(reader), _types(writer)
        refused = {t for t in writer_types if not _accepts_type(reader_types, t)}
        # integer is a number: a reader of integers refuses only the writer's non-integral numbers
        if refused:
            old, new = self._old_new(reader_types, writer_types)
            if refused == {"number"} and "integer" in reader_types:
                kind, how = ("TYPE_NARROWED", "narrowed") if self.backward else ("TYPE_WIDENED", "widened")
            elif refused == writer_types:
                kind, how = "TYPE_CHANGED", "changed"
            else:
                kind, how = ("TYPE_NARROWED", "narrowed") if self.backward else ("TYPE_WIDENED", "widened")
            self._report(path, kind, f"type {how} from {_show_types(old)} to {_show_types(new)}")
        return {t for t in writer_types if _accepts_type(reader_types, t)}

    # -- scalar constraints -----------------------------------------------------------------------

    def _compare_bounds(self, reader: Mapping[str, Any], writer: Mapping[str, Any], path: str) -> None:
        for keyword in _UPPER_BOUNDS:
            self._compare_bound(keyword, reader, writer, path, tighter=lambda r, w: r < w)
        for keyword in _LOWER_BOUNDS:
            self._compare_bound(keyword, reader, writer, path, tighter=lambda r, w: r > w)
        if "multipleOf" in reader:
            step, writer_step = reader["multipleOf"], writer.get("multipleOf")
            if writer_step is None or (writer_step / step) % 1:
                self._constraint(path, "multipleOf", reader, writer)
        for keyword in ("pattern", "format"):
            if keyword in reader and writer.get(keyword) != reader[keyword]:
                self._constraint(path, keyword, reader, writer)
        if reader.get("uniqueItems") and not writer.get("uniqueItems"):
            self._constraint(path, "uniqueItems", reader, writer)

    def _compare_bound(
        self, keyword: str, reader: Mapping[str, Any], writer: Mapping[str, Any], path: str, tighter: Any
    ) -> None:
        if keyword not in reader or isinstance(reader[keyword], bool):
            return  # draft-04 boolean exclusiveMaximum is a modifier, compared with maximum
        if keyword in writer and not tighter(reader[keyword], writer[keyword]):
            return
        old, new = self._old_new(reader.get(keyword), writer.get(keyword))
        name = _snake(keyword)
        if self.backward:
            self._report(path, f"{name}_TIGHTENED", f"{keyword} tightened from {_bound(old)} to {new}")
        else:
            self._report(
                path,
                f"{name}_LOOSENED",
                f"{keyword} loosened from {old} to {_bound(new)}: old consumers reject values beyond it",
            )

    def _constraint(
        self, path: str, keyword: str, reader: Mapping[str, Any], writer: Mapping[str, Any]
    ) -> None:
        old, new = self._old_new(reader.get(keyword), writer.get(keyword))
        if self.backward:
            kind = "CONSTRAINT_ADDED" if old is None else "CONSTRAINT_CHANGED"
            self._report(
                path, kind, f"{keyword} changed from {_bound(old)} to {new!r}: old data may not match"
            )
        else:
            kind = "CONSTRAINT_REMOVED" if new is None else "CONSTRAINT_CHANGED"
            self._report(
                path,
                kind,
                f"{keyword} changed from {old!r} to {_bound(new)}: old consumers may reject new data",
            )

    def _compare_opaque(self, reader: Mapping[str, Any], writer: Mapping[str, Any], path: str) -> None:
        for keyword in _OPAQUE:
            if keyword in reader and reader[keyword] != writer.get(keyword):
                self._report(
                    path,
                    "UNPROVABLE_CHANGE",
                    f"'{keyword}' differs between the versions and its effect cannot be proven compatible",
                )

    # -- objects ----------------------------------------------------------------------------------

    def _compare_objects(self, reader: Mapping[str, Any], writer: Mapping[str, Any], path: str) -> None:
        self._compare_required(reader, writer, path)
        reader_props: Mapping[str, Any] = reader.get("properties", {})
        writer_props: Mapping[str, Any] = writer.get("properties", {})
        reader_extra, writer_extra = (
            reader.get("additionalProperties", True),
            writer.get("additionalProperties", True),
        )
        for name, writer_prop in writer_props.items():
            where = _member(path, name)
            if name in reader_props:
                self._compare(reader_props[name], writer_prop, where)
            elif reader_extra is False:
                self._closed_member(where, name)
            else:
                self._compare(reader_extra, writer_prop, where)
        if isinstance(writer_extra, Mapping):  # the writer may send any name with this schema
            for name, reader_prop in reader_props.items():
                if name not in writer_props:
                    self._compare(reader_prop, writer_extra, _member(path, name))
        if writer_extra is not False:
            self._compare_extra(reader_extra, writer_extra, path)

    def _compare_required(self, reader: Mapping[str, Any], writer: Mapping[str, Any], path: str) -> None:
        writer_required = set(writer.get("required", ()))
        for name in reader.get("required", ()):
            if name in writer_required:
                continue
            if self.backward:
                self._report(
                    _member(path, name),
                    "REQUIRED_FIELD_ADDED",
                    f"new required field '{name}': old data may lack it",
                )
            else:
                self._report(
                    _member(path, name),
                    "REQUIRED_FIELD_REMOVED",
                    f"field '{name}' is no longer required (or was removed) but old consumers require it",
                )

    def _closed_member(self, path: str, name: str) -> None:
        if self.backward:
            self._report(
                path,
                "FIELD_REMOVED",
                f"field '{name}' removed while the new schema closes the object "
                "(additionalProperties: false): old data carrying it is rejected",
            )
        else:
            self._report(
                path,
                "FIELD_ADDED_TO_CLOSED_CONTENT",
                f"field '{name}' added but the old schema closes the object "
                "(additionalProperties: false): old consumers reject it",
            )

    def _compare_extra(self, reader_extra: Any, writer_extra: Any, path: str) -> None:
        if reader_extra is False:
            if self.backward:
                self._report(
                    path,
                    "ADDITIONAL_PROPERTIES_CLOSED",
                    "additionalProperties closed: old data with undeclared members is rejected",
                )
            else:
                self._report(
                    path,
                    "ADDITIONAL_PROPERTIES_OPENED",
                    "additionalProperties opened: new data may carry members old consumers reject",
                )
            return
        self._compare(reader_extra, writer_extra, f"{path}.*")

    # -- arrays -----------------------------------------------------------------------------------

    def _compare_arrays(self, reader: Mapping[str, Any], writer: Mapping[str, Any], path: str) -> None:
        reader_items, writer_items = reader.get("items", True), writer.get("items", True)
        if isinstance(reader_items, list) or isinstance(writer_items, list):
            if reader_items != writer_items:
                self._report(path, "UNPROVABLE_CHANGE", "tuple 'items' differ between the versions")
            return
        self._compare(reader_items, writer_items, f"{path}[*]")


# -- schema helpers (pure) -------------------------------------------------------------------------


def _deref(node: Any, root: Any) -> tuple[str | None, Any]:
    """Follow ``$ref`` chains inside ``root``; return the last reference followed and the target."""
    ref: str | None = None
    seen: set[str] = set()
    while isinstance(node, Mapping) and isinstance(node.get("$ref"), str):
        ref = node["$ref"]
        if ref in seen:
            return ref, True  # a reference to itself constrains nothing
        seen.add(ref)
        node = _pointer(root, ref)
    return ref, node


def _pointer(root: Any, ref: str) -> Any:
    if not ref.startswith("#"):
        raise ValueError(f"only local references are supported, got {ref!r}")
    node = root
    for part in ref[1:].lstrip("/").split("/") if ref != "#" else []:
        key = part.replace("~1", "/").replace("~0", "~")
        node = node[int(key)] if isinstance(node, list) else node[key]
    return node


def _no_refs(node: Any) -> bool:
    if isinstance(node, Mapping):
        return "$ref" not in node and all(_no_refs(v) for v in node.values())
    if isinstance(node, list):
        return all(_no_refs(v) for v in node)
    return True


def _flatten(node: Any, root: Any) -> Any:
    """``node`` with its ``allOf`` parts merged in (how ``@type`` subtypes extend their base)."""
    if not isinstance(node, Mapping) or "allOf" not in node:
        return node
    merged: dict[str, Any] = {k: v for k, v in node.items() if k != "allOf"}
    for part in node["allOf"]:
        part = _flatten(_deref(part, root)[1], root)
        if part is True:
            continue
        if part is False:
            return False
        _merge_into(merged, part)
    return merged


def _merge_into(merged: dict[str, Any], part: Mapping[str, Any]) -> None:
    for key, value in part.items():
        if key not in merged:
            merged[key] = value
        elif key == "properties":
            props = dict(merged[key])
            for name, schema in value.items():
                props[name] = {"allOf": [props[name], schema]} if name in props else schema
            merged[key] = props
        elif key == "required":
            merged[key] = list(dict.fromkeys([*merged[key], *value]))
        elif key == "type":
            merged[key] = sorted(_types(merged) & _types(part)) or ["null"]
        elif key == "enum":
            merged[key] = [v for v in merged[key] if v in value]
        elif key == "additionalProperties" and value is False:
            merged[key] = False
        elif key in _UPPER_BOUNDS and not isinstance(value, bool):
            merged[key] = min(merged[key], value)
        elif key in _LOWER_BOUNDS and not isinstance(value, bool):
            merged[key] = max(merged[key], value)


def _branches(node: Any) -> list[Any] | None:
    """The alternatives of a oneOf/anyOf node, each with the node's other keywords applied."""
    if not isinstance(node, Mapping):
        return None
    for keyword in ("oneOf", "anyOf"):
        if keyword in node:
            base = {k: v for k, v in node.items() if k not in (keyword, "discriminator")}
            if not base:
                return list(node[keyword])
            return [{"allOf": [base, branch]} for branch in node[keyword]]
    return None


def _types(node: Mapping[str, Any]) -> set[str]:
    declared = node.get("type")
    if declared is None:
        return set(_ALL_TYPES)
    return {declared} if isinstance(declared, str) else set(declared)


def _accepts_type(reader_types: Iterable[str], writer_type: str) -> bool:
    reader_types = set(reader_types)
    return writer_type in reader_types or (writer_type == "integer" and "number" in reader_types)


def _values(node: Mapping[str, Any]) -> list[Any]:
    return [node["const"]] if "const" in node else list(node.get("enum", []))


def _validator(node: Mapping[str, Any], root: Any) -> Any:
    """A validator of ``node`` whose local references resolve against ``root``."""
    document = dict(node)
    if isinstance(root, Mapping):
        for holder in ("definitions", "$defs"):
            if holder in root and holder not in document:
                document[holder] = root[holder]
    cls = validator_for(root if isinstance(root, Mapping) else {}, default=Draft7Validator)
    return cls(document)


def _member(path: str, name: str) -> str:
    return f"{path}.{name}" if _IDENTIFIER.match(name) else f"{path}['{name}']"


def _label(node: Any) -> str:
    if isinstance(node, Mapping):
        type_prop = node.get("properties", {}).get("@type")
        if isinstance(type_prop, Mapping) and ("const" in type_prop or "enum" in type_prop):
            return f"@type {_show(_values(type_prop))}"
        if "title" in node:
            return repr(node["title"])
    return "(untitled)"


def _show(values: Iterable[Any] | None) -> str:
    return ", ".join(repr(v) for v in values or [])


def _show_types(types: Iterable[str]) -> str:
    types = set(types)
    return "any" if types == _ALL_TYPES else "|".join(sorted(types))


def _bound(value: Any) -> str:
    return "none" if value is None else repr(value)


def _snake(keyword: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", keyword).upper()
