#!/usr/bin/env bash
# Builds helm from its Go module (the way .ci/run installs tools: from a package registry) into
# deploy/helm/.bin/helm-<version>, once: an existing binary is kept. Compiling takes minutes on
# 2 cores. Prints the binary's path.
#   bash deploy/helm/install-helm.sh [version]
set -euo pipefail
version="${1:-${HELM_VERSION:-v3.21.4}}"
here="$(cd "$(dirname "$0")" && pwd)"
bin="$here/.bin/helm-$version"
if [ -x "$bin" ]; then
    echo "$bin"
    exit 0
fi
go="$(command -v go || true)"
[ -z "$go" ] && [ -x /usr/local/go/bin/go ] && go=/usr/local/go/bin/go
if [ -z "$go" ]; then
    echo "install-helm.sh: Go is not installed: helm is built from helm.sh/helm/v3 with 'go install'" >&2
    exit 3
fi
mkdir -p "$here/.bin"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "install-helm.sh: building helm $version with $("$go" version) (a few minutes)" >&2
GOBIN="$tmp" GOFLAGS="${GOFLAGS:-} -trimpath" "$go" install "helm.sh/helm/v3/cmd/helm@$version" >&2
mv "$tmp/helm" "$bin"
echo "$bin"
