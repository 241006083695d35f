"""SOM: TMF641 Service Ordering and the fulfilment saga orchestrator (docs/service-ordering.md)."""
