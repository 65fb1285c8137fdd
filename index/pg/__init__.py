"""The PostgreSQL + pgvector backend: `PostgresStore.open(url, PostgresConfig())`."""

from .config import PostgresConfig
from .store import PostgresStore

__all__ = ["PostgresConfig", "PostgresStore"]
