"""`audit-service archive verify|restore` and `audit-service retention run`.

`archive verify PATH --vkey …` needs no database and no configuration: a segment (or every
segment under a directory, with the manifest chain) checked offline by the same code as
`verify-bundle`. Exit status: 0 intact · 1 tampered or damaged · 2 cannot verify · 3 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from audit_service.integrity import bundle, bundle_cli
from audit_service.retention import segment

MAX_LISTED = 100


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(bundle.EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _vkey_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--vkey",
        action="append",
        required=True,
        metavar="VKEY",
        help="a verifier key of the log (GET /admin/integrity/vkeys), or a file of them; "
        "repeatable",
    )


def archive_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="audit-service archive", description="Signed archive segments")
    sub = parser.add_subparsers(dest="archive_command", required=True)
    p = sub.add_parser(
        "verify",
        help="check a segment, or every segment under a directory and their chain, offline",
        description="Check archive segments offline (no database): the manifest's signature "
        "and SHA-256, every entry against its leaf hash, every row against its entry, the "
        "proofs against the signed checkpoint, and (for a directory) the manifest chain.",
        epilog="exit status: 0 intact, 1 tampered or damaged, 2 cannot verify, 3 usage",
    )
    p.add_argument("path", type=Path)
    _vkey_argument(p)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser(
        "restore",
        help="re-import checked segments into the retention_restore table",
        description="Check the segments (as `archive verify`), then import their rows into "
        "the retention_restore table of the service's database or of --database-url (the "
        "table is created there if missing). Rows already restored are skipped.",
    )
    p.add_argument("path", type=Path)
    _vkey_argument(p)
    p.add_argument("--database-url", help="another database (default: DATABASE_URL)")
    return parser


def _verify(args: argparse.Namespace, parser: argparse.ArgumentParser) -> segment.ArchiveReport:
    verifiers = bundle_cli._verifiers(args.vkey, parser)
    if not args.path.exists():
        raise bundle.CannotVerify(f"{args.path}: no such file or directory")
    return segment.verify_path(args.path, verifiers)


def _print_report(report: segment.ArchiveReport, as_json: bool) -> None:
    if as_json:
        out: dict[str, Any] = {
            "status": "intact" if report.ok else "tampered",
            "events": report.events,
            "chain_problems": report.problems,
            "segments": [
                {"path": str(s.path), "ok": s.ok, "problems": s.problems, **s.facts}
                for s in report.segments
            ],
        }
        print(json.dumps(out, default=str))
        return
    problems = [*report.problems, *(p for s in report.segments for p in s.problems)]
    if report.ok:
        print(
            f"OK: {len(report.segments)} segment(s), {report.events} event(s) verified "
            "against their signed checkpoints and manifests"
        )
        return
    print(f"TAMPERED or damaged: {len(problems)} problem(s)")
    for problem in problems[:MAX_LISTED]:
        print(f"  - {problem}")


def run_archive(argv: Sequence[str]) -> int:
    parser = archive_parser()
    args = parser.parse_args(argv)
    try:
        report = _verify(args, parser)
    except bundle.CannotVerify as exc:
        print(f"cannot verify: {exc}", file=sys.stderr)
        return bundle.EXIT_CANNOT_VERIFY
    except OSError as exc:
        print(f"cannot verify: {exc}", file=sys.stderr)
        return bundle.EXIT_CANNOT_VERIFY
    if args.archive_command == "verify":
        _print_report(report, args.json)
        return bundle.EXIT_OK if report.ok else bundle.EXIT_TAMPERED
    if not report.ok:
        _print_report(report, False)
        print("not restored: the segments did not verify", file=sys.stderr)
        return bundle.EXIT_TAMPERED
    from audit_service.core.config import Settings
    from audit_service.retention.restore import restore

    url = args.database_url or Settings().database_url
    pairs = [(s.path, s.manifest_hash or "") for s in report.segments]
    done = asyncio.run(restore(pairs, url))
    print(
        f"restored {done.rows} row(s) from {done.segments} segment(s) into retention_restore"
        + (f" ({done.skipped} already there)" if done.skipped else "")
    )
    return 0


def retention_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="audit-service retention", description="Retention")
    sub = parser.add_subparsers(dest="retention_command", required=True)
    p = sub.add_parser(
        "run", help="run the retention steps once (archive, …) and print what they did"
    )
    p.add_argument("--dry-run", action="store_true", help="print what it would do; change nothing")
    p.add_argument("--json", action="store_true")
    return parser


def run_retention(argv: Sequence[str]) -> int:
    args = retention_parser().parse_args(argv)
    from audit_service.core.config import Settings
    from audit_service.core.db import create_engine, create_sessionmaker
    from audit_service.kit.models import utcnow
    from audit_service.retention.jobs import StepContext, run_steps

    settings = Settings()

    async def main() -> list[Any]:
        engine = create_engine(settings.database_url)
        try:
            ctx = StepContext(create_sessionmaker(engine), settings, utcnow(), dry_run=args.dry_run)
            return await run_steps(ctx)
        finally:
            await engine.dispose()

    try:
        reports = asyncio.run(main())
    except PermissionError as exc:
        print(f"retention run: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([{"step": r.name, **r.facts} for r in reports], default=str))
        return 0
    for r in reports:
        for line in r.lines:
            print(f"{r.name}: {line}")
    return 0
