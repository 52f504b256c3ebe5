"""The container images built here, for real, from docker/*.Dockerfile as they are: ``./dev images``.

No registry can be reached from these machines, so the base every Dockerfile names
(``FROM python:3.11.13-slim-bookworm``) is made locally: ``mmdebstrap`` installs Debian bookworm's own
``python3`` from Debian's packages and the result is tagged with the pinned name, so the Dockerfiles build
unchanged (docs/images.md says how that stand-in differs from the real image). Every Python package comes from
a wheelhouse that the host's pip fills once from the registries the project already uses (its configuration,
certificate and cache); the builds themselves run with no network at all: ``buildah build --network none``,
pip with ``--no-index``. Each image is rebuilt only when what it is built from changes (the Dockerfile, the
files it copies, the wheelhouse, the base), and concurrent invocations wait for each other, so ``./dev test``
can build in the background while the rest of the suite runs and the image tests then find everything built.

    python -m images [NAME ...] [--all] [--rebuild]     # what ./dev images runs; --help says more

A package of its own, like benchmarks/, rather than a module of ``housing``: the trainer image copies
``housing/``, which would then carry this code and be rebuilt whenever it changes.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from housing.processes import ROOT
from model.paths import var_dir

DOCKER = ROOT / "docker"
TAG_PREFIX = "localhost/housing-"
TAG_SUFFIX = ":local"
INPUTS_LABEL = "dev.housing.build-inputs"
"""Image label holding the hash of everything the image was built from: equal hash, no rebuild."""
BASE_LABEL = "dev.housing.local-base"
WHEELS = "/wheels"
"""Where the build sees the wheelhouse; the pip configuration mounted at /etc/pip.conf points there only."""
# What python:3.11-slim-bookworm adds to debian:bookworm-slim (ca-certificates, netbase, tzdata), with
# Debian's python3 in place of the Python it compiles (docker-library/python, 3.11/slim-bookworm/Dockerfile).
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates", "netbase", "tzdata")
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Like Debian's slim images: no manuals, documentation (but copyright files) or translations.
SLIM_PATHS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/info/*",
)
LOCK = Path(tempfile.gettempdir()) / "housing-images.lock"
# buildah's default OCI runtime, crun, refuses this machine's hybrid cgroup hierarchy; runc does not.
RUNTIME = "runc"


@dataclass(frozen=True)
class Image:
    """One image: the Dockerfile it is built from, the extra of pyproject.toml it installs, build arguments.

    Attributes:
        name: ``predictor``, ``detector-oss``, ... (the tag is ``localhost/housing-NAME:local``).
        dockerfile: Its Dockerfile's name in docker/.
        extra: The optional-dependency group of pyproject.toml it installs: all it holds (tests check).
        build_args: ``--build-arg`` values.
    """

    name: str
    dockerfile: str
    extra: str
    build_args: dict[str, str] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        """``localhost/housing-NAME:local``: what docker/compose.yaml calls ``housing-NAME:local``."""
        return f"{TAG_PREFIX}{self.name}{TAG_SUFFIX}"

    @property
    def path(self) -> Path:
        """The Dockerfile."""
        return DOCKER / self.dockerfile


IMAGES = {
    image.name: image
    for image in (
        Image("predictor", "predictor.Dockerfile", "predictor"),
        Image("transformer", "transformer.Dockerfile", "transformer"),
        Image("explainer", "explainer.Dockerfile", "explainer"),
        Image("detector", "detector.Dockerfile", "detector"),
        Image("trainer", "trainer.Dockerfile", "training"),
        # The detector without alibi-detect (its Business Source License): the same Dockerfile, another extra.
        Image("detector-oss", "detector.Dockerfile", "detector-oss", {"STATS_BACKEND": "scipy"}),
    )
}
DEFAULT = ("predictor", "transformer", "explainer", "detector", "trainer")
"""What ``./dev images`` builds when given no name: the five images of docker/compose.yaml and the chart
(``--all``, which ``./dev test`` and the image tests use, adds detector-oss)."""


@dataclass
class Built:
    """The outcome of building (or finding up to date) one image.

    Attributes:
        image: The image.
        id: Its image id.
        size: Its size in bytes, uncompressed (what ``podman images`` shows).
        seconds: How long its last build took.
        cpu_seconds: The CPU time its last build took (buildah and everything it ran).
        built_now: Whether this call built it (else it was up to date).
    """

    image: Image
    id: str
    size: int
    seconds: float
    cpu_seconds: float
    built_now: bool


def state_dir() -> Path:
    """``var/images``: the wheelhouse, the build logs, the record of the last builds."""
    return var_dir() / "images"


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def base_name() -> str:
    """The base image every Dockerfile names, in full (``docker.io/library/python:3.11.13-slim-bookworm``)."""
    bases = {
        rest.split()[0]
        for image in IMAGES.values()
        for word, rest in dockerfile_instructions(image.path)
        if word == "FROM"
    }
    if len(bases) != 1:
        raise RuntimeError(f"the Dockerfiles name more than one base image: {sorted(bases)}")
    (base,) = bases
    return base if "/" in base else f"docker.io/library/{base}"


def children_cpu() -> float:
    """CPU seconds (user and system) of the finished child processes so far: buildah, runc, pip inside."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(command: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), input=stdin, check=True, text=True, capture_output=True)


def inspect(reference: str) -> dict[str, Any] | None:
    """``buildah inspect`` of an image, or ``None`` when there is no such image."""
    result = subprocess.run(
        ["buildah", "inspect", "--type", "image", reference], capture_output=True, text=True, check=False
    )
    return json.loads(result.stdout) if result.returncode == 0 else None


def _labels(info: dict[str, Any]) -> dict[str, str]:
    return dict(info["OCIv1"]["config"].get("Labels") or {})


def ensure_base(say: Callable[[str], None] = print) -> str:
    """The base image's id; made first (30 to 140 s here) when there is none under the pinned name.

    A real ``python:3.11.13-slim-bookworm`` already in the store (pulled where a registry can be reached) is
    used as it is.
    """
    name = base_name()
    info = inspect(name)
    if info is not None:
        return str(info["FromImageID"])
    say(f"making the base {name} locally: Debian bookworm's python3 from Debian's packages (mmdebstrap)")
    started, cpu = time.monotonic(), children_cpu()
    with tempfile.TemporaryDirectory(prefix="housing-base-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        _run(
            [
                "mmdebstrap", "--variant=apt", "--quiet", f"--include={','.join(BASE_PACKAGES)}",
                # merged /usr as Debian's own images have it, without the usrmerge package (and its perl)
                "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
                "--aptopt=APT::Install-Recommends \"false\"",
                # the host's mirror may be a dated snapshot, whose Release files have expired
                "--aptopt=Acquire::Check-Valid-Until \"false\"",
                *(f"--dpkgopt={option}" for option in SLIM_PATHS),
                "bookworm", str(rootfs), "-",
            ],
            stdin=_host_apt_sources(),
        )  # fmt: skip
        container = _run(["buildah", "from", "scratch"]).stdout.strip()
        try:
            mount = _run(["buildah", "mount", container]).stdout.strip()
            _run(["tar", "-C", mount, "-xf", str(rootfs)])
            _run(["buildah", "umount", container])
            _run(
                ["buildah", "config", "--env", f"PATH={BASE_PATH}", "--env", "LANG=C.UTF-8",
                 "--cmd", "python3", "--label", f"{BASE_LABEL}=mmdebstrap bookworm {' '.join(BASE_PACKAGES)}",
                 container]
            )  # fmt: skip
            _run(["buildah", "commit", "--quiet", "--rm", container, name])
        except BaseException:
            subprocess.run(["buildah", "rm", container], capture_output=True, check=False)
            raise
    say(f"base {name} made in {time.monotonic() - started:.0f} s ({children_cpu() - cpu:.0f} CPU s)")
    info = inspect(name)
    if info is None:
        raise RuntimeError(f"{name} is not in the image store after it was made")
    return str(info["FromImageID"])


def _host_apt_sources() -> str:
    """This machine's Debian sources (deb822 files, else sources.list): mmdebstrap reads them on stdin."""
    deb822 = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    if deb822:
        return "\n\n".join(path.read_text().strip() for path in deb822) + "\n"
    return Path("/etc/apt/sources.list").read_text()


def pip_pin() -> str:
    """The pip the Dockerfiles install (``pip==25.3``)."""
    (pin,) = {
        pin for image in IMAGES.values() for pin in re.findall(r'"(pip==[\w.]+)"', image.path.read_text())
    }
    return pin


def build_requirements() -> list[str]:
    """pyproject.toml's ``[build-system] requires``: what pip needs to build the project inside the image."""
    import tomllib

    return list(tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"])


def wheelhouse_requirements() -> list[str]:
    """What the wheelhouse holds: every extra the images install, the Dockerfiles' pip, the build backend."""
    extras = ",".join(sorted({image.extra for image in IMAGES.values()}))
    return [f".[{extras}]", pip_pin(), *build_requirements()]


def wheelhouse_digest() -> str:
    """The hash of what decides the wheelhouse's content (pyproject.toml, docker/constraints.txt)."""
    inputs = [ROOT / "pyproject.toml", DOCKER / "constraints.txt"]
    return _digest(inputs, extra=" ".join(wheelhouse_requirements()))


def ensure_wheelhouse(say: Callable[[str], None] = print) -> tuple[Path, str]:
    """The wheelhouse (every wheel the images install) and its hash; filled by the host's pip when it changes.

    The host's pip resolves every extra the Dockerfiles install against docker/constraints.txt, through its
    own configuration (index, certificate) and cache: after ``./dev setup`` nothing is downloaded twice.
    """
    wheels = state_dir() / "wheels"
    requirements = wheelhouse_requirements()
    digest = wheelhouse_digest()
    stamp = wheels / ".inputs"
    if stamp.is_file() and stamp.read_text() == digest:
        return wheels, digest
    say(f"filling the wheelhouse {wheels} with the host's pip ({' '.join(requirements)})")
    started, cpu = time.monotonic(), children_cpu()
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--dest",
         str(wheels), "--constraint", str(DOCKER / "constraints.txt"), *requirements],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"pip download failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    for sdist in wheels.glob("housing_kserve*"):  # the project itself is built inside the image
        sdist.unlink()
    stamp.write_text(digest)
    say(
        f"wheelhouse filled in {time.monotonic() - started:.0f} s ({children_cpu() - cpu:.0f} CPU s, "
        f"{len(list(wheels.glob('*.whl')))} wheels)"
    )
    return wheels, digest


def _digest(paths: Sequence[Path], extra: str = "") -> str:
    """sha256 over files (their path relative to the root, and content), in order, and a string."""
    sha = hashlib.sha256(extra.encode())
    for path in paths:
        sha.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return sha.hexdigest()


def copied_files(dockerfile: Path) -> list[Path]:
    """Every file of the build context that a Dockerfile's ``COPY`` instructions take (sorted)."""
    files: set[Path] = set()
    for word, rest in dockerfile_instructions(dockerfile):
        sources = rest.split()[:-1]
        if word != "COPY" or any(source.startswith("--from") for source in sources):
            continue
        for source in sources:
            path = ROOT / source
            if path.is_dir():
                files |= {
                    item for item in path.rglob("*") if item.is_file() and "__pycache__" not in item.parts
                }
            else:
                files.add(path)
    return sorted(files)


def build(image: Image, *, wheels: Path, inputs: str, log: Path) -> None:
    """``buildah build`` of one image, offline: the wheelhouse and a pip configuration mounted read-only."""
    pip_conf = state_dir() / "pip.conf"
    pip_conf.write_text(f"[global]\nno-index = true\nfind-links = {WHEELS}\n")
    command = [
        "buildah", "build", "--isolation", "oci", "--runtime", RUNTIME, "--network", "none", "--pull=never",
        # No --layers: its intermediate images (a copy of each build stage's environment among them) piled up
        # to 25 GB in a day of builds, for a cache that saves about 15 s an image.
        "--file", str(image.path), "--tag", image.tag, "--label", f"{INPUTS_LABEL}={inputs}",
        *(f"--build-arg={key}={value}" for key, value in image.build_args.items()),
        "--volume", f"{wheels}:{WHEELS}:ro", "--volume", f"{pip_conf}:/etc/pip.conf:ro",
        str(ROOT),
    ]  # fmt: skip
    with open(log, "w") as out:
        out.write(" ".join(command) + "\n")
        out.flush()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            code = process.wait()
        except BaseException:  # Ctrl-C, or SIGTERM (see main): buildah removes its working containers
            process.terminate()
            process.wait()
            raise
    if code != 0:
        raise RuntimeError(f"building {image.tag} failed (log {log}):\n{log.read_text()[-4000:]}")


def image_size(reference: str) -> int:
    """An image's size in bytes, uncompressed."""
    return int(_run(["podman", "image", "inspect", "--format", "{{.Size}}", reference]).stdout.strip())


@contextmanager
def _locked() -> Iterator[None]:
    """Hold :data:`LOCK`: one build at a time; a second caller waits, then finds the images built.

    One lock for the machine, not the checkout: the image store and the tags are the machine's, and two
    checkouts (a worktree and CI's clean clone) building at once would double the load and retag each other's
    images.
    """
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure(
    names: Sequence[str] = DEFAULT, *, rebuild: bool = False, say: Callable[[str], None] = print
) -> list[Built]:
    """Build each image unless it is up to date; return what was built or found.

    Args:
        names: Image names (keys of :data:`IMAGES`).
        rebuild: Build even the images that are up to date.
        say: Where progress lines go.

    Raises:
        RuntimeError: A tool is missing or a build failed (the message ends with its log).
    """
    missing = [tool for tool in ("buildah", "podman", "mmdebstrap", RUNTIME) if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} not installed (./dev setup installs them)")
    with _locked():
        base_id = ensure_base(say)
        # Filled only for a build: a clean clone whose images are in the store already downloads nothing.
        wheels, wheels_digest = None, wheelhouse_digest()
        record_path = state_dir() / "builds.json"
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
        results = []
        for name in names:
            image = IMAGES[name]
            files = [image.path, *copied_files(image.path)]
            inputs = _digest(files, extra=f"{base_id} {wheels_digest} {sorted(image.build_args.items())}")
            info = inspect(image.tag)
            built_now = rebuild or info is None or _labels(info).get(INPUTS_LABEL) != inputs
            if built_now:
                replaced = None if info is None else str(info["FromImageID"])
                say(f"building {image.tag} from docker/{image.dockerfile} ...")
                started, cpu = time.monotonic(), children_cpu()
                if wheels is None:
                    wheels, _ = ensure_wheelhouse(say)
                build(image, wheels=wheels, inputs=inputs, log=state_dir() / f"{name}.log")
                record[name] = {
                    "seconds": round(time.monotonic() - started, 1),
                    "cpu_seconds": round(children_cpu() - cpu, 1),
                    "inputs": inputs,
                }
                record_path.write_text(json.dumps(record, indent=2))
                info = inspect(image.tag)
                if replaced is not None:  # the image this one replaces, unless another tag still names it
                    subprocess.run(["buildah", "rmi", replaced], capture_output=True, check=False)
            if info is None:
                raise RuntimeError(f"{image.tag} is not in the image store after its build")
            results.append(
                Built(
                    image, str(info["FromImageID"]), image_size(image.tag),
                    float(record.get(name, {}).get("seconds", 0.0)),
                    float(record.get(name, {}).get("cpu_seconds", 0.0)), built_now,
                )
            )  # fmt: skip
            say(_row(results[-1]))
        return results


def _row(built: Built) -> str:
    when = "built in" if built.built_now else "up to date; last build took"
    return (
        f"{built.image.tag:<40} {built.size / 1e6:7.0f} MB   {when} {built.seconds:.0f} s "
        f"({built.cpu_seconds:.0f} CPU s)"
    )


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """``./dev images``: build the images, print each one's size and build time."""
    parser = argparse.ArgumentParser(
        prog="./dev images",
        description="Build the container images from docker/*.Dockerfile with buildah, offline, on a local "
        "Debian bookworm stand-in for the pinned Python base; print each image's size and build time. "
        "Images already built from the same inputs are not built again.",
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME",
        help=f"images to build, of: {' '.join(IMAGES)} (default: {' '.join(DEFAULT)})",
    )  # fmt: skip
    parser.add_argument("--all", action="store_true", help="build every image, detector-oss too")
    parser.add_argument("--rebuild", action="store_true", help="build even the images that are up to date")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # ./dev test stops a background build it no longer needs
    unknown = sorted(set(args.names) - IMAGES.keys())
    if unknown:
        parser.error(f"no image {', '.join(unknown)}; the images: {' '.join(IMAGES)}")
    started = time.monotonic()
    try:
        results = ensure(list(IMAGES) if args.all else args.names or DEFAULT, rebuild=args.rebuild)
    except (RuntimeError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or ""
        print(f"error: {error}\n{detail}", file=sys.stderr)
        return 1
    print(
        f"{len(results)} images, {sum(item.size for item in results) / 1e6:.0f} MB in all, "
        f"{time.monotonic() - started:.0f} s",
        flush=True,
    )
    return 0
