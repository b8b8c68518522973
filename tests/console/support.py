"""Helpers for the console's httpx tests: an HTTPS client on the test app (so the
`__Host-` cookies are kept and sent as a https_client would), signing in through the form."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from tests.conftest import ADMIN_PASSWORD, CLIENT_IP, PASSWORD, Harness

SESSION_COOKIE = "__Host-audit_console"
CSRF_COOKIE = "__Host-audit_console_csrf"
_CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]*)"')


@asynccontextmanager
async def https_client(h: Harness, **headers: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client that behaves like a same-origin https_client tab on https://testserver."""
    transport = httpx.ASGITransport(app=h.app, client=(CLIENT_IP, 40000))
    async with httpx.AsyncClient(
        transport=transport,
        base_url="https://testserver",
        headers={"User-Agent": "console-test/1.0", "Sec-Fetch-Site": "same-origin", **headers},
    ) as client:
        yield client


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "no CSRF token on the page"
    return match.group(1)


async def sign_in(
    client: httpx.AsyncClient, username: str = "admin", password: str | None = None, **form: Any
) -> httpx.Response:
    page = await client.get("/console/login")
    assert page.status_code == 200, page.text
    password = password or (ADMIN_PASSWORD if username == "admin" else PASSWORD)
    return await client.post(
        "/console/login",
        data={"username": username, "password": password, "csrf_token": csrf_of(page.text), **form},
    )


async def signed_in(client: httpx.AsyncClient, username: str = "admin") -> str:
    """Sign in and return the CSRF token of the signed-in session."""
    r = await sign_in(client, username)
    assert r.status_code == 303, r.text
    page = await client.get("/console/activity")
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


_TBODY = re.compile(r'<tbody id="event-rows">(.*?)</tbody>', re.S)
_ROW_ID = re.compile(r'<tr class="event[^"]*" data-id="(\d+)"')
_NAV = re.compile(r'<a href="([^"]+)" rel="(\w+)" data-nav="\w+">')


def row_ids(html: str) -> list[int]:
    """The event ids of the activity table's rows, in order."""
    body = _TBODY.search(html)
    assert body, "no events table"
    return [int(i) for i in _ROW_ID.findall(body.group(1))]


def nav_links(html: str) -> dict[str, str]:
    """The pager's links by rel (first, prev, next, last), unescaped."""
    return {rel: href.replace("&amp;", "&") for href, rel in _NAV.findall(html)}
