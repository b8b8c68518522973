"""A user agent reduced to its family: browser (or client) family and major OS, e.g.
"Chrome on Windows", "curl", "Python". Small and dependency-free on purpose: the family is
what an investigation still needs after anonymisation, and nothing that singles out a device
(versions, build ids, device models) survives it. The result always matches the label the
PostgreSQL retention function accepts: letters, digits, spaces and . / _ -, at most 64."""

from __future__ import annotations

import re

# (pattern, family), first match wins: order matters (Edge and Opera say "Chrome" too,
# Chrome says "Safari").
_CLIENTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p, re.IGNORECASE), name)
    for p, name in (
        (r"\bEdg(e|A|iOS)?/", "Edge"),
        (r"\bOPR/|\bOpera\b", "Opera"),
        (r"\bSamsungBrowser/", "Samsung Internet"),
        (r"\bFirefox/|\bFxiOS/", "Firefox"),
        (r"\bChrome/|\bCriOS/|\bChromium/", "Chrome"),
        (r"\bSafari/|AppleWebKit/.*Mobile/", "Safari"),
        (r"\bMSIE |Trident/", "Internet Explorer"),
        (r"^curl/", "curl"),
        (r"^Wget/", "Wget"),
        (r"python-requests|python-httpx|aiohttp|^Python", "Python"),
        (r"^Go-http-client", "Go"),
        (r"^okhttp/", "okhttp"),
        (r"^Java/|Apache-HttpClient", "Java"),
        (r"^node-fetch|^axios/|^undici", "Node.js"),
        (r"^PostmanRuntime/", "Postman"),
        (r"bot\b|crawler|spider", "Bot"),
    )
)
_SYSTEMS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p, re.IGNORECASE), name)
    for p, name in (
        (r"Windows", "Windows"),
        (r"Android", "Android"),
        (r"iPhone|iPad|iPod|\biOS\b", "iOS"),
        (r"Mac OS X|Macintosh", "macOS"),
        (r"CrOS", "ChromeOS"),
        (r"Linux|X11", "Linux"),
    )
)
_LABEL = re.compile(r"^[A-Za-z0-9 ./_-]{1,64}$")


def family(user_agent: str) -> str:
    """The family of a User-Agent header ("Other" when nothing is recognised). Idempotent:
    a family is its own family."""
    text = user_agent.strip()
    if _LABEL.match(text) and (text == "Other" or _is_family(text)):
        return text
    client = next((name for p, name in _CLIENTS if p.search(text)), "Other")
    system = next((name for p, name in _SYSTEMS if p.search(text)), None)
    return client if system is None else f"{client} on {system}"


def _is_family(text: str) -> bool:
    client, _, system = text.partition(" on ")
    clients = {name for _, name in _CLIENTS} | {"Other"}
    systems = {name for _, name in _SYSTEMS}
    return client in clients and (not system or system in systems)
