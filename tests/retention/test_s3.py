"""Archive segments in an S3-compatible bucket: moto's server as a real process on
loopback (and a refusing server of our own), our SigV4 checked against botocore's signer
and the published AWS example; on both databases, the bucket's objects equal the local
files byte for byte, a downloaded copy verifies offline, a store that is down or refuses
never blocks the local archive and is retried by the next run, nothing is sent twice, and
the purge waits for the copy."""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import select

from audit_service.core.config import Settings, settings_error_text
from audit_service.integrity.jobs import log_signer
from audit_service.kit import s3
from audit_service.retention import segment
from audit_service.retention.jobs import STEPS, StepContext, run_steps
from audit_service.retention.models import RetentionArchive
from audit_service.retention.upload import object_keys
from tests.conftest import Harness
from tests.integrity.helpers import seal
from tests.retention.conftest import NOW, reset_policies, seed

KEY_ID = "AKIDTESTAUDIT"
SECRET = "s3cr3t-never-in-a-log-line"  # moto accepts any pair; this one must never show up
BUCKET = "audit-archive"
REGION = "eu-west-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Store:
    url: str
    key_id: str
    secret: str


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    """moto's S3 server, a real process (`python -m moto.server`), for this module, with
    authentication on (it checks every SigV4 signature): its first three requests create
    an IAM user, its access key and a policy allowing s3:*, which the tests then use."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/moto-api/", timeout=1)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        iam = _boto(url, "iam", "bootstrap", "bootstrap")
        iam.create_user(UserName="archiver")
        key = iam.create_access_key(UserName="archiver")["AccessKey"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
        iam.put_user_policy(UserName="archiver", PolicyName="s3", PolicyDocument=json.dumps(policy))
        yield Store(url, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _boto(url: str, service: str, key_id: str, secret: str) -> Any:
    import boto3

    return boto3.client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )


@pytest.fixture
def bucket(store: Store) -> Iterator[Store]:
    """A fresh, empty bucket (the module's server outlives a test)."""
    client = _boto(store.url, "s3", store.key_id, store.secret)
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    yield store
    for obj in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    client.delete_bucket(Bucket=BUCKET)


class _Refusing(http.server.BaseHTTPRequestHandler):
    requests: list[str]  # set per server: every request line it got

    def do_PUT(self) -> None:
        self.requests.append(self.requestline)
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = b"<Error><Code>SlowDown</Code><Message>busy</Message></Error>"
        self.send_response(503)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        return None


@contextlib.contextmanager
def refusing_server() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server answering every PUT with 503 SlowDown; its URL and the requests
    it got."""
    requests: list[str] = []
    handler = type("Handler", (_Refusing,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


def _with_bucket(
    settings: Settings, url: str, key_id: str = KEY_ID, secret: str = SECRET, **extra: Any
) -> Settings:
    values = {
        **settings.model_dump(),
        "archive_s3_url": url,
        "archive_s3_bucket": BUCKET,
        "archive_s3_region": REGION,
        "archive_s3_prefix": "audit/prod",
        "archive_s3_access_key_id": key_id,
        "archive_s3_secret_access_key": secret,
        "archive_s3_timeout": 5.0,
        **extra,
    }
    return Settings(**values)


async def _archive(h: Harness, settings: Settings, now: datetime = NOW) -> Any:
    ctx = StepContext(h.app.state.sessionmaker, settings, now)
    return (await run_steps(ctx, STEPS[:1]))[0]


async def _rows(h: Harness) -> list[RetentionArchive]:
    async with h.app.state.sessionmaker() as session:
        stmt = select(RetentionArchive).order_by(RetentionArchive.id)
        return list((await session.scalars(stmt)).all())


# --- the signature ------------------------------------------------------------------------


def test_sigv4_equals_the_published_aws_example() -> None:
    """The GET example of the S3 SigV4 documentation ("Example: GET Object"), its
    credentials, time and expected signature."""
    creds = s3.Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    headers = s3.sign(
        "GET",
        "https://examplebucket.s3.amazonaws.com/test.txt",
        {"Range": "bytes=0-9"},
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        creds,
        "us-east-1",
        datetime(2013, 5, 24, tzinfo=UTC),
    )
    assert headers["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


@pytest.mark.parametrize(
    ("method", "url", "body", "extra"),
    [
        (
            "PUT",
            "http://127.0.0.1:9000/audit-archive/audit/0001-all/2025/2025-01-02.ndjson.gz",
            b"\x1f\x8bsegment bytes",
            {
                "Content-Type": "application/gzip",
                "Content-MD5": "1B2M2Y8AsgTpgAmY7PhCfg==",
                "x-amz-checksum-sha256": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
            },
        ),
        ("GET", "https://s3.eu-west-1.amazonaws.com/b/a%20key/with~odd_chars.json", b"", {}),
    ],
)
def test_sigv4_equals_botocore(method: str, url: str, body: bytes, extra: dict[str, str]) -> None:
    """The oracle: botocore's S3 signer on the same request, credentials and time."""
    import hashlib

    from botocore import auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    at = datetime(2026, 12, 3, 13, 14, 15, tzinfo=UTC)
    payload = hashlib.sha256(body).hexdigest()
    ours = s3.sign(method, url, extra, payload, s3.Credentials(KEY_ID, SECRET), REGION, at)

    request = AWSRequest(method=method, url=url, data=body, headers=dict(extra))
    signer = auth.S3SigV4Auth(Credentials(KEY_ID, SECRET), "s3", REGION)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(auth, "get_current_datetime", lambda: at.replace(tzinfo=None))
        signer.add_auth(request)
    assert ours["authorization"] == request.headers["Authorization"]
    assert ours["x-amz-date"] == request.headers["X-Amz-Date"]
    assert ours["x-amz-content-sha256"] == request.headers["X-Amz-Content-SHA256"]


class _Lying(http.server.BaseHTTPRequestHandler):
    """Takes every PUT with 200 but answers with checksums of other bytes."""

    headers_out: dict[str, str]

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        for name, value in self.headers_out.items():
            self.send_header(name, value)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        return None


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"ETag": '"00000000000000000000000000000000"'}, "confirmed neither"),
        ({"x-amz-checksum-sha256": "AAAA"}, "SHA-256 checksum differs"),
        ({}, "confirmed neither"),
    ],
)
async def test_put_refuses_an_answer_that_does_not_confirm_the_bytes(
    answer: dict[str, str], message: str
) -> None:
    handler = type("Handler", (_Lying,), {"headers_out": answer})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        b = s3.Bucket(url, BUCKET, REGION, s3.Credentials(KEY_ID, SECRET), timeout=5)
        async with b.client() as client:
            with pytest.raises(s3.S3Error, match=message):
                await b.put(client, "k", b"segment bytes")
    finally:
        server.shutdown()
        server.server_close()


# --- settings -----------------------------------------------------------------------------


def test_settings_refuse_incomplete_or_unsafe_bucket_config(tmp_path: Path) -> None:
    base = {"database_url": f"sqlite+aiosqlite:///{tmp_path}/a.db"}
    assert Settings(**base).archive_s3_endpoint is None  # off without a bucket
    assert (
        Settings(**base, archive_s3_bucket="b-1", archive_s3_region="eu-west-1").archive_s3_endpoint
        == "https://s3.eu-west-1.amazonaws.com"
    )
    bad = [
        {"archive_s3_url": "http://127.0.0.1:9000"},  # no bucket
        {"archive_s3_bucket": "Not_A_Bucket"},
        {"archive_s3_bucket": "b-1", "archive_s3_url": "ftp://host"},
        {"archive_s3_bucket": "b-1", "archive_s3_url": "https://user:pw@host"},
        {"archive_s3_bucket": "b-1", "archive_s3_access_key_id": KEY_ID},  # half a pair
        {"archive_s3_bucket": "b-1", "archive_s3_prefix": "a//b"},
    ]
    for extra in bad:
        with pytest.raises(ValidationError):
            Settings(**base, **extra)
    production = {
        **base,
        "env": "production",
        "jwt_secret": "j" * 40,
        "log_signing_key": "PRIVATE+KEY+x+00000000+" + "A" * 44,
    }
    with pytest.raises(ValidationError) as exc:
        Settings(**production, archive_s3_bucket="b-1", archive_s3_secret_access_key=SECRET)
    text = settings_error_text(exc.value)
    assert "AUDIT_ARCHIVE_S3_ACCESS_KEY_ID" in text and SECRET not in text
    ok = Settings(
        **base,
        archive_s3_bucket="b-1",
        archive_s3_prefix="/audit/prod/",
        archive_s3_access_key_id=KEY_ID,
        archive_s3_secret_access_key=SECRET,
    )
    assert ok.archive_s3_prefix == "audit/prod/"
    assert SECRET not in repr(ok) and SECRET not in str(ok.model_dump())


# --- uploads, both databases --------------------------------------------------------------


async def test_uploads_equal_local_files_resume_after_failures_and_never_twice(
    h: Harness, bucket: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await reset_policies(h)
    await seed(h, n=96, bursts=4)  # four days: few segments, two of them a year old
    await seal(h)
    local = h.app.state.settings

    # 1. No bucket yet: segments are written locally only (the first year's days).
    early = datetime(2025, 6, 1, tzinfo=UTC)
    first = await _archive(h, local, early)
    assert first.facts["segments"] > 0 and not first.facts["s3"]["enabled"]
    assert all(r.uploaded_at is None and r.s3_key is None for r in await _rows(h))
    n_before = len(await _rows(h))

    # 2. The bucket configured but its server down: the rest is archived locally anyway,
    # every row is marked not uploaded, the failure is reported without the secret.
    down = _with_bucket(local, f"http://127.0.0.1:{_free_port()}")
    with caplog.at_level(logging.WARNING, logger="audit_service.retention.upload"):
        second = await _archive(h, down)
    rows = await _rows(h)
    assert second.facts["segments"] > 0 and len(rows) == n_before + second.facts["segments"]
    for r in rows:
        assert (Path(local.archive_dir) / r.path).is_file()
        assert r.uploaded_at is None and r.s3_key is None
    s3_facts = second.facts["s3"]
    assert s3_facts["enabled"] and s3_facts["uploaded"] == 0 and s3_facts["failed"] == 1
    assert s3_facts["pending"] == len(rows) and "no answer" in s3_facts["error"]
    assert "no answer" in (rows[0].s3_error or "")
    event = max(await h.events(action="retention.archived"), key=lambda e: e.id)
    assert event.event_metadata["s3"]["failed"] == 1
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert BUCKET in logged and "next retention run retries" in logged
    assert SECRET not in logged and SECRET not in str(event.event_metadata)
    assert bucket.secret not in logged

    # 3. A store that answers 503: recorded with its status and S3 error code.
    with refusing_server() as (refusing, requests):
        third = await _archive(h, _with_bucket(local, refusing))
    assert len(requests) == 1  # the first failure ends the run's uploads
    assert third.facts["segments"] == 0 and third.facts["s3"]["failed"] == 1
    assert "HTTP 503 (SlowDown)" in third.facts["s3"]["error"]
    assert all(r.uploaded_at is None for r in await _rows(h))

    # 3b. Wrong credentials: the store (which checks signatures) refuses; recorded too.
    refused = await _archive(h, _with_bucket(local, bucket.url, bucket.key_id, "wrong"))
    assert "HTTP 403 (SignatureDoesNotMatch)" in refused.facts["s3"]["error"]
    assert "wrong" not in str(refused.facts)

    # 4. The server up: the next run uploads every segment, the early ones too.
    up = _with_bucket(local, bucket.url, bucket.key_id, bucket.secret)
    fourth = await _archive(h, up)
    rows = await _rows(h)
    assert fourth.facts["segments"] == 0
    assert fourth.facts["s3"]["uploaded"] == len(rows) and fourth.facts["s3"]["pending"] == 0
    client = _boto(bucket.url, "s3", bucket.key_id, bucket.secret)
    listed = {o["Key"]: o for o in client.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert len(listed) == 2 * len(rows)
    download = tmp_path / "download"
    for r in rows:
        key, manifest_key = object_keys(up, r.path)
        assert r.s3_key == key and key.startswith("audit/prod/") and r.uploaded_at is not None
        assert r.s3_error is None
        for k, path in (
            (key, local.archive_dir / r.path),
            (manifest_key, segment.manifest_path(local.archive_dir / r.path)),
        ):
            got = client.get_object(Bucket=BUCKET, Key=k)["Body"].read()
            assert got == path.read_bytes(), k  # byte for byte
            target = download / Path(k).relative_to("audit/prod")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(got)
    # Our own GET reads the same bytes back.
    from audit_service.retention.upload import bucket_of

    ours = bucket_of(up)
    assert ours is not None
    async with ours.client() as c:
        got = await ours.get(c, rows[0].s3_key or "")
    assert got == (local.archive_dir / rows[0].path).read_bytes()
    # The downloaded copy verifies offline (every segment, and the manifest chain).
    checked = segment.verify_path(download, [log_signer(local).verifier])
    assert checked.ok, checked.problems
    assert checked.events == sum(r.count for r in rows)

    # 5. A rerun sends nothing again: not one request reaches the store.
    with refusing_server() as (refusing, requests):
        fifth = await _archive(h, _with_bucket(local, refusing))
    assert requests == [] and fifth.facts["s3"]["uploaded"] == 0
    assert fifth.facts["s3"]["failed"] == 0 and fifth.facts["s3"]["pending"] == 0
    assert len(client.list_objects_v2(Bucket=BUCKET)["Contents"]) == 2 * len(rows)

    # The archive list shows where each segment is.
    admin = await h.auth()
    r = await h.client.get("/admin/retention/archives?limit=500", headers=admin)
    assert r.status_code == 200, r.text
    items = {i["id"]: i for i in r.json()["items"]}
    for row in rows:
        assert items[row.id]["s3_key"] == row.s3_key and items[row.id]["uploaded_at"]
        assert items[row.id]["s3_error"] is None


async def test_purge_waits_for_the_bucket_copy(h: Harness, bucket: Store) -> None:
    await reset_policies(h)
    await seed(h, n=96, bursts=4)  # four days: few segments, two of them a year old
    await seal(h)
    local = h.app.state.settings
    down = _with_bucket(local, f"http://127.0.0.1:{_free_port()}")
    n = len(await h.events())
    archive, purge = await run_steps(StepContext(h.app.state.sessionmaker, down, NOW), STEPS[:2])
    assert archive.facts["segments"] > 0 and archive.facts["s3"]["failed"] == 1
    assert purge.facts["deleted"] == 0 and purge.facts["tombstones"] == []
    assert purge.facts["waiting_upload"] > 0
    assert len(await h.events()) >= n  # nothing deleted (retention events added)

    up = _with_bucket(local, bucket.url, bucket.key_id, bucket.secret)
    archive, purge = await run_steps(StepContext(h.app.state.sessionmaker, up, NOW), STEPS[:2])
    assert archive.facts["s3"]["pending"] == 0
    assert purge.facts["deleted"] > 0 and purge.facts["waiting_upload"] == 0
