"""An in-memory dict backend for sitq (the example of plugins.md)."""

from sitq_dictstore.backend import DictStoreBackend

__all__ = ["DictStoreBackend"]
