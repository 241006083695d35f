"""The billing ledger: charges for completed orders and the credits that compensate them.

Every charge line (``pricing.ChargeLine``) becomes one row of ``billing_charge``
and one TMF678 ``appliedCustomerBillingRate``, in the caller's transaction. The
row's primary key (order id, item id, price id, kind, entry) is the guarantee
against double charging: the consumer runtime's inbox drops a redelivered
event, the key drops a second, different event that would cause the same charge
(a replay, a second completion notification).

Compensation never deletes: a credit is a second row (``entry = 'credit'``) and a
second rate with the opposite amount (``appliedBillingRateType``
``productAlteration``), at most one per charge. So ``charges_minus_credits`` of
an order is exactly the prices of what it delivered and kept.

Amounts are stored in cents (integers) so sums are exact on both backends;
rates carry ``taxExcludedAmount`` (tax is applied at the bill run).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from strowger.components.billing.api import CustomerBilling
from strowger.components.billing.pricing import CENT, ChargeKey, ChargeLine, PriceBook, charge_lines
from strowger.components.catalog.api import CATALOG_API
from strowger.events.envelope import format_time, utcnow
from strowger.store.db import Database, TableSet, Transaction

CHARGE = "charge"
CREDIT = "credit"
CREDIT_RATE_TYPE = "productAlteration"
_RATE_NAMESPACE = uuid.UUID("5f1d3c52-8a4e-4f0b-9a57-2c1e6b7d9e10")

_COLUMNS = """order_id TEXT NOT NULL, item_id TEXT NOT NULL, price_id TEXT NOT NULL, kind TEXT NOT NULL,
            entry TEXT NOT NULL, amount_cents BIGINT NOT NULL, unit TEXT NOT NULL, rate_id TEXT NOT NULL,
            billing_account TEXT NOT NULL, offering_id TEXT NOT NULL, product_id TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '', recorded_at TEXT NOT NULL,
            PRIMARY KEY (order_id, item_id, price_id, kind, entry)"""

BILLING_TABLES = TableSet(
    name="billing",
    sqlite=[
        f"CREATE TABLE IF NOT EXISTS billing_charge ({_COLUMNS})",
        "CREATE INDEX IF NOT EXISTS billing_charge_product ON billing_charge (product_id)",
    ],
    postgresql=[
        f"CREATE TABLE IF NOT EXISTS billing_charge ({_COLUMNS})",
        "CREATE INDEX IF NOT EXISTS billing_charge_product ON billing_charge (product_id)",
    ],
)


@dataclass(frozen=True, slots=True)
class Totals:
    """An order's (or the whole ledger's) charges and credits in one currency; credits are positive."""

    unit: str
    charges: Decimal
    credits: Decimal

    @property
    def net(self) -> Decimal:
        return self.charges - self.credits


async def read_price_book(tx: Transaction) -> PriceBook:
    """Offerings and prices from the TMF620 tables, as ``tx`` sees them."""
    documents: dict[str, list[Mapping[str, Any]]] = {}
    for name in ("productOffering", "productOfferingPrice"):
        rows = await tx.fetchall(
            "SELECT body FROM catalog_resource WHERE collection = ?", (f"{CATALOG_API.name}/{name}",)
        )
        documents[name] = [
            orjson.loads(row[0]) if isinstance(row[0], str | bytes) else row[0] for row in rows
        ]
    return PriceBook.from_documents(documents["productOffering"], documents["productOfferingPrice"])


class BillingLedger:
    """Charges and credits, each recorded once, each mirrored as a TMF678 applied rate."""

    def __init__(self, database: Database, billing: CustomerBilling) -> None:
        self.database = database
        self.billing = billing

    async def ensure_tables(self) -> None:
        await self.database.create_tables(BILLING_TABLES)
        await self.billing.ensure_tables()

    async def charge_order(self, tx: Transaction, order: Mapping[str, Any], book: PriceBook) -> int:
        """Charge the completed ``add`` items of ``order`` not charged yet; returns the new lines' count."""
        return await self.charge(tx, charge_lines(order, book), when=_completion(order))

    async def charge(self, tx: Transaction, lines: Iterable[ChargeLine], when: datetime | None = None) -> int:
        moment = when or utcnow()
        recorded = 0
        for line in lines:
            rate_id = _rate_id(line.key, CHARGE)
            if await self._insert(tx, line.key, CHARGE, line, _cents(line.amount), rate_id, "", moment):
                await self.billing.record_rate(tx, _charge_rate(rate_id, line, moment))
                recorded += 1
        return recorded

    async def credit_order(self, tx: Transaction, order_id: str, reason: str) -> int:
        """Credit every charge of ``order_id`` not credited yet (saga compensation, a cancelled order)."""
        return await self._credit(tx, "order_id = ?", (order_id,), reason)

    async def credit_product(
        self, tx: Transaction, product_id: str, reason: str, *, recurring_only: bool
    ) -> int:
        """Credit the charges of one product (a termination credits its recurring fees, not activation)."""
        condition = "product_id = ?" + (" AND kind <> 'oneTime'" if recurring_only else "")
        return await self._credit(tx, condition, (product_id,), reason)

    async def _credit(self, tx: Transaction, condition: str, params: tuple[Any, ...], reason: str) -> int:
        # ``condition`` is one of this class's fixed clauses; values travel as parameters.
        rows = await tx.fetchall(
            "SELECT order_id, item_id, price_id, kind, amount_cents, unit, billing_account, offering_id,"  # noqa: S608
            " product_id FROM billing_charge c"
            f" WHERE entry = 'charge' AND {condition} AND NOT EXISTS (SELECT 1 FROM billing_charge d"
            " WHERE d.order_id = c.order_id AND d.item_id = c.item_id AND d.price_id = c.price_id"
            " AND d.kind = c.kind AND d.entry = 'credit')"
            " ORDER BY order_id, item_id, price_id, kind",
            params,
        )
        moment = utcnow()
        credited = 0
        for order_id, item_id, price_id, kind, cents, unit, account, offering_id, product_id in rows:
            key = ChargeKey(order_id, item_id, price_id, kind)
            line = ChargeLine(
                key, _amount(-cents), unit, f"Credit: {price_id}", offering_id, product_id, account
            )
            rate_id = _rate_id(key, CREDIT)
            if await self._insert(tx, key, CREDIT, line, -int(cents), rate_id, reason, moment):
                await self.billing.record_rate(tx, _credit_rate(rate_id, line, reason, moment))
                credited += 1
        return credited

    async def _insert(
        self,
        tx: Transaction,
        key: ChargeKey,
        entry: str,
        line: ChargeLine,
        cents: int,
        rate_id: str,
        reason: str,
        moment: datetime,
    ) -> bool:
        inserted = await tx.execute(
            "INSERT INTO billing_charge (order_id, item_id, price_id, kind, entry, amount_cents, unit,"
            " rate_id, billing_account, offering_id, product_id, reason, recorded_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (
                key.order_id,
                key.item_id,
                key.price_id,
                key.kind,
                entry,
                cents,
                line.unit,
                rate_id,
                line.billing_account,
                line.offering_id,
                line.product_id,
                reason,
                format_time(moment),
            ),
        )
        return inserted == 1

    async def totals(self, order_id: str | None = None) -> dict[str, Totals]:
        """Charges and credits by currency, of one order or of every order."""
        where, params = ("WHERE order_id = ?", (order_id,)) if order_id else ("", ())
        rows = await self.database.fetchall(
            "SELECT unit, SUM(CASE WHEN entry = 'charge' THEN amount_cents ELSE 0 END),"  # noqa: S608
            " SUM(CASE WHEN entry = 'credit' THEN -amount_cents ELSE 0 END)"
            f" FROM billing_charge {where} GROUP BY unit",
            params,
        )
        return {
            unit: Totals(unit, _amount(charged or 0), _amount(credited or 0))
            for unit, charged, credited in rows
        }

    async def charges_minus_credits(self, order_id: str, unit: str = "EUR") -> Decimal:
        """What ``order_id`` costs after compensation, in ``unit``."""
        totals = (await self.totals(order_id)).get(unit)
        return totals.net if totals else Decimal("0.00")

    async def net_by_order(self, unit: str = "EUR") -> dict[str, Decimal]:
        """Every charged order's net, for invariant checks over a whole run."""
        rows = await self.database.fetchall(
            "SELECT order_id, SUM(amount_cents) FROM billing_charge WHERE unit = ? GROUP BY order_id", (unit,)
        )
        return {order_id: _amount(cents) for order_id, cents in rows}


def _rate_id(key: ChargeKey, entry: str) -> str:
    """Deterministic, so recording the same line twice upserts one rate."""
    return str(
        uuid.uuid5(_RATE_NAMESPACE, "|".join((key.order_id, key.item_id, key.price_id, key.kind, entry)))
    )


def _cents(amount: Decimal) -> int:
    return int((amount.quantize(CENT) * 100).to_integral_value())


def _amount(cents: int | Decimal) -> Decimal:
    return (Decimal(int(cents)) / 100).quantize(CENT)


def _completion(order: Mapping[str, Any]) -> datetime | None:
    text = order.get("completionDate")
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else None


def _characteristics(key: ChargeKey, **more: str) -> list[dict[str, str]]:
    values = {
        "productOrderId": key.order_id,
        "productOrderItemId": key.item_id,
        "productOfferingPriceId": key.price_id,
    }
    values.update(more)
    return [{"name": name, "valueType": "string", "value": value} for name, value in values.items() if value]


def _rate(rate_id: str, line: ChargeLine, moment: datetime) -> dict[str, Any]:
    return {
        "id": rate_id,
        "date": format_time(moment),
        "isBilled": False,
        "taxExcludedAmount": {"unit": line.unit, "value": float(line.amount)},
        "billingAccount": {"id": line.billing_account, "@referredType": "BillingAccount"},
        "product": {"id": line.product_id, "@referredType": "Product"},
        "@type": "AppliedCustomerBillingRate",
    }


def _charge_rate(rate_id: str, line: ChargeLine, moment: datetime) -> dict[str, Any]:
    rate = _rate(rate_id, line, moment)
    rate.update(
        appliedBillingRateType=line.rate_type,
        name=line.name,
        description=f"{line.name} ({line.offering_id})",
        characteristic=_characteristics(line.key, priceKind=line.key.kind),
    )
    if line.period == "month":
        rate["periodCoverage"] = {
            "startDateTime": format_time(moment),
            "endDateTime": format_time(_next_month(moment)),
        }
    return rate


def _credit_rate(rate_id: str, line: ChargeLine, reason: str, moment: datetime) -> dict[str, Any]:
    rate = _rate(rate_id, line, moment)
    rate.update(
        appliedBillingRateType=CREDIT_RATE_TYPE,
        name=line.name,
        description=reason or "credit",
        characteristic=_characteristics(
            line.key, priceKind=line.key.kind, creditOf=_rate_id(line.key, CHARGE)
        ),
    )
    return rate


def _next_month(moment: datetime) -> datetime:
    """The same instant a calendar month later (clamped to the month's last day)."""
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    for day in range(moment.day, 27, -1):
        try:
            return moment.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    return moment.replace(year=year, month=month, day=min(moment.day, 28))
