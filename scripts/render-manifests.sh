#!/usr/bin/env bash
# Regenerate manifests/ (kustomize base + AKS overlay) from the Helm chart; --check only compares.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PWD/.tools/bin:$PWD/.venv/bin:$PATH
exec python scripts/render_manifests.py "$@"
