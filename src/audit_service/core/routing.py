"""A route class whose JSON bodies fail as 422, never 500, however they are nested."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


class _SafeJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = json.loads(body)
            except RecursionError:
                # `[[[[…` a few thousand deep exhausts the parser's recursion limit; FastAPI
                # only turns JSONDecodeError into a 422, so say it in those terms.
                raise json.JSONDecodeError("JSON nested too deeply", "", 0) from None
        return self._json


class SafeJSONRoute(APIRoute):
    """Use as `APIRouter(route_class=SafeJSONRoute)`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def safe_handler(request: Request) -> Response:
            return await handler(_SafeJSONRequest(request.scope, request.receive))

        return safe_handler
