"""Saga orchestration: persisted, resumable, compensating, quarantining (docs/sagas.md)."""

from strowger.saga.definition import (
    Call,
    Command,
    RetryPolicy,
    SagaDefinition,
    SagaRegistry,
    Step,
    StepContext,
)
from strowger.saga.engine import CommandSink, OutboxSink, ReplyResult, SagaEngine, TickReport
from strowger.saga.model import SagaState, SagaStatus, StepState, StepStatus
from strowger.saga.operator import OperatorAction, SagaOperator
from strowger.saga.queries import SagaQueries
from strowger.saga.store import SAGA_TABLES, SagaStore

__all__ = [
    "SAGA_TABLES",
    "Call",
    "Command",
    "CommandSink",
    "OperatorAction",
    "OutboxSink",
    "ReplyResult",
    "RetryPolicy",
    "SagaDefinition",
    "SagaEngine",
    "SagaOperator",
    "SagaQueries",
    "SagaRegistry",
    "SagaState",
    "SagaStatus",
    "SagaStore",
    "Step",
    "StepContext",
    "StepState",
    "StepStatus",
    "TickReport",
]
