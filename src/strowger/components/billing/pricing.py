"""What a completed product order costs, from the TMF620 catalog's prices, pure.

An ``add`` item that reached ``completed`` is charged every ``productOfferingPrice``
its offering lists: ``recurring`` (the first period's fee) and ``oneTime``
(activation) are charges, ``discount`` is a negative line. A bundle offering
(``isBundle``) is charged its components' prices (the item's child
``productOrderItem``\\ s, or else the catalog's ``bundledProductOffering``) plus
the bundle's own prices (the sample bundle's monthly discount). Other price
types (usage, allowance) are rated elsewhere and ignored here.

Each line is keyed by (order id, item id, price id, kind): the ledger's unique
constraint on that key is what makes charging idempotent whichever event
causes it. A bundle component's item id is ``<bundle item id>/<child item id
or offering id>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from strowger.errors import PermanentError

Document = Mapping[str, Any]
CENT = Decimal("0.01")


class PriceKind(StrEnum):
    """The TMF620 ``priceType`` values billing charges at order completion."""

    RECURRING = "recurring"
    ONE_TIME = "oneTime"
    DISCOUNT = "discount"


# TMF678 appliedBillingRateType: charges are recurringCharge/oneTimeCharge, credits rebate/productAlteration.
RATE_TYPES = {
    PriceKind.RECURRING: "recurringCharge",
    PriceKind.ONE_TIME: "oneTimeCharge",
    PriceKind.DISCOUNT: "rebate",
}


class UnpricedItem(PermanentError):
    """A completed item names an offering or price the catalog does not have (any more)."""


@dataclass(frozen=True, slots=True)
class Price:
    """One catalog price, as billing needs it."""

    id: str
    name: str
    kind: PriceKind
    value: Decimal  # as the catalog writes it: positive, even for a discount
    unit: str
    period: str = ""  # recurringChargePeriodType, e.g. "month"

    @property
    def signed(self) -> Decimal:
        """The amount charged: a discount takes money off."""
        return -self.value if self.kind is PriceKind.DISCOUNT else self.value


@dataclass(frozen=True, slots=True)
class ChargeKey:
    order_id: str
    item_id: str
    price_id: str
    kind: str


@dataclass(frozen=True, slots=True)
class ChargeLine:
    """One line billing records for a completed item."""

    key: ChargeKey
    amount: Decimal  # signed, to the cent
    unit: str
    name: str
    offering_id: str
    product_id: str
    billing_account: str
    period: str = ""

    @property
    def rate_type(self) -> str:
        return RATE_TYPES[PriceKind(self.key.kind)]


@dataclass(frozen=True)
class PriceBook:
    """Product offerings and their prices, by id."""

    offerings: Mapping[str, Document]
    prices: Mapping[str, Price]
    ignored: frozenset[str] = frozenset()  # prices of a type billing does not charge at completion

    @classmethod
    def from_documents(cls, offerings: Iterable[Document], prices: Iterable[Document]) -> PriceBook:
        documents = [price for price in prices if price.get("id")]
        parsed = {str(document["id"]): _price(document) for document in documents}
        return cls(
            offerings={str(offering["id"]): offering for offering in offerings if offering.get("id")},
            prices={price_id: price for price_id, price in parsed.items() if price is not None},
            ignored=frozenset(price_id for price_id, price in parsed.items() if price is None),
        )

    def prices_of(self, offering_id: str) -> list[Price]:
        """The chargeable prices ``offering_id`` lists; UnpricedItem if it or a price is unknown."""
        offering = self.offering(offering_id)
        prices = []
        for ref in offering.get("productOfferingPrice") or ():
            price_id = str(ref.get("id") or "")
            if price_id in self.ignored:
                continue  # a usage or allowance price: rated elsewhere
            if price_id not in self.prices:
                raise UnpricedItem(
                    f"productOffering {offering_id!r}: price {price_id!r} is not in the catalog"
                )
            prices.append(self.prices[price_id])
        return prices

    def offering(self, offering_id: str) -> Document:
        offering = self.offerings.get(offering_id)
        if offering is None:
            raise UnpricedItem(f"productOffering {offering_id!r} is not in the catalog")
        return offering


def _price(document: Document) -> Price | None:
    """A chargeable price, or None for a type charged elsewhere (usage, allowance...)."""
    try:
        kind = PriceKind(str(document.get("priceType")))
    except ValueError:
        return None
    money = document.get("price") or {}
    return Price(
        id=str(document["id"]),
        name=str(document.get("name") or document["id"]),
        kind=kind,
        value=Decimal(str(money.get("value", 0))).quantize(CENT),
        unit=str(money.get("unit") or "EUR"),
        period=str(document.get("recurringChargePeriodType") or "") if kind is not PriceKind.ONE_TIME else "",
    )


def charge_lines(order: Document, book: PriceBook) -> list[ChargeLine]:
    """The lines of every completed ``add`` item of ``order`` (completed or partial)."""
    order_id = str(order["id"])
    lines: list[ChargeLine] = []
    for item in order.get("productOrderItem") or ():
        if item.get("state") == "completed" and item.get("action") == "add":
            lines.extend(_item_lines(order, item, book, order_id))
    return lines


def product_id_of(order_id: str, item: Document) -> str:
    """The TMF637 product an item creates (the rule ordering's inventory recording uses)."""
    product = item.get("product") or {}
    return str(product.get("id") or f"{order_id}-{item['id']}")


def _item_lines(order: Document, item: Document, book: PriceBook, order_id: str) -> list[ChargeLine]:
    offering_id = str((item.get("productOffering") or {}).get("id") or "")
    item_id = str(item["id"])
    context = _Context(
        order_id=order_id,
        product_id=product_id_of(order_id, item),
        billing_account=_billing_account(item, order),
    )
    lines = context.lines(item_id, offering_id, book.prices_of(offering_id))
    if book.offering(offering_id).get("isBundle"):
        for component_id, component_offering in _components(item, book.offering(offering_id)):
            path = f"{item_id}/{component_id}"
            lines.extend(context.lines(path, component_offering, book.prices_of(component_offering)))
    return lines


@dataclass(frozen=True, slots=True)
class _Context:
    order_id: str
    product_id: str
    billing_account: str

    def lines(self, item_id: str, offering_id: str, prices: Sequence[Price]) -> list[ChargeLine]:
        return [
            ChargeLine(
                key=ChargeKey(self.order_id, item_id, price.id, price.kind.value),
                amount=price.signed,
                unit=price.unit,
                name=price.name,
                offering_id=offering_id,
                product_id=self.product_id,
                billing_account=self.billing_account,
                period=price.period,
            )
            for price in prices
        ]


def _components(item: Document, bundle: Document) -> list[tuple[str, str]]:
    """(component id, offering id) of a bundle item: its child items, else the catalog's list."""
    children = item.get("productOrderItem") or ()
    if children:
        return [
            (str(child["id"]), str((child.get("productOffering") or {}).get("id") or ""))
            for child in children
            if child.get("action", "add") == "add"
        ]
    return [(str(ref["id"]), str(ref["id"])) for ref in bundle.get("bundledProductOffering") or ()]


def _billing_account(item: Document, order: Document) -> str:
    for holder in (item, order):
        account = holder.get("billingAccount")
        if isinstance(account, Mapping) and account.get("id"):
            return str(account["id"])
    raise UnpricedItem(f"productOrderItem {item.get('id')!r}: no billingAccount on the item nor the order")
