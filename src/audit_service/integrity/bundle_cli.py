"""`audit-service verify-bundle FILE --vkey …`: check a signed export bundle offline.

Needs no database, no configuration and no network: the standard library, `cryptography`
and the pure integrity modules (a test runs it and checks nothing else was imported).

Exit status: 0 intact · 1 tampered or damaged (every problem found is listed) · 2 cannot
verify (no trusted key signed it, not a bundle, incomplete) · 3 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from audit_service.integrity import bundle, note

MAX_LISTED = 100  # problems printed in text mode (--json lists them all)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(bundle.EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser(prog: str = "audit-service verify-bundle") -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description="Check a signed export bundle (GET /admin/activity/export?format=bundle) "
        "offline: signatures, every file against the signed manifest, every entry against "
        "its leaf hash, the range proofs against the signed checkpoint, and the readable "
        "rows against their entries.",
        epilog="exit status: 0 intact, 1 tampered or damaged, 2 cannot verify, 3 usage",
    )
    parser.add_argument("file", help="the bundle (.tar or .tar.gz; decrypt an .age file first)")
    parser.add_argument(
        "--vkey",
        action="append",
        required=True,
        metavar="VKEY",
        help="a verifier key of the log (<name>+<key id>+<base64>, from GET "
        "/admin/integrity/vkeys or `audit-service keygen`), or a file of them, one per line; "
        "repeatable. Cosignature keys (type 0x04) also check the checkpoint's cosignatures.",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=bundle.default_jobs(),
        help="worker processes (default: the CPUs, at most 4)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def _verifiers(values: Sequence[str], parser: argparse.ArgumentParser) -> list[note.Verifier]:
    texts: list[str] = []
    for value in values:
        path = Path(value)
        if "+" not in value and path.is_file():
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                parser.error(f"--vkey {value}: cannot read it: {exc}")
            texts += [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
        else:
            texts.append(value.strip())
    verifiers = []
    for text in texts:
        try:
            verifiers.append(note.Verifier.from_vkey(text))
        except note.NoteError as exc:
            parser.error(f"--vkey {text[:80]!r}: {exc}")
    if not any(v.sig_type == note.ED25519 for v in verifiers):
        parser.error("--vkey: at least one note-signing key (type 0x01) is needed")
    return verifiers


def run(argv: Sequence[str] | None = None, prog: str = "audit-service verify-bundle") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    verifiers = _verifiers(args.vkey, parser)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    try:
        with open(args.file, "rb") as f:
            report = bundle.verify_bundle(f, verifiers, jobs=args.jobs)
    except bundle.CannotVerify as exc:
        return _cannot_verify(args, str(exc))
    except OSError as exc:
        return _cannot_verify(args, f"cannot read {args.file}: {exc.strerror or exc}")
    except Exception as exc:  # never a traceback for an auditor: say what and stop
        return _cannot_verify(args, f"unexpected error ({type(exc).__name__}: {exc})")
    code = bundle.EXIT_OK if report.ok else bundle.EXIT_TAMPERED
    if args.json:
        status = "intact" if report.ok else "tampered"
        print(json.dumps({"status": status, "problems": report.problems, **report.facts}))
        return code
    facts = report.facts
    if report.ok:
        print(
            f"OK: {facts.get('events', 0)} event(s) of log {facts.get('origin')!r} verified "
            f"against its signed checkpoint of size {facts.get('tree_size')} "
            f"(root {facts.get('root')})"
        )
    else:
        print(f"TAMPERED or damaged: {len(report.problems)} problem(s)")
        for problem in report.problems[:MAX_LISTED]:
            print(f"  - {problem}")
        if len(report.problems) > MAX_LISTED:
            print(f"  … and {len(report.problems) - MAX_LISTED} more (--json lists them all)")
    for label, key in (
        ("checkpoint signed by", "checkpoint_signed_by"),
        ("manifest signed by", "manifest_signed_by"),
        ("cosigned at", "cosigned_at"),
        ("exported by", "exported_by"),
        ("exported at", "exported_at"),
        ("filters", "filters"),
        ("matching events not in the bundle", "not_in_bundle"),
        ("readable rows checked", "rows_checked"),
        ("personal values checked", "personal_values_opened"),
    ):
        if key in facts:
            value = facts[key]
            text = ", ".join(value) if isinstance(value, list) else json.dumps(value)
            print(f"  {label}: {text.strip(chr(34))}")
    return code


def _cannot_verify(args: argparse.Namespace, message: str) -> int:
    if args.json:
        print(json.dumps({"status": "cannot verify", "error": message}))
    else:
        print(f"cannot verify: {message}", file=sys.stderr)
    return bundle.EXIT_CANNOT_VERIFY


def main(argv: Sequence[str] | None = None) -> None:
    raise SystemExit(run(argv))


if __name__ == "__main__":
    main()
