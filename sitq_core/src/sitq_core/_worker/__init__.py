"""The ``Worker``'s parts, one job per module, composed by ``sitq_core.worker.Worker``.

Each ``*Mixin``-like class here (``Lifecycle``, ``StoreExchange``, ...) holds the methods of one
concern and reads the worker's state as declared by ``state.WorkerState``; the helper modules
(``delays``, ``running``, ``failures``, ...) hold the module-level functions those share.
Private: import the public names from ``sitq_core.worker``.
"""
