"""Trigger forms built from a task's input schema, and the input read back from a form.

A task registers the JSON schema of its input model (``TaskConfig.input_schema``); the
Tasks page turns each top-level property into one field: text, a number, a checkbox, a
choice for an enum, or a JSON text area for anything nested (objects, lists, references,
unions). A task without a schema (raw JSON input) gets one JSON text area for the whole
input. Reading a submitted form checks each field on its own and reports every problem
beside its field, so a user sees all of them at once; the worker validates the input
against the model again when the run starts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["text", "integer", "number", "boolean", "choice", "json"]

RAW_INPUT = "__input__"
"""The name of the single JSON field of a form for a task without an input schema."""


@dataclass(frozen=True, slots=True)
class FormField:
    """One field of a trigger form."""

    name: str
    kind: Kind
    label: str
    required: bool = False
    description: str = ""
    choices: tuple[str, ...] = ()
    default: str = ""
    """The field's initial text (JSON for a JSON field, "true" for a checked box)."""
    json_type: str = ""
    """For a JSON field, the JSON type the value must have ("object", "array"), if known."""


@dataclass(slots=True)
class FormResult:
    """The input a submitted form makes and the problems found, by field name."""

    value: Any = None
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


def _plain(prop: Mapping[str, Any]) -> tuple[Mapping[str, Any], bool]:
    """The property's schema without an ``Optional``'s null branch, and whether it had one."""
    options = prop.get("anyOf")
    if isinstance(options, list):
        rest = [o for o in options if not (isinstance(o, Mapping) and o.get("type") == "null")]
        if len(rest) == 1 and isinstance(rest[0], Mapping):
            merged = {k: v for k, v in prop.items() if k != "anyOf"}
            return {**rest[0], **merged}, len(rest) != len(options)
    return prop, False


def _field(name: str, raw: Mapping[str, Any], required: bool) -> FormField:
    prop, _nullable = _plain(raw)
    # The property's own name is what the user's code calls it; pydantic's default title
    # ("Customer Id" for customer_id) would hide it.
    label = name
    description = str(prop.get("description") or "")
    has_default = "default" in prop
    default = prop.get("default")
    common: dict[str, Any] = {"label": label, "required": required, "description": description}
    enum = prop.get("enum")
    kind = prop.get("type")
    if isinstance(enum, list) and enum and all(isinstance(e, str) for e in enum):
        text = str(default) if has_default and default is not None else ""
        return FormField(name, "choice", choices=tuple(enum), default=text, **common)
    if kind in ("string", "integer", "number") and not isinstance(enum, list):
        text = "" if not has_default or default is None else str(default)
        simple: Kind = "text" if kind == "string" else kind
        return FormField(name, simple, default=text, **common)
    if kind == "boolean":
        return FormField(name, "boolean", default="true" if default is True else "", **common)
    text = json.dumps(default) if has_default and default is not None else ""
    json_type = kind if kind in ("object", "array") else ""
    return FormField(name, "json", default=text, json_type=json_type, **common)


def form_fields(schema: Mapping[str, Any] | None) -> list[FormField]:
    """The fields of a trigger form for an input schema (one JSON field without one)."""
    props = schema.get("properties") if isinstance(schema, Mapping) else None
    if not isinstance(schema, Mapping) or schema.get("type") != "object" or not props:
        return [FormField(RAW_INPUT, "json", "Input (JSON)", required=True, default="{}")]
    required = set(schema.get("required") or ())
    return [
        _field(name, prop if isinstance(prop, Mapping) else {}, name in required)
        for name, prop in props.items()
    ]


def _json_error(exc: json.JSONDecodeError) -> str:
    return f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"


def read_form(fields: list[FormField], values: Mapping[str, str]) -> FormResult:
    """The input ``values`` (the submitted form) make for ``fields``, or the problems.

    An empty optional field is left out of the input (the model's default applies); an
    unchecked box is ``false``.
    """
    result = FormResult()
    if len(fields) == 1 and fields[0].name == RAW_INPUT:
        text = values.get(RAW_INPUT, "").strip()
        try:
            result.value = json.loads(text or "{}")
        except json.JSONDecodeError as exc:
            result.errors[RAW_INPUT] = _json_error(exc)
        return result
    out: dict[str, Any] = {}
    for f in fields:
        if f.kind == "boolean":
            out[f.name] = values.get(f.name, "") in ("true", "on", "1")
            continue
        text = values.get(f.name, "")
        if f.kind != "text":
            text = text.strip()
        if text == "":
            if f.required:
                result.errors[f.name] = "required"
            continue
        if f.kind == "text":
            out[f.name] = text
        elif f.kind == "choice":
            if text not in f.choices:
                result.errors[f.name] = f"must be one of {', '.join(f.choices)}"
            else:
                out[f.name] = text
        elif f.kind == "integer":
            try:
                out[f.name] = int(text)
            except ValueError:
                result.errors[f.name] = f"not a whole number: {text!r}"
        elif f.kind == "number":
            try:
                out[f.name] = float(text)
            except ValueError:
                result.errors[f.name] = f"not a number: {text!r}"
        else:
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                result.errors[f.name] = _json_error(exc)
                continue
            expected = {"object": dict, "array": list}.get(f.json_type)
            if expected is not None and not isinstance(value, expected) and value is not None:
                result.errors[f.name] = f"must be a JSON {f.json_type}"
                continue
            out[f.name] = value
    result.value = out
    return result


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _type_ok(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _JSON_TYPES.get(name, (object,)))


def schema_problems(
    schema: Mapping[str, Any] | None, value: Any, *, root: Mapping[str, Any] | None = None
) -> list[str]:
    """What keeps ``value`` from matching the JSON schema pydantic made for an input model,
    each as "where: what" (empty: it matches). Checks the parts such schemas use: types,
    required and unknown properties, enums and constants, bounds, lengths, items, unions
    (``anyOf``/``oneOf``) and ``$ref`` to ``$defs``; the worker still validates the input
    against the model itself when the run starts."""
    if not isinstance(schema, Mapping):
        return []
    return _problems(schema, value, "input", root if root is not None else schema)


def _problems(schema: Mapping[str, Any], value: Any, at: str, root: Mapping[str, Any]) -> list[str]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        return _problems(target, value, at, root)
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            found = [_problems(o, value, at, root) for o in options if isinstance(o, Mapping)]
            if any(not f for f in found):
                return []
            return min(found, key=len)
    for part in schema.get("allOf") or ():
        if isinstance(part, Mapping):
            if inner := _problems(part, value, at, root):
                return inner
    kind = schema.get("type")
    kinds = [kind] if isinstance(kind, str) else list(kind) if isinstance(kind, list) else []
    if kinds and not any(_type_ok(value, k) for k in kinds):
        return [f"{at}: expected {' or '.join(kinds)}, got {json.dumps(value)[:60]}"]
    if "const" in schema and value != schema["const"]:
        return [f"{at}: must be {json.dumps(schema['const'])}"]
    enum = schema.get("enum")
    if isinstance(enum, list) and value not in enum:
        return [f"{at}: must be one of {', '.join(json.dumps(e) for e in enum)}"]
    out: list[str] = []
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for key, words in (
            ("minimum", "at least"),
            ("maximum", "at most"),
            ("exclusiveMinimum", "more than"),
            ("exclusiveMaximum", "less than"),
        ):
            bound = schema.get(key)
            if not isinstance(bound, (int, float)):
                continue
            fits = {
                "minimum": value >= bound,
                "maximum": value <= bound,
                "exclusiveMinimum": value > bound,
                "exclusiveMaximum": value < bound,
            }[key]
            if not fits:
                out.append(f"{at}: must be {words} {bound}")
    if isinstance(value, (str, list)):
        low, high = (
            ("minLength", "maxLength") if isinstance(value, str) else ("minItems", "maxItems")
        )
        if isinstance(schema.get(low), int) and len(value) < schema[low]:
            out.append(f"{at}: must have at least {schema[low]} characters or items")
        if isinstance(schema.get(high), int) and len(value) > schema[high]:
            out.append(f"{at}: must have at most {schema[high]} characters or items")
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            out += _problems(schema["items"], item, f"{at}[{i}]", root)
    if isinstance(value, dict):
        props = schema.get("properties")
        props = props if isinstance(props, Mapping) else {}
        for name in schema.get("required") or ():
            if name not in value:
                out.append(f"{at}.{name}: required")
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            if name in props and isinstance(props[name], Mapping):
                out += _problems(props[name], item, f"{at}.{name}", root)
            elif extra is False:
                out.append(f"{at}.{name}: not a field of the input")
            elif isinstance(extra, Mapping):
                out += _problems(extra, item, f"{at}.{name}", root)
    return out
