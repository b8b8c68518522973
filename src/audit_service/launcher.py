"""The `audit-service` console script.

`verify-bundle` is dispatched before the service's modules are imported: an auditor's
machine runs it with the standard library, `cryptography` and the integrity primitives
alone (no database drivers, web framework or settings). Everything else is `cli.main`.
"""

from __future__ import annotations

import sys


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["verify-bundle"]:
        from audit_service.integrity import bundle_cli

        raise SystemExit(bundle_cli.run(argv[1:]))
    from audit_service.cli import main as cli_main

    cli_main(argv)


if __name__ == "__main__":
    main()
