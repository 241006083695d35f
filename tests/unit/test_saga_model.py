"""The saga state machine's decisions, without any database."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from strowger.errors import ConfigError, InvalidStateTransition, NotFound
from strowger.saga import model
from strowger.saga.definition import (
    Call,
    Command,
    RetryPolicy,
    SagaDefinition,
    SagaRegistry,
    Step,
    StepContext,
)
from strowger.saga.model import Decision, Role, SagaState, SagaStatus, StepStatus

T0 = datetime(2025, 1, 1, tzinfo=UTC)
S = timedelta(seconds=1)


def build(context: StepContext) -> Command:
    return Command("t", "Do", {})


def call(retry: RetryPolicy | None = None, timeout: timedelta = 10 * S) -> Call:
    return Call(build, "Done", "Failed", timeout=timeout, retry=retry or RetryPolicy(max_attempts=2))


def definition(*, notify_compensation: bool = True, retry: RetryPolicy | None = None) -> SagaDefinition:
    return SagaDefinition(
        "toy",
        (
            Step("reserve", call(retry), call(RetryPolicy(max_attempts=2, backoff=S))),
            Step("notify", call(retry), call() if notify_compensation else None),
            Step("bill", call(retry), call()),
        ),
    )


class Ids:
    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"cmd-{next(self._counter)}"


def started(saga: SagaDefinition) -> tuple[SagaState, Decision, Ids]:
    ids = Ids()
    state = model.new_saga(saga, "s1", {"k": 1}, T0)
    decision = model.start(state, saga, T0, ids)
    return decision.state, decision, ids


def reply(
    state: SagaState, saga: SagaDefinition, ids: Ids, ok: bool, role: Role = Role.ACTION, at: datetime = T0
) -> Decision:
    step = state.current_step
    return model.on_reply(
        state,
        saga,
        at,
        ids,
        step=state.current,
        role=role,
        command_id=step.command_id,
        succeeded=ok,
        detail="x",
    )


def test_retry_delay_grows_exponentially_and_is_capped() -> None:
    policy = RetryPolicy(backoff=S, multiplier=3, max_backoff=5 * S)
    assert [policy.delay(n) for n in (1, 2, 3)] == [S, 3 * S, 5 * S]
    assert policy.allows_another(2) and not policy.allows_another(3)


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": 0}, {"backoff": -S}, {"multiplier": 0.5}], ids=["attempts", "backoff", "mult"]
)
def test_a_nonsensical_retry_policy_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_definitions_are_validated_and_registered_once() -> None:
    with pytest.raises(ConfigError):
        SagaDefinition("empty", ())
    with pytest.raises(ConfigError):
        SagaDefinition("dup", (Step("a", call()), Step("a", call())))
    with pytest.raises(ConfigError):
        Call(build, "Same", "Same")
    registry = SagaRegistry([definition()])
    assert registry.get("toy").saga_type == "toy" and "toy" in registry
    with pytest.raises(ConfigError):
        registry.register(definition())
    with pytest.raises(NotFound):
        registry.get("other")


def test_start_sends_the_first_action_with_a_deadline() -> None:
    state, decision, _ = started(definition())
    assert state.status is SagaStatus.RUNNING
    assert decision.sends == (model.Send(0, Role.ACTION, 1, "cmd-1"),)
    assert state.steps[0].deadline == T0 + 10 * S
    assert state.wake_at() == T0 + 10 * S


def test_success_runs_the_next_step_and_the_last_completes() -> None:
    saga = definition()
    state, _, ids = started(saga)
    for _ in range(3):
        state = reply(state, saga, ids, ok=True).state
    assert state.status is SagaStatus.COMPLETED
    assert state.finished_at == T0 and state.wake_at() is None


def test_a_refusal_is_final_unless_the_policy_retries_refusals() -> None:
    saga = definition()
    state, _, ids = started(saga)
    decision = reply(state, saga, ids, ok=False)
    assert decision.state.status is SagaStatus.FAILED  # nothing done, nothing to compensate
    assert decision.state.steps[0].status is StepStatus.FAILED

    saga = definition(retry=RetryPolicy(max_attempts=2, backoff=S, retry_refusals=True))
    state, _, ids = started(saga)
    decision = reply(state, saga, ids, ok=False)
    assert decision.state.steps[0].status is StepStatus.RETRY_WAIT
    assert decision.state.wake_at() == T0 + S
    assert decision.sends == ()


def test_a_zero_backoff_resends_at_once() -> None:
    saga = definition(retry=RetryPolicy(max_attempts=2, backoff=timedelta(0), retry_refusals=True))
    state, _, ids = started(saga)
    decision = reply(state, saga, ids, ok=False)
    assert decision.sends == (model.Send(0, Role.ACTION, 2, "cmd-2"),)


def test_steps_without_compensation_are_passed_over_when_undoing() -> None:
    saga = definition(notify_compensation=False)
    state, _, ids = started(saga)
    state = reply(state, saga, ids, ok=True).state
    state = reply(state, saga, ids, ok=True).state
    decision = reply(state, saga, ids, ok=False)
    assert [(s.step, s.role) for s in decision.sends] == [(0, Role.COMPENSATION)]
    assert decision.state.steps[1].status is StepStatus.SUCCEEDED


def test_an_exhausted_compensation_quarantines_and_a_late_success_resumes() -> None:
    saga = definition()
    state, _, ids = started(saga)
    state = reply(state, saga, ids, ok=True).state
    state = reply(state, saga, ids, ok=False).state  # notify refused: undo reserve
    assert state.current_step.status is StepStatus.COMPENSATING
    state = reply(state, saga, ids, ok=False, role=Role.COMPENSATION).state
    assert state.current_step.status is StepStatus.COMPENSATION_WAIT
    state = model.on_deadline(state, saga, T0 + 2 * S, ids).state
    state = reply(state, saga, ids, ok=False, role=Role.COMPENSATION).state
    assert state.status is SagaStatus.QUARANTINED
    assert state.current_step.status is StepStatus.COMPENSATION_STUCK
    assert len(state.current_step.errors) == 2
    assert model.stale_at(state, saga) is None and state.wake_at() is None
    state = reply(state, saga, ids, ok=True, role=Role.COMPENSATION).state
    assert state.status is SagaStatus.FAILED


def test_nothing_due_is_ignored() -> None:
    saga = definition()
    state, _, ids = started(saga)
    assert model.on_deadline(state, saga, T0 + 5 * S, ids).ignored == "nothing due"


def test_cancel_before_start_ends_at_once_and_after_the_end_is_refused() -> None:
    saga = definition()
    queued = model.new_saga(saga, "s1", {}, T0)
    decision = model.cancel(queued, saga, T0, Ids(), "changed mind")
    assert decision.state.status is SagaStatus.CANCELLED and decision.sends == ()
    state, _, ids = started(saga)
    for _ in range(3):
        state = reply(state, saga, ids, ok=True).state
    with pytest.raises(InvalidStateTransition, match="no longer be cancelled"):
        model.cancel(state, saga, T0, ids, "too late")


def test_cancel_during_a_retry_wait_gives_up_the_step_and_compensates() -> None:
    saga = definition()
    state, _, ids = started(saga)
    state = reply(state, saga, ids, ok=True).state
    state = model.on_deadline(state, saga, T0 + 11 * S, ids).state  # timeout: retry later
    assert state.current_step.status is StepStatus.RETRY_WAIT
    decision = model.cancel(state, saga, T0 + 11 * S, ids, "customer")
    # The timed-out attempt may have worked: compensate it first (uncertain), then reserve.
    assert [(s.step, s.role) for s in decision.sends] == [(1, Role.COMPENSATION)]
    assert decision.state.cancel_requested


def test_operator_skip_of_a_stuck_compensation_carries_on_undoing() -> None:
    saga = definition()
    state, _, ids = started(saga)
    state = reply(state, saga, ids, ok=True).state
    state = reply(state, saga, ids, ok=True).state
    state = reply(state, saga, ids, ok=False).state  # bill refused: undo notify
    decision = model.operator_skip(state, saga, T0, ids, "done by hand")
    assert decision.state.steps[1].status is StepStatus.COMPENSATION_SKIPPED
    assert [(s.step, s.role) for s in decision.sends] == [(0, Role.COMPENSATION)]


def test_operator_actions_refused_in_the_wrong_state_say_why() -> None:
    saga = definition()
    queued = model.new_saga(saga, "s1", {}, T0)
    for action in (model.operator_retry, model.operator_skip, model.operator_force_complete):
        with pytest.raises(InvalidStateTransition, match="queued"):
            action(queued, saga, T0, Ids(), "why")
    assert model.operator_abort(queued, saga, T0, Ids(), "why").state.status is SagaStatus.ABORTED


def test_a_queued_saga_is_stale_after_its_first_step_timeout() -> None:
    saga = definition()
    queued = model.new_saga(saga, "s1", {}, T0)
    assert model.stale_at(queued, saga) == T0 + 10 * S
    state, _, _ = started(saga)
    assert model.stale_at(state, saga) == T0 + 20 * S  # deadline + one more timeout
