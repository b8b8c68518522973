"""CEF: a strict parser (written here from the CEF rules, independent of the renderer)
round-trips adversarial strings through the header and every extension value."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit_service.forwarding.formats import render_cef
from tests.forwarding.formats.events import sample

_KEY = re.compile(r"[A-Za-z0-9_]+")


class CEFError(ValueError):
    pass


def _unescape_header(field: str) -> str:
    out, i = [], 0
    while i < len(field):
        c = field[i]
        if c == "\\":
            if i + 1 >= len(field) or field[i + 1] not in "\\|":
                raise CEFError(f"bad header escape in {field!r}")
            out.append(field[i + 1])
            i += 2
            continue
        if c in "\r\n":
            raise CEFError("newline in a header field")
        out.append(c)
        i += 1
    return "".join(out)


_VALUE_ESCAPES = {"\\": "\\", "=": "=", "n": "\n", "r": "\r"}


def _unescape_value(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\":
            out.append(_VALUE_ESCAPES[value[i + 1]])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def parse(line: str) -> tuple[list[str], dict[str, str]]:
    """(the seven header fields, the extension) of one CEF:0 line; CEFError if malformed."""
    if "\n" in line or "\r" in line:
        raise CEFError("a CEF record is one line")
    if not line.startswith("CEF:"):
        raise CEFError("no CEF: prefix")
    fields, current, i = [], [], 4
    while len(fields) < 7:
        if i >= len(line):
            raise CEFError("too few header fields")
        c = line[i]
        if c == "\\":
            current.append(line[i : i + 2])
            i += 2
        elif c == "|":
            fields.append(_unescape_header("".join(current)))
            current = []
            i += 1
        else:
            current.append(c)
            i += 1
    if fields[0] != "0":
        raise CEFError("not CEF version 0")
    rest = line[i:]
    # Split the extension at unescaped '=': each is preceded by " key" (or the start).
    tokens: list[str] = []
    buf: list[str] = []
    j = 0
    while j < len(rest):
        c = rest[j]
        if c == "\\":
            if j + 1 >= len(rest) or rest[j + 1] not in "\\=nr":
                raise CEFError(f"bad extension escape at {j}")
            buf.append(rest[j : j + 2])
            j += 2
        elif c == "=":
            tokens.append("".join(buf))
            buf = []
            j += 1
        else:
            buf.append(c)
            j += 1
    tokens.append("".join(buf))
    ext: dict[str, str] = {}
    if rest == "":
        return fields, ext
    key = tokens[0]
    for n, token in enumerate(tokens[1:], 1):
        if n < len(tokens) - 1:
            value, sep, next_key = token.rpartition(" ")
            if not sep or not _KEY.fullmatch(next_key):
                raise CEFError(f"no key before '=' in {token!r}")
        else:
            value, next_key = token, ""
        if not _KEY.fullmatch(key):
            raise CEFError(f"bad key {key!r}")
        if key in ext:
            raise CEFError(f"duplicate key {key}")
        ext[key] = _unescape_value(value)
        key = next_key
    return fields, ext


def test_a_plain_event() -> None:
    line = render_cef(sample())
    header, ext = parse(line)
    assert header[:6] == [
        "0",
        "audit-service",
        "audit-service",
        header[3],
        "auth.login",
        "Logged in",
    ]
    assert header[6] == "3"
    assert ext["externalId"] == "0b7e6f4e-4d2a-4c35-9f0e-3c1d2b8a9e10"
    assert ext["rt"] == "1796254030234" and ext["start"] == "1796254030123"
    assert ext["src"] == "203.0.113.7"
    assert (ext["suser"], ext["suid"], ext["spriv"]) == ("alice", "7", "admin")
    assert ext["outcome"] == "success" and ext["act"] == "auth.login"
    assert ext["request"] == "/login" and ext["requestMethod"] == "POST"
    assert ext["requestClientApplication"] == "pytest-client/1.0"
    assert (ext["cs1Label"], ext["cs1"]) == ("tenant", "tenant-a")
    assert ext["cs6"] == '{"mfa":false,"n":1}'
    assert "auditserviceIdempotencyKey" not in ext  # None: no key


def test_the_parser_is_strict() -> None:
    for bad in (
        "CEF:0|a|b|c|d|e|3|k=v\n",
        "CEF:1|a|b|c|d|e|3|",
        "CEF:0|a|b|c|d|e|",
        "CEF:0|a|b\\x|c|d|e|3|",
        "CEF:0|a|b|c|d|e|3|k=a=b",
        "CEF:0|a|b|c|d|e|3|k=v\\q",
        "CEF:0|a|b|c|d|e|3|k=1 k=2",
    ):
        try:
            parse(bad)
        except CEFError:
            continue
        raise AssertionError(f"accepted {bad!r}")


adversarial = st.one_of(
    st.just(""),
    st.text(alphabet="|\\= \n\r\"']ab", max_size=40),
    st.text(max_size=60),
    st.text(alphabet=st.characters(min_codepoint=0x80, max_codepoint=0x10FFFF), max_size=20),
)


@settings(
    max_examples=1000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(value=adversarial)
def test_adversarial_strings_round_trip(value: str) -> None:
    event: dict[str, Any] = sample(
        action=value,
        description=value,
        actor_name=value,
        actor_id=value,
        path=value,
        user_agent=value,
        tenant_id=value,
        target_id=value,
        request_id=value,
        idempotency_key=value,
        metadata={"k": value},
    )
    line = render_cef(event)
    header, ext = parse(line)
    one_line = value.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")
    assert header[4] == one_line  # signature id = the action
    first_line = value.splitlines()[0] if value.splitlines() else ""
    assert header[5] == (first_line.replace("\r", " ").replace("\n", " ") if value else "")
    for key in ("act", "msg", "suser", "suid", "request", "requestClientApplication", "cs1",
                "cs5", "flexString1", "auditserviceIdempotencyKey"):  # fmt: skip
        assert ext[key] == value, key
