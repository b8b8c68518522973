from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from audit_service.audit_log.context import NATIVE_SOURCE
from audit_service.kit.schemas import InputModel

Role = Literal["admin", "auditor", "user"]
USERNAME_PATTERN = r"^[A-Za-z0-9_.@-]{3,150}$"


class StrictModel(InputModel):
    """Request bodies of this domain: unknown fields and NUL characters are refused."""


# The one password policy: user creation, resets (API and CLI) and POST /me/password.
NewPassword = Annotated[str, Field(min_length=12, max_length=1024)]
# What /login accepts; longer than any password that can be set would be pointless work.
GivenPassword = Annotated[str, Field(min_length=1, max_length=1024)]


class LoginRequest(StrictModel):
    """`POST /login` (JSON)."""

    username: str = Field(min_length=1, max_length=150)
    password: GivenPassword


class LoginForm(InputModel):
    """`POST /login/form`: the OAuth2 password grant form (what Swagger UI's Authorize sends).

    The OAuth2 fields we do not use are accepted and ignored; anything else is refused.
    """

    username: str = Field(min_length=1, max_length=150)
    password: GivenPassword
    grant_type: Literal["password"] | None = None
    scope: str = Field(default="", max_length=1000)
    client_id: str | None = Field(default=None, max_length=200)
    client_secret: str | None = Field(default=None, max_length=1024)


class PasswordChange(StrictModel):
    """`POST /me/password`."""

    current_password: GivenPassword
    new_password: NewPassword


class PasswordReset(StrictModel):
    """An administrator's (or the CLI's) new password for a user."""

    new_password: NewPassword


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int = Field(description="Seconds until the token expires")


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    full_name: str | None
    email: str | None
    role: Role
    is_active: bool
    created_at: datetime


class UserCreate(StrictModel):
    username: str = Field(pattern=USERNAME_PATTERN)
    password: NewPassword
    role: Role = "user"
    full_name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")


class UserUpdate(StrictModel):
    full_name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    # Omit them to leave them; null is no role or state (it used to reach the database: 500).
    role: Role | SkipJsonSchema[None] = None
    is_active: bool | SkipJsonSchema[None] = None

    @field_validator("role", "is_active", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may be omitted but not null")
        return value

    @model_validator(mode="after")
    def _something(self) -> UserUpdate:
        if not self.model_fields_set:
            raise ValueError("give at least one field to change")
        return self


class UserPage(BaseModel):
    items: list[UserOut]
    page: int
    page_size: int
    total: int


# --- API keys (other services) ------------------------------------------------------------

Scope = Literal["events:write"]
SCOPES: tuple[Scope, ...] = ("events:write",)
# The key's name is the calling service's name and becomes the `source` of its events.
SERVICE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class ApiKeyCreate(StrictModel):
    name: str = Field(
        pattern=SERVICE_NAME_PATTERN,
        description="The calling service (e.g. `exam-platform`); the `source` of its events",
        examples=["exam-platform"],
    )
    scopes: list[Scope] = Field(min_length=1, max_length=len(SCOPES), examples=[["events:write"]])

    @field_validator("name")
    @classmethod
    def _not_native(cls, value: str) -> str:
        # Events from a key named like the service itself would pass for native events.
        if value.lower() == NATIVE_SOURCE:
            raise ValueError(f"'{NATIVE_SOURCE}' is reserved for this service's own events")
        return value

    @field_validator("scopes")
    @classmethod
    def _unique(cls, value: list[Scope]) -> list[Scope]:
        return sorted(set(value))


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    prefix: str = Field(description="The key's public part, safe to show and log")
    scopes: list[str]
    created_at: datetime
    created_by: int | None
    last_used_at: datetime | None = Field(
        description="Approximate: refreshed at most once a minute"
    )
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The secret. Shown once, never again: only a hash of it is stored")


class ApiKeyPage(BaseModel):
    items: list[ApiKeyOut]
    page: int
    page_size: int
    total: int
