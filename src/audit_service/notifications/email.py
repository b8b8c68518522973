"""Sending e-mail through `AUDIT_SMTP_URL` with aiosmtplib.

Errors come back as `MailError` with a message that is safe to record (the server's reply
code and text, or the kind of connection failure; never the URL or credentials) and whether
trying again may help. Every reply is retried, 5xx ones too: a permanent reply from a
misconfigured relay (relaying denied, authentication required) is fixed by an admin far more
often than it is final for a report's own recipients. Only "no server configured" is not.
"""

from __future__ import annotations

import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiosmtplib

from audit_service.core.config import Settings
from audit_service.kit.smtp import SmtpTarget

NO_SMTP = "No SMTP server is configured: set AUDIT_SMTP_URL (e.g. smtp://user:pass@host:587)"


class MailError(Exception):
    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def configured(settings: Settings) -> bool:
    return settings.smtp_url is not None


def new_message(
    settings: Settings,
    *,
    to: list[str],
    subject: str,
    text: str,
    html: str | None = None,
    message_id: str | None = None,
) -> EmailMessage:
    """A text (+ HTML alternative) message from `AUDIT_SMTP_FROM`. A stable `message_id`
    lets receivers drop a copy sent twice (after a crash between the server's reply and
    our record of it)."""
    msg = EmailMessage()
    msg["From"] = settings.smtp_from
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = message_id or make_msgid(domain=settings.smtp_from.rpartition("@")[2])
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to reports
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return msg


def _tls_context(settings: Settings) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=settings.smtp_ca_file or None)


async def send(settings: Settings, message: EmailMessage) -> list[str]:
    """Send `message`; returns the recipients the server refused while accepting others
    (all refused, or any other failure: `MailError`)."""
    if settings.smtp_url is None:
        raise MailError(NO_SMTP, retryable=False)
    target = SmtpTarget.parse(settings.smtp_url.get_secret_value())
    try:
        refused, _ = await aiosmtplib.send(
            message,
            hostname=target.host,
            port=target.port,
            username=target.username,
            password=target.password,
            use_tls=target.tls == "tls",
            start_tls={"opportunistic": None, "starttls": True, "tls": False}[target.tls],
            tls_context=_tls_context(settings),
            timeout=settings.smtp_timeout,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = sorted({r.code for r in exc.recipients})
        raise MailError(
            f"the SMTP server refused every recipient (reply {', '.join(map(str, codes))})",
            retryable=True,
        ) from None
    except aiosmtplib.SMTPResponseException as exc:
        raise MailError(
            f"the SMTP server replied {exc.code} {_one_line(exc.message)}",
            retryable=True,
        ) from None
    except (aiosmtplib.SMTPException, OSError) as exc:
        # Connection refused, timeouts, TLS failures: the server may be back later.
        raise MailError(
            f"cannot reach the SMTP server: {type(exc).__name__}", retryable=True
        ) from None
    return sorted(refused)


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 200 else line[:199] + "…"
