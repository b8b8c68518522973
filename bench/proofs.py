"""Proof API latency at scale: inclusion proofs (and consistency proofs, tiles) on a big log.

Starts a private PostgreSQL (or uses --database-url, which must be empty and migrated or
new), loads --events realistic events by binary COPY (bench/seed_events.py), sequences all
of them with the log job's own sequencer (leaf hashes, tiles), signs one checkpoint, then
times requests through the real app in-process (ASGI: bearer auth, the recorder's group
commit of each request's own event, the proof and its checks), one at a time:

- `GET /admin/integrity/events/{event_id}/proof` for random sequenced events;
- `GET /admin/integrity/consistency?old=<random>` (to the checkpoint);
- `GET /admin/integrity/tile/0/<random full tile>`;
- and `proofs.prove_event` called directly (no HTTP, no auth, no recording): the proof's
  own cost, in one session.

Prints one JSON line. Reproduce:

    .venv/bin/python bench/proofs.py --events 1000000 --requests 2000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

import httpx
from bench.common import cpu_model
from sqlalchemy import text
from tests.pg import TempPostgres

from audit_service.audit_log.context import Actor, RequestAudit
from audit_service.audit_log.sequencer import no_fence
from audit_service.core import migrations
from audit_service.core.config import Settings
from audit_service.core.db import create_engine, create_sessionmaker
from audit_service.integrity import merkle, note, proofs
from audit_service.integrity.jobs import log_signers, make_sequencer
from audit_service.integrity.service import Checkpointer, root_at
from audit_service.integrity.tiles import encode_index
from audit_service.main import create_app

PASSWORD = "bench-admin-password"


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)

    def at(q: float) -> float:
        return round(ms[min(len(ms) - 1, int(q * len(ms)))], 3)

    return {
        "n": len(ms),
        "p50_ms": at(0.50),
        "p95_ms": at(0.95),
        "p99_ms": at(0.99),
        "max_ms": round(ms[-1], 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def seed(url: str, events: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "seed_events.py"),
            *("--database-url", url, "--events", str(events), "--drop-indexes"),
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


async def sequence_and_sign(settings: Settings) -> dict[str, Any]:
    engine = create_engine(settings.database_url)
    sessionmaker = create_sessionmaker(engine)
    t0 = time.perf_counter()
    done = await make_sequencer().catch_up(sessionmaker, no_fence)
    sequenced = time.perf_counter() - t0
    checkpointer = Checkpointer(
        log_signers(settings), settings.log_origin, min_interval=0.0, idle_interval=0.0
    )
    async with sessionmaker() as session:
        size = await checkpointer.maybe_sign(session)
        await session.commit()
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE audit_event"))
        await conn.execute(text("VACUUM ANALYZE audit_leaf"))
        await conn.execute(text("VACUUM ANALYZE integrity_tile"))
    await engine.dispose()
    return {
        "tree_size": size,
        "sequence_seconds": round(sequenced, 1),
        "sequence_events_per_s": round(done.sequenced / sequenced) if sequenced else None,
    }


async def sample_ids(sessionmaker: Any, tree_size: int, n: int, rnd: random.Random) -> list[Any]:
    positions = [rnd.randrange(tree_size) for _ in range(n)]
    async with sessionmaker() as session:
        rows = await session.execute(
            text(
                "SELECT l.position, e.event_id FROM audit_leaf l "
                "JOIN audit_event e ON e.id = l.event_pk WHERE l.position = ANY(:p)"
            ),
            {"p": positions},
        )
        by_position = {r.position: r.event_id for r in rows}
    return [by_position[p] for p in positions]


async def timed_gets(
    client: httpx.AsyncClient, headers: dict[str, str], urls: list[str]
) -> list[float]:
    samples = []
    for url in urls:
        t0 = time.perf_counter()
        r = await client.get(url, headers=headers)
        samples.append(time.perf_counter() - t0)
        if r.status_code != 200:
            raise RuntimeError(f"{url}: {r.status_code} {r.text[:300]}")
    return samples


async def measure(settings: Settings, tree_size: int, requests: int, seed_: int) -> dict[str, Any]:
    rnd = random.Random(seed_)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            r = await client.post("/login", json={"username": "admin", "password": PASSWORD})
            if r.status_code != 200:
                raise RuntimeError(f"login: {r.status_code} {r.text[:300]}")
            headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
            ids = await sample_ids(app.state.sessionmaker, tree_size, requests + 100, rnd)
            api = "/admin/integrity"
            # Warm-up: connections, caches, the first tiles of every level.
            await timed_gets(client, headers, [f"{api}/events/{e}/proof" for e in ids[:100]])
            ids = ids[100:]
            proof_urls = [f"{api}/events/{e}/proof" for e in ids]
            inclusion = await timed_gets(client, headers, proof_urls)
            # One answer, checked end to end the way a verifier would.
            body = (await client.get(proof_urls[0], headers=headers)).json()
            checkpoint = (await client.get(f"{api}/checkpoint", headers=headers)).text
            root = await _root(app, tree_size)
            assert f"\n{tree_size}\n" in checkpoint
            merkle.verify_inclusion(
                body["position"],
                body["tree_size"],
                merkle.leaf_hash(_b64(body["entry"])),
                [_b64(h) for h in body["hashes"]],
                root,
            )
            n = max(1, requests // 4)
            consistency = await timed_gets(
                client,
                headers,
                [f"{api}/consistency?old={rnd.randrange(1, tree_size)}" for _ in range(n)],
            )
            full_tiles = tree_size // 256
            tiles = await timed_gets(
                client,
                headers,
                [f"{api}/tile/0/{_index(rnd.randrange(full_tiles))}" for _ in range(n)],
            )
            direct = await _direct(app, ids[: min(len(ids), 1000)])
    return {
        "inclusion_http": percentiles(inclusion),
        "inclusion_proof_hashes": len(body["hashes"]),
        "inclusion_direct": percentiles(direct),
        "consistency_http": percentiles(consistency),
        "tile_http": percentiles(tiles),
    }


def _b64(s: str) -> bytes:
    return base64.b64decode(s)


def _index(n: int) -> str:
    return encode_index(n)


async def _root(app: Any, tree_size: int) -> bytes:
    async with app.state.sessionmaker() as session:
        return await root_at(session, tree_size)


async def _direct(app: Any, ids: list[Any]) -> list[float]:
    samples = []
    async with app.state.sessionmaker() as session:
        for event_id in ids:
            audit = RequestAudit("bench", None, None, "GET", "/bench", actor=Actor("system"))
            t0 = time.perf_counter()
            await proofs.prove_event(session, audit, event_id, None)
            samples.append(time.perf_counter() - t0)
            await session.rollback()
    return samples


async def table_sizes(url: str) -> dict[str, Any]:
    engine = create_engine(url)
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT relname, pg_total_relation_size(oid) AS bytes FROM pg_class "
                "WHERE relname IN ('audit_event', 'audit_leaf', 'integrity_tile')"
            )
        )
        out = {r.relname: round(r.bytes / 2**20) for r in rows}
    await engine.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="an empty database (default: a private one)")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    server = None
    url = args.database_url
    if url is None:
        server = TempPostgres()
        url = server.start()
    try:
        migrations.upgrade(url)
        settings = Settings(
            database_url=url,
            jwt_secret="bench-secret-" + "x" * 40,
            log_signing_key=note.Signer.generate("bench.audit-service").private_key,
            log_origin="bench/audit-service/proofs",
            bootstrap_admin_password=PASSWORD,
            default_rate_limit="1000000/minute",
            login_rate_limit="1000000/minute",
            run_jobs=False,
        )
        t0 = time.perf_counter()
        loaded = seed(url, args.events)
        result: dict[str, Any] = {
            "bench": "proofs",
            "events": args.events,
            "load_seconds": round(time.perf_counter() - t0, 1),
            "load_rows_per_s": loaded.get("rows_per_s"),
        }
        result.update(asyncio.run(sequence_and_sign(settings)))
        result["mib"] = asyncio.run(table_sizes(url))
        result.update(asyncio.run(measure(settings, result["tree_size"], args.requests, args.seed)))
        result.update(
            {
                "cpu": cpu_model(),
                "cores": os.cpu_count(),
                "python": platform.python_version(),
                "command": f"python bench/proofs.py --events {args.events} "
                f"--requests {args.requests}",
                "run_id": uuid.uuid4().hex[:8],
            }
        )
        print(json.dumps(result))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
