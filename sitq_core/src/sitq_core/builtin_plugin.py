"""sitq-core's own plugin: the built-in serializers, registered like any other."""

from __future__ import annotations

from .hookspecs import SerializerRegistrar, hookimpl


@hookimpl
def sitq_register_serializers(register: SerializerRegistrar) -> None:
    register(
        "cloudpickle",
        "sitq_core.serializers:CloudpickleSerializer",
        description="Python objects, lambdas and closures (trusted writers only)",
    )
    register(
        "msgpack",
        "sitq_core.serializers:MsgpackSerializer",
        description="msgpack data; functions by import path, no code in the payload",
    )
