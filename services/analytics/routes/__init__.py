"""The REST routes, one APIRouter per area; ``rest.create_app`` includes them all."""

from __future__ import annotations

from fastapi import APIRouter

from services.analytics.routes import analysis, inference, service, streams, web

ROUTERS: tuple[APIRouter, ...] = (
    web.router,
    analysis.router,
    streams.router,
    service.router,
    inference.router,
)

__all__ = ["ROUTERS"]
