# syntax=docker/dockerfile:1
# Detector image: `python -m detector` (drift detection on the request logger's CloudEvents).
# Build from the repository root: docker build -f docker/detector.Dockerfile -t ACR.azurecr.io/housing-detector:TAG .
# Stage 1 installs only the "detector" extra of pyproject.toml (exact versions from docker/constraints.txt) into a
# virtual environment and byte-compiles what its process imports (docker/bytecode.py); stage 2 copies
# that environment onto a clean slim image: no pip, no pip cache, no build tools.
# Both stages use the same pinned Python image (one patch version, Debian bookworm).
# `./dev images` builds it on a local stand-in for that image (docs/images.md).
# --build-arg STATS_BACKEND=scipy builds the detector without alibi-detect (Business Source License 1.1): the
# "detector-oss" extra, and STATS_BACKEND=scipy for the detector (./dev images detector-oss builds it here).
FROM python:3.11.13-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# pip gets a venv of its own, so /opt/venv (what the image runs) holds the extra's packages and nothing else.
RUN python -m venv /opt/pip && /opt/pip/bin/pip install --no-cache-dir "pip==25.3" \
    && python -m venv --without-pip /opt/venv
# pyproject.toml names README.md as the package's description: an empty one here, so that editing the README
# rebuilds no image.
COPY docker/bytecode.py docker/constraints.txt pyproject.toml ./
COPY model/ model/
COPY serving/ serving/
COPY detector/ detector/
ARG STATS_BACKEND=alibi-detect
RUN touch README.md \
    && extra=detector && if [ "$STATS_BACKEND" = scipy ]; then extra=detector-oss; fi \
    && /opt/pip/bin/pip --python /opt/venv/bin/python install --no-cache-dir --no-compile -c constraints.txt ".[$extra]" \
    && /opt/venv/bin/python -I -B bytecode.py detector.__main__ detector.app detector.stats detector.univariate \
       "detector.alibi_tests?" model.artifact model.dle model.outliers model.storage azure.storage.blob azure.identity \
       uvicorn scipy.stats scipy.spatial.distance

FROM python:3.11.13-slim-bookworm
# A numeric non-root user, so Kubernetes can verify runAsNonRoot without reading /etc/passwd.
RUN groupadd --gid 10001 housing && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin housing \
    && mkdir -p /var/lib/detector && chown 10001:10001 /var/lib/detector
COPY --from=build /opt/venv /opt/venv
ARG STATS_BACKEND=alibi-detect
# Read-only root file system: nothing is written outside /tmp (an emptyDir in Kubernetes) and the state directory /var/lib/detector (a volume).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    OMP_NUM_THREADS=1 \
    STATS_BACKEND=$STATS_BACKEND
WORKDIR /tmp
USER 10001:10001
VOLUME ["/var/lib/detector"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["python", "-m", "detector"]
CMD ["--http_port", "8080", "--state_dir", "/var/lib/detector"]
