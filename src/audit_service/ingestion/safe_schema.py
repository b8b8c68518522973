"""JSON Schema validation that a registered schema cannot turn against the service.

Three ways a schema could stall or crash ingestion, and what closes each:

- Regular expressions. jsonschema matches `pattern`, `patternProperties` (and the
  `additionalProperties` that depend on them) with Python's backtracking `re`: `^(a+)+$`
  against 26 characters held the event loop — and the GIL, so a thread would not help —
  for 2.9 s. Here those keywords match with RE2 (linear time, google-re2), and a pattern
  RE2 cannot compile (look-arounds, back-references: the constructs that need
  backtracking) is refused at registration through the metaschema's `format: regex`.
  `unevaluatedProperties` resolves `patternProperties` through jsonschema's internals with
  `re`, so that one combination is refused.
- Reference cycles. `{"$ref": "#"}` (or `a → b → a` through `$defs`, `allOf`, …) applies
  the schema to the same value forever: every event of the action failed with a
  RecursionError. A cycle that never descends into the instance is refused at
  registration; a cycle through `properties`/`items` (a tree) is fine, since each step
  consumes a level of the (depth-capped) metadata.
- Cost. Validation runs on a small thread pool with a time limit, so a slow validation
  delays its own request, not the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import unquote

import re2  # type: ignore[import-untyped]  # google-re2 ships no stubs
from jsonschema import FormatChecker, ValidationError, validators
from jsonschema.protocols import Validator

_T = TypeVar("_T")
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a refused pattern is a 422, not a line on stderr


@functools.lru_cache(maxsize=2048)
def compile_pattern(pattern: str) -> Any:
    """RE2-compile `pattern`; raises ValueError if RE2 cannot (ECMA look-arounds, …)."""
    try:
        return re2.compile(pattern, options=_OPTIONS)
    except re2.error as exc:
        message = exc.args[0] if exc.args else exc
        if isinstance(message, bytes):
            message = message.decode(errors="replace")
        raise ValueError(f"not a pattern RE2 can match in linear time: {message}") from None


def _search(pattern: str, text: str) -> bool:
    return compile_pattern(pattern).search(text) is not None


# --- keywords, as jsonschema's own (jsonschema/_keywords.py) but matching with RE2 -----------


def _pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _search(patrn, instance):
        yield ValidationError(f"{instance!r} does not match {patrn!r}")


def _pattern_properties(
    validator: Any, pattern_properties: dict[str, Any], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_properties.items():
        for k, v in instance.items():
            if _search(pattern, k):
                yield from validator.descend(v, subschema, path=k, schema_path=pattern)


def _additional(instance: dict[str, Any], schema: dict[str, Any]) -> Iterator[str]:
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    for name in instance:
        if name not in properties and not any(_search(p, name) for p in patterns):
            yield name


def _additional_properties(
    validator: Any, ap: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    extras = set(_additional(instance, schema))
    if validator.is_type(ap, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], ap, path=extra)
    elif not ap and extras:
        joined = ", ".join(repr(each) for each in sorted(extras))
        if "patternProperties" in schema:
            patterns = ", ".join(repr(p) for p in sorted(schema["patternProperties"]))
            yield ValidationError(f"{joined} do(es) not match any of the regexes: {patterns}")
        else:
            yield ValidationError(f"Additional properties are not allowed ({joined} unexpected)")


def _regex_format(value: object) -> bool:
    if isinstance(value, str):
        compile_pattern(value)
    return True


def _format_checker(base: FormatChecker) -> FormatChecker:
    checker = FormatChecker(formats=())
    checker.checkers = dict(base.checkers)
    checker.checks("regex", raises=ValueError)(_regex_format)
    return checker


@functools.cache
def _safe_class(base: type[Validator]) -> tuple[type[Validator], FormatChecker]:
    keywords: dict[str, Callable[..., Any]] = {"pattern": _pattern}
    if "patternProperties" in base.VALIDATORS:
        keywords["patternProperties"] = _pattern_properties
    if "additionalProperties" in base.VALIDATORS:
        keywords["additionalProperties"] = _additional_properties
    cls: type[Validator] = validators.extend(base, keywords)  # type: ignore[no-untyped-call]
    return cls, _format_checker(base.FORMAT_CHECKER)


def validator_class(schema: Any) -> tuple[type[Validator], FormatChecker]:
    """The RE2-matching validator class for `schema` (draft 2020-12 unless `$schema` says
    otherwise) and the format checker to use with it."""
    base = validators.validator_for(schema, default=validators.Draft202012Validator)
    return _safe_class(base)


def make_validator(schema: Any) -> Validator:
    cls, checker = validator_class(schema)
    return cls(schema, format_checker=checker)


def check_schema(schema: Any) -> None:
    """Raise jsonschema's SchemaError for an invalid schema, including any pattern (or
    patternProperties name) RE2 cannot compile, with the metaschema path to it."""
    cls, checker = validator_class(schema)
    # The protocol omits it, every jsonschema >= 4.18 class takes it.
    cls.check_schema(schema, format_checker=checker)  # type: ignore[call-arg]


# --- structure checks ---------------------------------------------------------------------

# Keywords whose subschemas apply to the *same* value (no descent into the instance).
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_MANY = ("allOf", "anyOf", "oneOf")
_IN_PLACE_MAP = ("dependentSchemas",)
# Keywords whose subschemas apply to a part of the value (a member or an item).
_DESCEND_ONE = (
    "additionalProperties",
    "unevaluatedProperties",
    "propertyNames",
    "items",
    "additionalItems",
    "unevaluatedItems",
    "contains",
)
_DESCEND_MANY = ("prefixItems", "items")
_DESCEND_MAP = ("properties", "patternProperties")
# Where subschemas may sit without applying to anything until referenced.
_DEFINITIONS = ("$defs", "definitions")


def _resolve(root: Any, ref: str, anchors: dict[str, Any]) -> Any | None:
    """The subschema a local reference ("#", "#/json/pointer", "#anchor") names, or None."""
    fragment = ref[1:] if ref.startswith("#") else None
    if fragment is None:
        return None
    if fragment and not fragment.startswith("/"):
        return anchors.get(fragment)
    node = root
    for raw in fragment.split("/")[1:]:
        part = unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _subschemas(node: dict[str, Any]) -> Iterator[tuple[Any, bool]]:
    """(subschema, applies to the same value) for every subschema directly under `node`."""
    for key in _IN_PLACE_ONE:
        if key in node:
            yield node[key], True
    for key in _IN_PLACE_MANY:
        if isinstance(node.get(key), list):
            for sub in node[key]:
                yield sub, True
    for key in _IN_PLACE_MAP:
        if isinstance(node.get(key), dict):
            for sub in node[key].values():
                yield sub, True
    for key in _DESCEND_ONE:
        if isinstance(node.get(key), dict):
            yield node[key], False
    for key in _DESCEND_MANY:
        if isinstance(node.get(key), list):
            for sub in node[key]:
                yield sub, False
    for key in (*_DESCEND_MAP, *_DEFINITIONS):
        if isinstance(node.get(key), dict):
            for sub in node[key].values():
                yield sub, False


def _all_nodes(root: Any) -> list[dict[str, Any]]:
    nodes, stack = [], [root]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            nodes.append(node)
            stack.extend(sub for sub, _ in _subschemas(node))
    return nodes


def uses_unevaluated_with_patterns(schema: Any) -> bool:
    nodes = _all_nodes(schema)
    return any("unevaluatedProperties" in n for n in nodes) and any(
        "patternProperties" in n for n in nodes
    )


def reference_cycle(schema: Any) -> list[str] | None:
    """The references of a cycle that applies the schema to the same value forever, or None.

    Edges are `$ref`/`$dynamicRef` and the in-place applicators (allOf, not, if, …); a
    reference that cannot be resolved here is left to jsonschema."""
    nodes = _all_nodes(schema)
    anchors = {
        n[key]: n
        for n in nodes
        for key in ("$anchor", "$dynamicAnchor")
        if isinstance(n.get(key), str)
    }

    def edges(node: dict[str, Any]) -> Iterator[tuple[Any, str | None]]:
        for key in ("$ref", "$dynamicRef"):
            ref = node.get(key)
            if isinstance(ref, str):
                target = _resolve(schema, ref, anchors)
                if isinstance(target, dict):
                    yield target, ref
        for sub, in_place in _subschemas(node):
            if in_place and isinstance(sub, dict):
                yield sub, None

    # Iterative DFS with colours (0 new, 1 on the path, 2 done), keyed by object identity.
    colour: dict[int, int] = {}
    for start in nodes:
        if colour.get(id(start)):
            continue
        path: list[tuple[dict[str, Any], Iterator[tuple[Any, str | None]], str | None]] = [
            (start, edges(start), None)
        ]
        colour[id(start)] = 1
        while path:
            node, pending, _ = path[-1]
            step = next(pending, None)
            if step is None:
                colour[id(node)] = 2
                path.pop()
                continue
            target, ref = step
            state = colour.get(id(target), 0)
            if state == 1:
                refs = [r for _, _, r in path if r] + ([ref] if ref else [])
                return refs or ["#"]
            if state == 0:
                colour[id(target)] = 1
                path.append((target, edges(target), ref))
    return None


# --- off the event loop ------------------------------------------------------------------

VALIDATION_TIMEOUT = 2.0  # seconds a request's metadata checks may take in all
# Two threads: metadata checks can use at most this much of the machine, whatever the load.
_pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="schema-check")


class ValidationTimeout(Exception):
    pass


async def run_bounded(work: Callable[[], _T], seconds: float = VALIDATION_TIMEOUT) -> _T:
    """Run CPU-bound `work` on the validation pool; ValidationTimeout after `seconds`."""
    future = asyncio.get_running_loop().run_in_executor(_pool, work)
    try:
        async with asyncio.timeout(seconds):
            return await future
    except TimeoutError:
        raise ValidationTimeout from None
