"""TMF678 Customer Bill Management: the API and the billing component's write path."""

from strowger.components.billing.api import (
    CUSTOMER_BILL_API,
    CUSTOMER_BILL_STATE,
    CustomerBilling,
    customer_bill_router,
)

__all__ = ["CUSTOMER_BILL_API", "CUSTOMER_BILL_STATE", "CustomerBilling", "customer_bill_router"]
