"""Bad input never gets a 500: each value of a TMF sample body replaced by values of other types.

schemathesis (test_schemathesis.py) generates requests from the served OpenAPI documents;
this walks real TMF samples instead and, one value at a time, puts a list, an object, a
number, null, a boolean or a string where the sample had something else, then POSTs the
result through the whole application (security, input limits, routes); then PATCHes the
resource the sample created (when the API accepts the sample as it is) the same way. Each
answer must be a 2xx or a TMF error with a 4xx status. It found three 500s: an order item's ``action``, an
item relationship's ``id`` and a resource's status, each a list or object looked up in a set.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from strowger.app import create_app
from strowger.bootstrap import bootstrap
from strowger.security import hash_api_key
from strowger.security.settings import ApiKeyEntry, SecuritySettings
from strowger.settings import Settings

pytestmark = pytest.mark.integration

KEY = "stw_wrong-types-test-key-0123456789abcdefgh"
SAMPLES = Path(__file__).parent.parent / "fixtures/tmf-samples-v4"
WRONG_VALUES: list[Any] = [[], {}, 1, None, True, "x", [{"id": "1"}], {"id": "1"}]
# What the server sets itself: a sample sending them is refused before anything else is looked at.
SERVER_SET = ("id", "href", "state", "orderDate", "completionDate", "effectiveCancellationDate")
Path_ = tuple[str | int, ...]

CASES = {
    "productOrder": (
        "/tmf-api/productOrderingManagement/v4/productOrder",
        "TMF622_Product_Ordering__ProductOrder.example.json",
    ),
    "product": ("/tmf-api/productInventory/v4/product", "TMF637_Product_Inventory__Product.example.json"),
    "service": ("/tmf-api/serviceInventory/v4/service", "TMF638_Service_Inventory__Service.example.json"),
    "resource": (
        "/tmf-api/resourceInventoryManagement/v4/resource",
        "TMF639_Resource_Inventory__Resource.example.json",
    ),
    "topic": ("/tmf-api/event/v4/topic", "TMF688_Event__Topic.example.json"),
}


def sample(name: str) -> dict[str, Any]:
    document = orjson.loads((SAMPLES / name).read_bytes())
    document = document[0] if isinstance(document, list) else document
    for field in SERVER_SET:
        document.pop(field, None)
    for item in document.get("productOrderItem", []):
        item.pop("state", None)
    return dict(document)


def value_paths(document: Any, path: Path_ = ()) -> Iterator[Path_]:
    """The path of every value below the top level, depth first."""
    if isinstance(document, dict | list):
        for key, child in document.items() if isinstance(document, dict) else enumerate(document):
            yield (*path, key)
            yield from value_paths(child, (*path, key))


def replaced(document: dict[str, Any], path: Path_, value: Any) -> dict[str, Any]:
    copied = copy.deepcopy(document)
    parent: Any = copied
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return copied


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    platform = bootstrap(Settings(database_url=f"sqlite:///{tmp_path}/strowger.db"))
    platform.tasks, platform.runners = [], []  # requests only: no consumer acts on what is created
    entry = ApiKeyEntry(name="fuzzer", sha256=hash_api_key(KEY), scopes=("admin",))
    app = create_app(platform, SecuritySettings(api_keys=(entry,), api_keys_file=None))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://strowger", headers={"X-API-Key": KEY}
        ) as client:
            yield client


@pytest.mark.parametrize("case", sorted(CASES))
async def test_no_value_of_a_wrong_type_gets_a_server_error(http: httpx.AsyncClient, case: str) -> None:
    url, name = CASES[case]
    document = sample(name)
    server_errors: list[str] = []
    answered = 0
    for path in value_paths(document):
        for value in WRONG_VALUES:
            response = await http.post(url, content=orjson.dumps(replaced(document, path, value)))
            answered += 1
            if response.status_code >= 500:
                server_errors.append(f"{'.'.join(map(str, path))} = {value!r}: {response.status_code}")
            elif response.status_code >= 400:
                assert set(response.json()) >= {"code", "reason", "message", "status", "@type"}
    assert server_errors == []
    assert answered >= 3 * len(WRONG_VALUES)  # the sample has values to replace


@pytest.mark.parametrize("case", sorted(CASES))
async def test_no_patch_of_a_wrong_type_gets_a_server_error(http: httpx.AsyncClient, case: str) -> None:
    url, name = CASES[case]
    document = sample(name)
    created = await http.post(url, content=orjson.dumps(document))
    if created.status_code != 201:  # a sample the API refuses as it is: nothing to change
        assert created.status_code < 500
        return
    resource = created.json()
    server_errors: list[str] = []
    for path in value_paths(document):
        for value in WRONG_VALUES:
            patch = replaced(document, path, value)
            top = str(path[0])
            response = await http.patch(
                f"{url}/{resource['id']}",
                content=orjson.dumps({top: patch[top]}),
                headers={"Content-Type": "application/merge-patch+json"},
            )
            if response.status_code >= 500:
                server_errors.append(f"{'.'.join(map(str, path))} = {value!r}: {response.status_code}")
    assert server_errors == []
