"""A small client of an S3-compatible object store: PUT and GET of one object, path-style
(`<endpoint>/<bucket>/<key>`), signed with AWS Signature Version 4.

SigV4 is implemented here from the published specification ("Create a signed AWS API
request", and for S3 "Authenticating Requests: Using the Authorization Header") rather than
by pulling boto3 into the runtime for two calls; tests/retention/test_s3.py checks the
signature of a fixed request against botocore's own signer.

S3 specifics kept: the canonical URI is the path as sent, URI-encoded once and never
normalised; the payload is always signed (`x-amz-content-sha256` is its hex SHA-256).
Every PUT carries Content-MD5 and x-amz-checksum-sha256, so the server refuses a body that
was damaged on the way, and the response is checked too: the echoed SHA-256 checksum, or
else an ETag equal to the MD5 (a single-part upload without KMS encryption). Nothing here
logs; error messages carry the status and S3's error code, never a credential or a
signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

import httpx

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "s3"
# Never signed: proxies and clients may change them (botocore leaves out the same).
_UNSIGNED = frozenset({"user-agent", "expect", "x-amzn-trace-id", "authorization"})
_ERROR_CODE = re.compile(rb"<Code>([A-Za-z0-9.]{1,100})</Code>")


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key_id: str
    secret_access_key: str = field(repr=False)


class S3Error(Exception):
    """A request the store refused or answered wrongly (the message names no secret)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def retryable(self) -> bool:
        """A 5xx, a throttle or no answer at all: worth trying again later."""
        return self.status is None or self.status >= 500 or self.status in (408, 429)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret: str, day: str, region: str, service: str = SERVICE) -> bytes:
    k = _hmac(f"AWS4{secret}".encode(), day)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


def _canonical_query(query: str) -> str:
    # Our requests carry none; kept correct for a caller that does (already encoded pairs).
    pairs = sorted(tuple(p.partition("=")[::2]) for p in query.split("&") if p)
    return "&".join(f"{k}={v}" for k, v in pairs)


def sign(
    method: str,
    url: str,
    headers: dict[str, str],
    payload_sha256: str,
    credentials: Credentials,
    region: str,
    now: datetime,
    service: str = SERVICE,
) -> dict[str, str]:
    """`headers` plus host, x-amz-date, x-amz-content-sha256 and the Authorization header
    of the request `method url` (its path already URI-encoded, as it is sent)."""
    parts = urlsplit(url)
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = {k.lower(): v for k, v in headers.items()}
    out.setdefault("host", parts.netloc)
    out["x-amz-date"] = stamp
    out["x-amz-content-sha256"] = payload_sha256
    signed = sorted(k for k in out if k not in _UNSIGNED)
    canonical_headers = "".join(f"{k}:{' '.join(out[k].split())}\n" for k in signed)
    signed_headers = ";".join(signed)
    canonical_request = "\n".join(
        [
            method.upper(),
            parts.path or "/",
            _canonical_query(parts.query),
            canonical_headers,
            signed_headers,
            payload_sha256,
        ]
    )
    scope = f"{stamp[:8]}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        [ALGORITHM, stamp, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = signing_key(credentials.secret_access_key, stamp[:8], region, service)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    out["authorization"] = (
        f"{ALGORITHM} Credential={credentials.access_key_id}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
    return out


@dataclass(frozen=True, slots=True)
class Stored:
    key: str
    etag: str | None
    sha256: str  # hex, of the body sent and confirmed by the store


@dataclass(frozen=True)
class Bucket:
    endpoint: str  # scheme://host[:port][/base path], no trailing slash
    name: str
    region: str
    credentials: Credentials = field(repr=False)
    timeout: float = 60.0

    def url(self, key: str) -> str:
        return f"{self.endpoint}/{quote(self.name, safe='')}/{quote(key, safe='/-_.~')}"

    def client(self) -> httpx.AsyncClient:
        """One connection pool for a run's requests (`async with bucket.client() as c`)."""
        # No redirects (a signed request is for one URL), no proxies from the environment.
        return httpx.AsyncClient(timeout=self.timeout, follow_redirects=False, trust_env=False)

    async def put(
        self,
        client: httpx.AsyncClient,
        key: str,
        body: bytes,
        content_type: str = "application/octet-stream",
    ) -> Stored:
        digest = hashlib.sha256(body)
        md5 = hashlib.md5(body, usedforsecurity=False)
        headers = sign(
            "PUT",
            self.url(key),
            {
                "content-type": content_type,
                "content-md5": base64.b64encode(md5.digest()).decode(),
                "x-amz-checksum-sha256": base64.b64encode(digest.digest()).decode(),
            },
            digest.hexdigest(),
            self.credentials,
            self.region,
            datetime.now(UTC),
        )
        response = await self._send(client, "PUT", key, headers, body)
        etag = response.headers.get("etag")
        echoed = response.headers.get("x-amz-checksum-sha256")
        if echoed is not None:
            if echoed != headers["x-amz-checksum-sha256"]:
                raise S3Error(f"PUT {key}: the store's SHA-256 checksum differs from ours")
        elif etag is None or etag.strip('"').lower() != md5.hexdigest():
            raise S3Error(f"PUT {key}: the store confirmed neither our SHA-256 nor our MD5")
        return Stored(key, etag, digest.hexdigest())

    async def get(self, client: httpx.AsyncClient, key: str) -> bytes:
        headers = sign(
            "GET",
            self.url(key),
            {},
            hashlib.sha256(b"").hexdigest(),
            self.credentials,
            self.region,
            datetime.now(UTC),
        )
        return (await self._send(client, "GET", key, headers, None)).content

    async def _send(
        self,
        client: httpx.AsyncClient,
        method: str,
        key: str,
        headers: dict[str, str],
        body: bytes | None,
    ) -> httpx.Response:
        try:
            response = await client.request(method, self.url(key), headers=headers, content=body)
        except httpx.HTTPError as exc:
            # The class only: some exception texts quote the URL, which is fine, but keep
            # one form for every failure.
            raise S3Error(f"{method} {key}: {type(exc).__name__} (no answer)") from None
        if response.status_code // 100 != 2:
            found = _ERROR_CODE.search(response.content[:4096])
            code = found.group(1).decode() if found else "no error code"
            raise S3Error(
                f"{method} {key}: HTTP {response.status_code} ({code})", response.status_code
            )
        return response


def parse_endpoint(url: str) -> str:
    """An endpoint URL as `Bucket` takes it: http(s), a host, no query; the base path kept
    (a store behind a reverse proxy at /s3), the trailing slash not."""
    parts = urlsplit(url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
    ):
        raise ValueError(
            "must be an http(s) URL without credentials or query, "
            "e.g. https://s3.eu-west-1.amazonaws.com"
        )
    return url.rstrip("/")
