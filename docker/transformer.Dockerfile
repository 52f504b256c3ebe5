# syntax=docker/dockerfile:1
# Transformer image: `python -m transformer` (feature validation, V1/V2 in, V2 to the predictor).
# Build from the repository root: docker build -f docker/transformer.Dockerfile -t ACR.azurecr.io/housing-transformer:TAG .
# Stage 1 installs only the "transformer" extra of pyproject.toml (exact versions from docker/constraints.txt) into a
# virtual environment and byte-compiles what its process imports (docker/bytecode.py); stage 2 copies
# that environment onto a clean slim image: no pip, no pip cache, no build tools.
# Both stages use the same pinned Python image (one patch version, Debian bookworm).
# `./dev images` builds it on a local stand-in for that image (docs/images.md).
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
COPY transformer/ transformer/
RUN touch README.md \
    && /opt/pip/bin/pip --python /opt/venv/bin/python install --no-cache-dir --no-compile -c constraints.txt ".[transformer]" \
    && /opt/venv/bin/python -I -B bytecode.py transformer.__main__

FROM python:3.11.13-slim-bookworm
# A numeric non-root user, so Kubernetes can verify runAsNonRoot without reading /etc/passwd.
RUN groupadd --gid 10001 housing && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin housing
COPY --from=build /opt/venv /opt/venv
# Read-only root file system: nothing is written outside /tmp (an emptyDir in Kubernetes).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    OMP_NUM_THREADS=1
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080 8081
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v2/health/live', timeout=2)"]
# KServe appends --predictor_host and --http_port in Kubernetes; compose passes them itself.
ENTRYPOINT ["python", "-m", "transformer"]
CMD ["--model_name", "housing", "--protocol", "v2", "--http_port", "8080", "--grpc_port", "8081"]
