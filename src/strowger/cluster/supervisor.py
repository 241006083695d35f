"""Start, watch, kill, restart and stop the processes of a cluster plan.

Each process is ``python -m strowger.cli run <component> --port P`` in its own session
(so a terminal's Ctrl-C or the exit of ``strowger cluster up`` does not reach it), with
its log in ``<root>/<name>.log``. The state file ``<root>/cluster.json`` (the plan plus
every pid) lets a later invocation report and stop what an earlier one started. The plan's
gateway (the HTTP entry point, ``strowger cluster gateway``) is one more such process.

Before any process starts, :mod:`strowger.cluster.provision` gives each component its own
PostgreSQL schema and role (the plan's ``split_database``); ``down`` drops them.

All processes run in ``<root>`` as working directory: ``strowger run`` keeps its admin API
key under ``./var/security``, so they share ONE key, created here before any starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from strowger.cluster.plan import FIRST, GATEWAY, ClusterPlan, ProcessSpec
from strowger.cluster.provision import ProvisionError, deprovision, provision, refresh_directory

STATE_FILE = "cluster.json"
READY_TIMEOUT = 300.0  # seconds: 20 Python processes importing the platform on 2 cores
PROBE_TIMEOUT = 5.0  # seconds for one /ready answer: a process catching up on 2 cores is slow, not down
STOP_TIMEOUT = 20.0  # seconds between SIGTERM (drain) and SIGKILL
RESTART_BACKOFF = (1.0, 2.0, 4.0, 8.0, *([10.0] * 60))  # pauses between starts of a crash-looping process


class ClusterError(RuntimeError):
    """A cluster operation failed (a process did not become ready, no cluster to act on)."""


class ProcessExited(ClusterError):
    """A process exited before it answered /ready."""


@dataclass(frozen=True, slots=True)
class ProcessStatus:
    name: str
    component: str
    pid: int | None
    port: int
    alive: bool
    ready: bool


class Cluster:
    """The processes of one plan; ``Cluster.load(root)`` reattaches to a running one."""

    def __init__(self, plan: ClusterPlan, pids: dict[str, int] | None = None) -> None:
        self.plan = plan
        self.root = Path(plan.root)
        self.pids: dict[str, int] = dict(pids or {})
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    # -- state -----------------------------------------------------------------------------------

    @classmethod
    def load(cls, root: Path) -> Cluster:
        path = root / STATE_FILE
        if not path.exists():
            raise ClusterError(f"no cluster state in {path}: is a cluster up?")
        document = json.loads(path.read_text())
        return cls(ClusterPlan.from_json(document["plan"]), document.get("pids", {}))

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        document = {"plan": self.plan.to_json(), "pids": self.pids}
        temporary = self.root / f"{STATE_FILE}.tmp"
        temporary.touch(mode=0o600)  # it holds the components' database passwords
        temporary.chmod(0o600)
        temporary.write_text(json.dumps(document, indent=2))
        temporary.replace(self.root / STATE_FILE)  # atomic: a concurrent `status` never reads half

    @property
    def admin_key(self) -> str:
        return (self.root / "var" / "security" / "admin-api-key").read_text().strip()

    def url(self, spec: ProcessSpec) -> str:
        return f"http://127.0.0.1:{spec.port}"

    @property
    def gateway_url(self) -> str | None:
        """The cluster's one HTTP entry point (strowger.cluster.gateway), if the plan has one."""
        return self.url(self.plan.gateway) if self.plan.gateway else None

    def every_process(self) -> list[ProcessSpec]:
        """The components' processes and the gateway's."""
        return [*self.plan.processes, *([self.plan.gateway] if self.plan.gateway else [])]

    # -- lifecycle -------------------------------------------------------------------------------

    async def up(self, timeout: float = READY_TIMEOUT) -> None:
        """Start every process and wait until each answers /ready (the schema creator first)."""
        self._prepare()
        if self.plan.split_database:
            await self._provision()
        first = [spec for spec in self.plan.processes if spec.component == FIRST]
        rest = [spec for spec in self.every_process() if spec.component != FIRST]  # and the gateway
        deadline = time.monotonic() + timeout
        for group in (first, rest):
            for spec in group:
                self.start(spec.name)
            await self.wait_ready([spec.name for spec in group], deadline - time.monotonic())
        if self.plan.split_database:
            await refresh_directory(self.plan)  # views over the tables the processes created

    async def _provision(self) -> None:
        """Each component's schema and role; its URL, schema and the schema map join its environment."""
        try:
            databases = await provision(self.plan)
        except ProvisionError as exc:
            raise ClusterError(str(exc)) from exc
        overrides = self.plan.component_environment  # the plan's own settings win
        merged = {
            component: {**databases.get(component, {}), **overrides.get(component, {})}
            for component in {*databases, *overrides}
        }
        self.plan = replace(self.plan, component_environment=merged)
        self.save()

    def _prepare(self) -> None:
        from strowger.security import SecuritySettings, ensure_admin_credentials

        self.root.mkdir(parents=True, exist_ok=True)
        keys_file = self.root / "api-keys.json"
        security = SecuritySettings.model_validate({"api_keys_file": keys_file})
        ensure_admin_credentials(security, self.root / "var")
        self.save()

    def environment(self, spec: ProcessSpec) -> dict[str, str]:
        plan = self.plan
        env = {key: value for key, value in os.environ.items() if not key.startswith("STROWGER_")}
        env.update(
            {
                "STROWGER_COMPONENT": spec.component,
                "STROWGER_PORT": str(spec.port),
                "STROWGER_DATABASE_URL": plan.database_url,
                "STROWGER_DATABASE_SCHEMA": plan.database_schema,
                "STROWGER_BUS_URL": plan.bus_url,
                "STROWGER_BUS_NAMESPACE": plan.bus_namespace,
                "STROWGER_SECURITY_API_KEYS_FILE": str(self.root / "api-keys.json"),
                "STROWGER_LOG_JSON": "true",
                "STROWGER_CONFIG": str(self.root / "strowger.toml"),  # none: no stray config file
                **plan.environment,
                **plan.component_environment.get(spec.component, {}),
            }
        )
        return env

    def start(self, name: str) -> int:
        """Start process ``name`` (again, after a kill); returns its pid."""
        spec = self.plan.process(name)
        log = (self.root / f"{name}.log").open("ab")
        command = [sys.executable, "-m", "strowger.cli", "run", spec.component, "--port", str(spec.port)]
        if spec.component == GATEWAY:
            command = [sys.executable, "-m", "strowger.cli", "cluster", "gateway", "--dir", "."]
        child = subprocess.Popen(
            command,
            cwd=self.root,
            env=self.environment(spec),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()  # the child holds its own descriptor
        self._children[name] = child
        self.pids[name] = child.pid
        self.save()
        return child.pid

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` to process ``name`` (SIGKILL by default: no drain, no goodbye)."""
        pid = self.pids.get(name)
        if pid is not None and self.alive(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if sig == signal.SIGKILL:
            self._reap(name, 5.0)

    async def restart(self, name: str, timeout: float = READY_TIMEOUT) -> None:
        """Kill (if alive) and start ``name`` until it is ready, as an orchestrator's restart policy does.

        A process that exits while starting (its broker or database is down right now: the
        platform fails fast at start-up) is started again after a growing pause, up to
        ``timeout``; ClusterError names it if it never became ready.
        """
        deadline = time.monotonic() + timeout
        self.kill(name)
        for pause in RESTART_BACKOFF:
            self.start(name)
            try:
                await self.wait_ready([name], max(1.0, deadline - time.monotonic()))
                return
            except ProcessExited:
                if time.monotonic() + pause > deadline:
                    raise
                await asyncio.sleep(pause)
        raise ClusterError(f"{name} kept exiting while starting; see {self.root / name}.log")

    async def stop(self, names: list[str] | None = None, timeout: float = STOP_TIMEOUT) -> list[str]:
        """SIGTERM (uvicorn drains, the platform stops its consumers), then SIGKILL; the killed names."""
        names = names if names is not None else [spec.name for spec in self.every_process()]
        for name in names:
            self.kill(name, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(self.alive(name) for name in names) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)  # polling: after a reload the processes are not our children
        killed = [name for name in names if self.alive(name)]
        for name in killed:
            self.kill(name, signal.SIGKILL)
        for name in names:
            self._reap(name, 1.0)
        return killed

    async def down(self, timeout: float = STOP_TIMEOUT, *, drop: bool = True) -> list[str]:
        """Stop every process; with ``drop`` also the cluster's schema and topics. The SIGKILLed names."""
        killed = await self.stop(None, timeout)
        self.pids.clear()
        self.save()
        if drop:
            await drop_resources(self.plan)
        return killed

    def _reap(self, name: str, timeout: float) -> None:
        child = self._children.get(name)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout)

    # -- observation -----------------------------------------------------------------------------

    def alive(self, name: str) -> bool:
        pid = self.pids.get(name)
        if pid is None:
            return False
        child = self._children.get(name)
        if child is not None and child.pid == pid:
            return child.poll() is None
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return _is_strowger(pid)

    async def wait_ready(self, names: list[str], timeout: float) -> None:
        """Until every named process answers /ready 200, or ClusterError naming the laggards."""
        deadline = time.monotonic() + timeout
        pending = set(names)
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT) as client:
            while pending:
                for name in sorted(pending):
                    if not self.alive(name):
                        raise ProcessExited(f"{name} exited while starting; see {self.root / name}.log")
                    if await self._ready(client, self.plan.process(name)):
                        pending.discard(name)
                if pending and time.monotonic() > deadline:
                    raise ClusterError(f"not ready after {timeout:.0f}s: {', '.join(sorted(pending))}")
                if pending:
                    await asyncio.sleep(0.5)

    async def _ready(self, client: httpx.AsyncClient, spec: ProcessSpec) -> bool:
        try:
            response = await client.get(f"{self.url(spec)}/ready")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def status(self) -> list[ProcessStatus]:
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT) as client:
            rows = []
            for spec in self.every_process():
                alive = self.alive(spec.name)
                ready = alive and await self._ready(client, spec)
                rows.append(
                    ProcessStatus(
                        spec.name, spec.component, self.pids.get(spec.name), spec.port, alive, ready
                    )
                )
            return rows


def _is_strowger(pid: int) -> bool:
    """Whether ``pid`` is still a strowger process (not a recycled pid)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    zombie = stat.rsplit(")", 1)[-1].split()[0] == "Z"
    return b"strowger" in command and not zombie


async def drop_resources(plan: ClusterPlan) -> None:
    """Drop the cluster's PostgreSQL schemas and roles and (Kafka) its namespaced topics."""
    await deprovision(plan)  # the shared schema too, when the plan does not split the database
    if plan.bus == "kafka":
        await asyncio.to_thread(_delete_kafka_topics, plan)


def _delete_kafka_topics(plan: ClusterPlan) -> None:
    """Delete the namespace's topics and consumer groups (best effort: a leftover harms no one)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": kafka_servers(plan.bus_url)})
    prefix = f"{plan.bus_namespace}."
    topics = [name for name in admin.list_topics(timeout=10).topics if name.startswith(prefix)]
    if topics:
        for future in admin.delete_topics(topics, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result()
    with contextlib.suppress(Exception):  # every process has stopped: its groups are empty
        listed = admin.list_consumer_groups(request_timeout=10).result()
        groups = [group.group_id for group in listed.valid if group.group_id.startswith(prefix)]
        for future in (admin.delete_consumer_groups(groups, request_timeout=30) if groups else {}).values():
            with contextlib.suppress(Exception):
                future.result()


def kafka_servers(bus_url: str) -> str:
    return bus_url.split("://", 1)[1].rstrip("/")


def state_summary(statuses: list[ProcessStatus]) -> dict[str, Any]:
    return {
        "processes": len(statuses),
        "ready": sum(1 for status in statuses if status.ready),
        "alive": sum(1 for status in statuses if status.alive),
    }
