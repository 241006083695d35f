"""Operator endpoints of the activation simulator: read and change latency and fault injection.

``GET /activation/faults`` shows the settings; ``PUT /activation/faults`` merges
the given fields (validated, unknown names refused with 422) and answers the new
settings; ``GET /activation/config/{serviceOrderId}`` shows what the simulated
network holds for a service order. Not under ``/tmf-api``: the scope check
classifies no such route, so they need the ``admin`` scope.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, HTTPException
from pydantic import ValidationError

from strowger.components.activation.simulator import NetworkSimulator


def activation_router(simulator: NetworkSimulator) -> APIRouter:
    router = APIRouter(prefix="/activation", tags=["activation simulator"])

    @router.get("/faults")
    async def faults() -> dict[str, Any]:
        return simulator.settings.model_dump(mode="json")

    @router.put("/faults")
    async def change_faults(changes: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        try:
            simulator.configure(**changes)
        except ValidationError as error:
            raise HTTPException(422, detail=error.errors(include_url=False, include_context=False)) from None
        return simulator.settings.model_dump(mode="json")

    @router.get("/config/{service_order_id}")
    async def configuration(service_order_id: str) -> list[dict[str, Any]]:
        held = await simulator.configuration(service_order_id)
        return [{"requestId": config.request_id, **config.to_json()} for config in held]

    return router
