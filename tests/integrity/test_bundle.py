"""Signed export bundles: GET /admin/activity/export?format=bundle on both databases,
checked offline by `verify-bundle`, and every way to tamper with one caught with a precise
message and exit status (never a traceback)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from audit_service.audit_log import repository
from audit_service.audit_log.context import system_event
from audit_service.core.db import create_engine
from audit_service.integrity import bundle, note
from audit_service.integrity.bundle import CannotVerify, Report, tar_member, verify_bundle
from audit_service.integrity.jobs import log_signer
from audit_service.kit.net import ip_key, parse_ip
from tests.conftest import Harness, make_settings, start_harness
from tests.integrity.helpers import seal

ROOT = Path(__file__).resolve().parents[2]


async def _seed(h: Harness, n: int, action: str = "test.bundle", **overrides: Any) -> None:
    """Events with every kind of personal value: user actors (id and name committed), IPs,
    user agents; and some without any."""
    rows = []
    for i in range(n):
        row = system_event(action, "test", f"bundle event {i}")
        if i % 3:
            ip = f"198.51.100.{i % 250}" if i % 2 else f"2001:db8::{i:x}"
            row.update(
                actor_type="user",
                actor_id=str(100 + i % 4),
                actor_name=f"user-{i % 4}",
                actor_role="auditor",
                ip=ip,
                ip_bytes=ip_key(parse_ip(ip)),
                user_agent=f"agent/{i}",
                metadata={"n": i, "ratio": i / 7, "tags": ["a", "ü"], "nested": {"x": None}},
                target_id=str(i),
            )
        row.update(overrides)
        rows.append(row)
    async with h.app.state.sessionmaker() as session:
        await repository.insert_events(session, rows)
        await session.commit()


def _verifier(h: Harness) -> note.Verifier:
    return log_signer(h.app.state.settings).verifier


def _members(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        out = []
        for m in tar.getmembers():
            f = tar.extractfile(m)
            assert f is not None
            out.append((m.name, f.read()))
        return out


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    return b"".join(tar_member(n, d, 0) for n, d in members) + b"\0" * 1024


def _verify(data: bytes, verifiers: list[note.Verifier], jobs: int = 1) -> Report:
    return verify_bundle(io.BytesIO(data), verifiers, jobs=jobs)


async def _export(h: Harness, params: str = "") -> Any:
    """Export as the admin (logged in once per harness: a login is an event, and one made
    after the checkpoint would count as "not in the bundle")."""
    headers = getattr(h, "_admin_headers", None)
    if headers is None:
        headers = h._admin_headers = await h.auth()  # type: ignore[attr-defined]
    return await h.client.get(f"/admin/activity/export?format=bundle{params}", headers=headers)


async def _login(h: Harness) -> None:
    h._admin_headers = await h.auth()  # type: ignore[attr-defined]


async def test_a_bundle_of_the_whole_log_verifies_offline(h: Harness) -> None:
    await _login(h)
    await _seed(h, 40)
    size = await seal(h)
    r = await _export(h)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-tar"
    assert r.headers["content-disposition"].endswith('.tar"')
    # Every event of the log so far is in it: the 40 seeded, the admin's creation, the login.
    assert r.headers["x-export-row-count"] == str(size)
    report = _verify(r.content, [_verifier(h)])
    assert report.ok, report.problems
    assert report.facts["events"] == size == report.facts["tree_size"]
    assert report.facts["rows_checked"] == size
    # 26 seeded user events, each with (ip, user agent, name, id), plus the login's own.
    assert report.facts["personal_values_opened"] >= 26 * 4
    assert report.facts["runs"] == 1

    names = [n for n, _ in _members(r.content)]
    assert names == [
        "README.txt",
        "checkpoint",
        "entries/000000.ndjson",
        "proofs/000000.ndjson",
        "events/000000.ndjson",
        "proofs/end.ndjson",
        "manifest",
    ]
    files = dict(_members(r.content))
    signed = note.open_note(files["manifest"], [_verifier(h)])
    title, _, body = signed.text.partition("\n")
    manifest = json.loads(body)
    assert title == bundle.MANIFEST_TITLE
    assert manifest["events"] == size and manifest["not_in_bundle"] == 0
    assert manifest["checkpoint"]["size"] == size and manifest["exported_by"] == "admin"
    assert [f["name"] for f in manifest["files"]] == names[:-1]
    # The readable rows carry the personal values in clear; the entries only commitments.
    row = json.loads(files["events/000000.ndjson"].splitlines()[3])
    entry = json.loads(
        base64.b64decode(json.loads(files["entries/000000.ndjson"].splitlines()[3])["entry"])
    )
    assert row["event"]["ip"] is not None and row["event"]["ip"] not in json.dumps(entry)
    assert row["salts"]["day"] and row["salts"]["subject"]

    event = await h.last_event()
    assert event.action == "activity.exported"
    meta = event.event_metadata
    assert (meta["format"], meta["row_count"], meta["checkpoint_size"]) == ("bundle", size, size)
    assert meta["not_in_bundle"] == 0 and meta["readable_rows"] is True


async def test_a_filtered_bundle_proves_its_runs_and_leaves_out_unsigned_events(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bundle, "CHUNK_EVENTS", 4)  # several chunks, runs across their edges
    await _login(h)
    for _ in range(5):
        await _seed(h, 3, action="test.wanted")
        await _seed(h, 2, action="test.other")
    await _seed(h, 4, action="test.wanted")
    size = await seal(h)
    await _seed(h, 6, action="test.wanted")  # after the checkpoint: not in the bundle
    r = await _export(h, "&action=test.wanted&rows=true")
    assert r.status_code == 200, r.text
    assert r.headers["x-export-row-count"] == "19"
    report = _verify(r.content, [_verifier(h)])
    assert report.ok, report.problems
    assert report.facts["events"] == 19 and report.facts["tree_size"] == size
    assert report.facts["not_in_bundle"] == 6
    assert report.facts["runs"] >= 6  # five gaps of other events, plus chunk edges
    assert report.facts["filters"] == {"action": ["test.wanted"]}
    files = dict(_members(r.content))
    assert "entries/000004.ndjson" in files and "entries/000005.ndjson" not in files
    positions = [
        json.loads(line)["position"]
        for name, data in sorted(files.items())
        if name.startswith("entries/")
        for line in data.splitlines()
    ]
    async with h.app.state.sessionmaker() as session:
        wanted = (
            await session.execute(
                text(
                    "SELECT l.position FROM audit_leaf l JOIN audit_event e ON e.id = l.event_pk"
                    " WHERE e.action = 'test.wanted' AND l.position < :n ORDER BY l.position"
                ),
                {"n": size},
            )
        ).scalars()
        assert positions == list(wanted)
    event = await h.last_event()
    assert event.event_metadata["not_in_bundle"] == 6


async def test_entries_only_and_gzipped_bundles(h: Harness) -> None:
    await _login(h)
    await _seed(h, 12)
    await seal(h)
    r = await _export(h, "&rows=false&gzip=true")
    assert r.headers["content-type"] == "application/gzip"
    assert r.headers["content-disposition"].endswith('.tar.gz"')
    names = [n for n, _ in _members(gzip.decompress(r.content))]
    assert not any(n.startswith("events/") for n in names)
    report = _verify(r.content, [_verifier(h)])
    assert report.ok, report.problems
    assert report.facts["rows_checked"] == 0 and report.facts["events"] > 12


async def test_an_empty_selection_is_a_valid_bundle(h: Harness) -> None:
    await _login(h)
    await _seed(h, 3)
    await seal(h)
    r = await _export(h, "&action=nothing.matches")
    assert r.status_code == 200
    report = _verify(r.content, [_verifier(h)])
    assert report.ok, report.problems
    assert report.facts["events"] == 0


async def test_no_signed_checkpoint_yet_is_a_409(h: Harness) -> None:
    await _seed(h, 3)
    r = await _export(h)
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    assert "no signed checkpoint" in r.json()["detail"]
    event = await h.last_event()
    assert (event.action, event.outcome, event.status_code) == ("activity.exported", "failure", 409)


async def test_bad_bundle_parameters_are_422(h: Harness) -> None:
    headers = await h.auth()
    for params in ("format=tarball", "format=bundle&rows=maybe", "format=bundle&recipient=0"):
        r = await h.client.get(f"/admin/activity/export?{params}", headers=headers)
        assert r.status_code == 422, params
        assert r.headers["content-type"] == "application/problem+json"


async def test_a_row_changed_after_it_was_logged_is_named_by_the_verifier(
    pg_only_url: str, pg_admin_url: str
) -> None:
    async for h in start_harness(make_settings(pg_only_url)):
        await _login(h)
        await _seed(h, 10)
        await seal(h)
        victim = (await h.events(action="test.bundle"))[4]
        owner = create_engine(pg_admin_url)
        async with owner.begin() as conn:
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
            await conn.execute(
                text("UPDATE audit_event SET description = 'rewritten' WHERE id = :i"),
                {"i": victim.id},
            )
        await owner.dispose()
        r = await _export(h)
        report = _verify(r.content, [_verifier(h)])
        assert not report.ok
        assert any(
            str(victim.event_id) in p and "does not hash to its leaf hash" in p
            for p in report.problems
        ), report.problems


# --- tampering with a bundle ----------------------------------------------------------------


@dataclass
class Sample:
    data: bytes
    verifier: note.Verifier
    signer: note.Signer


@pytest.fixture(scope="module")
async def sample(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Sample:
    """One small bundle (two chunks), made once, tampered with by each test."""
    path = tmp_path_factory.mktemp("bundle") / "audit.db"
    shutil.copy(sqlite_template, path)
    harness = start_harness(make_settings(f"sqlite+aiosqlite:///{path}"))
    h = await anext(harness)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(bundle, "CHUNK_EVENTS", 8)
            await _login(h)
            await _seed(h, 6)
            await _seed(h, 4, action="test.other")
            await _seed(h, 6)
            await seal(h)
            r = await _export(h, "&action=test.bundle")
        assert r.status_code == 200
        return Sample(r.content, _verifier(h), log_signer(h.app.state.settings))
    finally:
        await harness.aclose()


def _replace(data: bytes, name: str, new: bytes | None) -> bytes:
    members = [(n, (new if n == name else d)) for n, d in _members(data)]
    return _tar([(n, d) for n, d in members if d is not None])


def _resign(members: list[tuple[str, bytes]], signer: note.Signer, **changes: Any) -> bytes:
    """Rebuild the manifest for the (changed) files and sign it with `signer`."""
    files = dict(members)
    text_ = files["manifest"].decode()[: files["manifest"].decode().rindex("\n\n") + 1]
    title, _, body = text_.partition("\n")
    manifest = json.loads(body)
    manifest["files"] = [
        {"name": n, "sha256": hashlib.sha256(d).hexdigest(), "size": len(d)}
        for n, d in members
        if n != "manifest"
    ]
    manifest.update(changes)
    signed = note.sign_note(f"{title}\n{json.dumps(manifest)}\n", [signer])
    return _tar([(n, signed.encode() if n == "manifest" else d) for n, d in members])


def test_the_sample_verifies_in_process_and_with_worker_processes(sample: Sample) -> None:
    for jobs in (1, 2):
        report = _verify(sample.data, [sample.verifier], jobs=jobs)
        assert report.ok, report.problems
        assert report.facts["events"] == 12 and report.facts["runs"] >= 3


def test_a_flipped_byte_in_an_entry_is_named(sample: Sample) -> None:
    members = _members(sample.data)
    name, data = members[2]
    assert name == "entries/000000.ndjson"
    line = json.loads(data.splitlines()[1])
    entry = base64.b64decode(line["entry"])
    altered = entry.replace(b"bundle event", b"bundle Event")
    record = {**line, "entry": base64.b64encode(altered).decode()}
    new_line = json.dumps(record, separators=(",", ":")).encode()
    lines = data.splitlines()
    lines[1] = new_line
    report = _verify(_replace(sample.data, name, b"\n".join(lines) + b"\n"), [sample.verifier])
    assert not report.ok
    assert f"{name}: its SHA-256 differs from the signed manifest" in report.problems
    assert any(
        f"position {line['position']}" in p and "does not hash to its leaf hash" in p
        for p in report.problems
    ), report.problems


def test_every_flipped_byte_is_caught_and_never_a_traceback(sample: Sample) -> None:
    data = sample.data
    # Where the bytes that mean something are: headers and file data, not padding.
    meaningful: list[int] = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for m in tar.getmembers():
            meaningful += range(m.offset, m.offset + 512)
            meaningful += range(m.offset_data, m.offset_data + m.size)
    step = max(1, len(meaningful) // 600)
    codes: dict[int, int] = {}
    for offset in meaningful[::step]:
        flipped = bytearray(data)
        flipped[offset] ^= 0x20
        try:
            report = _verify(bytes(flipped), [sample.verifier])
            code = 0 if report.ok else 1
        except CannotVerify:
            code = 2
        codes[offset] = code
        assert code != 0, f"byte {offset} flipped and the bundle still verifies"
    # Mostly "tampered": only a flip that hides the key's name or ID is "cannot verify".
    assert sum(1 for c in codes.values() if c == 1) > 0.9 * len(codes)


def test_a_flipped_header_byte_says_where_the_tar_is_damaged(sample: Sample) -> None:
    with tarfile.open(fileobj=io.BytesIO(sample.data), mode="r:") as tar:
        third = tar.getmembers()[3]
    flipped = bytearray(sample.data)
    flipped[third.offset + 10] ^= 1  # in the name field; the checksum no longer matches
    report = _verify(bytes(flipped), [sample.verifier])
    assert report.problems == [
        f"the tar structure is damaged at byte {third.offset}: a file header there does not "
        "check out (altered or corrupted bytes)"
    ]


@pytest.mark.parametrize("keep", [0, 100, 511, 512, 5000, -1500, -1024, -1])
def test_a_truncated_bundle_cannot_be_verified(sample: Sample, keep: int) -> None:
    cut = sample.data[:keep]
    if keep == -1024:
        # Only the end-of-archive blocks are gone: every file is there and intact.
        assert _verify(cut, [sample.verifier]).ok
        return
    if keep == -1:
        cut = sample.data[: -1024 - 1]  # one byte short of the manifest's last block
    with pytest.raises(CannotVerify, match=r"truncated|not a tar|no manifest"):
        _verify(cut, [sample.verifier])


def test_an_extra_file_is_named(sample: Sample) -> None:
    members = _members(sample.data)
    before_manifest = [*members[:-1], ("notes.txt", b"trust me\n"), members[-1]]
    report = _verify(_tar(before_manifest), [sample.verifier])
    assert report.problems == ["notes.txt: an extra file, not in the signed manifest"]
    after = [*members, ("entries/000009.ndjson", b"{}\n")]
    report = _verify(_tar(after), [sample.verifier])
    assert report.problems == ["entries/000009.ndjson: an extra file after the manifest"]


def test_a_missing_file_is_named(sample: Sample) -> None:
    members = [(n, d) for n, d in _members(sample.data) if n != "events/000001.ndjson"]
    report = _verify(_tar(members), [sample.verifier])
    assert "events/000001.ndjson: listed in the manifest but missing from the bundle" in (
        report.problems
    )
    members = [(n, d) for n, d in _members(sample.data) if n != "proofs/000000.ndjson"]
    report = _verify(_tar(members), [sample.verifier])
    assert any(
        "proofs/000000.ndjson: listed in the manifest but missing" in p for p in report.problems
    )
    assert any("proofs/000000.ndjson: missing" in p for p in report.problems)


def test_a_manifest_signed_by_an_unknown_key_cannot_be_verified(sample: Sample) -> None:
    stranger = note.Signer.generate("someone-else")
    forged = _resign(_members(sample.data), stranger)
    with pytest.raises(CannotVerify, match=r"manifest is not signed by any key .*someone-else\+"):
        _verify(forged, [sample.verifier])
    # And with no trusted key for the checkpoint either, that is said first.
    with pytest.raises(CannotVerify, match="checkpoint is not signed by any key"):
        _verify(sample.data, [stranger.verifier])


def test_a_manifest_whose_signature_was_altered_is_tampered(sample: Sample) -> None:
    files = dict(_members(sample.data))
    text_, _, sigs = files["manifest"].decode().rpartition("\n\n")
    altered = (text_.replace('"events":12', '"events":13') + "\n\n" + sigs).encode()
    report = _verify(_replace(sample.data, "manifest", altered), [sample.verifier])
    assert report.problems == [
        "manifest: invalid signature for key "
        f"{sample.verifier.name}+{sample.verifier.key_id:08x} (the manifest was altered)"
    ]


def test_a_wrong_checkpoint_is_caught(sample: Sample) -> None:
    members = _members(sample.data)
    files = dict(members)
    real, _ = note.open_checkpoint(files["checkpoint"], [sample.verifier])
    # Properly signed by the log's key, but of another tree (e.g. an older checkpoint).
    other = note.sign_checkpoint(
        note.Checkpoint(real.origin, real.size - 3, b"\x07" * 32), [sample.signer]
    )
    swapped = [(n, other.encode() if n == "checkpoint" else d) for n, d in members]
    report = _verify(_tar(swapped), [sample.verifier])
    assert any(
        "checkpoint: its SHA-256 differs from the signed manifest" in p for p in report.problems
    )
    assert (
        "the checkpoint is not the one the manifest was signed for (its size or root differ)"
        in report.problems
    )
    # Even with the manifest re-signed to match, the proofs do not lead to that root.
    report = _verify(
        _resign(
            swapped,
            sample.signer,
            checkpoint={
                "file": "checkpoint",
                "size": real.size - 3,
                "root": base64.b64encode(b"\x07" * 32).decode(),
            },
        ),
        [sample.verifier],
    )
    assert report.problems == [
        "proofs/000001.ndjson: run [14, 18) goes beyond the checkpoint's tree "
        f"(size {real.size - 3})"
    ]
    # A checkpoint of the same size with another root: the fold says so.
    forged = note.sign_checkpoint(
        note.Checkpoint(real.origin, real.size, b"\x07" * 32), [sample.signer]
    )
    swapped = [(n, forged.encode() if n == "checkpoint" else d) for n, d in members]
    root = base64.b64encode(b"\x07" * 32).decode()
    report = _verify(
        _resign(
            swapped,
            sample.signer,
            checkpoint={"file": "checkpoint", "size": real.size, "root": root},
        ),
        [sample.verifier],
    )
    assert len(report.problems) == 1
    assert report.problems[0].startswith("the entries and proofs lead to root ")
    assert f"not the checkpoint's root {root} (size {real.size})" in report.problems[0]


def test_a_readable_row_that_differs_from_its_entry_is_named(sample: Sample) -> None:
    """Even a forger holding the log key (re-signing the manifest) cannot change a readable
    value, personal ones included: the row no longer encodes to the logged entry."""
    members = _members(sample.data)
    files = dict(members)
    lines = files["events/000000.ndjson"].splitlines()
    changed = {}
    for i, line in enumerate(lines):
        record = json.loads(line)
        if record["event"]["ip"] is not None and not changed:
            record["event"]["ip"] = "192.0.2.1"
            changed = record
            lines[i] = json.dumps(record).encode()
    for i, line in enumerate(lines):
        record = json.loads(line)
        if record is not changed and record["event"]["description"] and i == 0:
            record["event"]["description"] = "something else"
            lines[i] = json.dumps(record).encode()
    members = [
        (n, b"\n".join(lines) + b"\n" if n == "events/000000.ndjson" else d) for n, d in members
    ]
    report = _verify(_resign(members, sample.signer), [sample.verifier])
    assert any(
        f"position {changed['position']}" in p
        and "differs from its entry in ip (prefix), ip (commitment)" in p
        for p in report.problems
    ), report.problems
    assert any("differs from its entry in description" in p for p in report.problems)


# --- the command line -------------------------------------------------------------------------


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "audit_service.launcher", "verify-bundle", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
        check=False,
    )


def test_verify_bundle_exit_codes_and_messages(sample: Sample, tmp_path: Path) -> None:
    good = tmp_path / "good.tar"
    good.write_bytes(sample.data)
    vkey = sample.verifier.vkey
    ok = _cli(str(good), "--vkey", vkey, "--jobs", "1")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("OK: 12 event(s) of log 'testserver/audit-service/test'")

    keys = tmp_path / "vkeys"
    keys.write_text(f"# the log's keys\n{vkey}\n")
    as_json = _cli(str(good), "--vkey", str(keys), "--json")
    report = json.loads(as_json.stdout)
    assert as_json.returncode == 0 and report["status"] == "intact" and report["events"] == 12

    bad = tmp_path / "bad.tar"
    bad.write_bytes(_replace(sample.data, "README.txt", b"changed\n"))
    tampered = _cli(str(bad), "--vkey", vkey)
    assert tampered.returncode == 1
    assert "README.txt: its SHA-256 differs from the signed manifest (8 bytes" in tampered.stdout

    short = tmp_path / "short.tar"
    short.write_bytes(sample.data[:3000])
    cut = _cli(str(short), "--vkey", vkey)
    assert cut.returncode == 2 and "cannot verify: the bundle" in cut.stderr

    stranger = note.Signer.generate("stranger").verifier.vkey
    unknown = _cli(str(good), "--vkey", stranger)
    assert unknown.returncode == 2 and "not signed by any key given with --vkey" in unknown.stderr

    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(os.urandom(4096))
    assert _cli(str(garbage), "--vkey", vkey).returncode == 2
    assert _cli(str(tmp_path / "absent.tar"), "--vkey", vkey).returncode == 2

    for usage in (
        [str(good)],
        [str(good), "--vkey", "not-a-key"],
        [str(good), "--vkey", vkey, "--jobs", "0"],
        ["--bogus"],
    ):
        run = _cli(*usage)
        assert run.returncode == 3, usage
        assert "usage:" in run.stderr
    for run in (ok, tampered, cut, unknown):
        assert "Traceback" not in run.stdout + run.stderr


def test_verify_bundle_imports_nothing_but_stdlib_cryptography_and_the_primitives(
    sample: Sample, tmp_path: Path
) -> None:
    path = tmp_path / "bundle.tar"
    path.write_bytes(sample.data)
    # Only what the command itself loads counts (not what site / .pth files load at start).
    probe = f"""
import sys
before = set(sys.modules)
sys.argv = ["audit-service", "verify-bundle", {str(path)!r}, "--jobs", "1",
            "--vkey", {sample.verifier.vkey!r}]
from audit_service import launcher
try:
    launcher.main()
except SystemExit as exc:
    code = exc.code
# _openssl: cryptography's own bindings; __mp_main__: multiprocessing's alias of __main__.
allowed = set(sys.stdlib_module_names) | {{"cryptography", "_cffi_backend", "_openssl",
                                          "audit_service", "__mp_main__"}}
ours = {{"audit_service", "audit_service.launcher", "audit_service.integrity",
        "audit_service.integrity.bundle", "audit_service.integrity.bundle_cli",
        "audit_service.integrity.entry", "audit_service.integrity.merkle",
        "audit_service.integrity.note"}}
foreign = sorted(m for m in set(sys.modules) - before if m.split(".")[0] not in allowed)
extra = sorted(m for m in sys.modules if m.startswith("audit_service") and m not in ours)
print(code, "sqlalchemy" in sys.modules, foreign, extra)
"""
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "0 False [] []"


def test_an_auditor_can_unpack_a_bundle_with_plain_tar(sample: Sample, tmp_path: Path) -> None:
    tar = shutil.which("tar")
    if tar is None:
        pytest.skip("no tar program on this machine")
    (tmp_path / "b.tar").write_bytes(sample.data)
    listed = subprocess.run(
        [tar, "-tf", str(tmp_path / "b.tar")], capture_output=True, text=True, check=True
    )
    assert listed.stdout.splitlines()[:3] == ["README.txt", "checkpoint", "entries/000000.ndjson"]
    assert listed.stdout.splitlines()[-1] == "manifest"
    assert "audit-service verify-bundle" in (
        subprocess.run(
            [tar, "-xOf", str(tmp_path / "b.tar"), "README.txt"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
