"""docker/compose.yaml run with podman: each service's image, command, environment and hardening, as written.

No Docker engine runs here; podman (Debian's) runs the images ``images.build`` built. Each compose service
becomes one ``podman run`` on a bridge network of its own where the service name is the host name, so every
server listens on 8080 as in compose and on Kubernetes. What compose says is what runs: the command, the
environment, ``read_only``, ``tmpfs``, ``cap_drop``, ``security_opt``, named volumes, published ports (on free
host ports). Only what this machine cannot have is replaced, and said so: Azurite's image cannot be pulled, so
the service ``azurite`` is the npm Azurite on the host, listening on the network's gateway; podman's default
runtime (crun) and rlimits do not work here (see :data:`PODMAN` and :func:`ulimits`).
"""

from __future__ import annotations

import json
import resource
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from housing.processes import ROOT

COMPOSE_FILE = ROOT / "docker" / "compose.yaml"
PODMAN = [
    "podman",
    # crun refuses this machine's hybrid cgroup hierarchy ("cgroups in hybrid mode not supported"); runc runs.
    "--runtime", "runc", "--cgroup-manager", "cgroupfs",
    # A bridge network with DNS (aardvark-dns): service names resolve as in compose.
    "--network-backend", "netavark",
    # No journald or syslog here.
    "--events-backend", "file",
]  # fmt: skip
HANDLED = {
    "image", "build", "command", "entrypoint", "environment", "volumes", "ports", "depends_on", "read_only",
    "tmpfs", "security_opt", "cap_drop", "restart",
}  # fmt: skip
"""The compose keys :meth:`Compose.run_args` turns into podman options (``build``, ``depends_on`` and
``restart`` describe how compose itself builds and orders; the tests start the services in that order)."""


def podman_process(
    *args: str, timeout: float = 120, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``podman ARGS`` with :data:`PODMAN`'s settings, whatever its exit code."""
    return subprocess.run(
        [*PODMAN, *args], input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )


def podman(*args: str, timeout: float = 120, check: bool = True, stdin: str | None = None) -> str:
    """Run ``podman ARGS`` (with :data:`PODMAN`'s settings); its standard output."""
    result = podman_process(*args, timeout=timeout, stdin=stdin)
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


def ulimits() -> list[str]:
    """``--ulimit`` options within what this process may set.

    podman's defaults for a rootful container (open files and processes far above this machine's hard limits)
    fail here: root lacks CAP_SYS_RESOURCE, so ``setrlimit`` may only lower a limit.
    """
    _, files = resource.getrlimit(resource.RLIMIT_NOFILE)
    files = min(files, 65536) if files != resource.RLIM_INFINITY else 65536
    # Processes: 4,096 for UID 10001 (threads included), far above what one server starts.
    return ["--ulimit", f"nofile={files}:{files}", "--ulimit", "nproc=4096:4096"]


@dataclass
class Container:
    """A running compose service.

    Attributes:
        service: Its compose service name (its host name on the network).
        name: Its podman container name.
        ip: Its address on the network (reachable from this host).
        ports: Container port -> the host port it is published on (127.0.0.1).
    """

    service: str
    name: str
    ip: str
    ports: dict[int, int] = field(default_factory=dict)

    def url(self, port: int = 8080) -> str:
        """``http://IP:PORT``: the service as the other containers reach it (this host reaches it too)."""
        return f"http://{self.ip}:{port}"

    def published(self, port: int = 8080) -> str:
        """``http://127.0.0.1:HOST_PORT``: where compose publishes the container's ``port``."""
        return f"http://127.0.0.1:{self.ports[port]}"

    def pid(self) -> int:
        """The host process id of its entrypoint."""
        return int(podman("inspect", "--format", "{{.State.Pid}}", self.name).strip())


class Compose:
    """The services of docker/compose.yaml started one by one with podman, on a network of their own.

    Args:
        images: Image names of the compose file (``housing-predictor:local``) -> the image id to run.
        azurite_port: The port of the host's Azurite on the network's gateway: ``azurite:10000`` in the
            compose file becomes ``azurite:PORT``.
        free_port: Gives a free host port for each published port.
    """

    def __init__(self, images: dict[str, str], free_port: Any) -> None:
        self.spec: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
        self.images = images
        self.free_port = free_port
        self.prefix = f"housing-{uuid.uuid4().hex[:8]}"
        self.network = self.prefix
        self.containers: list[Container] = []
        self.volumes: list[str] = []
        self.azurite_port = 0
        podman("network", "create", self.network)
        self.gateway = podman(
            "network", "inspect", "--format", "{{range .Subnets}}{{.Gateway}}{{end}}", self.network
        ).strip()

    def service(self, name: str) -> dict[str, Any]:
        """A service's definition, as compose reads it (YAML anchors merged)."""
        return dict(self.spec["services"][name])

    def substitute(self, value: str) -> str:
        """Azurite's address in the compose file -> the host's Azurite on this network's gateway."""
        return value.replace("azurite:10000", f"azurite:{self.azurite_port}")

    def run_args(self, service: str, spec: dict[str, Any]) -> tuple[list[str], dict[int, int]]:
        """The ``podman run`` options and image for one compose service; its published ports."""
        unknown = set(spec) - HANDLED
        assert not unknown, f"compose keys {sorted(unknown)} of {service} are not run by the image tests"
        args = ["--network", self.network, "--network-alias", service, *ulimits()]
        args += ["--add-host", f"azurite:{self.gateway}"]
        if spec.get("read_only"):
            # Only what compose mounts is writable: podman would add /tmp, /var/tmp and /run tmpfs otherwise.
            args += ["--read-only", "--read-only-tmpfs=false"]
        for path in spec.get("tmpfs", []):
            args += ["--tmpfs", f"{path}:rw,nosuid,nodev,size=64m,mode=1777"]  # the chart's emptyDir: 64Mi
        for option in spec.get("security_opt", []):
            args += ["--security-opt", option]
        for capability in spec.get("cap_drop", []):
            args += ["--cap-drop", capability]
        environment = spec.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        for key, value in environment.items():
            args += ["--env", f"{key}={self.substitute(str(value))}"]
        for volume in spec.get("volumes", []):
            source, target = volume.split(":", 2)[:2]
            if source.startswith((".", "/")):
                args += ["--volume", f"{(COMPOSE_FILE.parent / source).resolve()}:{target}:ro"]
            else:  # a named volume: podman copies the image's directory (owner 10001) into it, as Docker does
                name = f"{self.prefix}-{source}"
                if name not in self.volumes:
                    podman("volume", "create", name)
                    self.volumes.append(name)
                args += ["--volume", f"{name}:{target}"]
        ports = {}
        for mapping in spec.get("ports", []):
            host_ip, _, container_port = mapping.split(":")
            ports[int(container_port)] = self.free_port()
            args += ["--publish", f"{host_ip}:{ports[int(container_port)]}:{container_port}"]
        if "entrypoint" in spec:
            args += ["--entrypoint", json.dumps(spec["entrypoint"])]
        return args, ports

    def image(self, spec: dict[str, Any]) -> str:
        """The built image a service runs (compose's ``image: housing-NAME:local``)."""
        return self.images[spec["image"]]

    def up(
        self,
        service: str,
        *,
        name: str | None = None,
        command: Sequence[str] | None = None,
        volumes: Sequence[str] = (),
    ) -> Container:
        """Start one service as compose would (detached); ``command``/``volumes`` replace/add to its own."""
        spec = self.service(service)
        args, ports = self.run_args(service, spec)
        for volume in volumes:
            args += ["--volume", volume]
        command = [self.substitute(str(item)) for item in (command or spec.get("command", []))]
        container = f"{self.prefix}-{name or service}"
        podman("run", "--detach", "--name", container, *args, self.image(spec), *command)
        self.containers.append(Container(service, container, self._ip(container), ports))
        return self.containers[-1]

    def _ip(self, container: str) -> str:
        networks = json.loads(podman("inspect", "--format", "{{json .NetworkSettings.Networks}}", container))
        return str(networks[self.network]["IPAddress"])

    def wait(self, container: Container, timeout: float) -> int:
        """Wait until a container exits; its exit code."""
        return int(podman("wait", container.name, timeout=timeout).strip().splitlines()[-1])

    def logs(self, container: Container, lines: int = 80) -> str:
        """The last lines of a container's output."""
        result = podman_process("logs", "--tail", str(lines), container.name)
        return result.stdout + result.stderr

    def stop(self, container: Container, timeout: int = 15) -> int:
        """``podman stop``: SIGTERM, SIGKILL after ``timeout`` s; the exit code (137: it was killed)."""
        podman("stop", "--time", str(timeout), container.name, timeout=timeout + 60)
        return int(podman("inspect", "--format", "{{.State.ExitCode}}", container.name).strip())

    def down(self) -> None:
        """Remove every container, volume and the network."""
        if self.containers:
            # One call: podman stops them all at once (one by one took 11 s). --volumes: also the anonymous
            # ones the images' VOLUME lines make where compose mounts none.
            names = [container.name for container in self.containers]
            podman("rm", "--force", "--volumes", "--time", "5", *names, check=False, timeout=120)
        for volume in self.volumes:
            podman("volume", "rm", "--force", volume, check=False)
        podman("network", "rm", "--force", self.network, check=False)
