"""Events: the envelope, the topic catalogue and the schema registry."""

from strowger.events.envelope import Category, Envelope, Header, Message, decode, encode

__all__ = ["Category", "Envelope", "Header", "Message", "decode", "encode"]
