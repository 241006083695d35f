"""``strowger cluster provision``: a long-lived deployment's schemas and roles (Kubernetes Job).

Unlike ``cluster up`` it takes each component's password from that component's own URL (its
Secret), may run again at any time (upgrades, directory refresh) and never drops anything.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import psycopg
import pytest

from strowger.cluster.plan import ClusterPlan, deployment_plan
from strowger.cluster.provision import (
    ProvisionError,
    database_url_as,
    deprovision,
    provision_deployment,
    role_of,
    schema_of,
)

pytestmark = pytest.mark.integration


def component_urls(plan: ClusterPlan, admin_url: str) -> dict[str, str]:
    """What each component's Secret would hold: its role and a password of its own."""
    return {
        spec.component: database_url_as(admin_url, role_of(plan, spec.component), secrets.token_urlsafe(12))
        for spec in plan.processes
    }


@pytest.fixture
async def deployment(postgres_url: str) -> AsyncIterator[ClusterPlan]:
    plan = deployment_plan(postgres_url, f"k8s_{secrets.token_hex(3)}")
    try:
        yield plan
    finally:
        await deprovision(plan)


async def whoami(url: str) -> tuple[str, str]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
        cursor = await connection.execute("SELECT current_user, current_schema()")
        row = await cursor.fetchone()
        assert row is not None
        return str(row[0]), str(row[1])


async def test_each_component_logs_in_with_the_password_of_its_own_secret(deployment: ClusterPlan) -> None:
    urls = component_urls(deployment, deployment.database_url)
    await provision_deployment(deployment, urls)
    for component in ("ordering", "billing", "relay"):
        user, schema = await whoami(urls[component])
        assert (user, schema) == (role_of(deployment, component), schema_of(deployment, component))


async def test_running_it_again_keeps_the_data_and_takes_the_new_passwords(deployment: ClusterPlan) -> None:
    first = component_urls(deployment, deployment.database_url)
    await provision_deployment(deployment, first)
    async with await psycopg.AsyncConnection.connect(first["billing"], autocommit=True) as billing:
        await billing.execute("CREATE TABLE kept (id INT)")
        await billing.execute("INSERT INTO kept VALUES (7)")
    rotated = component_urls(deployment, deployment.database_url)
    await provision_deployment(deployment, rotated)  # an upgrade, or a password rotation
    async with await psycopg.AsyncConnection.connect(rotated["billing"], autocommit=True) as billing:
        cursor = await billing.execute("SELECT id FROM kept")
        assert await cursor.fetchall() == [(7,)]
    with pytest.raises(psycopg.OperationalError):
        await whoami(first["billing"])  # the old password no longer logs in


async def test_a_url_for_the_wrong_role_is_refused_before_anything_is_created(
    deployment: ClusterPlan,
) -> None:
    urls = component_urls(deployment, deployment.database_url)
    urls["ordering"] = urls["billing"]  # a Secret mounted into the wrong component
    with pytest.raises(ProvisionError, match="ordering"):
        await provision_deployment(deployment, urls)
    del urls["ordering"]
    with pytest.raises(ProvisionError, match="no database URL for component 'ordering'"):
        await provision_deployment(deployment, urls)
    async with await psycopg.AsyncConnection.connect(deployment.database_url, autocommit=True) as admin:
        cursor = await admin.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (deployment.database_schema,)
        )
        assert await cursor.fetchone() == (0,)


async def test_a_password_never_appears_in_the_error(deployment: ClusterPlan) -> None:
    urls = component_urls(deployment, deployment.database_url)
    wrong = urlsplit(urls["billing"])
    urls["ordering"] = urls["billing"]
    with pytest.raises(ProvisionError) as caught:
        await provision_deployment(deployment, urls)
    assert wrong.password and wrong.password not in str(caught.value)


def test_the_cli_reads_the_component_urls_from_the_environment(postgres_url: str) -> None:
    prefix = f"k8s_{secrets.token_hex(3)}"
    plan = deployment_plan(postgres_url, prefix)
    env = {key: value for key, value in os.environ.items() if not key.startswith("STROWGER_")}
    env["STROWGER_DATABASE_URL"] = postgres_url
    for component, url in component_urls(plan, postgres_url).items():
        env["STROWGER_DATABASE_URL_" + component.upper().replace("-", "_")] = url
    command = [sys.executable, "-m", "strowger.cli", "cluster", "provision", "--prefix", prefix, "--json"]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout.strip().splitlines()[-1])
        assert answer["schemas"]["service-ordering"] == f"{prefix}_service_ordering"
        assert answer["roles"]["billing"] == role_of(plan, "billing")
        del env["STROWGER_DATABASE_URL_BILLING"]
        refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert refused.returncode == 1
        assert "no database URL for component 'billing'" in refused.stdout
    finally:
        asyncio.run(deprovision(plan))
