"""The activity page with the request-id and exclude filters, on both dialects: the same rows
as /admin/activity for the same parameters, the filter form shows them and submitting it
again gives the same rows (a round trip through the form's own fields), and the detail
drawer / permalink pivots ("only this request id", "exclude this actor / action / IP") are
plain GET links to exactly the filtered rows."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.activity.test_activity import WINDOW
from tests.activity.test_request_id_and_excludes import CASES, _seed
from tests.conftest import Harness
from tests.console.support import https_client, row_ids, signed_in


class _FilterForm(HTMLParser):
    """The name/value pairs a browser would send for the page's filter form."""

    def __init__(self) -> None:
        super().__init__()
        self.pairs: list[tuple[str, str]] = []
        self._in_form = False
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("id") == "filter-form":
            self._in_form = True
        elif not self._in_form:
            return
        elif tag == "input" and "name" in a:
            self.pairs.append((a["name"], a.get("value", "")))
        elif tag == "select":
            self._select = a.get("name")
        elif tag == "option" and self._select and "selected" in a:
            self.pairs.append((self._select, a.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False
        elif tag == "select":
            self._select = None


def _form_pairs(html: str) -> list[tuple[str, str]]:
    parser = _FilterForm()
    parser.feed(html)
    return parser.pairs


async def _api(h: Harness, params: Any) -> list[dict[str, Any]]:
    r = await h.client.get("/admin/activity", params=params, headers=await h.auth())
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def test_the_new_filters_show_the_apis_rows_and_round_trip_the_form(h: Harness) -> None:
    await _seed(h)
    async with https_client(h) as c:
        await signed_in(c)
        # Each new filter once, repeated, and with the others (the API test has them all).
        for params, expected in [CASES[i] for i in (0, 5, 8, 10, 13, 17, 19, 20)]:
            query = [*params, *WINDOW.items(), ("page_size", "100")]
            page = await c.get("/console/activity", params=query)
            assert page.status_code == 200, (params, page.text[-1500:])
            api = await _api(h, query)
            assert row_ids(page.text) == [e["id"] for e in api], params
            assert len(api) == len(expected), params
            # The form shows every given value, and sending it again gives the same rows.
            sent = [(k, v) for k, v in _form_pairs(page.text) if v]
            for pair in query:
                assert pair in sent, (pair, sent)
            again = await c.get("/console/activity", params=sent)
            assert again.status_code == 200
            assert row_ids(again.text) == row_ids(page.text), params
        # The page's export applies them too (the API's export, same parameters).
        params, expected = CASES[-1]
        r = await c.get(
            "/console/activity/export", params=[*params, *WINDOW.items(), ("format", "json")]
        )
        assert r.status_code == 200, r.text
        assert len(r.json()["events"]) == len(expected) and r.json()["export"]["filters"][
            "exclude_actor"
        ] == ["alice"]
        # Bad values are the API's 422, as a page.
        for bad in (
            {"exclude_ip": "nope"},
            {"request_id": "x" * 129},
            {"exclude_action": "a" * 101},
        ):
            r = await c.get("/console/activity", params=bad)
            assert r.status_code == 422 and "Traceback" not in r.text, bad
            assert next(iter(bad)) in r.text


def _pivots(html: str) -> dict[str, str]:
    block = re.search(r'<ul class="pivots">(.*?)</ul>', html, re.S)
    assert block, "no pivots"
    return {
        label: href.replace("&amp;", "&")
        for href, label in re.findall(r'<li><a href="([^"]+)">([^<]+)</a></li>', block.group(1))
    }


async def test_drawer_pivots_lead_to_the_filtered_rows(h: Harness) -> None:
    keys = await _seed(h)
    seeded = {
        keys[e["event_id"]]: e for e in await _api(h, [*WINDOW.items(), ("page_size", "100")])
    }
    k1 = seeded["k1"]  # auth.login by u1 (alice) from 10.1.2.3, request r-1
    expected = {
        "Only this request id": ([("request_id", "r-1")], ["k2", "k1"]),
        "Exclude this actor": ([("exclude_actor", "u1")], ["k5", "k4", "k3", "k2"]),
        "Exclude this action": ([("exclude_action", "auth.login")], ["k5", "k4", "k3", "k2"]),
        "Exclude this IP": ([("exclude_ip", "10.1.2.3")], ["k5", "k4", "k3", "k2"]),
        "Only this IP": ([("ip", "10.1.2.3")], ["k1"]),
    }
    async with https_client(h) as c:
        await signed_in(c)
        drawer = await c.get(f"/console/activity/{k1['id']}/drawer")
        assert drawer.status_code == 200, drawer.text
        links = _pivots(drawer.text)
        permalink = await c.get(f"/console/activity/{k1['id']}")
        assert _pivots(permalink.text) == links
        for label, (params, rows) in expected.items():
            href = links[label]
            url = urlsplit(href)
            assert url.path == "/console/activity" and parse_qsl(url.query) == params, label
            page = await c.get(href)
            assert page.status_code == 200, label
            # Confined to the seeded window (every request is recorded, so the service's
            # own newest events differ between two reads): the API's rows, as expected.
            window = [*params, *WINDOW.items()]
            page = await c.get(href + "&until=" + WINDOW["until"])
            shown = row_ids(page.text)
            assert shown == [e["id"] for e in await _api(h, window)], label
            assert shown == [seeded[k]["id"] for k in rows], label
        # An event with no request id or IP offers no such pivot (k4: no actor either).
        links = _pivots((await c.get(f"/console/activity/{seeded['k3']['id']}/drawer")).text)
        assert "Only this request id" in links and "Exclude this IP" not in links
        links = _pivots((await c.get(f"/console/activity/{seeded['k4']['id']}/drawer")).text)
        assert "Only this request id" not in links and "Exclude this actor" not in links
        assert "Exclude this action" in links
