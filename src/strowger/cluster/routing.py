"""An httpx transport that plays the gateway: each request goes to a component serving its path.

Requests rotate over a component's instances; a refused connection (an instance killed a
moment ago) moves on to the next one, as a load balancer's health check would.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import httpx

from strowger.cluster.plan import ClusterPlan
from strowger.components.registry import COMPONENTS

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})  # RFC 9110, 9.2.2


class ClusterTransport(httpx.AsyncBaseTransport):
    """Route by API base path (from the component catalogue) to the plan's instances."""

    def __init__(
        self,
        plan: ClusterPlan,
        alive: Callable[[str], bool] | None = None,
        limits: httpx.Limits | None = None,  # the connection pool (a load test wants it wider)
        inner: httpx.AsyncBaseTransport | None = None,  # what sends the requests (tests pass a fake)
    ) -> None:
        if inner is None:
            inner = httpx.AsyncHTTPTransport(limits=limits) if limits else httpx.AsyncHTTPTransport()
        self._inner = inner
        self._alive = alive or (lambda name: True)
        self._routes = sorted(
            ((api, component.name) for component in COMPONENTS for api in component.http_apis),
            key=lambda route: -len(route[0]),  # the longest prefix wins
        )
        self._ports = {
            component.name: [(spec.name, spec.port) for spec in plan.instances_of(component.name)]
            for component in COMPONENTS
        }
        self._turns = {name: itertools.count() for name in self._ports}

    def component_for(self, path: str) -> str:
        for api, component in self._routes:
            if path == api or path.startswith(api + "/") or path.startswith(api + "?"):
                return component
        raise httpx.UnsupportedProtocol(f"no component of the cluster serves {path}")

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        component = self.component_for(request.url.path)
        instances = self._ports[component]
        start = next(self._turns[component])
        ordered = [instances[(start + offset) % len(instances)] for offset in range(len(instances))]
        candidates = [port for name, port in ordered if self._alive(name)] or [port for _, port in ordered]
        error: httpx.TransportError | None = None
        for port in candidates:
            request.url = request.url.copy_with(scheme="http", host="127.0.0.1", port=port)
            try:
                return await self._inner.handle_async_request(request)
            except httpx.ConnectError as exc:
                error = exc  # killed or restarting, the request never reached it: the next one answers
            except httpx.RemoteProtocolError as exc:
                # It went down while holding the request: it may have acted on it. Only a request
                # that may safely run twice is sent again; a POST's caller must find out (externalId).
                if request.method not in IDEMPOTENT_METHODS:
                    raise
                error = exc
        assert error is not None
        raise error

    async def aclose(self) -> None:
        await self._inner.aclose()
