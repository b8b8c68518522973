"""Print the OpenAPI document (`make openapi` writes it to openapi.json)."""

from __future__ import annotations

import json
from typing import Any

from audit_service.core.config import Settings
from audit_service.main import create_app


def spec() -> dict[str, Any]:
    return create_app(Settings(jwt_secret="x" * 32)).openapi()


def render() -> str:
    return json.dumps(spec(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(), end="")
