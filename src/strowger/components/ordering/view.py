"""The read model of the ordering API: one row per order and per cancel task, kept current by the
command side IN the transaction that appends the events (so a list read right after a write sees it).

The event store is the write model; these tables are disposable and could be
rebuilt by replaying it. ``GET /productOrder`` (list, filters, fields,
pagination) reads here; ``GET /productOrder/{id}`` replays the aggregate.
``state=`` filters run in SQL on the ``state`` column, and a page with no other
filter and no sort is cut by the database; other TMF630 filters and sorts run in
Python after the SQL read (as in ``strowger.tmf``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from strowger.store.db import Database, TableSet, Transaction
from strowger.tmf.query import Condition, Op, Page, ResourceQuery
from strowger.tmf.resources import select_page

Document = dict[str, Any]


def _table(name: str, key_columns: str, body_type: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {name} (id TEXT PRIMARY KEY, {key_columns}, "
        f"version INTEGER NOT NULL, body {body_type} NOT NULL)"
    )


# The lists' order, so that a page is read by index (``_list``).
_LIST_INDEXES = [
    "CREATE INDEX IF NOT EXISTS product_order_view_date ON product_order_view (order_date, id)",
    "CREATE INDEX IF NOT EXISTS product_order_view_state ON product_order_view (state, order_date, id)",
    "CREATE INDEX IF NOT EXISTS cancel_product_order_view_created "
    "ON cancel_product_order_view (created_at, id)",
]

VIEW_TABLES = TableSet(
    name="ordering-views",
    sqlite=[
        _table("product_order_view", "state TEXT NOT NULL, order_date TEXT NOT NULL", "TEXT"),
        _table("cancel_product_order_view", "order_id TEXT NOT NULL, created_at TEXT NOT NULL", "TEXT"),
        *_LIST_INDEXES,
    ],
    postgresql=[
        _table("product_order_view", "state TEXT NOT NULL, order_date TEXT NOT NULL", "JSONB"),
        _table("cancel_product_order_view", "order_id TEXT NOT NULL, created_at TEXT NOT NULL", "JSONB"),
        *_LIST_INDEXES,
    ],
)

_UPSERT_ORDER = (
    "INSERT INTO product_order_view (id, state, order_date, version, body) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET state = excluded.state, version = excluded.version, body = excluded.body"
)
_UPSERT_TASK = (
    "INSERT INTO cancel_product_order_view (id, order_id, created_at, version, body) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET version = excluded.version, body = excluded.body"
)


def _is_state_filter(condition: Condition) -> bool:
    return condition.path == ("state",) and condition.op is Op.EQ


def _state_filter(query: ResourceQuery) -> tuple[str, ...] | None:
    """The states every ``state=`` filter of ``query`` allows (their intersection), or None."""
    allowed: set[str] | None = None
    for condition in query.conditions:
        if _is_state_filter(condition):
            values = set(condition.values)
            allowed = values if allowed is None else allowed & values
    return None if allowed is None else tuple(sorted(allowed))


def _marks(values: tuple[str, ...]) -> str:
    return ", ".join("?" * len(values)) if values else "NULL"  # IN (NULL): no row


def _body(raw: Any) -> Document:
    loaded = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    if not isinstance(loaded, dict):
        raise TypeError(f"a view row holds {type(loaded).__name__}, not an object")
    return loaded


class OrderView:
    """Reads and writes of the two view tables."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def put_order(self, tx: Transaction, order: Mapping[str, Any], version: int) -> None:
        body = orjson.dumps(order).decode()
        await tx.execute(_UPSERT_ORDER, (order["id"], order["state"], order["orderDate"], version, body))

    async def remove_order(self, tx: Transaction, order_id: str) -> None:
        await tx.execute("DELETE FROM product_order_view WHERE id = ?", (order_id,))
        await tx.execute("DELETE FROM cancel_product_order_view WHERE order_id = ?", (order_id,))

    async def put_task(self, tx: Transaction, task: Mapping[str, Any], created_at: str, version: int) -> None:
        body = orjson.dumps(task).decode()
        order_id = task["productOrder"]["id"]
        await tx.execute(_UPSERT_TASK, (task["id"], order_id, created_at, version, body))

    async def orders(self, query: ResourceQuery) -> Page:
        return await self._list("product_order_view", "order_date", query, state_column=True)

    async def tasks(self, query: ResourceQuery) -> Page:
        return await self._list("cancel_product_order_view", "created_at", query)

    async def _list(
        self, table: str, created: str, query: ResourceQuery, *, state_column: bool = False
    ) -> Page:
        """A page of ``table`` in creation order (or ``query``'s sort), by :func:`select_page`.

        ``state=a,b`` filters go to SQL on the ``state`` column (exact: TMF state names are
        plain strings, never numbers or times, so TMF630's comparison is string equality).
        """
        states = _state_filter(query) if state_column else None
        if states is None:
            return await select_page(self.database, table, (), f"{created}, id", query, _body)
        source = f"{table} WHERE state IN ({_marks(states)})"
        return await select_page(
            self.database, source, states, f"{created}, id", query, _body, in_sql=_is_state_filter
        )

    async def task(self, task_id: str) -> Document | None:
        row = await self.database.fetchone(
            "SELECT body FROM cancel_product_order_view WHERE id = ?", (task_id,)
        )
        return _body(row[0]) if row else None
