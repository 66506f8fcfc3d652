#!/usr/bin/env bash
# Validates the deployment files without a Docker engine or a cluster: the Kubernetes manifests
# against the API schemas (kubernetes-validate), docker-compose.yml against the Compose spec
# (check-jsonschema). Both tools come from PyPI; they are installed when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v kubernetes-validate >/dev/null 2>&1 || ! command -v check-jsonschema >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate check-jsonschema
fi
kubernetes-validate --quiet --strict -k 1.30.0 $(ls k8s/base/*.yaml | grep -v kustomization.yaml)
check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
echo "deployment files: valid"
