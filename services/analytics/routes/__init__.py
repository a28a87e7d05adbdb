"""The REST routes, one APIRouter per area; ``rest.create_app`` includes them all."""

from __future__ import annotations

from fastapi import APIRouter

from services.analytics.routes import analysis, inference, repository, service, streams, web

ROUTERS: tuple[APIRouter, ...] = (
    web.router,
    analysis.router,
    streams.router,
    service.router,
    repository.router,
    inference.router,
    repository.triton_router,
)

__all__ = ["ROUTERS"]
