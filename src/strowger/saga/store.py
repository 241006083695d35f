"""Saga persistence: instances, steps, the commands sent, the transition log, locks and audit.

Everything a saga needs to resume after a crash is here, written in the
caller's transaction. Saves are optimistic: a saga row carries a version, and
a save that finds another version raises :class:`ConcurrencyConflict` (two
replicas handled the same saga at once; the runtime retries the loser).
Times are written as ISO-8601 UTC text (fixed width, so SQLite compares them
correctly); PostgreSQL stores them as ``timestamptz`` and JSON as ``jsonb``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from strowger.errors import ConcurrencyConflict
from strowger.saga.model import Role, SagaState, SagaStatus, StepState, StepStatus, Transition
from strowger.store.db import Row, TableSet, Transaction

SAGA_TABLES = TableSet(
    "sagas",
    sqlite=[
        """CREATE TABLE IF NOT EXISTS sagas (
            saga_id TEXT PRIMARY KEY, saga_type TEXT NOT NULL, status TEXT NOT NULL,
            current_step INTEGER NOT NULL, data TEXT NOT NULL, correlation_id TEXT NOT NULL,
            entity_key TEXT NOT NULL, lock_keys TEXT NOT NULL, reason TEXT NOT NULL,
            cancel_requested INTEGER NOT NULL, started_at TEXT NOT NULL, updated_at TEXT NOT NULL,
            finished_at TEXT, wake_at TEXT, stale_at TEXT, stuck_reported INTEGER NOT NULL,
            version INTEGER NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS sagas_wake ON sagas (wake_at) WHERE wake_at IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS sagas_stale ON sagas (stale_at) WHERE stale_at IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS sagas_type_status ON sagas (saga_type, status)",
        """CREATE TABLE IF NOT EXISTS saga_steps (
            saga_id TEXT NOT NULL, step_index INTEGER NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL,
            attempts INTEGER NOT NULL, compensation_attempts INTEGER NOT NULL, timeouts INTEGER NOT NULL,
            command_id TEXT NOT NULL, deadline TEXT, errors TEXT NOT NULL, result TEXT NOT NULL,
            PRIMARY KEY (saga_id, step_index))""",
        """CREATE TABLE IF NOT EXISTS saga_commands (
            command_id TEXT PRIMARY KEY, saga_id TEXT NOT NULL, step_index INTEGER NOT NULL,
            role TEXT NOT NULL, attempt INTEGER NOT NULL, event_type TEXT NOT NULL, topic TEXT NOT NULL,
            sent_at TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS saga_commands_saga ON saga_commands (saga_id)",
        """CREATE TABLE IF NOT EXISTS saga_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT, saga_id TEXT NOT NULL, at TEXT NOT NULL,
            step TEXT NOT NULL, before_status TEXT NOT NULL, after_status TEXT NOT NULL,
            reason TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS saga_log_saga ON saga_log (saga_id, id)",
        """CREATE TABLE IF NOT EXISTS saga_locks (
            lock_key TEXT PRIMARY KEY, saga_id TEXT NOT NULL, acquired_at TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS saga_locks_saga ON saga_locks (saga_id)",
        """CREATE TABLE IF NOT EXISTS saga_lock_waits (
            id INTEGER PRIMARY KEY AUTOINCREMENT, saga_id TEXT NOT NULL, lock_key TEXT NOT NULL,
            queued_at TEXT NOT NULL, UNIQUE (saga_id, lock_key))""",
        "CREATE INDEX IF NOT EXISTS saga_lock_waits_key ON saga_lock_waits (lock_key, id)",
        """CREATE TABLE IF NOT EXISTS saga_audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT, saga_id TEXT NOT NULL, at TEXT NOT NULL,
            actor TEXT NOT NULL, action TEXT NOT NULL, reason TEXT NOT NULL,
            status_before TEXT NOT NULL, status_after TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS saga_audit_saga ON saga_audit (saga_id, id)",
    ],
    postgresql=[
        """CREATE TABLE IF NOT EXISTS sagas (
            saga_id TEXT PRIMARY KEY, saga_type TEXT NOT NULL, status TEXT NOT NULL,
            current_step INTEGER NOT NULL, data JSONB NOT NULL, correlation_id TEXT NOT NULL,
            entity_key TEXT NOT NULL, lock_keys JSONB NOT NULL, reason TEXT NOT NULL,
            cancel_requested BOOLEAN NOT NULL, started_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL, finished_at TIMESTAMPTZ, wake_at TIMESTAMPTZ,
            stale_at TIMESTAMPTZ, stuck_reported BOOLEAN NOT NULL, version INTEGER NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS sagas_wake ON sagas (wake_at) WHERE wake_at IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS sagas_stale ON sagas (stale_at) WHERE stale_at IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS sagas_type_status ON sagas (saga_type, status)",
        """CREATE TABLE IF NOT EXISTS saga_steps (
            saga_id TEXT NOT NULL, step_index INTEGER NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL,
            attempts INTEGER NOT NULL, compensation_attempts INTEGER NOT NULL, timeouts INTEGER NOT NULL,
            command_id TEXT NOT NULL, deadline TIMESTAMPTZ, errors JSONB NOT NULL, result JSONB NOT NULL,
            PRIMARY KEY (saga_id, step_index))""",
        """CREATE TABLE IF NOT EXISTS saga_commands (
            command_id TEXT PRIMARY KEY, saga_id TEXT NOT NULL, step_index INTEGER NOT NULL,
            role TEXT NOT NULL, attempt INTEGER NOT NULL, event_type TEXT NOT NULL, topic TEXT NOT NULL,
            sent_at TIMESTAMPTZ NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS saga_commands_saga ON saga_commands (saga_id)",
        """CREATE TABLE IF NOT EXISTS saga_log (
            id BIGSERIAL PRIMARY KEY, saga_id TEXT NOT NULL, at TIMESTAMPTZ NOT NULL,
            step TEXT NOT NULL, before_status TEXT NOT NULL, after_status TEXT NOT NULL,
            reason TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS saga_log_saga ON saga_log (saga_id, id)",
        """CREATE TABLE IF NOT EXISTS saga_locks (
            lock_key TEXT PRIMARY KEY, saga_id TEXT NOT NULL, acquired_at TIMESTAMPTZ NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS saga_locks_saga ON saga_locks (saga_id)",
        """CREATE TABLE IF NOT EXISTS saga_lock_waits (
            id BIGSERIAL PRIMARY KEY, saga_id TEXT NOT NULL, lock_key TEXT NOT NULL,
            queued_at TIMESTAMPTZ NOT NULL, UNIQUE (saga_id, lock_key))""",
        "CREATE INDEX IF NOT EXISTS saga_lock_waits_key ON saga_lock_waits (lock_key, id)",
        """CREATE TABLE IF NOT EXISTS saga_audit (
            id BIGSERIAL PRIMARY KEY, saga_id TEXT NOT NULL, at TIMESTAMPTZ NOT NULL,
            actor TEXT NOT NULL, action TEXT NOT NULL, reason TEXT NOT NULL,
            status_before TEXT NOT NULL, status_after TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS saga_audit_saga ON saga_audit (saga_id, id)",
    ],
)


def write_time(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def read_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromisoformat(str(value)).astimezone(UTC)


def _must_time(value: Any) -> datetime:
    moment = read_time(value)
    assert moment is not None, "NOT NULL column"
    return moment


def write_json(value: Any) -> str:
    return orjson.dumps(value).decode()


def read_json(value: Any) -> Any:
    """JSON text (SQLite) or an already decoded jsonb value (PostgreSQL)."""
    return orjson.loads(value) if isinstance(value, str | bytes) else value


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """A command the engine sent: replies are matched to it by its id (the reply's causation id)."""

    command_id: str
    saga_id: str
    step: int
    role: Role
    attempt: int


@dataclass(frozen=True, slots=True)
class LogEntry:
    at: datetime
    step: str
    before: str
    after: str
    reason: str


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: datetime
    actor: str
    action: str
    reason: str
    status_before: str
    status_after: str


_SAGA_COLUMNS = (
    "saga_id, saga_type, status, current_step, data, correlation_id, entity_key, lock_keys, reason, "
    "cancel_requested, started_at, updated_at, finished_at, wake_at, stale_at, stuck_reported, version"
)
_STEP_COLUMNS = (
    "name, status, attempts, compensation_attempts, timeouts, command_id, deadline, errors, result"
)


_DUE = "SELECT saga_id FROM sagas WHERE wake_at <= ? ORDER BY wake_at LIMIT ?"
_STALE = "SELECT saga_id FROM sagas WHERE stale_at <= ? AND stuck_reported = ? ORDER BY stale_at LIMIT ?"


class SagaStore:
    """Reads and writes saga rows inside the caller's transaction (owns no connection).

    ``row_locks`` (PostgreSQL): transactions that change several sagas lock them first,
    in saga id order (:meth:`lock`), and the scheduler claims due and stale sagas with
    ``SKIP LOCKED``; without it, a batch of replies and the scheduler tick updated the
    same ``sagas`` rows in different orders and deadlocked. SQLite has a single writer,
    so there is nothing to order there.
    """

    def __init__(self, *, row_locks: bool = False) -> None:
        self.row_locks = row_locks

    # --- instances -----------------------------------------------------------------------------

    async def lock(self, tx: Transaction, saga_ids: Iterable[str]) -> None:
        """Lock these sagas' rows until ``tx`` ends, in id order (every writer agrees on the order)."""
        ordered = sorted(set(saga_ids))
        if not self.row_locks or not ordered:
            return
        marks = ", ".join("?" * len(ordered))
        await tx.fetchall(
            f"SELECT saga_id FROM sagas WHERE saga_id IN ({marks}) ORDER BY saga_id FOR UPDATE",  # noqa: S608
            tuple(ordered),
        )

    async def load(self, tx: Transaction, saga_id: str) -> SagaState | None:
        row = await tx.fetchone(f"SELECT {_SAGA_COLUMNS} FROM sagas WHERE saga_id = ?", (saga_id,))  # noqa: S608
        if row is None:
            return None
        steps = await tx.fetchall(
            f"SELECT {_STEP_COLUMNS} FROM saga_steps WHERE saga_id = ? ORDER BY step_index",  # noqa: S608
            (saga_id,),
        )
        return _saga(row, [_step(step) for step in steps])

    async def insert(self, tx: Transaction, state: SagaState, stale_at: datetime | None) -> None:
        await tx.execute(
            f"INSERT INTO sagas ({_SAGA_COLUMNS}) VALUES ({', '.join('?' * 17)})",  # noqa: S608
            _saga_params(state, stale_at),
        )
        await tx.executemany(
            f"INSERT INTO saga_steps (saga_id, step_index, {_STEP_COLUMNS}) "  # noqa: S608
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(state.saga_id, index, *_step_params(step)) for index, step in enumerate(state.steps)],
        )

    async def save(
        self, tx: Transaction, before: SagaState, after: SagaState, stale_at: datetime | None
    ) -> SagaState:
        """Write ``after`` over ``before``; ConcurrencyConflict if someone saved the saga meanwhile."""
        saved = replace(after, version=before.version + 1)
        changed = await tx.execute(
            "UPDATE sagas SET status = ?, current_step = ?, data = ?, reason = ?, cancel_requested = ?, "
            "updated_at = ?, finished_at = ?, wake_at = ?, stale_at = ?, stuck_reported = ?, version = ? "
            "WHERE saga_id = ? AND version = ?",
            (
                saved.status.value,
                saved.current,
                write_json(dict(saved.data)),
                saved.reason,
                saved.cancel_requested,
                write_time(saved.updated_at),
                write_time(saved.finished_at),
                write_time(saved.wake_at()),
                write_time(stale_at),
                saved.stuck_reported,
                saved.version,
                saved.saga_id,
                before.version,
            ),
        )
        if changed != 1:
            raise ConcurrencyConflict(f"saga {after.saga_id} was changed concurrently; reload and retry")
        updates = [
            (*_step_params(new)[1:], saved.saga_id, index)
            for index, (old, new) in enumerate(zip(before.steps, after.steps, strict=True))
            if old != new
        ]
        if updates:
            await tx.executemany(
                "UPDATE saga_steps SET status = ?, attempts = ?, compensation_attempts = ?, timeouts = ?, "
                "command_id = ?, deadline = ?, errors = ?, result = ? WHERE saga_id = ? AND step_index = ?",
                updates,
            )
        return saved

    async def due(self, tx: Transaction, now: datetime, limit: int) -> list[str]:
        """Sagas whose reply deadline or retry time has come, oldest first.

        With row locks, the sagas returned are locked for ``tx``; one another transaction
        is changing (a reply being applied) is skipped: the next pass sees it again.
        """
        rows = await tx.fetchall(_DUE + self._claim, (write_time(now), limit))
        return [str(row[0]) for row in rows]

    async def stale(self, tx: Transaction, now: datetime, limit: int) -> list[str]:
        """Sagas with no transition for too long that have not been reported yet (claimed as :meth:`due`)."""
        rows = await tx.fetchall(_STALE + self._claim, (write_time(now), False, limit))
        return [str(row[0]) for row in rows]

    @property
    def _claim(self) -> str:
        return " FOR UPDATE SKIP LOCKED" if self.row_locks else ""

    async def mark_stuck_reported(self, tx: Transaction, saga_id: str) -> None:
        await tx.execute("UPDATE sagas SET stuck_reported = ? WHERE saga_id = ?", (True, saga_id))

    # --- commands and log ------------------------------------------------------------------------

    async def record_command(
        self, tx: Transaction, record: CommandRecord, event_type: str, topic: str, now: datetime
    ) -> None:
        await tx.execute(
            "INSERT INTO saga_commands (command_id, saga_id, step_index, role, attempt, event_type, topic, "
            "sent_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.command_id,
                record.saga_id,
                record.step,
                record.role.value,
                record.attempt,
                event_type,
                topic,
                write_time(now),
            ),
        )

    async def sagas_of_commands(self, tx: Transaction, command_ids: Sequence[str]) -> list[str]:
        """The sagas that sent any of ``command_ids`` (replies name their command as causation id)."""
        wanted = list(dict.fromkeys(command_id for command_id in command_ids if command_id))
        if not wanted:
            return []
        marks = ", ".join("?" * len(wanted))
        rows = await tx.fetchall(
            f"SELECT DISTINCT saga_id FROM saga_commands WHERE command_id IN ({marks})",  # noqa: S608
            tuple(wanted),
        )
        return [str(row[0]) for row in rows]

    async def find_command(self, tx: Transaction, command_id: str) -> CommandRecord | None:
        row = await tx.fetchone(
            "SELECT command_id, saga_id, step_index, role, attempt FROM saga_commands WHERE command_id = ?",
            (command_id,),
        )
        if row is None:
            return None
        return CommandRecord(str(row[0]), str(row[1]), int(row[2]), Role(row[3]), int(row[4]))

    async def append_log(
        self, tx: Transaction, saga_id: str, lines: Sequence[Transition], now: datetime
    ) -> None:
        await tx.executemany(
            "INSERT INTO saga_log (saga_id, at, step, before_status, after_status, reason) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(saga_id, write_time(now), line.step, line.before, line.after, line.reason) for line in lines],
        )

    async def history(self, tx: Transaction, saga_id: str) -> list[LogEntry]:
        rows = await tx.fetchall(
            "SELECT at, step, before_status, after_status, reason FROM saga_log "
            "WHERE saga_id = ? ORDER BY id",
            (saga_id,),
        )
        return [LogEntry(_must_time(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4])) for r in rows]

    # --- semantic locks --------------------------------------------------------------------------

    async def try_lock(self, tx: Transaction, saga_id: str, keys: Sequence[str], now: datetime) -> str:
        """Take every key for ``saga_id``, or none: returns "" on success, else a key already held."""
        taken: list[str] = []
        for key in keys:
            await tx.execute(
                "INSERT INTO saga_locks (lock_key, saga_id, acquired_at) VALUES (?, ?, ?) "
                "ON CONFLICT (lock_key) DO NOTHING",
                (key, saga_id, write_time(now)),
            )
            holder = await tx.fetchone("SELECT saga_id FROM saga_locks WHERE lock_key = ?", (key,))
            if holder is None or holder[0] != saga_id:
                await self._unlock(tx, saga_id, taken)
                return key
            taken.append(key)
        return ""

    async def lock_holder(self, tx: Transaction, key: str) -> str:
        row = await tx.fetchone("SELECT saga_id FROM saga_locks WHERE lock_key = ?", (key,))
        return "" if row is None else str(row[0])

    async def _unlock(self, tx: Transaction, saga_id: str, keys: Iterable[str]) -> None:
        await tx.executemany(
            "DELETE FROM saga_locks WHERE lock_key = ? AND saga_id = ?", [(key, saga_id) for key in keys]
        )

    async def release_locks(self, tx: Transaction, saga_id: str) -> list[str]:
        """Release every lock and wait of ``saga_id``; returns the keys it held."""
        rows = await tx.fetchall("SELECT lock_key FROM saga_locks WHERE saga_id = ?", (saga_id,))
        await tx.execute("DELETE FROM saga_locks WHERE saga_id = ?", (saga_id,))
        await tx.execute("DELETE FROM saga_lock_waits WHERE saga_id = ?", (saga_id,))
        return [str(row[0]) for row in rows]

    async def wait_for(self, tx: Transaction, saga_id: str, keys: Sequence[str], now: datetime) -> None:
        await tx.executemany(
            "INSERT INTO saga_lock_waits (saga_id, lock_key, queued_at) VALUES (?, ?, ?) "
            "ON CONFLICT (saga_id, lock_key) DO NOTHING",
            [(saga_id, key, write_time(now)) for key in keys],
        )

    async def stop_waiting(self, tx: Transaction, saga_id: str) -> None:
        await tx.execute("DELETE FROM saga_lock_waits WHERE saga_id = ?", (saga_id,))

    async def waiting_on(self, tx: Transaction, keys: Sequence[str]) -> list[str]:
        """Sagas queued for any of ``keys``, first come first served."""
        if not keys:
            return []
        marks = ", ".join("?" * len(keys))
        rows = await tx.fetchall(
            f"SELECT saga_id, MIN(id) AS first FROM saga_lock_waits WHERE lock_key IN ({marks}) "  # noqa: S608
            "GROUP BY saga_id ORDER BY first",
            tuple(keys),
        )
        return [str(row[0]) for row in rows]

    # --- audit -----------------------------------------------------------------------------------

    async def audit(
        self,
        tx: Transaction,
        saga_id: str,
        *,
        actor: str,
        action: str,
        reason: str,
        before: str,
        after: str,
        now: datetime,
    ) -> None:
        await tx.execute(
            "INSERT INTO saga_audit (saga_id, at, actor, action, reason, status_before, status_after) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (saga_id, write_time(now), actor, action, reason, before, after),
        )

    async def audit_trail(self, tx: Transaction, saga_id: str) -> list[AuditEntry]:
        rows = await tx.fetchall(
            "SELECT at, actor, action, reason, status_before, status_after FROM saga_audit "
            "WHERE saga_id = ? ORDER BY id",
            (saga_id,),
        )
        return [AuditEntry(_must_time(r[0]), *(str(v) for v in r[1:])) for r in rows]


def _saga_params(state: SagaState, stale_at: datetime | None) -> tuple[Any, ...]:
    return (
        state.saga_id,
        state.saga_type,
        state.status.value,
        state.current,
        write_json(dict(state.data)),
        state.correlation_id,
        state.entity_key,
        write_json(list(state.lock_keys)),
        state.reason,
        state.cancel_requested,
        write_time(state.started_at),
        write_time(state.updated_at),
        write_time(state.finished_at),
        write_time(state.wake_at()),
        write_time(stale_at),
        state.stuck_reported,
        state.version,
    )


def _step_params(step: StepState) -> tuple[Any, ...]:
    return (
        step.name,
        step.status.value,
        step.attempts,
        step.compensation_attempts,
        step.timeouts,
        step.command_id,
        write_time(step.deadline),
        write_json(list(step.errors)),
        write_json(dict(step.result)),
    )


def _saga(row: Row, steps: list[StepState]) -> SagaState:
    return SagaState(
        saga_id=str(row[0]),
        saga_type=str(row[1]),
        status=SagaStatus(row[2]),
        current=int(row[3]),
        data=read_json(row[4]),
        correlation_id=str(row[5]),
        entity_key=str(row[6]),
        lock_keys=tuple(read_json(row[7])),
        reason=str(row[8]),
        cancel_requested=bool(row[9]),
        started_at=_must_time(row[10]),
        updated_at=_must_time(row[11]),
        finished_at=read_time(row[12]),
        stuck_reported=bool(row[15]),
        version=int(row[16]),
        steps=tuple(steps),
    )


def _step(row: Row) -> StepState:
    result: Mapping[str, Any] = read_json(row[8])
    return StepState(
        name=str(row[0]),
        status=StepStatus(row[1]),
        attempts=int(row[2]),
        compensation_attempts=int(row[3]),
        timeouts=int(row[4]),
        command_id=str(row[5]),
        deadline=read_time(row[6]),
        errors=tuple(read_json(row[7])),
        result=result,
    )
