"""Fault injection for the fulfilment executors: fail or drop the next N commands of a type.

The activation simulator has its own network faults (``components/activation/faults.py``);
this hook is the general one, for any executor of ``components/contract.py``
(ROM, activation, inventories), used by ``strowger verify sagas`` and by tests
to drive a saga through every failure path with the real components.

An armed fault names a command type (``AllocateResources``...), optionally the
service or product order it targets, how many commands it hits and how:

* ``fail``: the executor is not called; the command is answered with its
  failure reply (``permanent`` as armed), exactly as a refusing executor would;
* ``drop``: the executor is not called and nothing is answered: the saga sees a
  timeout, as when an executor is down or loses the command.

:meth:`CommandFaults.install` wraps the platform's executor consumers, so a
platform built by ``bootstrap()`` gets the hook without any executor knowing.
Faults can also be armed from ``STROWGER_FAULTS`` (JSON list of
``{"command", "times", "mode", "order", "permanent"}``) via :meth:`from_env`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import orjson

from strowger.bus.runtime import Consumer, Handler, UnitOfWork
from strowger.components import contract
from strowger.components.contract import CommandKind
from strowger.errors import ConfigError
from strowger.events.envelope import Envelope

if TYPE_CHECKING:
    from strowger.bootstrap import Platform

log = logging.getLogger("strowger.faults")

FaultMode = Literal["fail", "drop"]
ENV = "STROWGER_FAULTS"
KINDS: Mapping[str, CommandKind] = {kind.name: kind for kind in contract.ALL_COMMANDS}


def reply_topic(kind: CommandKind) -> str:
    """Where the executor of ``kind`` replies (its domain topic, per the contract)."""
    return contract.RESOURCE_EVENTS if kind.topic == contract.RESOURCE_COMMANDS else contract.SERVICE_EVENTS


def orders_of(command: Envelope) -> set[str]:
    """The service and product orders a command is about (every contract command names one), and
    its correlationId: a fault can be armed for an order before the order exists (and gets an id).
    """
    orders = {
        str(command.payload[key]) for key in ("serviceOrderId", "productOrderId") if command.payload.get(key)
    }
    if command.correlation_id:
        orders.add(command.correlation_id)
    return orders


@dataclass
class Fault:
    """One armed fault: ``remaining`` more commands of ``command`` (for ``order``, if set) are hit."""

    command: str
    remaining: int
    mode: FaultMode = "fail"
    order: str = ""
    permanent: bool = True

    def __post_init__(self) -> None:
        if self.command not in KINDS:
            raise ConfigError(ENV, f"a contract command type ({', '.join(KINDS)})", self.command)
        if self.remaining < 1 or self.mode not in ("fail", "drop"):
            raise ConfigError(ENV, "times >= 1 and mode 'fail' or 'drop'", (self.remaining, self.mode))

    def hits(self, command: Envelope) -> bool:
        return command.event_type == self.command and (not self.order or self.order in orders_of(command))


class CommandFaults:
    """The armed faults of one process; thread-safe, consumed one command at a time."""

    def __init__(self, faults: Iterable[Fault] = ()) -> None:
        self._faults = list(faults)
        self._lock = threading.Lock()
        self.injected: list[tuple[str, str, FaultMode]] = []  # (command type, command id, mode), for reports

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CommandFaults:
        """Faults armed by ``STROWGER_FAULTS`` (none if unset); ConfigError if it is malformed."""
        text = (environ if environ is not None else os.environ).get(ENV, "")
        if not text.strip():
            return cls()
        try:
            entries = orjson.loads(text)
            return cls(
                Fault(
                    command=str(entry["command"]),
                    remaining=int(entry.get("times", 1)),
                    mode=entry.get("mode", "fail"),
                    order=str(entry.get("order", "")),
                    permanent=bool(entry.get("permanent", True)),
                )
                for entry in entries
            )
        except (orjson.JSONDecodeError, TypeError, KeyError, ValueError) as error:
            raise ConfigError(ENV, 'a JSON list of {"command", "times", "mode", "order"}', text) from error

    def arm(
        self,
        command: str,
        *,
        times: int = 1,
        mode: FaultMode = "fail",
        order: str = "",
        permanent: bool = True,
    ) -> Fault:
        """Hit the next ``times`` commands of type ``command`` (about ``order`` only, if given)."""
        fault = Fault(command, times, mode, order, permanent)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self, *, order: str = "", command: str = "") -> int:
        """Disarm the faults matching ``order`` and ``command`` (all of them by default); how many."""
        with self._lock:
            keep = [
                fault
                for fault in self._faults
                if (order and fault.order != order) or (command and fault.command != command)
            ]
            cleared = len(self._faults) - len(keep)
            self._faults = keep
        return cleared

    def armed(self) -> list[Fault]:
        with self._lock:
            return [dataclasses.replace(fault) for fault in self._faults]

    def take(self, command: Envelope) -> Fault | None:
        """The fault that hits ``command`` (one use of it consumed), or None."""
        with self._lock:
            for fault in self._faults:
                if fault.hits(command):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    self.injected.append((command.event_type, command.event_id, fault.mode))
                    return fault
        return None

    # -- wiring ---------------------------------------------------------------------------------

    def wrap(self, consumer: Consumer) -> Consumer:
        """``consumer`` with this hook in front of its per-event handler."""
        if consumer.handler is None:
            raise ConfigError("fault injection", "a consumer with a per-event handler", consumer.name)
        return dataclasses.replace(consumer, handler=self._guard(consumer.handler))

    def install(self, platform: Platform) -> list[str]:
        """Wrap every executor consumer of the platform (one that takes contract commands); their names.

        Call after the components are installed and before the platform starts.
        """
        wrapped = []
        for runner in platform.runners:
            if runner.consumer.event_types & KINDS.keys():
                runner.consumer = self.wrap(runner.consumer)
                wrapped.append(runner.name)
        return wrapped

    def _guard(self, handler: Handler) -> Handler:
        async def guarded(command: Envelope, uow: UnitOfWork) -> None:
            fault = self.take(command) if command.event_type in KINDS else None
            if fault is None:
                await handler(command, uow)
                return
            kind = KINDS[command.event_type]
            log.warning(
                "injected fault: %s %s %s",
                fault.mode,
                command.event_type,
                command.event_id,
                extra={"orders": sorted(orders_of(command))},
            )
            if fault.mode == "fail":
                payload: dict[str, Any] = {
                    "requestId": command.payload.get("requestId") or command.extra.get("requestId"),
                    **contract.failure(
                        f"injected fault: {command.event_type} refused", permanent=fault.permanent
                    ),
                }
                await uow.emit(command.caused(kind.failed, payload), reply_topic(kind))

        return guarded
