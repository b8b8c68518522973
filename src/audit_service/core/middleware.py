"""Request size limits (headers, then body), enforced before any handler runs."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from audit_service.core.errors import problem_response
from audit_service.core.request_context import header


class BodyLimitMiddleware:
    """413 problem+json for bodies over the limit (per path, else the default).

    A declared Content-Length is checked up front; a chunked body is read up to the limit
    and refused as soon as it passes it, so an oversized upload never reaches parsing.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        default: int,
        per_path: Mapping[str, int] | None = None,
        max_header_bytes: int | None = None,
    ):
        self.app = app
        self.default = default
        self.per_path = dict(per_path or {})
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.max_header_bytes is not None:
            # Some servers (uvicorn with httptools) accept headers of any size; a 1 MiB
            # User-Agent would otherwise be parsed, authenticated and answered 200.
            size = sum(len(name) + len(value) for name, value in scope.get("headers", ()))
            if size > self.max_header_bytes:
                await self._refuse_headers(self.max_header_bytes, scope, receive, send)
                return
        limit = self.per_path.get(scope["path"], self.default)
        declared = header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > limit:
                await self._refuse(limit, scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if header(scope, b"transfer-encoding") is None:
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > limit:
                await self._refuse(limit, scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse_headers(self, limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"The request headers are larger than {limit} bytes in total."
        await _refuse(431, "request-header-fields-too-large", detail, scope, receive, send)

    async def _refuse(self, limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"The request body is larger than {limit} bytes."
        await _refuse(413, "payload-too-large", detail, scope, receive, send)


async def _refuse(
    status: int, slug: str, detail: str, scope: Scope, receive: Receive, send: Send
) -> None:
    # The recorder (outside us) set the request's audit context: reuse its id, as every
    # other problem body does, so the refusal can be matched to its X-Request-ID and event.
    audit = scope.get("state", {}).get("audit")
    await problem_response(
        status,
        slug=slug,
        detail=detail,
        request_id=getattr(audit, "request_id", None),
        instance=scope["path"],
    )(scope, receive, send)
