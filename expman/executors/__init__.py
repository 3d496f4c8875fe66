"""Execution backends: where runs execute (:mod:`expman.executors.base` states the contract).

==========  ===================================================================
executor    where a run's pipeline runs
==========  ===================================================================
``async``   in the event loop (``async def run``; a sync ``run`` in a thread)
``thread``  the same executor: sync pipelines in worker threads
``process`` a fresh worker process per run (:mod:`expman.executors.process`)
``ray``     a Ray actor per run on a Ray cluster (:mod:`expman.executors.ray`)
==========  ===================================================================

Nothing is imported here: a worker process imports :mod:`expman.executors.worker`
and only what it needs.  :func:`~expman.executors.choice.make_executor` picks a backend.
"""
