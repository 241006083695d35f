"""The cluster's routing transport: which failures move a request on to the next instance."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from strowger.cluster.plan import plan_cluster
from strowger.cluster.routing import ClusterTransport

pytestmark = pytest.mark.unit
URLS = {"database_url": "postgresql://u:p@127.0.0.1:5433/db", "bus_url": "kafka://127.0.0.1:9192"}
ORDERS = "http://cluster/tmf-api/productOrderingManagement/v4/productOrder"


class FirstInstanceDies(httpx.AsyncBaseTransport):
    """The first instance asked fails as ``error``; any other answers 200. Records the ports asked."""

    def __init__(self, error: type[httpx.TransportError]) -> None:
        self.error = error
        self.ports: list[int | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.ports.append(request.url.port)
        if len(self.ports) == 1:
            raise self.error("gone", request=request)
        return httpx.Response(200, json=[])


def transport(tmp_path: Path, inner: httpx.AsyncBaseTransport) -> ClusterTransport:
    plan = plan_cluster(tmp_path, instances=2, **URLS)
    assert len(plan.instances_of("ordering")) == 2
    return ClusterTransport(plan, inner=inner)


async def test_a_refused_connection_moves_any_request_to_the_next_instance(tmp_path: Path) -> None:
    inner = FirstInstanceDies(httpx.ConnectError)
    async with httpx.AsyncClient(transport=transport(tmp_path, inner)) as client:
        response = await client.post(ORDERS, json={})
    assert response.status_code == 200
    assert len(set(inner.ports)) == 2  # never reached the first: safe to send elsewhere


async def test_a_post_cut_off_mid_request_is_not_sent_again(tmp_path: Path) -> None:
    inner = FirstInstanceDies(httpx.RemoteProtocolError)
    async with httpx.AsyncClient(transport=transport(tmp_path, inner)) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(ORDERS, json={})
    assert len(inner.ports) == 1  # the first instance may have created the order: no second one


async def test_a_get_cut_off_mid_request_is_sent_to_the_next_instance(tmp_path: Path) -> None:
    inner = FirstInstanceDies(httpx.RemoteProtocolError)
    async with httpx.AsyncClient(transport=transport(tmp_path, inner)) as client:
        response = await client.get(ORDERS)
    assert response.status_code == 200 and len(set(inner.ports)) == 2
