"""`audit-service`: serve, worker, migrate, users …, api-keys …, verify-bundle"""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from pydantic import SecretStr, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from audit_service.audit_log import repository as events
from audit_service.audit_log.context import Actor, outcome_for, system_event
from audit_service.audit_log.sink import SessionEventSink
from audit_service.auth import repository as users
from audit_service.auth import service as auth_service
from audit_service.auth.models import ROLES
from audit_service.auth.schemas import SCOPES, ApiKeyCreate, PasswordReset, UserCreate, UserUpdate
from audit_service.core import migrations
from audit_service.core.config import Settings, settings_error_text
from audit_service.core.db import RoleError, create_engine, create_sessionmaker
from audit_service.core.errors import AppError
from audit_service.core.logging import configure_logging, default_format
from audit_service.integrity import bundle_cli, note
from audit_service.maintenance import service as maintenance


def _os_user() -> str:
    # Containers often run as a UID without a passwd entry (`docker run --user`, Kubernetes
    # runAsUser), where getpass.getuser() raises: that must not stop `serve` from starting.
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


CLI_ACTOR = Actor(type="system", id="cli", name=f"cli:{_os_user()}", role=None)


def _read_password(args: argparse.Namespace) -> str:
    """From stdin or an interactive prompt; never from argv, where `ps` and history see it."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat: ") != password:
            raise SystemExit("passwords differ")
    if len(password) < 12:
        raise SystemExit("a password needs at least 12 characters")
    if len(password) > 1024:  # POST /login accepts no longer one: it could never be used
        raise SystemExit("a password can have at most 1024 characters")
    return password


def _with_session(
    work: Callable[[AsyncSession, argparse.Namespace], Awaitable[Any]],
) -> Callable[[argparse.Namespace], None]:
    def run(args: argparse.Namespace) -> None:
        async def main() -> None:
            engine = create_engine(Settings().database_url)
            try:
                async with create_sessionmaker(engine)() as session:
                    await work(session, args)
                    await session.commit()
            finally:
                await engine.dispose()

        asyncio.run(main())

    return run


ServiceWork = Callable[[AsyncSession, SessionEventSink, argparse.Namespace], Awaitable[str]]


def _through_service(action: str, module: str, work: ServiceWork) -> Callable[..., None]:
    """Run one service call as the CLI actor, recording its event in the same commit.

    The services' rules apply as they do over HTTP (the last-admin guard, the password
    policy); a refusal is recorded too, as the API records a refused request, and the
    command exits non-zero with the reason. Returns the text to print after the commit.
    """

    def run(args: argparse.Namespace) -> None:
        async def main() -> str:
            engine = create_engine(Settings().database_url)
            try:
                async with create_sessionmaker(engine)() as session:
                    sink = SessionEventSink(session, CLI_ACTOR, action, module)
                    try:
                        said = await work(session, sink, args)
                        await sink.write()
                        await session.commit()
                        return said
                    except AppError as exc:
                        await session.rollback()
                        await sink.write(outcome=outcome_for(exc.status_code))
                        await session.commit()
                        raise SystemExit(exc.detail or exc.title) from None
            finally:
                await engine.dispose()

        # Printed only once committed: a secret shown for a key that was never stored
        # would be worse than none.
        print(asyncio.run(main()))

    return run


def _invalid(what: str, exc: ValidationError) -> SystemExit:
    # Never str(exc): it quotes the input, and the input may hold the password.
    problems = "; ".join(
        f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
        for e in exc.errors(include_input=False, include_url=False)
    )
    return SystemExit(f"invalid {what}: {problems}")


async def users_create(
    session: AsyncSession, sink: SessionEventSink, args: argparse.Namespace
) -> str:
    password = _read_password(args)
    try:
        data = UserCreate(
            username=args.username, password=password, role=args.role, full_name=args.full_name
        )
    except ValidationError as exc:
        raise _invalid("user", exc) from None
    user = await auth_service.create_user(session, sink, CLI_ACTOR, data)
    return f"created user {user.id} '{user.username}' with role {user.role}"


async def users_list(session: AsyncSession, _args: argparse.Namespace) -> None:
    print(f"{'id':>5}  {'username':<30} {'role':<8} active")
    for u in await users.list_users(session, offset=0, limit=100_000):
        print(f"{u.id:>5}  {u.username:<30} {u.role:<8} {'yes' if u.is_active else 'no'}")


async def users_set_password(
    session: AsyncSession, sink: SessionEventSink, args: argparse.Namespace
) -> str:
    user_id = await auth_service.user_id_by_name(session, args.username)
    try:
        data = PasswordReset(new_password=_read_password(args))
    except ValidationError as exc:
        raise _invalid("password", exc) from None
    await auth_service.set_password(session, sink, CLI_ACTOR, user_id, data)
    return f"password of '{args.username}' changed; existing sessions revoked"


async def users_disable(
    session: AsyncSession, sink: SessionEventSink, args: argparse.Namespace
) -> str:
    user_id = await auth_service.user_id_by_name(session, args.username)
    await auth_service.update_user(session, sink, CLI_ACTOR, user_id, UserUpdate(is_active=False))
    return f"user '{args.username}' deactivated"


async def api_keys_create(
    session: AsyncSession, sink: SessionEventSink, args: argparse.Namespace
) -> str:
    try:
        data = ApiKeyCreate(name=args.name, scopes=args.scope)
    except ValidationError as exc:
        raise _invalid("API key", exc) from None
    key = await auth_service.create_api_key(session, sink, CLI_ACTOR, data)
    print(
        f"created API key {key.id} {key.prefix} for '{key.name}' ({', '.join(key.scopes)})",
        file=sys.stderr,
    )
    # Alone on stdout so it can be captured; it is not shown again.
    return key.key


async def api_keys_list(session: AsyncSession, _args: argparse.Namespace) -> None:
    print(f"{'id':>5}  {'prefix':<17} {'name':<30} {'scopes':<20} {'last used':<20} revoked")
    for k in await users.list_api_keys(session, offset=0, limit=100_000):
        used = k.last_used_at.strftime("%Y-%m-%d %H:%M:%S") if k.last_used_at else "-"
        revoked = k.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if k.revoked_at else "-"
        scopes = ",".join(k.scopes)
        print(f"{k.id:>5}  {k.prefix:<17} {k.name:<30} {scopes:<20} {used:<20} {revoked}")


async def api_keys_revoke(
    session: AsyncSession, sink: SessionEventSink, args: argparse.Namespace
) -> str:
    await auth_service.revoke_api_key(session, sink, CLI_ACTOR, args.id)
    what = f"API key {args.id} {sink.metadata.get('prefix', '')} ('{sink.metadata.get('name')}')"
    if sink.metadata.get("already_revoked"):
        return f"{what} was already revoked"
    return f"{what} revoked"


async def maintenance_switch(session: AsyncSession, args: argparse.Namespace) -> None:
    # The same rules and events as PUT /admin/maintenance; replicas see it within ~2 s.
    before, after = await maintenance.set_state(
        session, CLI_ACTOR, enabled=args.state == "on", message=args.message
    )
    await events.insert_events(
        session,
        [
            system_event(
                "config.changed",
                "system",
                f"Maintenance mode {'on' if after.enabled else 'off'}",
                actor=CLI_ACTOR,
                target_type="setting",
                target_id=maintenance.KEY,
                setting=maintenance.KEY,
                before=before.public(),
                after=after.public(),
            )
        ],
    )
    print(f"maintenance mode {'on' if after.enabled else 'off'}")


async def maintenance_status(session: AsyncSession, _args: argparse.Namespace) -> None:
    state = await maintenance.get_state(session)
    print(f"maintenance mode {'on' if state.enabled else 'off'}")
    if state.enabled:
        print(f"message: {state.client_message}")


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from audit_service.main import create_app

    settings = Settings()
    configure_logging(settings.log_format or default_format(settings.env), args.log_level)
    if not args.no_migrate:
        migrations.upgrade(settings.database_url)
    app = create_app(settings)
    # Everything imported so far lives as long as the process: move it out of the cyclic
    # GC's reach, so collections triggered by request garbage (a 1,000-event batch makes
    # plenty) stop re-scanning ~150k long-lived objects. Measured: GC time per ingested
    # event falls from ~30 µs to ~6 µs.
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=args.host or settings.host,
        port=args.port or settings.port,
        proxy_headers=False,  # client IPs are resolved by our own trusted-proxy rules
        log_level=args.log_level,
        log_config=None,  # configure_logging() already routes uvicorn's loggers
    )


def worker(args: argparse.Namespace) -> None:
    """Run only the background jobs (no HTTP) until SIGTERM or SIGINT."""
    from audit_service.core.jobs import run_until
    from audit_service.main import background_jobs

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings()
    if not args.no_migrate:
        migrations.upgrade(settings.database_url)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        engine = create_engine(
            settings.database_url,
            idle_in_transaction_timeout=settings.idle_in_transaction_timeout,
        )
        try:
            await run_until(
                engine,
                background_jobs(settings),
                stop,
                lease_seconds=settings.job_lease_seconds,
                stop_timeout=settings.job_stop_timeout,
            )
        finally:
            await engine.dispose()

    asyncio.run(main())
    print("worker stopped", flush=True)


def keygen(args: argparse.Namespace) -> None:
    """A new checkpoint signing key: the private key (for AUDIT_LOG_SIGNING_KEY) on stdout,
    the verifier keys (for `verify --vkey` and auditors) on stderr."""
    try:
        signer = note.Signer.generate(args.name)
    except note.NoteError as exc:
        raise SystemExit(f"keygen: {exc}") from None
    print(signer.private_key, flush=True)
    print(f"vkey: {signer.verifier.vkey}", file=sys.stderr)
    print(
        f"cosignature vkey: {signer.with_type(note.COSIGNATURE_V1).verifier.vkey}",
        file=sys.stderr,
    )


# --- verify ------------------------------------------------------------------------------------

VERIFY_USAGE = 3  # exit codes: 0 intact, 1 tampering found, 2 cannot verify, 3 usage


class _Parser(argparse.ArgumentParser):
    """argparse with a settable exit status for usage errors (`verify` promises 3)."""

    usage_exit = 2

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(self.usage_exit, f"{self.prog}: error: {message}\n")


class _VerifyExit(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _since(value: str) -> tuple[str, int]:
    """`--since`: a log position N, `checkpoint:ID`, or `state`."""
    if value == "state":
        return ("state", 0)
    kind, sep, number = value.partition(":")
    if sep and kind != "checkpoint":
        raise argparse.ArgumentTypeError("use a position, checkpoint:ID or state")
    text = number if sep else value
    if not text.isdigit() or len(text) > 18:
        raise argparse.ArgumentTypeError(f"{value!r}: use a position, checkpoint:ID or state")
    return ("checkpoint" if sep else "position", int(text))


def _jobs(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 64:
        raise argparse.ArgumentTypeError("a number of processes, 1..64")
    return int(value)


def _read_vkeys(values: list[str]) -> list[note.Verifier]:
    """Each --vkey is a verifier key, or a file of them (one per line; `keygen`'s
    "vkey: …" lines are accepted as printed)."""
    verifiers: list[note.Verifier] = []
    for value in values:
        lines = [value]
        if not value.count("+") >= 2 or os.path.exists(value):
            try:
                with open(value, encoding="utf-8") as f:
                    lines = f.read().splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise _VerifyExit(2, f"--vkey {value}: not a verifier key, and {exc}") from None
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if "vkey:" in line:
                line = line.split("vkey:", 1)[1].strip()
            try:
                verifiers.append(note.Verifier.from_vkey(line))
            except note.NoteError as exc:
                where = value if lines == [value] else f"{value}, line {number}"
                raise _VerifyExit(2, f"--vkey {where}: {exc}") from None
    if not verifiers:
        raise _VerifyExit(2, "--vkey: no verifier key found")
    return verifiers


def _configured_verifiers(settings: Settings | None) -> list[note.Verifier]:
    """The configured signing keys' verifiers (and the retired ones of
    AUDIT_LOG_RETIRED_VKEYS), or the development key under ./var/; never a new key (verify
    must not invent the key it checks against)."""
    from audit_service.core.config import VAR_DIR
    from audit_service.integrity.jobs import log_verifiers

    key = settings.log_signing_key.get_secret_value() if settings is not None else ""
    if not key:
        dev = VAR_DIR / "log_signing_key"
        key = dev.read_text().strip() if dev.is_file() else ""
    if not key or settings is None:
        raise _VerifyExit(
            2,
            "no verifier key: pass --vkey (keygen prints them; GET /admin/integrity/vkeys "
            "lists them) or set AUDIT_LOG_SIGNING_KEY",
        )
    try:
        return log_verifiers(settings.model_copy(update={"log_signing_key": SecretStr(key)}))
    except note.NoteError as exc:
        raise _VerifyExit(2, f"AUDIT_LOG_SIGNING_KEY / AUDIT_LOG_RETIRED_VKEYS: {exc}") from None


def _database_url(args: argparse.Namespace, settings: Settings | None) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    url = args.database_url or (settings.database_url if settings is not None else None)
    if not url:
        raise _VerifyExit(VERIFY_USAGE, "no database: pass --database-url or set DATABASE_URL")
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise _VerifyExit(VERIFY_USAGE, "--database-url is not a database URL") from None
    if parsed.drivername not in ("postgresql+asyncpg", "sqlite+aiosqlite"):
        raise _VerifyExit(
            VERIFY_USAGE,
            "--database-url must be postgresql+asyncpg://… or sqlite+aiosqlite:///…",
        )
    if parsed.drivername.startswith("sqlite"):
        database = parsed.database or ""
        if database in ("", ":memory:") or not os.path.isfile(database):
            raise _VerifyExit(2, f"no SQLite database at {database or '(none)'}")
    return url


def _database_problem(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(str(orig).split()) or type(orig).__name__
    if ("does not exist" in text and "relation" in text) or "no such table" in text:
        return f"the database has no log tables (run `audit-service migrate`): {text}"
    return f"cannot read the log: {text[:300]}"


def _verify_inputs(args: argparse.Namespace) -> tuple[str, list[note.Verifier], Any]:
    """The database URL, the trusted keys and the pinned checkpoint (or None)."""
    from audit_service.integrity import verify

    try:
        settings: Settings | None = Settings()
    except ValidationError as exc:
        if not (args.database_url and args.vkey):
            raise _VerifyExit(2, settings_error_text(exc)) from None
        settings = None
    url = _database_url(args, settings)
    verifiers = _read_vkeys(args.vkey) if args.vkey else _configured_verifiers(settings)
    pinned = None
    if args.state and os.path.exists(args.state):
        try:
            with open(args.state, encoding="utf-8") as f:
                pinned = verify.open_pinned(f.read(), verifiers)
        except (OSError, UnicodeDecodeError) as exc:
            raise _VerifyExit(2, f"--state {args.state}: {exc}") from None
        except verify.CannotVerify as exc:
            raise _VerifyExit(2, f"--state {args.state}: {exc}") from None
    return url, verifiers, pinned


async def _run_verify(
    args: argparse.Namespace, url: str, verifiers: list[note.Verifier], pinned: Any
) -> Any:
    from sqlalchemy.exc import SQLAlchemyError

    from audit_service.integrity import repository as integrity_repo
    from audit_service.integrity import verify

    engine = create_engine(url)
    try:
        since = 0
        if args.since is not None:
            kind, number = args.since
            if kind == "position":
                since = number
            elif kind == "state":
                if pinned is None:
                    raise _VerifyExit(VERIFY_USAGE, "--since state needs a --state file to read")
                since = pinned.size
            else:
                async with engine.connect() as conn:
                    rows = [
                        r
                        for r in await integrity_repo.checkpoints(
                            conn, after_id=number - 1, limit=1
                        )
                        if r.id == number
                    ]
                valid, _ = verify.check_signatures(rows, verifiers, None)
                if not valid:
                    raise _VerifyExit(
                        VERIFY_USAGE, f"--since: no validly signed checkpoint #{number}"
                    )
                since = valid[0].size
        runner: verify.Runner = (
            verify.InProcess(engine) if args.jobs == 1 else verify.Pool(url, args.jobs)
        )
        on_task = None
        if sys.stderr.isatty() and not args.json:

            async def on_task(progress: verify.Progress, _result: verify.TaskResult) -> None:
                print(
                    f"\r  checked {progress.positions_done}/{progress.tree_size} positions",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )

        report = await verify.verify_log(
            engine, verifiers, runner, pinned=pinned, since=since, on_task=on_task, jobs=args.jobs
        )
        if on_task is not None:
            print(file=sys.stderr)
    except verify.SinceBeyondTree as exc:
        raise _VerifyExit(VERIFY_USAGE, str(exc)) from None
    except verify.CannotVerify as exc:
        raise _VerifyExit(2, str(exc)) from None
    except (SQLAlchemyError, OSError) as exc:
        raise _VerifyExit(2, _database_problem(exc)) from None
    finally:
        await engine.dispose()
    return report


def _pin(path: str, signed_note: str) -> None:
    """Write the newest verified checkpoint to the state file, atomically (a crash leaves
    the old pin, never half a note)."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(signed_note)
        os.replace(tmp, path)
    except OSError as exc:
        raise _VerifyExit(2, f"--state {path}: cannot write the new pin: {exc}") from None


def _print_report(report: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.to_json()))
        return
    newest = report.newest
    print(
        f"log {report.origin or '(no origin)'}: {report.tree_size} events, "
        f"{report.checkpoints} checkpoint(s), {report.valid_checkpoints} validly signed"
        + (f", newest #{newest.id} at size {newest.size}" if newest else "")
    )
    rate = f", {report.checked / report.seconds:.0f} events/s" if report.seconds else ""
    print(
        f"recomputed {report.checked} entries in {report.seconds:.2f} s{rate} "
        f"({report.jobs} process{'es' if report.jobs > 1 else ''})"
        + (f", from position {report.since}" if report.since else "")
        + (f"; {report.purged} row(s) purged inside tombstones" if report.purged else "")
    )
    if report.status == "intact":
        print("INTACT: every row, leaf, tile and checkpoint agrees with the signed roots")
    elif report.status == "unverifiable":
        print(f"CANNOT VERIFY: {report.reason}")
        for problem in report.problems:
            print(problem.line())
    else:
        counts = ", ".join(f"{n} {k}" for k, n in sorted(report.counts().items()))
        print(f"TAMPERED: {len(report.problems)} problem(s) ({counts})")
        for problem in report.problems:
            print(problem.line())


def verify_command(args: argparse.Namespace) -> None:
    """Exit 0 intact, 1 tampering found, 2 cannot verify, 3 usage."""
    try:
        url, verifiers, pinned = _verify_inputs(args)
        report = asyncio.run(_run_verify(args, url, verifiers, pinned))
        _print_report(report, args.json)
        if report.exit_code == 0 and args.state and report.newest is not None:
            _pin(args.state, report.newest.note)
        code = report.exit_code
    except _VerifyExit as exc:
        if args.json:
            print(json.dumps({"status": "error", "exit_code": exc.code, "error": str(exc)}))
        print(f"audit-service verify: {exc}", file=sys.stderr)
        code = exc.code
    raise SystemExit(code)


def migrate(args: argparse.Namespace) -> None:
    try:
        migrations.upgrade(Settings().database_url, role=args.role)
    except RoleError as exc:
        raise SystemExit(f"migrate: cannot run as role {args.role!r}: {exc}") from None
    print("database schema is up to date")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="audit-service", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the HTTP service (migrates first)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--no-migrate", action="store_true", help="skip `migrate` before starting")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=serve)

    p = sub.add_parser("worker", help="run only the background jobs, until SIGTERM/SIGINT")
    p.add_argument("--no-migrate", action="store_true", help="skip `migrate` before starting")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=worker)

    p = sub.add_parser("keygen", help="make an Ed25519 key for AUDIT_LOG_SIGNING_KEY")
    p.add_argument("--name", default=socket.gethostname(), help="key name (default: host)")
    p.set_defaults(func=keygen)

    # Parsed by bundle_cli itself (its usage errors exit 3); listed here for --help.
    sub.add_parser(
        "verify-bundle",
        help="check a signed export bundle offline (no database): see verify-bundle --help",
        add_help=False,
    )
    # Parsed by retention/cli.py (exit 3 on usage errors); listed here for --help.
    sub.add_parser(
        "archive",
        help="check (verify PATH) or re-import (restore PATH) signed archive segments",
        add_help=False,
    )
    sub.add_parser(
        "retention", help="run the retention steps once: retention run [--dry-run]", add_help=False
    )
    p = sub.add_parser(
        "verify",
        help="verify the tamper-evident log (exit 0 intact, 1 tampered, 2 cannot, 3 usage)",
        description="Recompute every event's entry from its row and check it against the "
        "leaves, the tiles and the signed checkpoints; report each problem with its position "
        "and event id. Exit 0: intact; 1: tampering found (all of it is listed); 2: cannot "
        "verify (database unreachable, no checkpoint, bad key or state file); 3: usage.",
    )
    assert isinstance(p, _Parser)
    p.usage_exit = VERIFY_USAGE
    p.add_argument(
        "--database-url",
        help="the database (default: DATABASE_URL); a read-only role is enough",
    )
    p.add_argument(
        "--vkey",
        action="append",
        default=[],
        metavar="VKEY|FILE",
        help="a trusted verifier key, or a file of them; repeatable (default: the keys of "
        "AUDIT_LOG_SIGNING_KEY). Give the cosignature vkey too to require cosignatures",
    )
    p.add_argument(
        "--state",
        metavar="FILE",
        help="pin: the checkpoint seen last time (a signed note) is read from FILE, the log "
        "must be consistent with it (no rollback, no rewritten history), and after a clean "
        "run the newest checkpoint is written back",
    )
    p.add_argument(
        "--since",
        type=_since,
        metavar="N|checkpoint:ID|state",
        help="recompute the entries of positions N and later only (or from checkpoint ID's "
        "tree size, or from the pinned checkpoint's): earlier rows are not re-read, so their "
        "edits go unnoticed, but their leaves and tiles still feed every root, so forged "
        "leaves, tiles or checkpoints there are still found",
    )
    p.add_argument(
        "--jobs", type=_jobs, default=1, metavar="N", help="processes to spread the work over"
    )
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.set_defaults(func=verify_command)

    p = sub.add_parser("migrate", help="bring the database schema up to date")
    p.add_argument(
        "--role",
        help="PostgreSQL: run the migrations as this role (SET ROLE), e.g. the schema owner "
        "your login is a member of (docs/deployment.md)",
    )
    p.set_defaults(func=migrate)

    users_parser = sub.add_parser("users", help="manage users").add_subparsers(
        dest="users_command", required=True
    )
    p = users_parser.add_parser("create")
    p.add_argument("--username", required=True)
    p.add_argument("--role", choices=ROLES, default="user")
    p.add_argument("--full-name")
    p.add_argument("--password-stdin", action="store_true")
    p.set_defaults(func=_through_service("user.created", "users", users_create))
    users_parser.add_parser("list").set_defaults(func=_with_session(users_list))
    p = users_parser.add_parser("set-password")
    p.add_argument("--username", required=True)
    p.add_argument("--password-stdin", action="store_true")
    p.set_defaults(func=_through_service("user.updated", "users", users_set_password))
    p = users_parser.add_parser("disable")
    p.add_argument("--username", required=True)
    p.set_defaults(func=_through_service("user.updated", "users", users_disable))

    p = sub.add_parser("maintenance", help="turn maintenance mode on or off, or show it")
    p.add_argument("state", choices=("on", "off", "status"))
    p.add_argument("--message", help="what clients are told (with `on`)")
    p.set_defaults(
        func=lambda args: _with_session(
            maintenance_status if args.state == "status" else maintenance_switch
        )(args)
    )

    keys_parser = sub.add_parser("api-keys", help="manage service API keys").add_subparsers(
        dest="api_keys_command", required=True
    )
    p = keys_parser.add_parser("create", help="make a key; prints its secret once, on stdout")
    p.add_argument("--name", required=True, help="the calling service (its events' source)")
    p.add_argument("--scope", action="append", required=True, choices=SCOPES)
    p.set_defaults(func=_through_service("api_key.created", "auth", api_keys_create))
    keys_parser.add_parser("list").set_defaults(func=_with_session(api_keys_list))
    p = keys_parser.add_parser("revoke")
    p.add_argument("--id", type=int, required=True)
    p.set_defaults(func=_through_service("api_key.revoked", "auth", api_keys_revoke))
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["verify-bundle"]:
        raise SystemExit(bundle_cli.run(argv[1:]))
    if argv[:1] in (["archive"], ["retention"]):
        from audit_service.retention import cli as retention_cli

        run = retention_cli.run_archive if argv[0] == "archive" else retention_cli.run_retention
        raise SystemExit(run(argv[1:]))
    parser = build_parser()
    if argv[:1] == ["verify"]:
        # Unknown options are reported by the top-level parser (parse_args → error), not by
        # verify's own: without this `verify --bogus` would exit 2, "cannot verify".
        assert isinstance(parser, _Parser)
        parser.usage_exit = VERIFY_USAGE
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except ValidationError as exc:
        if exc.title != Settings.__name__:
            raise
        # Never pydantic's own text: it quotes the values, and they may be secrets.
        raise SystemExit(settings_error_text(exc)) from None


if __name__ == "__main__":
    main()
