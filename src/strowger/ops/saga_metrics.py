"""Saga figures for Prometheus: the :class:`~strowger.saga.engine.SagaObserver` the composition root
gives the saga engine, so ``saga/`` itself knows nothing of metrics.

* ``strowger_saga_duration_seconds{saga_type, order_type, outcome}``: start to terminal status.
* ``strowger_saga_step_latency_seconds{saga_type, step}``: command sent to reply handled, per step,
  compensations included (the per-hop latency along a saga).
* ``strowger_compensations_total{saga_type, reason}``: sagas that began to compensate.

While spans are exported (``STROWGER_OTLP_ENDPOINT``), each step is also an INTERNAL span
``saga <type> <step> execute|compensate`` covering the same interval as its latency sample.

Labels must stay few: the order type is the saga data's ``orderType`` (a short word the saga's
owner puts there, e.g. ``add`` or ``add+delete``) and the reason is the kind of a compensation
reason, its text before the first colon (``step activate failed``, ``cancelled``, ``operator
compensate``), never the free text, which carries ids and error details.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from opentelemetry.trace import SpanKind

from strowger.events.envelope import Envelope
from strowger.ops import tracing
from strowger.ops.metrics import Metrics
from strowger.saga.model import Role, SagaState

ORDER_TYPE_KEY = "orderType"  # where a saga's data names its order type
UNSPECIFIED = "unspecified"
MAX_LABEL = 60  # a reason kind longer than this is cut: labels are not for prose


def order_type_of(data: Mapping[str, Any]) -> str:
    """The order type a saga's data names, or ``unspecified``."""
    value = data.get(ORDER_TYPE_KEY)
    return str(value)[:MAX_LABEL] if value else UNSPECIFIED


def reason_kind(reason: str) -> str:
    """A compensation reason's bounded kind: its text before the first colon."""
    kind = reason.partition(":")[0].strip()
    return kind[:MAX_LABEL] or "unknown"


class SagaMetrics:
    """Observes sagas into a :class:`Metrics` registry."""

    def __init__(self, metrics: Metrics, *, spans: bool = True) -> None:
        self.metrics = metrics
        self.spans = spans  # also record each step as an OpenTelemetry span, while spans are exported

    def step_replied(
        self, state: SagaState, step: str, role: Role, latency: timedelta, reply: Envelope
    ) -> None:
        # A compensation is a hop of its own: "activate" and "activate/compensation" differ a lot.
        label = step if role is Role.ACTION else f"{step}/compensation"
        self.metrics.step_latency.labels(state.saga_type, label).observe(latency.total_seconds())
        if self.spans and tracing.exporting():
            step_span(state, step, role, latency, reply)

    def compensation_started(self, state: SagaState) -> None:
        self.metrics.compensations.labels(state.saga_type, reason_kind(state.reason)).inc()

    def saga_finished(self, state: SagaState) -> None:
        end = state.finished_at or state.updated_at
        seconds = max((end - state.started_at).total_seconds(), 0.0)
        labels = (state.saga_type, order_type_of(state.data), state.status.value)
        self.metrics.saga_duration.labels(*labels).observe(seconds)


def step_span(state: SagaState, step: str, role: Role, latency: timedelta, reply: Envelope) -> None:
    """An INTERNAL span for one saga step, from its command's send to its reply's handling.

    Recorded once the reply is handled, with explicit start and end times, in the reply's trace
    (its ``traceparent``: the order's trace, carried through the command and the executor).
    """
    action = "execute" if role is Role.ACTION else "compensate"
    end = time.time_ns()
    span = tracing.tracer().start_span(
        f"saga {state.saga_type} {step} {action}",
        context=tracing.context_from(reply.traceparent) if reply.traceparent else None,
        kind=SpanKind.INTERNAL,
        start_time=end - int(latency.total_seconds() * 1e9),
        attributes={
            "strowger.saga_type": state.saga_type,
            "strowger.saga_id": state.saga_id,
            "strowger.step": step,
            "strowger.action": action,
            "strowger.reply": reply.event_type,
            "strowger.correlation_id": state.correlation_id,
        },
    )
    span.end(end_time=end)
