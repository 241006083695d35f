"""The activation simulator's knobs: latency and failure injection (pure: no I/O, injectable randomness).

Settings come from ``STROWGER_ACTIVATION_*`` (lists as JSON, e.g.
``STROWGER_ACTIVATION_FAIL_ORDERS='["SO-1"]'``) and can be changed at run time
(``NetworkSimulator.configure`` or ``PUT /activation/faults``).

When a step of an activation fails:

* at random, with probability ``failure_rate`` (each step drawn on its own);
* if the service or product order is in ``fail_orders``: its steps that match
  ``fail_steps``, or its first step when ``fail_steps`` is empty;
* if ``fail_orders`` is empty, every step matching ``fail_steps`` (a step matches
  by its ``target`` ref, its ``specId`` or its ``operation``).

A rollback (``DeactivateService``) fails with probability ``fail_rollback_rate``,
or always for an order in ``fail_rollback_orders`` (to drive a saga into
quarantine). ``failure_mode`` says whether an injected failure is reported as
``transient`` (the saga retries) or ``permanent`` (it compensates at once).
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

FailureMode = Literal["transient", "permanent"]


class ActivationSettings(BaseSettings):
    """The simulated network: how slow it is and where it breaks."""

    model_config = SettingsConfigDict(env_prefix="STROWGER_ACTIVATION_", extra="forbid", frozen=True)

    latency_ms: int = Field(default=0, ge=0, description="fixed time a network element takes to answer")
    jitter_ms: int = Field(default=0, ge=0, description="uniform random extra latency, 0..jitter_ms")
    failure_rate: float = Field(default=0.0, ge=0.0, le=1.0, description="chance that a step fails")
    failure_mode: FailureMode = "transient"
    fail_orders: frozenset[str] = frozenset()  # service or product order ids whose activation fails
    fail_steps: frozenset[str] = frozenset()  # step targets, specIds or operations that fail
    fail_rollback_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    fail_rollback_orders: frozenset[str] = frozenset()  # orders whose rollback always fails

    def changed(self, changes: Mapping[str, Any]) -> ActivationSettings:
        """A validated copy with ``changes`` applied (unknown names refused)."""
        return ActivationSettings.model_validate({**self.model_dump(), **changes})

    def permanent(self) -> bool:
        return self.failure_mode == "permanent"


@dataclass(frozen=True)
class Step:
    """One activation step of the plan (``{"operation", "target", "specId"}`` in the command)."""

    operation: str
    target: str
    spec_id: str

    def matches(self, names: Collection[str]) -> bool:
        return bool(names) and (self.target in names or self.spec_id in names or self.operation in names)


@dataclass(frozen=True)
class InjectedFault:
    """Why the simulated network refused: the step, and whether a retry may succeed."""

    step: Step | None  # None: a rollback
    reason: str
    permanent: bool

    def message(self) -> str:
        where = f"{self.step.operation} {self.step.target}" if self.step else "rollback"
        kind = "permanent" if self.permanent else "transient"
        return f"simulated {kind} network failure at {where}: {self.reason}"


def latency_of(settings: ActivationSettings, rng: random.Random) -> float:
    """Seconds the network element takes: the fixed latency plus uniform jitter."""
    jitter = rng.uniform(0, settings.jitter_ms) if settings.jitter_ms else 0.0
    return (settings.latency_ms + jitter) / 1000.0


def activation_fault(
    settings: ActivationSettings, orders: Collection[str], steps: Sequence[Step], rng: random.Random
) -> InjectedFault | None:
    """The first step that fails, or None (every step is drawn, so a rate applies per step)."""
    targeted = bool(settings.fail_orders) and any(order in settings.fail_orders for order in orders)
    for index, step in enumerate(steps):
        reason = _why_step_fails(settings, targeted, index, step, rng)
        if reason:
            return InjectedFault(step, reason, settings.permanent())
    return None


def _why_step_fails(
    settings: ActivationSettings, targeted: bool, index: int, step: Step, rng: random.Random
) -> str | None:
    drawn = settings.failure_rate > 0 and rng.random() < settings.failure_rate
    if drawn:
        return f"failure_rate {settings.failure_rate}"
    if targeted and (step.matches(settings.fail_steps) or (not settings.fail_steps and index == 0)):
        return "order listed in fail_orders"
    if not settings.fail_orders and step.matches(settings.fail_steps):
        return "step listed in fail_steps"
    return None


def rollback_fault(
    settings: ActivationSettings, orders: Collection[str], rng: random.Random
) -> InjectedFault | None:
    if any(order in settings.fail_rollback_orders for order in orders):
        return InjectedFault(None, "order listed in fail_rollback_orders", settings.permanent())
    if settings.fail_rollback_rate > 0 and rng.random() < settings.fail_rollback_rate:
        return InjectedFault(None, f"fail_rollback_rate {settings.fail_rollback_rate}", settings.permanent())
    return None
