"""A run, as everything above the runtime's core sees it.

:mod:`~expman.run.context` is the context a pipeline sees and the handle executors
drive; :mod:`~expman.run.callbacks` delivers a run's events to its callbacks;
:mod:`~expman.run.view` is what a pipeline reads (shared with worker processes);
:mod:`~expman.run.records` holds a run's outcome and resume point.
"""
