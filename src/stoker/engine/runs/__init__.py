"""Runs as callers see them, outside the paths that create and end them.

* :mod:`~stoker.engine.runs.watcher` — waiting for runs to finish (the ``AwaitRuns``
  long-poll), fed by whatever ends runs in this process and by other replicas' signals;
* :mod:`~stoker.engine.runs.ops` — cancel and replay, one run or in bulk (request-driven:
  called by the API and the gRPC servicers, not a loop).
"""
