"""Storage: the database port and its SQLite and PostgreSQL adapters, outbox, inbox, event store."""

from strowger.store.db import Database, Row, TableSet, Transaction, open_database

__all__ = ["Database", "Row", "TableSet", "Transaction", "open_database"]
