"""TMF620 Product Catalog Management: catalogs, categories, specifications, offerings and prices."""

from strowger.components.catalog.api import CATALOG_API, PRODUCT_LIFECYCLE, catalog_router

__all__ = ["CATALOG_API", "PRODUCT_LIFECYCLE", "catalog_router"]
