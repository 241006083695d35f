"""Strowger: an event-driven BSS/OSS backbone for telecom operators."""

__version__ = "0.1.0"
