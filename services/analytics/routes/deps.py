"""Dependencies shared by the route modules: the service's settings and runtime."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.analytics.runtime import Runtime
from services.analytics.settings import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


SettingsDep = Annotated[Settings, Depends(get_settings)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
