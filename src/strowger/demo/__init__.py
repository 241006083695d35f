"""`strowger demo` and `strowger bench e2e`: the fulfilment chain driven as a user drives it.

* :mod:`strowger.demo.orders` — the order generator (sample offerings, random customers) and
  the per-step fault rate that makes a chosen fraction of orders fail;
* :mod:`strowger.demo.harness` — an in-process platform served by a real uvicorn on loopback;
* :mod:`strowger.demo.drive` — submit orders over TMF622, wait until every one is terminal,
  measure, and check the run's invariants.
"""

BACKENDS = ("embedded", "postgres+kafka")  # what the in-process harness can run
