"""HTTP for SOM: TMF641 v4 (``serviceOrder``, ``cancelServiceOrder``, ``/hub``) and saga operations.

Service orders are created by SOM from product orders (``ProductOrderStateChangeEvent``
``inProgress``), never by a client, so ``serviceOrder`` is read-only here. A
``POST /cancelServiceOrder`` cancels the fulfilment saga in flight.

``/sagas`` is the operator's view (the security middleware requires the
``operator`` scope): list and inspect sagas, and ``retry``, ``skip``,
``force-complete``, ``compensate`` or ``abort`` one, with a reason, audited
under the caller's identity.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request, Response

from strowger.components.ordering.api import parse_as_of
from strowger.components.service_ordering.service import ORDER, TASK, ServiceOrdering
from strowger.errors import NotFound
from strowger.saga import OperatorAction, SagaState
from strowger.security import CurrentPrincipal
from strowger.store.db import Database
from strowger.tmf.errors import BadRequest, JsonResponse, TmfRoute
from strowger.tmf.hubs import CallbackGuard, HubStore
from strowger.tmf.openapi import AS_OF
from strowger.tmf.query import Page, parse_fields, parse_query, select_fields
from strowger.tmf.router import add_hub_routes, read_json
from strowger.tmf.tasks import cancelled_order, unknown_order

API_NAME = "serviceOrdering"
MAX_BODY_BYTES = 1 << 20


def service_ordering_router(
    som: ServiceOrdering, database: Database, guard: CallbackGuard | None = None
) -> APIRouter:
    """The TMF641 routes under ``som.base_path``."""
    router = APIRouter(prefix=som.base_path, route_class=TmfRoute, default_response_class=JsonResponse)
    _order_routes(router, som)
    _cancel_routes(router, som)
    add_hub_routes(
        router, som.base_path, HubStore(database, API_NAME), guard or CallbackGuard(), MAX_BODY_BYTES
    )
    return router


def _page(page: Page) -> Response:
    headers = {"X-Total-Count": str(page.total), "X-Result-Count": str(len(page.items))}
    return JsonResponse(page.items, headers=headers)


def _fields(document: Mapping[str, Any], request: Request) -> Response:
    fields = request.query_params.get("fields")
    return JsonResponse(select_fields(dict(document), parse_fields(fields) if fields is not None else None))


def _order_routes(router: APIRouter, som: ServiceOrdering) -> None:
    tag = "serviceOrder"

    @router.get("/serviceOrder", tags=[tag], summary="List or find ServiceOrder objects")
    async def list_orders(request: Request) -> Response:
        return _page(await som.list(ORDER, parse_query(request.query_params.multi_items())))

    @router.get(
        "/serviceOrder/{id}",
        tags=[tag],
        summary="Retrieve a ServiceOrder, optionally asOf a time",
        openapi_extra={"parameters": [AS_OF]},
    )
    async def get_order(id: str, request: Request) -> Response:
        as_of = parse_as_of(request.query_params.get("asOf"))  # 400 unless RFC 3339 with an offset
        return _fields(await som.get(id, as_of=as_of), request)


def _cancel_routes(router: APIRouter, som: ServiceOrdering) -> None:
    tag = "cancelServiceOrder"

    @router.post("/cancelServiceOrder", tags=[tag], summary="Create a CancelServiceOrder", status_code=201)
    async def create_cancel(request: Request) -> Response:
        body, _ = await read_json(request, MAX_BODY_BYTES)
        reference = cancelled_order(body, "serviceOrder")
        try:
            task = await som.cancel(body)
        except NotFound:
            raise unknown_order("serviceOrder", reference) from None
        return JsonResponse(task, status_code=201, headers={"Location": str(task["href"])})

    @router.get("/cancelServiceOrder", tags=[tag], summary="List or find CancelServiceOrder objects")
    async def list_cancels(request: Request) -> Response:
        return _page(await som.list(TASK, parse_query(request.query_params.multi_items())))

    @router.get(
        "/cancelServiceOrder/{id}",
        tags=[tag],
        summary="Retrieve a CancelServiceOrder, optionally asOf a time",
        openapi_extra={"parameters": [AS_OF]},
    )
    async def get_cancel(id: str, request: Request) -> Response:
        as_of = parse_as_of(request.query_params.get("asOf"))
        return _fields(await som.get_task(id, as_of=as_of), request)


# --- saga operations ----------------------------------------------------------------------------


def saga_document(state: SagaState) -> dict[str, Any]:
    """A saga as JSON: status, data, every step with its attempts, errors and result."""
    return {
        "id": state.saga_id,
        "sagaType": state.saga_type,
        "status": state.status.value,
        "currentStep": state.current_step.name,
        "reason": state.reason,
        "cancelRequested": state.cancel_requested,
        "correlationId": state.correlation_id,
        "lockKeys": list(state.lock_keys),
        "startedAt": state.started_at.isoformat(),
        "updatedAt": state.updated_at.isoformat(),
        "finishedAt": state.finished_at.isoformat() if state.finished_at else None,
        "version": state.version,
        "data": dict(state.data),
        "steps": [
            {
                **{key: value for key, value in asdict(step).items() if key not in ("deadline", "status")},
                "status": step.status.value,
                "deadline": step.deadline.isoformat() if step.deadline else None,
                "errors": list(step.errors),
            }
            for step in state.steps
        ],
    }


def sagas_router(som: ServiceOrdering) -> APIRouter:
    """``/sagas``: list, inspect, and the audited operator actions."""
    router = APIRouter(
        prefix="/sagas", tags=["operations"], route_class=TmfRoute, default_response_class=JsonResponse
    )

    @router.get("", summary="List sagas (filters: status, type)")
    async def list_sagas(status: str | None = None, type: str | None = None, limit: int = 100) -> Response:
        return JsonResponse(await list_saga_rows(som.database, status=status, saga_type=type, limit=limit))

    @router.get("/{saga_id}", summary="A saga with its data, steps, compensations, errors and log")
    async def get_saga(saga_id: str) -> Response:
        return JsonResponse(await saga_detail(som, saga_id))

    for action in OperatorAction:
        _action_route(router, som, action)
    return router


def _action_route(router: APIRouter, som: ServiceOrdering, action: OperatorAction) -> None:
    @router.post(f"/{{saga_id}}/{action.value}", summary=f"Operator action: {action.value}")
    async def act(saga_id: str, request: Request, principal: CurrentPrincipal) -> Response:
        body, _ = await read_json(request, 64 * 1024)
        reason = body.get("reason") if isinstance(body, Mapping) else None
        if not isinstance(reason, str) or not reason.strip():
            raise BadRequest("reason is required", field="reason", code="missingBodyField")
        async with som.database.transaction() as tx:
            state = await som.operate(tx, saga_id, action, actor=principal.subject, reason=reason)
        return JsonResponse(saga_document(state))


async def list_saga_rows(
    database: Database, *, status: str | None = None, saga_type: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Sagas, newest first, optionally of one status and type."""
    where, params = [], []
    if status:
        where.append("status = ?")
        params.append(status)
    if saga_type:
        where.append("saga_type = ?")
        params.append(saga_type)
    sql = "SELECT saga_id, saga_type, status, current_step, reason, started_at, updated_at FROM sagas"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY started_at DESC, saga_id LIMIT ?"
    rows = await database.fetchall(sql, (*params, max(1, min(limit, 1000))))
    keys = ("id", "sagaType", "status", "currentStep", "reason", "startedAt", "updatedAt")
    return [{**_named(keys, row), "currentStep": int(row[3])} for row in rows]


async def saga_detail(som: ServiceOrdering, saga_id: str) -> dict[str, Any]:
    """The saga, its transition log and its operator audit trail."""
    async with som.database.transaction() as tx:
        state = await som.engine.get(tx, saga_id)
        log = await tx.fetchall(
            "SELECT at, step, before_status, after_status, reason FROM saga_log "
            "WHERE saga_id = ? ORDER BY id",
            (saga_id,),
        )
        audit = await tx.fetchall(
            "SELECT at, actor, action, reason, status_before, status_after FROM saga_audit "
            "WHERE saga_id = ? ORDER BY id",
            (saga_id,),
        )
    document = saga_document(state)
    document["compensations"] = [
        {"step": step["name"], "status": step["status"], "attempts": step["compensation_attempts"]}
        for step in document["steps"]
        if step["compensation_attempts"] or step["status"].startswith("compensat")
    ]
    document["errors"] = [
        f"{step['name']}: {error}" for step in document["steps"] for error in step["errors"]
    ]
    document["log"] = [_named(("at", "step", "before", "after", "reason"), row) for row in log]
    document["audit"] = [_named(("at", "actor", "action", "reason", "before", "after"), row) for row in audit]
    return document


def _named(keys: tuple[str, ...], row: Any) -> dict[str, str]:
    return {key: str(value) for key, value in zip(keys, row, strict=True)}
