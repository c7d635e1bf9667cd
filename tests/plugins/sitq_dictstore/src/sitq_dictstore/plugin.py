"""sitq-dictstore's plugin module: registers the backend by import string."""

from sitq_core.hookspecs import BackendRegistrar, hookimpl


@hookimpl
def sitq_register_backends(register: BackendRegistrar) -> None:
    register("dictstore", "sitq_dictstore.backend:DictStoreBackend", description="in-memory dicts")
