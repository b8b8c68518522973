"""/console/integrity: the newest signed checkpoint (integrity/proofs.py, as
GET /admin/integrity/checkpoint), the latest verification runs (integrity/verify_service.py)
and — admins only — asking for a new run; anyone who may read the log can check an exported
bundle against this log's verifier keys (what `audit-service verify-bundle` does)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, File, Request, UploadFile
from fastapi.responses import Response
from starlette.responses import RedirectResponse

from audit_service.audit_log.context import audited
from audit_service.audit_log.dependencies import RecorderDep, SessionDep
from audit_service.console import auth
from audit_service.console.auth import Admin, Viewer
from audit_service.console.routing import ConsoleRoute
from audit_service.console.templating import render
from audit_service.core.dependencies import SettingsDep
from audit_service.integrity import proofs
from audit_service.integrity import verify_service as verify
from audit_service.integrity.dependencies import LogVerifiersDep
from audit_service.integrity.verify_schemas import VerifyRunOut

router = APIRouter(
    prefix="/console",
    route_class=ConsoleRoute,
    include_in_schema=False,
    dependencies=[Depends(auth.console_guard)],
)
RUNS_SHOWN = 5


@dataclass(frozen=True, slots=True)
class CheckpointView:
    text: str
    origin: str
    size: str
    root: str
    signatures: int


def parse_checkpoint(text: str) -> CheckpointView:
    """The body lines of a c2sp.org/tlog-checkpoint note: origin, size, root hash; then the
    signature lines after the blank line."""
    body, _, signatures = text.partition("\n\n")
    lines = body.split("\n")
    sigs = [ln for ln in signatures.split("\n") if ln.startswith("\u2014 ")]
    return CheckpointView(
        text=text,
        origin=lines[0] if lines else "",
        size=lines[1] if len(lines) > 1 else "",
        root=lines[2] if len(lines) > 2 else "",
        signatures=len(sigs),
    )


@dataclass(frozen=True, slots=True)
class IntegrityView:
    checkpoint: CheckpointView | None
    no_checkpoint: str | None
    runs: list[VerifyRunOut]
    vkeys: list[str]


async def _view(
    session: SessionDep, audit: RecorderDep, verifiers: LogVerifiersDep, origin: str
) -> IntegrityView:
    checkpoint, missing = None, None
    try:
        checkpoint = parse_checkpoint(await proofs.newest_checkpoint(session, audit))
    except proofs.NoCheckpoint as exc:
        missing = exc.detail
    keys = await proofs.verifier_keys(session, audit, verifiers, origin)
    runs = await verify.latest_runs(session, audit, RUNS_SHOWN)
    audit.describe(
        description="Viewed the console's integrity page",
        tree_size=int(checkpoint.size) if checkpoint and checkpoint.size.isdigit() else None,
    )
    return IntegrityView(checkpoint, missing, runs, [k.vkey for k in keys.vkeys])


@router.get("/integrity", openapi_extra=audited("integrity.checkpoint_viewed", "integrity"))
async def integrity(
    request: Request,
    _: Viewer,
    session: SessionDep,
    audit: RecorderDep,
    verifiers: LogVerifiersDep,
    settings: SettingsDep,
) -> Response:
    view = await _view(session, audit, verifiers, settings.log_origin)
    return render(request, "integrity.html", {"view": view, "active": "integrity"})


@router.post("/integrity/verify", openapi_extra=audited("integrity.verify_requested", "integrity"))
async def start_verify(principal: Admin, session: SessionDep, audit: RecorderDep) -> Response:
    await verify.request_run(session, audit.actor, audit)
    return RedirectResponse("/console/integrity#runs", status_code=303)


@router.post("/integrity/bundle", openapi_extra=audited("integrity.bundle_checked", "integrity"))
async def check_bundle(
    request: Request,
    bundle: Annotated[UploadFile, File(description="An exported bundle (.tar)")],
    _: Viewer,
    audit: RecorderDep,
    verifiers: LogVerifiersDep,
) -> Response:
    result = await verify.check_bundle(audit, bundle.file, verifiers, bundle.filename or "")
    return render(
        request,
        "integrity_bundle.html",
        {"result": result, "name": bundle.filename or "", "active": "integrity"},
    )
