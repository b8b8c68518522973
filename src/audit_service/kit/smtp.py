"""`AUDIT_SMTP_URL` read into what a mail client needs, and e-mail address checks.

Kept apart from the sending (notifications/email.py) so settings can refuse a bad URL at
start-up. No message here quotes the URL: it may hold a password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit

TlsMode = Literal["opportunistic", "starttls", "tls"]
_SCHEMES: dict[str, tuple[TlsMode, int]] = {
    "smtp": ("opportunistic", 25),
    "smtp+starttls": ("starttls", 587),
    "smtps": ("tls", 465),
}
# An addr-spec as mail servers accept it in practice: a dot-atom local part and a domain of
# DNS labels (or a loopback/test name). Display names and quoted local parts are refused:
# recipients are typed by admins, and a plain address is all a report needs.
_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS = re.compile(rf"{_LOCAL}@{_LABEL}(\.{_LABEL})*")


def valid_address(value: str) -> bool:
    local, _, _ = value.partition("@")
    return len(value) <= 254 and len(local) <= 64 and _ADDRESS.fullmatch(value) is not None


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    tls: TlsMode
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> SmtpTarget:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ValueError("AUDIT_SMTP_URL is not a URL (smtp://user:pass@host:587)") from None
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES:
            raise ValueError("AUDIT_SMTP_URL must start with smtp://, smtp+starttls:// or smtps://")
        if not parts.hostname:
            raise ValueError("AUDIT_SMTP_URL names no host (smtp://host:587)")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("AUDIT_SMTP_URL takes no path or query: smtp://user:pass@host:port")
        tls, default_port = _SCHEMES[scheme]
        return cls(
            host=parts.hostname,
            port=port or default_port,
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )
