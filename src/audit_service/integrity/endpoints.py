"""/admin/integrity: the tamper-evident log for verifiers (admin, auditor): the signed
checkpoint, its keys, the C2SP tiles, inclusion and consistency proofs."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import PlainTextResponse, Response

from audit_service.audit_log.context import audited
from audit_service.audit_log.dependencies import RecorderDep, SessionDep
from audit_service.auth.dependencies import AdminOrAuditor
from audit_service.core.dependencies import SettingsDep
from audit_service.core.errors import problem_responses
from audit_service.core.routing import SafeJSONRoute
from audit_service.integrity import proofs
from audit_service.integrity.dependencies import LogVerifiersDep
from audit_service.integrity.schemas import (
    ConsistencyProof,
    ConsistencyQuery,
    InclusionProof,
    ProofQuery,
    VerifierKeys,
)

router = APIRouter(prefix="/admin/integrity", tags=["integrity"], route_class=SafeJSONRoute)

# Mutable: tlog-tiles asks that it not be cached beyond a few seconds.
_CHECKPOINT_CACHE = "private, no-cache"
# A tile at a given width never changes (the tree only appends), partial ones included.
_TILE_CACHE = "private, max-age=31536000, immutable"
_OCTETS = "application/octet-stream"
# Documented for clients and generators only: the parser says *why* a path is wrong (400).
_TILE_PATH = r"^(0|[1-9][0-9]?)/(x[0-9]{3}/)*[0-9]{3}(\.p/[1-9][0-9]{0,2})?$"


def _content(media_type: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"content": {media_type: {"schema": schema}}, "description": description}


@router.get(
    "/checkpoint",
    response_class=PlainTextResponse,
    operation_id="get_checkpoint",
    responses={
        200: _content(
            "text/plain",
            {"type": "string"},
            "The newest signed checkpoint (c2sp.org/tlog-checkpoint signed note)",
        ),
        **problem_responses(401, 403),
    },
    openapi_extra=audited("integrity.checkpoint_viewed", "integrity"),
)
async def get_checkpoint(
    _: AdminOrAuditor, session: SessionDep, audit: RecorderDep
) -> PlainTextResponse:
    """The newest signed checkpoint; 503 with Retry-After until the first is signed."""
    text = await proofs.newest_checkpoint(session, audit)
    return PlainTextResponse(text, headers={"Cache-Control": _CHECKPOINT_CACHE})


@router.get(
    "/vkeys",
    response_model=VerifierKeys,
    operation_id="get_verifier_keys",
    responses=problem_responses(401, 403),
    openapi_extra=audited("integrity.vkeys_viewed", "integrity"),
)
async def get_verifier_keys(
    _: AdminOrAuditor,
    session: SessionDep,
    audit: RecorderDep,
    verifiers: LogVerifiersDep,
    settings: SettingsDep,
) -> VerifierKeys:
    """The keys that verify the checkpoints (signature and cosignature), and the origin."""
    return await proofs.verifier_keys(session, audit, verifiers, settings.log_origin)


@router.get(
    "/tile/{tile_path:path}",
    response_class=Response,
    operation_id="get_tile",
    responses={
        200: _content(
            _OCTETS,
            {"type": "string", "format": "binary", "contentMediaType": _OCTETS},
            "The tile's hashes, 32 bytes each (c2sp.org/tlog-tiles)",
        ),
        **problem_responses(400, 401, 403, 404),
    },
    openapi_extra=audited("integrity.tile_viewed", "integrity"),
)
async def get_tile(
    tile_path: Annotated[
        str,
        Path(
            description="`<L>/<N>[.p/<W>]` as in c2sp.org/tlog-tiles, e.g. `0/x001/234` or "
            "`1/000.p/7`",
            max_length=200,
            examples=["0/000", "0/001.p/7", "1/000.p/1"],
            json_schema_extra={"pattern": _TILE_PATH},
        ),
    ],
    _: AdminOrAuditor,
    session: SessionDep,
    audit: RecorderDep,
) -> Response:
    """One Merkle tree tile, exact bytes (level-0 tiles hold the leaf hashes)."""
    _tile, data = await proofs.read_tile(session, audit, tile_path)
    return Response(data, media_type=_OCTETS, headers={"Cache-Control": _TILE_CACHE})


@router.get(
    "/events/{event_id}/proof",
    response_model=InclusionProof,
    operation_id="get_inclusion_proof",
    responses=problem_responses(401, 403, 404, 409, 422),
    openapi_extra=audited("integrity.inclusion_proof_viewed", "integrity"),
)
async def get_inclusion_proof(
    event_id: Annotated[uuid.UUID, Path(description="The event's `event_id`")],
    query: Annotated[ProofQuery, Query()],
    _: AdminOrAuditor,
    session: SessionDep,
    audit: RecorderDep,
) -> InclusionProof:
    """An event's entry and its inclusion proof against a signed checkpoint."""
    return await proofs.prove_event(session, audit, event_id, query.size)


@router.get(
    "/consistency",
    response_model=ConsistencyProof,
    operation_id="get_consistency_proof",
    responses=problem_responses(401, 403, 409, 422),
    openapi_extra=audited("integrity.consistency_proof_viewed", "integrity"),
)
async def get_consistency_proof(
    query: Annotated[ConsistencyQuery, Query()],
    _: AdminOrAuditor,
    session: SessionDep,
    audit: RecorderDep,
) -> ConsistencyProof:
    """Proof that the tree of `old` events is a prefix of the tree of `new`."""
    return await proofs.prove_consistency(session, audit, query.old, query.new)
