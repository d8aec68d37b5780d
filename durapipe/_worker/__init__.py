"""The parts of a worker, each small, wired by one composition root (``durapipe._runner.Runner``).

- :mod:`.supervisor`: starts the side tasks; one that dies is logged and stops the worker.
- :mod:`.leases`: heartbeats, lost leases, stop/cancel requests, giving leases back.
- :mod:`.wakeups`: what a change in the database (``Store.watch``) wakes.
- :mod:`.logs`: the runs' log lines, shipped to the database (and a ``--log-file``).
"""
