#!/usr/bin/env bash
# Build the five images in Azure Container Registry and install or upgrade the chart on AKS.
#
# Usage: scripts/deploy-aks.sh --acr NAME --resource-group RG --cluster NAME [options]
#
#   --acr NAME              Azure Container Registry name (images go to NAME.azurecr.io/housing-COMPONENT:TAG)
#   --resource-group RG     resource group of the AKS cluster
#   --cluster NAME          AKS cluster name
#   --namespace NS          Kubernetes namespace (default: housing)
#   --release NAME          Helm release name (default: housing-kserve; objects are then named housing-kserve-*)
#   --tag TAG               image tag (default: the current git commit, short)
#   --model-uri URI         model artifact location (https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH)
#   --model-sha256 HEX      the sha256 of the file it serves: model.onnx's (model.json onnx_sha256); required with --model-uri
#   --explainer-sha256 HEX  the explainer's pin: model.joblib's (model.json sha256); recommended with --model-uri
#   --client-id GUID        Azure Workload Identity client ID (turns Workload Identity on)
#   --values FILE           extra values file (repeatable)
#   --skip-build            do not build images (CI builds them in an earlier job)
#   --dry-run               print the commands instead of running them
#   -h, --help              this help
#
# Needs: az (logged in: `az login`, or OIDC in CI), helm >= 3.14. The cluster needs KServe >= 0.20, and the ACR
# attached to it (`az aks update -n CLUSTER -g RG --attach-acr ACR`): no registry passwords anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "deploy-aks: $*" >&2; echo "Try: scripts/deploy-aks.sh --help" >&2; exit 2; }

acr="" resource_group="" cluster="" namespace="housing" release="housing-kserve" tag="" model_uri="" model_sha256=""
explainer_sha256="" client_id="" skip_build=false dry_run=false
values=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --acr) acr=${2:?}; shift 2 ;;
    --resource-group) resource_group=${2:?}; shift 2 ;;
    --cluster) cluster=${2:?}; shift 2 ;;
    --namespace) namespace=${2:?}; shift 2 ;;
    --release) release=${2:?}; shift 2 ;;
    --tag) tag=${2:?}; shift 2 ;;
    --model-uri) model_uri=${2:?}; shift 2 ;;
    --model-sha256) model_sha256=${2:?}; shift 2 ;;
    --explainer-sha256) explainer_sha256=${2:?}; shift 2 ;;
    --client-id) client_id=${2:?}; shift 2 ;;
    --values) values+=(-f "${2:?}"); shift 2 ;;
    --skip-build) skip_build=true; shift ;;
    --dry-run) dry_run=true; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option: $1" ;;
  esac
done

[[ -n $acr ]] || die "--acr is required"
[[ -n $resource_group ]] || die "--resource-group is required"
[[ -n $cluster ]] || die "--cluster is required"
[[ $acr =~ ^[a-zA-Z0-9]{5,50}$ ]] || die "--acr must be the registry name (5-50 letters or digits), not its URL"
if [[ -n $model_uri && ! $model_sha256 =~ ^[0-9a-f]{64}$ ]]; then
  die "--model-uri needs --model-sha256 (64 lower-case hex characters, the 'sha256' of its model.json)"
fi
if [[ -n $explainer_sha256 && ! $explainer_sha256 =~ ^[0-9a-f]{64}$ ]]; then
  die "--explainer-sha256 must be 64 lower-case hex characters (the 'sha256' of model.json: model.joblib's)"
fi
[[ -n $tag ]] || tag=$(git rev-parse --short=12 HEAD)

run() {
  if $dry_run; then printf '%q ' "$@"; echo; else echo "+ $*" >&2; "$@"; fi
}

if ! $skip_build; then
  for component in predictor transformer detector explainer trainer; do
    run az acr build --registry "$acr" --image "housing-$component:$tag" \
      --file "docker/$component.Dockerfile" .
  done
fi

run az aks get-credentials --resource-group "$resource_group" --name "$cluster" --overwrite-existing

settings=(--set "image.registry=$acr.azurecr.io" --set "image.tag=$tag")
[[ -z $model_uri ]] || settings+=(--set "model.storageUri=$model_uri" --set "model.sha256=$model_sha256")
[[ -z $explainer_sha256 ]] || settings+=(--set "explainer.sha256=$explainer_sha256")
[[ -z $client_id ]] || settings+=(--set azure.workloadIdentity.enabled=true --set "azure.workloadIdentity.clientId=$client_id")

# --reset-then-reuse-values keeps what earlier upgrades set (the model pins, a running canary) and takes the new
# chart's defaults for anything new.
run helm upgrade --install "$release" helm/housing-kserve --namespace "$namespace" --create-namespace \
  --reset-then-reuse-values "${values[@]}" "${settings[@]}" --wait --timeout 15m
run helm test "$release" --namespace "$namespace" --timeout 5m
