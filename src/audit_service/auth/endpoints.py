"""/login, /logout, /me, /admin/users and /admin/api-keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Path, Query, Response, status

from audit_service.audit_log.context import audited
from audit_service.audit_log.dependencies import RecorderDep, SessionDep
from audit_service.auth import service
from audit_service.auth.dependencies import (
    AdminUser,
    CurrentUser,
    Principal,
    limit_login_by_ip,
)
from audit_service.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPage,
    LoginForm,
    LoginRequest,
    PasswordChange,
    TokenResponse,
    UserCreate,
    UserOut,
    UserPage,
    UserUpdate,
)
from audit_service.core.dependencies import SettingsDep, SigningKeyDep
from audit_service.core.errors import problem_responses
from audit_service.core.routing import SafeJSONRoute

public_router = APIRouter(tags=["auth"], route_class=SafeJSONRoute)
router = APIRouter(tags=["auth"], route_class=SafeJSONRoute)
admin_router = APIRouter(prefix="/admin/users", tags=["users"], route_class=SafeJSONRoute)
api_keys_router = APIRouter(prefix="/admin/api-keys", tags=["api-keys"], route_class=SafeJSONRoute)

PageSize = Annotated[int, Query(ge=1, le=100, description="Users per page")]
PageNo = Annotated[int, Query(ge=1, le=1_000_000)]
UserId = Annotated[int, Path(ge=1, le=2**31 - 1)]


# 400: a body that is not text (invalid UTF-8) cannot even be parsed as JSON or a form.
_LOGIN_ERRORS = problem_responses(400, 401, 422, 429)


@public_router.post(
    "/login",
    response_model=TokenResponse,
    operation_id="login",
    dependencies=[Depends(limit_login_by_ip)],
    responses=_LOGIN_ERRORS,
    openapi_extra=audited("auth.login", "auth"),
)
async def login(
    credentials: LoginRequest,
    session: SessionDep,
    audit: RecorderDep,
    settings: SettingsDep,
    key: SigningKeyDep,
) -> TokenResponse:
    """Exchange a username and password (JSON) for a bearer token."""
    return await service.login(
        session, audit, settings, key, username=credentials.username, password=credentials.password
    )


@public_router.post(
    "/login/form",
    response_model=TokenResponse,
    operation_id="login_form",
    dependencies=[Depends(limit_login_by_ip)],
    responses=_LOGIN_ERRORS,
    openapi_extra=audited("auth.login", "auth"),
)
async def login_form(
    form: Annotated[LoginForm, Form()],
    session: SessionDep,
    audit: RecorderDep,
    settings: SettingsDep,
    key: SigningKeyDep,
) -> TokenResponse:
    """The same login as an OAuth2 password-grant form (what Swagger UI's Authorize uses)."""
    return await service.login(
        session, audit, settings, key, username=form.username, password=form.password
    )


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    operation_id="logout",
    responses=problem_responses(401),
    openapi_extra=audited("auth.logout", "auth"),
)
async def logout(principal: Principal, session: SessionDep, audit: RecorderDep) -> None:
    """Revoke the token used for this request."""
    await service.logout(session, audit, *principal)


@router.get(
    "/me",
    response_model=UserOut,
    operation_id="get_me",
    responses=problem_responses(401),
    openapi_extra=audited("auth.profile_viewed", "auth"),
)
async def me(user: CurrentUser) -> UserOut:
    """The signed-in user."""
    return UserOut.model_validate(user)


@router.post(
    "/me/password",
    response_model=TokenResponse,
    operation_id="change_my_password",
    responses=problem_responses(401, 403, 422, 429),
    openapi_extra=audited("auth.password_changed", "auth"),
)
async def change_password(
    data: PasswordChange,
    user: CurrentUser,
    session: SessionDep,
    audit: RecorderDep,
    settings: SettingsDep,
    key: SigningKeyDep,
) -> TokenResponse:
    """Change your password (the current one proves it is you; a wrong one is a 403).

    Every session of yours ends, the token used for this call included: the response holds a
    fresh token, the only one that works afterwards."""
    return await service.change_password(session, audit, settings, key, user, data)


@admin_router.post(
    "",
    response_model=UserOut,
    status_code=status.HTTP_201_CREATED,
    operation_id="create_user",
    responses=problem_responses(401, 403, 409, 422),
    openapi_extra=audited("user.created", "users"),
)
async def create_user(
    data: UserCreate, admin: AdminUser, session: SessionDep, audit: RecorderDep
) -> UserOut:
    """Create a user (admin only)."""
    return await service.create_user(session, audit, service.actor_of(admin), data)


@admin_router.get(
    "",
    response_model=UserPage,
    operation_id="list_users",
    responses=problem_responses(401, 403, 422),
    openapi_extra=audited("user.listed", "users"),
)
async def list_users(
    admin: AdminUser,
    session: SessionDep,
    audit: RecorderDep,
    page: PageNo = 1,
    page_size: PageSize = 20,
) -> UserPage:
    """List users, oldest first (admin only)."""
    return await service.list_users(session, audit, service.actor_of(admin), page, page_size)


@admin_router.get(
    "/{user_id}",
    response_model=UserOut,
    operation_id="get_user",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=audited("user.viewed", "users"),
)
async def get_user(
    user_id: UserId, admin: AdminUser, session: SessionDep, audit: RecorderDep
) -> UserOut:
    """One user (admin only)."""
    return await service.get_user(session, audit, service.actor_of(admin), user_id)


@admin_router.patch(
    "/{user_id}",
    response_model=UserOut,
    operation_id="update_user",
    responses=problem_responses(401, 403, 404, 409, 422),
    openapi_extra=audited("user.updated", "users"),
)
async def update_user(
    user_id: UserId, data: UserUpdate, admin: AdminUser, session: SessionDep, audit: RecorderDep
) -> UserOut:
    """Change a user's name, e-mail, role or active flag (admin only)."""
    return await service.update_user(session, audit, service.actor_of(admin), user_id, data)


@admin_router.delete(
    "/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    operation_id="delete_user",
    responses=problem_responses(401, 403, 404, 409, 422),
    openapi_extra=audited("user.deleted", "users"),
)
async def delete_user(
    user_id: UserId, admin: AdminUser, session: SessionDep, audit: RecorderDep
) -> None:
    """Delete a user; their past events keep the name and role they had (admin only)."""
    await service.delete_user(session, audit, service.actor_of(admin), user_id)


@admin_router.post(
    "/{user_id}/revoke-sessions",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    operation_id="revoke_user_sessions",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=audited("user.sessions_revoked", "users"),
)
async def revoke_sessions(
    user_id: UserId, admin: AdminUser, session: SessionDep, audit: RecorderDep
) -> None:
    """End every session of a user: all their tokens stop working at once (admin only)."""
    await service.revoke_sessions(session, audit, service.actor_of(admin), user_id)


@api_keys_router.post(
    "",
    response_model=ApiKeyCreated,
    status_code=status.HTTP_201_CREATED,
    operation_id="create_api_key",
    responses=problem_responses(401, 403, 422),
    openapi_extra=audited("api_key.created", "auth"),
)
async def create_api_key(
    data: ApiKeyCreate, admin: AdminUser, session: SessionDep, audit: RecorderDep
) -> ApiKeyCreated:
    """Create an API key for a service; the secret `key` is in this response only (admin only)."""
    return await service.create_api_key(session, audit, service.actor_of(admin), data)


@api_keys_router.get(
    "",
    response_model=ApiKeyPage,
    operation_id="list_api_keys",
    responses=problem_responses(401, 403, 422),
    openapi_extra=audited("api_key.listed", "auth"),
)
async def list_api_keys(
    admin: AdminUser,
    session: SessionDep,
    audit: RecorderDep,
    page: PageNo = 1,
    page_size: Annotated[int, Query(ge=1, le=100, description="Keys per page")] = 20,
) -> ApiKeyPage:
    """List API keys, newest first, revoked ones included; never their secrets (admin only)."""
    return await service.list_api_keys(session, audit, service.actor_of(admin), page, page_size)


@api_keys_router.delete(
    "/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    operation_id="revoke_api_key",
    responses=problem_responses(401, 403, 404, 422),
    openapi_extra=audited("api_key.revoked", "auth"),
)
async def revoke_api_key(
    key_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    admin: AdminUser,
    session: SessionDep,
    audit: RecorderDep,
) -> None:
    """Revoke an API key: it stops working at once; revoking twice is harmless (admin only)."""
    await service.revoke_api_key(session, audit, service.actor_of(admin), key_id)
