"""Operator actions on a saga: retry, skip, force-complete, compensate, abort.

Each action is a decision of :mod:`strowger.saga.model` applied through the
engine (so its commands go through the outbox like any other), and is
recorded in the ``saga_audit`` table with who did it, when and why, in the
same transaction. An action the saga's state does not allow is refused with
:class:`~strowger.errors.InvalidStateTransition` and changes nothing.

* ``retry`` — send the awaited action or compensation again now, with a fresh
  retry budget; on a quarantined saga, retries the stuck compensation.
* ``skip`` — the operator did the awaited step (or its compensation) by hand:
  the saga carries on as if it had succeeded. A skipped step is never compensated.
* ``force_complete`` — end the saga now in its current direction: a running
  saga is completed, a compensating or quarantined one failed (or cancelled).
* ``compensate`` — stop a running (or queued) saga and undo what was done.
* ``abort`` — stop the saga where it is and undo nothing; its locks are released.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import datetime

from strowger.errors import InvalidStateTransition
from strowger.saga import model
from strowger.saga.definition import SagaDefinition
from strowger.saga.engine import SagaEngine
from strowger.saga.model import Decision, NewId, SagaState
from strowger.store.db import Transaction

Action = Callable[[SagaState, SagaDefinition, datetime, NewId, str], Decision]


class OperatorAction(enum.StrEnum):
    RETRY = "retry"
    SKIP = "skip"
    FORCE_COMPLETE = "force-complete"
    COMPENSATE = "compensate"
    ABORT = "abort"


_DECISIONS: dict[OperatorAction, Action] = {
    OperatorAction.RETRY: model.operator_retry,
    OperatorAction.SKIP: model.operator_skip,
    OperatorAction.FORCE_COMPLETE: model.operator_force_complete,
    OperatorAction.COMPENSATE: model.operator_compensate,
    OperatorAction.ABORT: model.operator_abort,
}


class SagaOperator:
    """Manual intervention on sagas, every action audited (who, when, why)."""

    def __init__(self, engine: SagaEngine) -> None:
        self.engine = engine

    async def retry(self, tx: Transaction, saga_id: str, *, actor: str, reason: str) -> SagaState:
        """Send the awaited action or compensation again now (the stuck one if quarantined)."""
        return await self.act(tx, saga_id, OperatorAction.RETRY, actor=actor, reason=reason)

    async def skip(self, tx: Transaction, saga_id: str, *, actor: str, reason: str) -> SagaState:
        """Mark the awaited step (or compensation) as done by hand and carry on."""
        return await self.act(tx, saga_id, OperatorAction.SKIP, actor=actor, reason=reason)

    async def force_complete(self, tx: Transaction, saga_id: str, *, actor: str, reason: str) -> SagaState:
        """End the saga now: completed if running, failed/cancelled if compensating or quarantined."""
        return await self.act(tx, saga_id, OperatorAction.FORCE_COMPLETE, actor=actor, reason=reason)

    async def compensate(self, tx: Transaction, saga_id: str, *, actor: str, reason: str) -> SagaState:
        """Stop a running saga and undo what it did."""
        return await self.act(tx, saga_id, OperatorAction.COMPENSATE, actor=actor, reason=reason)

    async def abort(self, tx: Transaction, saga_id: str, *, actor: str, reason: str) -> SagaState:
        """Stop the saga where it is, undoing nothing."""
        return await self.act(tx, saga_id, OperatorAction.ABORT, actor=actor, reason=reason)

    async def act(
        self, tx: Transaction, saga_id: str, action: OperatorAction, *, actor: str, reason: str
    ) -> SagaState:
        """Apply ``action`` and audit it; InvalidStateTransition if the saga's state refuses it."""
        if not actor.strip() or not reason.strip():
            raise InvalidStateTransition(
                f"{action} on saga {saga_id}: an operator action needs an actor and a reason"
            )
        decide = _DECISIONS[action]
        before = await self.engine.get(tx, saga_id)
        after = await self.engine.transition(
            tx, saga_id, lambda state, definition, now, ids: decide(state, definition, now, ids, reason)
        )
        await self.engine.store.audit(
            tx,
            saga_id,
            actor=actor,
            action=action.value,
            reason=reason,
            before=before.status.value,
            after=after.status.value,
            now=self.engine.clock(),
        )
        return after
