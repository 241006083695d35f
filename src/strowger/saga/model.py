"""The saga state machine: pure decisions, no I/O.

Every function here takes the current :class:`SagaState` (and the saga's
definition, the time and an id factory) and returns a :class:`Decision`: the
next state, the commands to send and the transitions to log. The engine loads
the state, asks for a decision and persists it with its commands in the
caller's transaction, so a decision is either wholly applied or not at all.

Rules (docs/sagas.md has the full picture):

* steps run one at a time, in order; a step's action is sent, then retried on
  timeout (and on refusal if its policy says so) with backoff;
* a step that fails for good starts compensation: every step that succeeded
  (or may have: it gave up after a timeout) is compensated in reverse order;
* a compensation is retried until its policy is exhausted, then the saga is
  quarantined for an operator;
* replies are matched to the command they answer: a duplicate or late reply
  for a step already past changes nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from strowger.errors import InvalidStateTransition
from strowger.saga.definition import Call, SagaDefinition

NewId = Callable[[], str]


class SagaStatus(enum.StrEnum):
    QUEUED = "queued"  # waiting for a semantic lock another saga holds
    RUNNING = "running"
    COMPENSATING = "compensating"
    QUARANTINED = "quarantined"  # a compensation keeps failing: an operator must act
    COMPLETED = "completed"
    FAILED = "failed"  # a step failed and everything done was compensated
    CANCELLED = "cancelled"  # cancelled in flight and everything done was compensated
    ABORTED = "aborted"  # stopped by an operator, nothing undone

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({SagaStatus.COMPLETED, SagaStatus.FAILED, SagaStatus.CANCELLED, SagaStatus.ABORTED})


class StepStatus(enum.StrEnum):
    PENDING = "pending"
    IN_FLIGHT = "in_flight"  # action sent, reply awaited until the deadline
    RETRY_WAIT = "retry_wait"  # action to be sent again at the deadline
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # refused: nothing to undo
    UNCERTAIN = "uncertain"  # gave up without an answer: compensated to be safe (idempotent)
    SKIPPED = "skipped"  # operator: not done by the saga, so never compensated
    COMPENSATING = "compensating"  # compensation sent, reply awaited until the deadline
    COMPENSATION_WAIT = "compensation_wait"  # compensation to be sent again at the deadline
    COMPENSATED = "compensated"
    COMPENSATION_STUCK = "compensation_stuck"  # retries exhausted: saga quarantined
    COMPENSATION_SKIPPED = "compensation_skipped"  # operator: undone by hand


AWAITING_ACTION = frozenset({StepStatus.IN_FLIGHT, StepStatus.RETRY_WAIT})
AWAITING_COMPENSATION = frozenset(
    {StepStatus.COMPENSATING, StepStatus.COMPENSATION_WAIT, StepStatus.COMPENSATION_STUCK}
)
TO_UNDO = frozenset({StepStatus.SUCCEEDED, StepStatus.UNCERTAIN})


class Role(enum.StrEnum):
    """Which call of a step a command is."""

    ACTION = "action"
    COMPENSATION = "compensation"


@dataclass(frozen=True, slots=True)
class StepState:
    name: str
    status: StepStatus = StepStatus.PENDING
    attempts: int = 0
    compensation_attempts: int = 0
    timeouts: int = 0
    command_id: str = ""  # the latest command sent for this step
    deadline: datetime | None = None  # reply due (in flight) or next send due (waiting)
    errors: tuple[str, ...] = ()
    result: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SagaState:
    saga_id: str
    saga_type: str
    status: SagaStatus
    steps: tuple[StepState, ...]
    data: Mapping[str, Any]
    started_at: datetime
    updated_at: datetime
    current: int = 0  # the step being run or compensated
    correlation_id: str = ""
    entity_key: str = ""
    lock_keys: tuple[str, ...] = ()
    reason: str = ""  # why the saga is compensating, quarantined or ended
    cancel_requested: bool = False
    finished_at: datetime | None = None
    stuck_reported: bool = False
    version: int = 0  # optimistic concurrency: bumped on every save

    @property
    def current_step(self) -> StepState:
        return self.steps[self.current]

    def results(self) -> dict[str, Mapping[str, Any]]:
        return {step.name: step.result for step in self.steps if step.result}

    def wake_at(self) -> datetime | None:
        """When the scheduler must look at this saga again (a reply deadline or a retry)."""
        if self.status in (SagaStatus.RUNNING, SagaStatus.COMPENSATING):
            return self.current_step.deadline
        return None


@dataclass(frozen=True, slots=True)
class Send:
    """A command to send: the engine builds it from the step's definition."""

    step: int
    role: Role
    attempt: int
    command_id: str


@dataclass(frozen=True, slots=True)
class Transition:
    """One line of the saga log: what changed, and why."""

    step: str  # "" for the saga itself
    before: str
    after: str
    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    state: SagaState
    sends: tuple[Send, ...] = ()
    log: tuple[Transition, ...] = ()
    ignored: str = ""  # why nothing changed (a duplicate or late reply, nothing due)

    @property
    def changed(self) -> bool:
        return bool(self.log)


def stale_at(state: SagaState, definition: SagaDefinition) -> datetime | None:
    """When a saga that has not moved counts as stuck: one call timeout past when it should have moved."""
    if state.status is SagaStatus.QUEUED:
        return state.updated_at + definition.steps[0].action.timeout
    if state.status not in (SagaStatus.RUNNING, SagaStatus.COMPENSATING):
        return None  # ended, or quarantined (reported when it entered quarantine)
    step = state.current_step
    compensating = step.status in AWAITING_COMPENSATION or step.status is StepStatus.COMPENSATED
    call = definition.steps[state.current].compensation if compensating else None
    timeout = (call or definition.steps[state.current].action).timeout
    due = step.deadline or state.updated_at
    return max(due, state.updated_at) + timeout


def new_saga(
    definition: SagaDefinition,
    saga_id: str,
    data: Mapping[str, Any],
    now: datetime,
    *,
    correlation_id: str = "",
    entity_key: str = "",
    lock_keys: tuple[str, ...] = (),
) -> SagaState:
    """A saga not started yet (queued until its locks are taken)."""
    return SagaState(
        saga_id=saga_id,
        saga_type=definition.saga_type,
        status=SagaStatus.QUEUED,
        steps=tuple(StepState(step.name) for step in definition.steps),
        data=data,
        started_at=now,
        updated_at=now,
        correlation_id=correlation_id,
        entity_key=entity_key or saga_id,
        lock_keys=lock_keys,
    )


class _Plan:
    """Accumulates one decision: state changes, sends and log lines (local mutation only)."""

    def __init__(self, state: SagaState, definition: SagaDefinition, now: datetime, new_id: NewId) -> None:
        self.state = state
        self.definition = definition
        self.now = now
        self.new_id = new_id
        self.sends: list[Send] = []
        self.log: list[Transition] = []

    def decision(self) -> Decision:
        state = self.state
        if self.log:
            state = replace(state, updated_at=self.now, stuck_reported=False)
        return Decision(state, tuple(self.sends), tuple(self.log))

    def set_status(self, status: SagaStatus, reason: str) -> None:
        self.log.append(Transition("", self.state.status, status, reason))
        finished = self.now if status.terminal else None
        self.state = replace(self.state, status=status, reason=reason, finished_at=finished)

    def set_step(self, index: int, status: StepStatus, reason: str, **changes: Any) -> None:
        step = self.state.steps[index]
        self.log.append(Transition(step.name, step.status, status, reason))
        self._put(index, replace(step, status=status, **changes))

    def _put(self, index: int, step: StepState) -> None:
        steps = list(self.state.steps)
        steps[index] = step
        self.state = replace(self.state, steps=tuple(steps))

    def call(self, index: int, role: Role) -> Call:
        return self.definition.call(index, role is Role.COMPENSATION)

    def send(self, index: int, role: Role, reason: str) -> None:
        """Send the action or compensation of step ``index`` again (one more attempt)."""
        step = self.state.steps[index]
        command_id = self.new_id()
        deadline = self.now + self.call(index, role).timeout
        self.state = replace(self.state, current=index)
        if role is Role.ACTION:
            attempt = step.attempts + 1
            self.set_step(
                index,
                StepStatus.IN_FLIGHT,
                reason,
                attempts=attempt,
                command_id=command_id,
                deadline=deadline,
            )
        else:
            attempt = step.compensation_attempts + 1
            self.set_step(
                index,
                StepStatus.COMPENSATING,
                reason,
                compensation_attempts=attempt,
                command_id=command_id,
                deadline=deadline,
            )
        self.sends.append(Send(index, role, attempt, command_id))

    def run_next_step(self) -> None:
        """Send the first pending step's action, or complete the saga when none is left."""
        for index, step in enumerate(self.state.steps):
            if step.status is StepStatus.PENDING:
                self.send(index, Role.ACTION, "step started")
                return
        self.finish(SagaStatus.COMPLETED, "every step succeeded")

    def finish(self, status: SagaStatus, reason: str) -> None:
        self.set_status(status, reason)

    def begin_compensation(self, reason: str) -> None:
        """Undo what was done; an action still in flight is waited for (its reply decides)."""
        self.set_status(SagaStatus.COMPENSATING, reason)
        step = self.state.current_step
        if step.status is StepStatus.IN_FLIGHT:
            return
        if step.status is StepStatus.RETRY_WAIT:
            self._give_up_action(self.state.current, "no further attempt: saga is compensating")
        self.compensate_next()

    def compensate_next(self) -> None:
        """Compensate the latest step left to undo (reverse order), or end the saga."""
        for index in reversed(range(len(self.state.steps))):
            step = self.state.steps[index]
            if step.status in TO_UNDO and self.definition.steps[index].compensation is not None:
                self.send(index, Role.COMPENSATION, "compensation started")
                return
        if self.state.cancel_requested:
            self.finish(SagaStatus.CANCELLED, self.state.reason)
        else:
            self.finish(SagaStatus.FAILED, self.state.reason)

    def _give_up_action(self, index: int, reason: str) -> None:
        # An attempt that timed out may have been carried out: compensate it to be safe.
        step = self.state.steps[index]
        status = StepStatus.UNCERTAIN if step.timeouts else StepStatus.FAILED
        self.set_step(index, status, reason, deadline=None)

    def retry_or_give_up(
        self, index: int, role: Role, reason: str, *, refusal: bool, permanent: bool = False
    ) -> None:
        """After a timeout or a refusal: wait and send again if the policy allows, else give up.

        A ``permanent`` refusal (the executor says trying again cannot help) is never retried.
        """
        step = self.state.steps[index]
        call = self.call(index, role)
        attempts = step.attempts if role is Role.ACTION else step.compensation_attempts
        retryable = not permanent and (not refusal or role is Role.COMPENSATION or call.retry.retry_refusals)
        running = self.state.status is SagaStatus.RUNNING or role is Role.COMPENSATION
        if retryable and running and call.retry.allows_another(attempts):
            self._schedule_retry(index, role, call.retry.delay(attempts), reason)
        elif role is Role.ACTION:
            self._give_up_action(index, reason)
            if self.state.status is SagaStatus.RUNNING:
                self.begin_compensation(f"step {step.name} failed: {reason}")
            else:
                self.compensate_next()
        else:
            self.set_step(index, StepStatus.COMPENSATION_STUCK, reason, deadline=None)
            self.set_status(
                SagaStatus.QUARANTINED,
                f"compensation of step {step.name} failed {attempts} times: {reason}",
            )

    def _schedule_retry(self, index: int, role: Role, delay: timedelta, reason: str) -> None:
        if not delay:
            self.send(index, role, f"retry: {reason}")
            return
        status = StepStatus.RETRY_WAIT if role is Role.ACTION else StepStatus.COMPENSATION_WAIT
        self.set_step(index, status, f"retry in {delay}: {reason}", deadline=self.now + delay)

    def record_error(self, index: int, error: str) -> None:
        step = self.state.steps[index]
        self._put(index, replace(step, errors=(*step.errors, error)))


# --- decisions -------------------------------------------------------------------------------------


def start(state: SagaState, definition: SagaDefinition, now: datetime, new_id: NewId) -> Decision:
    """The saga has its locks: run the first step."""
    if state.status is not SagaStatus.QUEUED:
        raise InvalidStateTransition(f"saga {state.saga_id} is {state.status}, not queued")
    plan = _Plan(state, definition, now, new_id)
    plan.set_status(SagaStatus.RUNNING, "started")
    plan.run_next_step()
    return plan.decision()


def queue(state: SagaState, now: datetime, reason: str) -> Decision:
    """Log why a new saga waits (its locks are held); nothing is sent."""
    line = Transition("", "", SagaStatus.QUEUED, reason)
    return Decision(replace(state, updated_at=now), log=(line,))


def on_reply(
    state: SagaState,
    definition: SagaDefinition,
    now: datetime,
    new_id: NewId,
    *,
    step: int,
    role: Role,
    command_id: str,
    succeeded: bool,
    detail: str = "",
    result: Mapping[str, Any] | None = None,
    permanent: bool = False,
) -> Decision:
    """A reply to the command ``command_id`` (the ``role`` call of step ``step``).

    A failure marked ``permanent`` is not retried, whatever the retry policy.
    """
    if role is Role.ACTION:
        return _on_action_reply(
            state, definition, now, new_id, step, command_id, succeeded, detail, result, permanent
        )
    return _on_compensation_reply(
        state, definition, now, new_id, step, command_id, succeeded, detail, permanent
    )


def _on_action_reply(
    state: SagaState,
    definition: SagaDefinition,
    now: datetime,
    new_id: NewId,
    index: int,
    command_id: str,
    succeeded: bool,
    detail: str,
    result: Mapping[str, Any] | None,
    permanent: bool = False,
) -> Decision:
    step = state.steps[index]
    if state.status not in (SagaStatus.RUNNING, SagaStatus.COMPENSATING):
        return Decision(state, ignored=f"saga is {state.status}")
    if step.status not in AWAITING_ACTION:
        return Decision(state, ignored=f"step {step.name} is already {step.status}")
    plan = _Plan(state, definition, now, new_id)
    if succeeded:
        # Any attempt's success counts: every attempt carries the same request id.
        plan.set_step(index, StepStatus.SUCCEEDED, detail or "succeeded", deadline=None, result=result or {})
        if state.status is SagaStatus.RUNNING:
            plan.run_next_step()
        else:
            plan.compensate_next()  # cancelled while in flight: undo this step too
        return plan.decision()
    if command_id != step.command_id or step.status is not StepStatus.IN_FLIGHT:
        return Decision(state, ignored=f"stale failure of an earlier attempt of step {step.name}")
    plan.record_error(index, f"attempt {step.attempts}: {detail}")
    plan.retry_or_give_up(index, Role.ACTION, detail, refusal=True, permanent=permanent)
    return plan.decision()


def _on_compensation_reply(
    state: SagaState,
    definition: SagaDefinition,
    now: datetime,
    new_id: NewId,
    index: int,
    command_id: str,
    succeeded: bool,
    detail: str,
    permanent: bool = False,
) -> Decision:
    step = state.steps[index]
    if state.status not in (SagaStatus.COMPENSATING, SagaStatus.QUARANTINED):
        return Decision(state, ignored=f"saga is {state.status}")
    if step.status not in AWAITING_COMPENSATION:
        return Decision(state, ignored=f"step {step.name} is already {step.status}")
    plan = _Plan(state, definition, now, new_id)
    if succeeded:
        plan.set_step(index, StepStatus.COMPENSATED, detail or "compensated", deadline=None)
        if state.status is SagaStatus.QUARANTINED:
            plan.set_status(SagaStatus.COMPENSATING, f"stuck compensation of {step.name} succeeded late")
        plan.compensate_next()
        return plan.decision()
    if command_id != step.command_id or step.status is not StepStatus.COMPENSATING:
        return Decision(state, ignored=f"stale failure of an earlier compensation of step {step.name}")
    plan.record_error(index, f"compensation attempt {step.compensation_attempts}: {detail}")
    plan.retry_or_give_up(index, Role.COMPENSATION, detail, refusal=True, permanent=permanent)
    return plan.decision()


def on_deadline(state: SagaState, definition: SagaDefinition, now: datetime, new_id: NewId) -> Decision:
    """The scheduler's look at a saga: a reply overdue, or a retry due."""
    deadline = state.wake_at()
    if deadline is None or deadline > now:
        return Decision(state, ignored="nothing due")
    plan = _Plan(state, definition, now, new_id)
    index = state.current
    step = state.current_step
    if step.status is StepStatus.RETRY_WAIT:
        plan.send(index, Role.ACTION, "retry due")
    elif step.status is StepStatus.COMPENSATION_WAIT:
        plan.send(index, Role.COMPENSATION, "retry due")
    elif step.status in (StepStatus.IN_FLIGHT, StepStatus.COMPENSATING):
        role = Role.ACTION if step.status is StepStatus.IN_FLIGHT else Role.COMPENSATION
        timeout = plan.call(index, role).timeout
        reason = f"no reply within {timeout}"
        attempt = step.attempts if role is Role.ACTION else step.compensation_attempts
        plan.record_error(
            index, f"{'' if role is Role.ACTION else 'compensation '}attempt {attempt}: {reason}"
        )
        plan._put(index, replace(plan.state.steps[index], timeouts=step.timeouts + 1))
        plan.retry_or_give_up(index, role, reason, refusal=False)
    else:
        return Decision(state, ignored=f"step {step.name} is {step.status}")
    return plan.decision()


def cancel(
    state: SagaState, definition: SagaDefinition, now: datetime, new_id: NewId, reason: str
) -> Decision:
    """Cancel in flight: compensate what was done. Idempotent while compensating."""
    if state.status in (SagaStatus.COMPENSATING, SagaStatus.QUARANTINED, SagaStatus.CANCELLED):
        return Decision(state, ignored=f"saga is already {state.status}")
    if state.status.terminal:
        raise InvalidStateTransition(f"saga {state.saga_id} is {state.status}: it can no longer be cancelled")
    plan = _Plan(replace(state, cancel_requested=True), definition, now, new_id)
    if state.status is SagaStatus.QUEUED:
        plan.finish(SagaStatus.CANCELLED, f"cancelled before start: {reason}")
    else:
        plan.begin_compensation(f"cancelled: {reason}")
    return plan.decision()


# --- operator actions ------------------------------------------------------------------------------


def _refuse(state: SagaState, action: str, allowed: str) -> InvalidStateTransition:
    return InvalidStateTransition(
        f"cannot {action} saga {state.saga_id}: it is {state.status} "
        f"(step {state.current_step.name} {state.current_step.status}); {action} is allowed when {allowed}"
    )


def operator_retry(
    state: SagaState, definition: SagaDefinition, now: datetime, new_id: NewId, reason: str
) -> Decision:
    """Send the current step's action or compensation again now, with a fresh retry budget."""
    plan = _Plan(state, definition, now, new_id)
    index, step = state.current, state.current_step
    if state.status is SagaStatus.RUNNING and step.status in AWAITING_ACTION:
        plan._put(index, replace(step, attempts=0))
        plan.send(index, Role.ACTION, f"operator retry: {reason}")
    elif state.status in (SagaStatus.COMPENSATING, SagaStatus.QUARANTINED) and (
        step.status in AWAITING_COMPENSATION
    ):
        plan._put(index, replace(step, compensation_attempts=0))
        if state.status is SagaStatus.QUARANTINED:
            plan.set_status(SagaStatus.COMPENSATING, f"operator retry: {reason}")
        plan.send(index, Role.COMPENSATION, f"operator retry: {reason}")
    else:
        raise _refuse(state, "retry", "a step or compensation is awaited, or the saga is quarantined")
    return plan.decision()


def operator_skip(
    state: SagaState, definition: SagaDefinition, now: datetime, new_id: NewId, reason: str
) -> Decision:
    """Treat the current step (or stuck compensation) as done by hand and carry on."""
    plan = _Plan(state, definition, now, new_id)
    index, step = state.current, state.current_step
    if state.status is SagaStatus.RUNNING and step.status in AWAITING_ACTION:
        plan.set_step(index, StepStatus.SKIPPED, f"operator skip: {reason}", deadline=None)
        plan.run_next_step()
    elif state.status in (SagaStatus.COMPENSATING, SagaStatus.QUARANTINED) and (
        step.status in AWAITING_COMPENSATION
    ):
        plan.set_step(index, StepStatus.COMPENSATION_SKIPPED, f"operator skip: {reason}", deadline=None)
        if state.status is SagaStatus.QUARANTINED:
            plan.set_status(SagaStatus.COMPENSATING, f"operator skip: {reason}")
        plan.compensate_next()
    else:
        raise _refuse(state, "skip", "a step or compensation is awaited, or the saga is quarantined")
    return plan.decision()


def operator_force_complete(
    state: SagaState, definition: SagaDefinition, now: datetime, new_id: NewId, reason: str
) -> Decision:
    """End the saga now in its current direction: forward → completed, compensating → failed/cancelled."""
    plan = _Plan(state, definition, now, new_id)
    why = f"operator force-complete: {reason}"
    if state.status is SagaStatus.RUNNING:
        for index, step in enumerate(state.steps):
            if step.status is StepStatus.PENDING or step.status in AWAITING_ACTION:
                plan.set_step(index, StepStatus.SKIPPED, why, deadline=None)
        plan.finish(SagaStatus.COMPLETED, why)
    elif state.status in (SagaStatus.COMPENSATING, SagaStatus.QUARANTINED):
        for index, step in enumerate(state.steps):
            undo = step.status in TO_UNDO and definition.steps[index].compensation is not None
            if undo or step.status in AWAITING_COMPENSATION:
                plan.set_step(index, StepStatus.COMPENSATION_SKIPPED, why, deadline=None)
        plan.finish(SagaStatus.CANCELLED if state.cancel_requested else SagaStatus.FAILED, why)
    else:
        raise _refuse(state, "force-complete", "the saga is running, compensating or quarantined")
    return plan.decision()


def operator_compensate(
    state: SagaState, definition: SagaDefinition, now: datetime, new_id: NewId, reason: str
) -> Decision:
    """Stop going forward and undo what was done (ends as failed)."""
    plan = _Plan(state, definition, now, new_id)
    if state.status is SagaStatus.RUNNING:
        plan.begin_compensation(f"operator compensate: {reason}")
    elif state.status is SagaStatus.QUEUED:
        plan.finish(SagaStatus.FAILED, f"operator compensate before start: {reason}")
    else:
        raise _refuse(state, "compensate", "the saga is queued or running")
    return plan.decision()


def operator_abort(
    state: SagaState, definition: SagaDefinition, now: datetime, new_id: NewId, reason: str
) -> Decision:
    """Stop the saga where it is, undoing nothing: the operator takes over."""
    if state.status.terminal:
        raise _refuse(state, "abort", "the saga has not ended")
    plan = _Plan(state, definition, now, new_id)
    plan.finish(SagaStatus.ABORTED, f"operator abort: {reason}")
    return plan.decision()
