"""The component catalogue: parsing, invariants, and agreement with what bootstrap actually wires."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from strowger.bootstrap import Platform, bootstrap
from strowger.components.registry import ALL, COMPONENTS, component_names, owner_of, parse_component
from strowger.errors import ConfigError
from strowger.settings import Settings

DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # Kubernetes object names
SQL_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")  # unquoted PostgreSQL names


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Platform:
    """The whole platform as bootstrap builds it (built, never started: no I/O)."""
    db = Path(tmp_path_factory.mktemp("registry")) / "never-opened.db"
    return bootstrap(Settings(database_url=f"sqlite:///{db}"))


def wired_parts(platform: Platform) -> set[str]:
    return {name.removeprefix("consumer:") for name, _ in platform.tasks}


def route_paths(platform: Platform) -> set[str]:
    return {route.path for router in platform.routers for route in router.routes}


def test_parse_component_returns_the_named_component() -> None:
    ordering = parse_component("ordering")
    assert ordering.name == "ordering"
    assert ordering.serves_http
    assert "ordering-validation" in ordering.consumers


def test_an_unknown_component_is_a_config_error_listing_the_choices() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_component("orderin")
    error = raised.value
    assert error.setting == "STROWGER_COMPONENT"
    assert error.got == "orderin"
    assert error.expected.startswith("one of: all, catalog, ordering, ")
    for name in component_names():
        assert name in error.expected


def test_names_are_case_sensitive() -> None:
    with pytest.raises(ConfigError):
        parse_component("Ordering")


def test_the_catalogue_has_the_twelve_deployable_components() -> None:
    assert [component.name for component in COMPONENTS] == [
        "catalog",
        "ordering",
        "service-ordering",
        "resource-ordering",
        "activation",
        "inventory",
        "billing",
        "notification",
        "analytics",
        "hub-delivery",
        "relay",
        "operations",
    ]


def test_names_schemas_and_roles_are_valid_and_unique() -> None:
    for component in COMPONENTS:
        assert DNS_LABEL.match(component.name), component.name
        assert SQL_IDENTIFIER.match(component.schema), component.schema
        assert SQL_IDENTIFIER.match(component.role), component.role
    for attribute in ("name", "schema", "role"):
        counts = Counter(getattr(component, attribute) for component in COMPONENTS)
        assert [value for value, n in counts.items() if n > 1] == [], attribute


def test_every_part_belongs_to_exactly_one_component() -> None:
    counts = Counter(part for component in COMPONENTS for part in component.parts)
    assert [part for part, n in counts.items() if n > 1] == []
    assert owner_of("outbox-relay").name == "relay"
    with pytest.raises(KeyError):
        owner_of("nobody")


def test_planned_parts_are_parts_of_their_component() -> None:
    for component in COMPONENTS:
        assert set(component.planned) <= set(component.parts), component.name


def test_all_is_the_union_of_every_component() -> None:
    everything = parse_component(ALL)
    assert everything.name == ALL
    for component in COMPONENTS:
        for part in component.parts:
            assert everything.runs(part)
    assert len(everything.parts) == sum(len(component.parts) for component in COMPONENTS)


def test_every_task_bootstrap_wires_is_catalogued_and_not_marked_planned(platform: Platform) -> None:
    for part in wired_parts(platform):
        owner = owner_of(part)  # KeyError: a consumer or task missing from the catalogue
        assert part not in owner.planned, f"{part} is wired: remove it from {owner.name}.planned"


def test_every_available_part_is_wired_by_bootstrap(platform: Platform, tmp_path: Path) -> None:
    # A split cluster (one schema per component) wires a few parts a one-schema platform does not.
    split = bootstrap(Settings(database_url=f"sqlite:///{tmp_path}/x.db", database_schemas={"x": "x"}))
    wired = wired_parts(platform) | wired_parts(split)
    paths = route_paths(platform)
    for component in COMPONENTS:
        for part in component.parts:
            if part in component.planned:
                continue
            if part.startswith("/"):
                assert any(path.startswith(part) for path in paths), (
                    f"{component.name}: no route under {part}"
                )
            else:
                assert part in wired, f"{component.name}: {part} is not wired (mark it planned?)"


def test_every_route_bootstrap_serves_belongs_to_a_component_api(platform: Platform) -> None:
    apis = [api for component in COMPONENTS for api in component.http_apis]
    for path in route_paths(platform):
        assert any(path == api or path.startswith(api + "/") for api in apis), path
