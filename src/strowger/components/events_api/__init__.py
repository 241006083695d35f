"""TMF688 Event Management: topics, publishing events to the bus through the API, topic listeners."""

from strowger.components.events_api.api import event_api, event_router, not_owned_by_a_component

__all__ = ["event_api", "event_router", "not_owned_by_a_component"]
