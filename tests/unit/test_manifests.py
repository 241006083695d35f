"""The Kubernetes manifests (deploy/kubernetes) parse and keep the deployment invariants."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from strowger.cluster.plan import deployment_plan
from strowger.cluster.provision import role_of, schema_map, schema_of
from strowger.commands.cluster import COMPONENT_URL
from strowger.components.registry import COMPONENTS
from strowger.components.service_ordering.settings import FulfilmentSettings
from strowger.events.topics import ALL_TOPICS
from strowger.security.settings import SecuritySettings
from strowger.settings import Settings, bus_kind, database_kind

ROOT = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
MANIFESTS = sorted(ROOT.rglob("*.yaml"))
PREFIX = "bss"  # the schema prefix of jobs/database-provision.yaml and configmap.yaml

Doc = dict[str, Any]


def documents(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def every_document() -> Iterator[tuple[Path, Doc]]:
    for path in MANIFESTS:
        for doc in documents(path):
            yield path, doc


def of_kind(kind: str) -> list[Doc]:
    return [doc for _, doc in every_document() if doc["kind"] == kind]


def pod_specs() -> list[tuple[str, Doc]]:
    workloads = of_kind("Deployment") + of_kind("Job")
    scheduled = [(doc["metadata"]["name"], doc["spec"]["jobTemplate"]["spec"]) for doc in of_kind("CronJob")]
    return [(doc["metadata"]["name"], doc["spec"]["template"]["spec"]) for doc in workloads] + [
        (name, job["template"]["spec"]) for name, job in scheduled
    ]


def secret_ref(variable: Doc) -> tuple[str, str]:
    """(Secret name, key) an env entry reads its value from."""
    reference = variable["valueFrom"]["secretKeyRef"]
    return reference["name"], reference["key"]


DEPLOYMENT = deployment_plan("postgresql://admin@postgresql.db/strowger", PREFIX)


def kustomize_resources() -> list[str]:
    return list(yaml.safe_load((ROOT / "kustomization.yaml").read_text())["resources"])


def test_there_are_manifests_and_they_all_parse() -> None:
    assert len(MANIFESTS) >= 5
    for path, doc in every_document():
        assert {"apiVersion", "kind"} <= doc.keys(), path
        assert doc["kind"] == "Kustomization" or doc["metadata"]["name"], path


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda component: component.name)
def test_each_component_has_a_deployment_service_and_disruption_budget(component: Any) -> None:
    docs = {doc["kind"]: doc for doc in documents(ROOT / "components" / f"{component.name}.yaml")}
    assert sorted(docs) == ["Deployment", "PodDisruptionBudget", "Service"]
    deployment, service, budget = docs["Deployment"], docs["Service"], docs["PodDisruptionBudget"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pod_labels["app.kubernetes.io/component"] == component.name
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["strowger", "run", component.name]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert "maxUnavailable" in budget["spec"] or "minAvailable" in budget["spec"]


def test_every_deployment_has_liveness_and_readiness_probes() -> None:
    for deployment in of_kind("Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert container["livenessProbe"]["httpGet"]["path"] == "/health", deployment["metadata"]["name"]
            assert container["readinessProbe"]["httpGet"]["path"] == "/ready", deployment["metadata"]["name"]


def test_every_container_has_requests_and_limits() -> None:
    for name, spec in pod_specs():
        for container in spec["containers"]:
            resources = container["resources"]
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= resources[bound].keys(), (name, bound)


def test_every_pod_runs_as_non_root_without_privilege_escalation() -> None:
    for name, spec in pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"]["drop"] == ["ALL"], name


def test_every_image_is_pinned_to_a_tag_other_than_latest() -> None:
    for name, spec in pod_specs():
        for container in spec["containers"]:
            image = container["image"]
            repository, _, tag = image.rpartition(":")
            assert repository and "/" not in tag, f"{name}: {image} has no tag"
            assert tag != "latest", f"{name}: {image}"


def test_every_deployment_takes_its_settings_from_the_configmap_and_secrets() -> None:
    for deployment in of_kind("Deployment"):
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        sources = container["envFrom"]
        assert {"configMapRef": {"name": "strowger-config"}} in sources
        assert {"secretRef": {"name": "strowger-secrets"}} in sources
        env = {var["name"]: var for var in container["env"]}
        # its own role (its own Secret) and its own schema; nothing else bypasses the ConfigMap/Secret
        assert secret_ref(env["STROWGER_DATABASE_URL"]) == (
            f"strowger-db-{component}",
            "STROWGER_DATABASE_URL",
        )
        assert env["STROWGER_DATABASE_SCHEMA"]["value"] == schema_of(DEPLOYMENT, component)
        assert not [name for name in env if name.startswith(("STROWGER_BUS", "STROWGER_DATABASE_SCHEMAS"))]


def test_the_provisioning_jobs_know_every_components_secret() -> None:
    jobs = [doc for doc in of_kind("Job") + of_kind("CronJob") if "database" in doc["metadata"]["name"]]
    assert sorted(doc["kind"] for doc in jobs) == ["CronJob", "Job"]
    specs = [spec for name, spec in pod_specs() if name in {doc["metadata"]["name"] for doc in jobs}]
    for spec in specs:
        (container,) = spec["containers"]
        assert container["command"] == ["strowger", "cluster", "provision", "--prefix", PREFIX]
        env = {var["name"]: secret_ref(var) for var in container["env"]}
        assert env.pop("STROWGER_DATABASE_URL") == ("strowger-db-admin", "STROWGER_DATABASE_URL")
        wanted = {
            COMPONENT_URL + spec.component.upper().replace("-", "_"): (
                f"strowger-db-{spec.component}",
                "STROWGER_DATABASE_URL",
            )
            for spec in DEPLOYMENT.processes
        }
        assert env == wanted


def test_no_default_broker_credentials_anywhere() -> None:
    for path in [*MANIFESTS, ROOT.parent / "README.md"]:
        text = path.read_text().lower()
        assert "guest:guest" not in text, path
        assert "guest/guest" not in text, path


def test_the_configmap_holds_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    (config,) = of_kind("ConfigMap")
    data: dict[str, str] = config["data"]
    security_fields = {f"STROWGER_SECURITY_{name.upper()}" for name in SecuritySettings.model_fields}
    fulfilment_fields = {f"STROWGER_FULFILMENT_{name.upper()}" for name in FulfilmentSettings.model_fields}
    for key, value in data.items():
        if key.startswith("STROWGER_SECURITY_"):
            assert key in security_fields, key
        elif key.startswith("STROWGER_FULFILMENT_"):
            assert key in fulfilment_fields, key
            monkeypatch.setenv(key, value)
        elif key.startswith("STROWGER_"):
            field = key.removeprefix("STROWGER_").lower()
            assert field in Settings.model_fields or field == "service_name", key
            if field in Settings.model_fields:
                monkeypatch.setenv(key, value)  # as the pods receive them
    Settings()  # every value parses (ValidationError otherwise)
    FulfilmentSettings()


def test_the_secrets_are_templates_with_valid_url_shapes() -> None:
    path = ROOT / "secret.example.yaml"
    secrets = {doc["metadata"]["name"]: doc["stringData"] for doc in documents(path)}
    bus_kind(secrets.pop("strowger-secrets")["STROWGER_BUS_URL"])
    database_kind(secrets.pop("strowger-db-admin")["STROWGER_DATABASE_URL"])
    assert sorted(secrets) == sorted(f"strowger-db-{spec.component}" for spec in DEPLOYMENT.processes)
    for name, values in secrets.items():
        url = values["STROWGER_DATABASE_URL"]
        database_kind(url)
        assert "CHANGE-ME" in url
        assert urlsplit(url).username == role_of(DEPLOYMENT, name.removeprefix("strowger-db-")), name
    assert path.name not in kustomize_resources(), "a template must never be applied"
    assert not any(doc["kind"] == "Secret" for where, doc in every_document() if where != path)


def test_the_configmap_maps_every_component_to_the_provisioned_schema() -> None:
    (config,) = of_kind("ConfigMap")
    assert json.loads(config["data"]["STROWGER_DATABASE_SCHEMAS"]) == schema_map(DEPLOYMENT)


def test_kustomization_lists_existing_files_and_every_available_component() -> None:
    resources = kustomize_resources()
    for resource in resources:
        assert (ROOT / resource).is_file(), resource
    for component in COMPONENTS:
        listed = f"components/{component.name}.yaml" in resources
        assert listed == component.available, component.name


def test_the_topic_job_creates_the_whole_catalogue() -> None:
    (job,) = [doc for doc in of_kind("Job") if doc["metadata"]["name"] == "strowger-kafka-topics"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    (topics,) = [var["value"] for var in container["env"] if var["name"] == "TOPICS"]
    assert topics.split() == [f"{topic.name}:{topic.partitions}" for topic in ALL_TOPICS]


def ingress_paths() -> list[tuple[str, str, Any]]:
    """(path, Service name, Service port) of every rule of the Ingress."""
    (ingress,) = of_kind("Ingress")
    assert ingress["apiVersion"] == "networking.k8s.io/v1" and ingress["spec"]["ingressClassName"]
    return [
        (path["path"], path["backend"]["service"]["name"], path["backend"]["service"]["port"])
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]


def service_ports() -> dict[str, list[Any]]:
    """Each Service's port names and numbers (an Ingress backend may name either)."""
    return {
        doc["metadata"]["name"]: [
            value for port in doc["spec"]["ports"] for value in (port["name"], port["port"])
        ]
        for doc in of_kind("Service")
    }


def test_the_ingress_routes_every_api_to_the_service_of_the_component_serving_it() -> None:
    paths = ingress_paths()
    served = {api: f"strowger-{c.name}" for c in COMPONENTS if c.available for api in c.http_apis}
    assert sorted(path for path, _, _ in paths) == sorted(served)  # each API exactly once, nothing else
    ports = service_ports()
    for path, service, port in paths:
        assert service == served[path], path
        assert port.get("name", port.get("number")) in ports[service], path
    assert "ingress.yaml" in kustomize_resources()
