"""SOM's settings: how long the fulfilment saga waits for each command and how often it sends it.

From ``STROWGER_FULFILMENT_*`` variables. The defaults suit a platform that keeps up with its
orders; raise the step timeout where commands may wait in a queue for longer (a slow network
element, a backlog after an outage), or a saga gives up on work that is only late.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from strowger.components.service_ordering.saga import FulfilmentTimings
from strowger.saga import RetryPolicy


class FulfilmentSettings(BaseSettings):
    """The fulfilment saga's step timeout and retry policies."""

    model_config = SettingsConfigDict(env_prefix="STROWGER_FULFILMENT_", extra="forbid", frozen=True)

    # How long one command (allocate, activate, record inventory, or an undo) is awaited before
    # it is sent again; after the last attempt an action fails the saga, a compensation quarantines it.
    step_timeout_seconds: float = Field(30.0, gt=0, le=7 * 24 * 3600)
    action_attempts: int = Field(3, ge=1, le=100)
    # Compensations are retried longer: giving up means a person has to step in (quarantine).
    compensation_attempts: int = Field(5, ge=1, le=100)
    retry_backoff_seconds: float = Field(2.0, ge=0, le=3600)

    def timings(self) -> FulfilmentTimings:
        backoff = timedelta(seconds=self.retry_backoff_seconds)
        return FulfilmentTimings(
            timeout=timedelta(seconds=self.step_timeout_seconds),
            # Non-permanent refusals are retried too: a busy network element may answer next time.
            action_retry=RetryPolicy(max_attempts=self.action_attempts, backoff=backoff, retry_refusals=True),
            compensation_retry=RetryPolicy(max_attempts=self.compensation_attempts, backoff=backoff),
        )
