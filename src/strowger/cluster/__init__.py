"""A multi-process Strowger deployment on one machine: ``strowger cluster up|down|status``.

* :mod:`strowger.cluster.plan` — which processes a cluster runs (one per component
  instance, from the component catalogue) and how each is configured;
* :mod:`strowger.cluster.supervisor` — starts them (``strowger run <component>``), waits
  for every ``/ready``, kills, restarts and stops them; the state lives in one JSON file
  so ``status`` and ``down`` work from another process;
* :mod:`strowger.cluster.routing` — an httpx transport that sends each request to an
  instance of the component serving its path (in the client, for tests and the CLI);
* :mod:`strowger.cluster.gateway` — the cluster's one HTTP entry point, its own process
  (``strowger cluster gateway``): the same routing as a server, for browsers and TMF clients.
"""

from strowger.cluster.plan import ClusterPlan, ProcessSpec, plan_cluster
from strowger.cluster.supervisor import Cluster, ProcessStatus

__all__ = ["Cluster", "ClusterPlan", "ProcessSpec", "ProcessStatus", "plan_cluster"]
