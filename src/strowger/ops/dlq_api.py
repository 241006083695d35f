"""The dead-letter queue over HTTP: ``GET /dlq``, ``GET /dlq/{id}``, ``POST /dlq/replay``,
``POST /dlq/{id}/discard``. It uses the platform's database (``app.state.platform``); in a
split cluster it writes each letter in its owner's schema (:func:`dead_letter_queue_for`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from strowger.components.database import parked_homes, split_schemas
from strowger.settings import Settings
from strowger.store.db import Database
from strowger.store.deadletters import DeadLetterFilter, DeadLetterQueue

router = APIRouter(prefix="/dlq", tags=["operations"])


def dead_letter_queue_for(database: Database, settings: Settings) -> DeadLetterQueue:
    """The queue on ``database``: one ``parked`` table, or in a split cluster every component's
    letters read through the directory and each written in its owner's ``parked``."""
    schemas = split_schemas(settings)
    if schemas is None:
        return DeadLetterQueue(database)
    return DeadLetterQueue(database, home_of=parked_homes(schemas))


def dead_letter_queue(request: Request) -> DeadLetterQueue:
    platform = request.app.state.platform
    return dead_letter_queue_for(platform.database, platform.settings)


Queue = Annotated[DeadLetterQueue, Depends(dead_letter_queue)]


class ReplayRequest(BaseModel):
    """Which dead letters to replay (every given criterion must match); ``dryRun`` changes nothing."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    consumer: str | None = None
    error_type: str | None = None
    entity_key: str | None = None
    older_than_seconds: float | None = Field(None, ge=0)
    ids: list[int] | None = None
    dry_run: bool = False

    def where(self) -> DeadLetterFilter:
        older = timedelta(seconds=self.older_than_seconds) if self.older_than_seconds is not None else None
        return DeadLetterFilter(
            consumer=self.consumer,
            error_type=self.error_type,
            entity_key=self.entity_key,
            older_than=older,
            ids=self.ids,
        )


@router.get("")
async def list_dead_letters(
    dlq: Queue,
    consumer: str | None = None,
    error_type: Annotated[str | None, Query(alias="errorType")] = None,
    entity_key: Annotated[str | None, Query(alias="entityKey")] = None,
    older_than_seconds: Annotated[float | None, Query(alias="olderThanSeconds", ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """Dead letters matching the filters, oldest first."""
    request = ReplayRequest(
        consumer=consumer, error_type=error_type, entity_key=entity_key, older_than_seconds=older_than_seconds
    )
    return [letter.to_json() for letter in await dlq.find(request.where(), limit=limit)]


@router.get("/{letter_id}")
async def show_dead_letter(letter_id: int, dlq: Queue) -> dict[str, Any]:
    """One parked message in full (headers, body, traceback) and how many events wait behind it."""
    letter = await dlq.show(letter_id)
    if letter is None:
        raise HTTPException(status_code=404, detail=f"no parked message {letter_id}")
    return {**letter.to_json(full=True), "waitingBehind": await dlq.waiting_behind(letter)}


@router.post("/replay")
async def replay_dead_letters(body: ReplayRequest, dlq: Queue) -> dict[str, Any]:
    """Hand matching dead letters back to their consumers; idempotent (the inbox skips applied events)."""
    report = await dlq.replay(body.where(), dry_run=body.dry_run)
    return report.to_json()


@router.post("/{letter_id}/discard")
async def discard_dead_letter(letter_id: int, dlq: Queue) -> dict[str, Any]:
    """Drop one dead letter for good; the events of its entity waiting behind it are then applied."""
    letter = await dlq.discard(letter_id)
    if letter is None:
        raise HTTPException(status_code=404, detail=f"no dead letter {letter_id}")
    return {"discarded": letter.to_json()}
