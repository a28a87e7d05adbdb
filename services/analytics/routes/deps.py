"""Dependencies shared by the route modules: the service's settings and runtime."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.analytics.runtime import Runtime
from services.analytics.settings import Settings
from services.common.auth import ApiKeys
from services.common.errors import ErrorCode, ServiceError


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def require_admin(request: Request) -> str:
    """The caller's admin identity; PERMISSION_DENIED for any other caller (the guard has
    already refused callers without a valid key)."""
    admin_keys: ApiKeys = request.app.state.admin_keys
    identity = admin_keys.identify_headers(request.headers) if admin_keys.enabled else None
    if identity is None:
        why = "this needs an admin key" if admin_keys.enabled else "no admin keys are configured"
        raise ServiceError(ErrorCode.PERMISSION_DENIED, f"deleting stored results: {why}")
    return identity


SettingsDep = Annotated[Settings, Depends(get_settings)]
AdminDep = Annotated[str, Depends(require_admin)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
