"""Local server processes: free ports, a process with its log file, readiness polling, stopping, a stack.

``housing up`` (housing/stack.py), the tests and the benchmarks start every local server the same way:
a :class:`Service` (its command, its port, how to tell it is ready, its log file) is started, waited for
(an HTTP ready URL answering 200, or its port accepting connections) and stopped (SIGTERM, so that it saves
its state and its coverage, then SIGKILL); a :class:`Stack` is a group of services stopped together, and a
:class:`Supervisor` restarts those of a stack that exit, with back-off, until one crash-loops.
Everything listens on 127.0.0.1, on ports from :func:`free_port` where the caller does not choose them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[1]
"""The project's root: the working directory of :func:`python_service` processes."""

_PORTS_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now and that this process has not handed out before.

    The kernel may offer a port it has just released again, so consecutive calls could otherwise give two
    services of one stack the same port (seen in CI: Prometheus and the detector).
    """
    while True:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in _PORTS_HANDED_OUT:
            _PORTS_HANDED_OUT.add(port)
            return port


def wait_until(
    check: Callable[[], object], timeout: float = 60.0, interval: float = 0.1, what: str = "condition"
) -> None:
    """Poll ``check()`` until it returns something true; ``TimeoutError`` after ``timeout`` seconds.

    A check that raises an HTTP or connection error (``httpx.HTTPError``, ``OSError``) has simply not passed
    yet; any other exception ends the wait.
    """
    import httpx  # here, not at the top: `housing --help` imports this module and should stay fast

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout:.0f} s")


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """Whether a GET of ``url`` answers 200 (``httpx.HTTPError`` when nothing answers)."""
    import httpx  # see wait_until

    return httpx.get(url, timeout=timeout).status_code == 200


def listening(port: int, host: str = HOST) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` has a listening TCP socket on ``port`` (Linux: read from /proc).

    With ``SO_REUSEPORT`` several processes listen on one port, so connecting cannot tell which answers;
    the servers open their listeners only once ready (``--reuse_port``), so this is "ready" too.
    """
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for descriptor in descriptors:
        try:
            if os.readlink(f"/proc/{pid}/fd/{descriptor}") in inodes:
                return True
        except OSError:
            continue
    return False


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0, *, signalled: bool = False) -> None:
    """End a process with SIGTERM (so it saves its state and coverage), then SIGKILL after ``timeout`` s.

    ``signalled``: it has had its SIGTERM already; a second one would stop a draining server at once, its
    flush skipped (serving/lifecycle.py), so it is only waited for.
    """
    if process.poll() is not None:
        return
    if not signalled:
        process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Service:
    """One local server process: what to run, where it listens, how to tell it is ready, where its log goes.

    Attributes:
        name: Short name (``predictor``, ``transformer``, ...); in a :class:`Stack`, its log file's name.
        command: The command line, e.g. ``[python, "-m", "predictor", ...]``.
        port: Its HTTP port on 127.0.0.1 (for ``ready_path=None``, any TCP port); 0 when the caller keeps
            track of its ports and passes a ready URL to :meth:`wait_ready`.
        ready_path: A path answering 200 once it can serve; ``None``: accepting connections on ``port`` is
            ready.
        env: Extra environment variables (over this process's; ``OMP_NUM_THREADS`` defaults to 1).
        log_path: Where its standard output and error go; ``None``: where this process's go.
        cwd: Its working directory (default: this process's).
        process: The running process, once :meth:`start` has been called.
    """

    name: str
    command: Sequence[str]
    port: int = 0
    ready_path: str | None = "/v2/health/ready"
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)
    _signalled: bool = field(default=False, init=False, repr=False)

    @property
    def url(self) -> str:
        """Base URL of its HTTP server."""
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        """Its process id (it must have been started)."""
        if self.process is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self.process.pid

    def start(self, *, fresh_log: bool = False) -> Service:
        """Start the process; its output is appended to ``log_path`` (which ``fresh_log`` empties first)."""
        environment = {
            **os.environ,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "wb" if fresh_log else "ab")  # noqa: SIM115 (closed in stop())
        self._signalled = False
        self.process = subprocess.Popen(
            list(self.command),
            stdout=self._log,
            stderr=subprocess.STDOUT if self._log else None,
            env=environment,
            cwd=self.cwd,
        )
        return self

    def running(self) -> bool:
        """Whether it has been started and has not exited."""
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, url: str | None = None, timeout: float = 60.0) -> Service:
        """Wait until ``url`` answers 200 (default: its ``ready_path``; without one, until ``port`` listens).

        Raises:
            RuntimeError: The process exits first (the message ends with its log).
            TimeoutError: It is not ready within ``timeout`` seconds (idem).
        """
        if url is None and self.ready_path is not None:
            url = self.url + self.ready_path

        def ready() -> bool:
            if self.process is None or self.process.poll() is not None:
                code = "never started" if self.process is None else f"exited with {self.process.returncode}"
                raise RuntimeError(f"{self.name} {code}:\n{self.log()}")
            return http_ok(url) if url is not None else listening(self.port)

        what = f"{self.name} ready at {url}" if url else f"{self.name} listening on {HOST}:{self.port}"
        try:
            wait_until(ready, timeout=timeout, what=what)
        except TimeoutError as error:
            raise TimeoutError(f"{error}\n--- {self.name} log ({self.log_path}) ---\n{self.log()}") from None
        return self

    def log(self, characters: int = 8000) -> str:
        """The end of its log ("" without a log file)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-characters:]

    def terminate(self) -> None:
        """Send it SIGTERM without waiting (:meth:`stop` waits)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self._signalled = True

    def kill(self) -> None:
        """Send it SIGKILL and wait for it to end (a crash: nothing is drained or saved)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def pid_listens(self, ports: Sequence[int]) -> bool:
        """Whether it runs and listens on every one of ``ports`` (see :func:`listens`).

        Raises:
            RuntimeError: It has exited (the message ends with its log).
        """
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited:\n{self.log()}")
        return all(listens(self.pid, port) for port in ports)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop it (see :func:`stop_process`) and close its log; nothing happens if it is not running."""
        if self.process is not None:
            stop_process(self.process, timeout, signalled=self._signalled)
        if self._log is not None:
            self._log.close()


def python_service(
    name: str, args: Sequence[str], log_dir: Path, env: dict[str, str] | None = None, port: int = 0
) -> Service:
    """A ``python ARGS`` service run with this interpreter (so coverage follows it) from the project's root.

    Its log is ``<log_dir>/<name>.log``; the root as working directory lets ``-m`` find the packages that
    are not installed (``benchmarks``, ``monitoring``).
    """
    return Service(
        name, [sys.executable, *args], port, env=env or {}, log_path=log_dir / f"{name}.log", cwd=ROOT
    )


class Stack:
    """Services started together, each logging to ``<log_dir>/<name>.log``; :meth:`stop` ends every one."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.services: list[Service] = []

    def start(self, service: Service) -> Service:
        """Start ``service`` with a fresh log ``<log_dir>/<name>.log``, saying so on standard output."""
        service.log_path = self.log_dir / f"{service.name}.log"
        self.services.append(service.start(fresh_log=True))
        print(f"started {service.name} (pid {service.pid}), log {service.log_path}", flush=True)
        return service

    def wait_ready(self, service: Service, timeout: float) -> None:
        """Wait until ``service`` is ready (see :meth:`Service.wait_ready`)."""
        service.wait_ready(timeout=timeout)

    def exited(self) -> list[str]:
        """Names of the services whose process has ended."""
        return [service.name for service in self.services if not service.running()]

    def replace(
        self,
        service: Service,
        ports: Sequence[int] = (),
        *,
        command: Sequence[str] | None = None,
        kill: bool = False,
        timeout: float = 90.0,
    ) -> Service:
        """A rolling restart of ``service``: a replacement on the same ports, then the old one stopped.

        The local equivalent of a pod replaced behind a Service. Both run with ``--reuse_port``: the
        replacement opens its listeners once it is ready (waited for here, on ``ports`` besides
        ``service.port``), then the old one gets SIGTERM and drains (serving/lifecycle.py): it stops
        listening, so every new connection goes to the replacement, and answers what it has in flight.
        ``kill`` sends SIGKILL instead: what a crash costs.

        Args:
            service: The running service (its command must have ``--reuse_port``).
            ports: Its other listening ports (gRPC).
            command: The replacement's command (default: the same), e.g. with a new route.
            kill: SIGKILL the old one rather than SIGTERM.
            timeout: Seconds the replacement has to listen.

        Returns:
            The replacement, in the stack in place of ``service`` (its log appended to the same file).
        """
        if "--reuse_port" not in (command or service.command):
            raise ValueError(f"{service.name}: a rolling restart needs --reuse_port in its command")
        replacement = Service(
            service.name, list(command or service.command), service.port, service.ready_path,
            dict(service.env), service.log_path, service.cwd,
        )  # fmt: skip
        replacement.start()
        every_port = [service.port, *ports]
        try:
            wait_until(
                lambda: replacement.pid_listens(every_port),
                timeout=timeout,
                what=f"the new {service.name} listening on {every_port}",
            )
        except BaseException:
            replacement.stop()
            raise
        if kill:
            service.kill()
        service.stop(timeout=30.0)
        self.services[self.services.index(service)] = replacement
        return replacement

    def stop(self, timeout: float = 15.0) -> None:
        """Stop every started service: SIGTERM to all (the last started first), SIGKILL after ``timeout``."""
        for service in reversed(self.services):
            if service.running():
                print(f"stopping {service.name} (pid {service.pid})", flush=True)
                service.terminate()
        for service in self.services:
            service.stop(timeout)
        self.services.clear()


def describe_exit(code: int) -> str:
    """``exit code 1`` or ``killed by SIGKILL`` (Popen gives a signal as a negative return code)."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


@dataclass
class _Watch:
    """What the supervisor knows of one service."""

    service: Service
    started_at: float
    restarts: deque[float] = field(default_factory=deque)
    backoff: float = 0.0
    restart_at: float | None = None
    awaiting_ready: bool = False
    log_start: int = 0


class Supervisor:
    """Keeps the services of a :class:`Stack` running: a service that exits is restarted, with back-off.

    Each exit is reported with its exit code and the last lines of the service's log; the restart waits
    ``first_backoff`` seconds, doubling at each exit up to ``max_backoff`` (reset once the service has run for
    ``window`` seconds). A service that would need more than ``max_restarts`` restarts within ``window``
    seconds is crash-looping: :meth:`check` then returns the reason to stop the stack.

    Args:
        stack: The stack whose started services are watched.
        first_backoff: Seconds before the first restart.
        max_backoff: The longest wait before a restart.
        max_restarts: Restarts allowed within ``window`` seconds.
        window: Seconds over which restarts are counted.
        say: Where reports go (default: standard output).
        clock: Seconds, monotonic (tests pass their own).
    """

    def __init__(
        self,
        stack: Stack,
        *,
        first_backoff: float = 1.0,
        max_backoff: float = 30.0,
        max_restarts: int = 5,
        window: float = 60.0,
        say: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.stack = stack
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.max_restarts = max_restarts
        self.window = window
        self.say = say or (lambda line: print(line, flush=True))
        self.clock = clock
        self._watches = {service.name: _Watch(service, clock()) for service in stack.services}

    def check(self) -> str | None:
        """Look at every service once: report exits, restart those whose back-off is over, report readiness.

        Returns:
            ``None`` while the stack can go on; the reason to stop it when a service is crash-looping.
        """
        now = self.clock()
        for name, watch in self._watches.items():
            service = watch.service
            if watch.restart_at is not None:
                if now >= watch.restart_at:
                    self._restart(watch, now)
                continue
            if service.running():
                if watch.awaiting_ready and self._ready(service):
                    watch.awaiting_ready = False
                    self.say(f"{name} ready again, {now - watch.started_at:.1f} s after its restart")
                continue
            code = service.process.returncode if service.process is not None else -1
            while watch.restarts and now - watch.restarts[0] > self.window:
                watch.restarts.popleft()
            last_lines = "\n".join(f"  | {line}" for line in self._log_tail(watch))
            self.say(
                f"{name} (pid {service.pid}) exited: {describe_exit(code)}; its last log lines:\n{last_lines}"
            )
            if len(watch.restarts) >= self.max_restarts:
                return (
                    f"{name} is crash-looping: it exited {len(watch.restarts) + 1} times within "
                    f"{self.window:.0f} s (last: {describe_exit(code)}); see {service.log_path}"
                )
            ran_long = now - watch.started_at >= self.window
            watch.backoff = self.first_backoff if ran_long or not watch.backoff else watch.backoff * 2
            watch.backoff = min(watch.backoff, self.max_backoff)
            watch.restart_at = now + watch.backoff
            self.say(
                f"restarting {name} in {watch.backoff:g} s (restart {len(watch.restarts) + 1} of at most "
                f"{self.max_restarts} within {self.window:.0f} s)"
            )
        return None

    @staticmethod
    def _log_tail(watch: _Watch, lines: int = 10) -> list[str]:
        """The last lines the service's current run wrote to its log."""
        path = watch.service.log_path
        if path is None or not path.exists():
            return []
        with open(path, "rb") as log:
            log.seek(watch.log_start)
            return log.read().decode(errors="replace").splitlines()[-lines:]

    def _restart(self, watch: _Watch, now: float) -> None:
        service = watch.service
        service.stop()  # closes the old log handle; the process has already exited
        if service.log_path is not None:
            with open(service.log_path, "a") as log:
                log.write(f"--- restarted by housing up at {time.strftime('%H:%M:%S')} ---\n")
            watch.log_start = service.log_path.stat().st_size
        service.start()  # appends to the same log
        watch.restarts.append(now)
        watch.started_at, watch.restart_at, watch.awaiting_ready = now, None, True
        self.say(f"restarted {service.name} (pid {service.pid}), log {service.log_path}")

    @staticmethod
    def _ready(service: Service) -> bool:
        import httpx  # see wait_until

        if service.ready_path is None:
            return listening(service.port)
        try:
            return http_ok(service.url + service.ready_path, timeout=0.5)
        except httpx.HTTPError:  # not answering yet: still starting
            return False
