# syntax=docker/dockerfile:1
# Trainer image: `housing train` (train, quality gate, MLflow registration, publish to Blob Storage).
# Build from the repository root: docker build -f docker/trainer.Dockerfile -t ACR.azurecr.io/housing-trainer:TAG .
# Stage 1 installs only the "training" extra of pyproject.toml (exact versions from docker/constraints.txt) into a
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
COPY housing/ housing/
# The `housing` command registers `housing drift` (detector/batch.py); its statistics need only numpy.
COPY detector/ detector/
RUN touch README.md \
    && /opt/pip/bin/pip --python /opt/venv/bin/python install --no-cache-dir --no-compile -c constraints.txt ".[training]" \
    && /opt/venv/bin/python -I -B bytecode.py housing.cli model.train_cli model.train model.tracking model.compiled \
       model.importance model.plots model.publish mlflow.sklearn mlflow.onnx mlflow.server.fastapi_app

FROM python:3.11.13-slim-bookworm
# A numeric non-root user, so Kubernetes can verify runAsNonRoot without reading /etc/passwd.
RUN groupadd --gid 10001 housing && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin housing \
    && mkdir -p /var/lib/mlflow && chown 10001:10001 /var/lib/mlflow
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
# docker/compose.yaml also runs `mlflow server` from this image, keeping its store in this volume.
VOLUME ["/var/lib/mlflow"]
# A batch job: there is no server to check, and Kubernetes reads the Job's exit code.
HEALTHCHECK NONE
ENTRYPOINT ["housing"]
CMD ["train", "--output", "/tmp/artifact", "--no-progress"]
