#!/usr/bin/env bash
# Builds the test-bed tools from the Go module proxy into a cache outside the
# checkout, keyed by version, so a second run builds nothing:
#   $TENANTRY_TOOLS_DIR (default ~/.cache/tenantry/tools)/<name>-<version>/<name>
# Prints nothing for a tool that is already cached. Safe to run concurrently
# from several checkouts: each binary is built to a temporary name and moved.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tools_dir=${TENANTRY_TOOLS_DIR:-$HOME/.cache/tenantry/tools}

KUBE_VERSION=v1.34.2
ETCD_VERSION=v3.6.6
HELM_VERSION=v3.19.5
STRIPE_MOCK_VERSION=v0.203.0
CRANE_VERSION=v0.22.1

export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local

need_go() {
	command -v go >/dev/null || { echo "install-tools: Go is needed to build the test-bed tools (apt-get install golang, or see https://go.dev/doc/install)" >&2; exit 1; }
}

# build NAME VERSION DIR PACKAGE [LDFLAGS]: go build PACKAGE inside module DIR.
build() {
	local name=$1 version=$2 moddir=$3 pkg=$4 ldflags=${5:-}
	local out="$tools_dir/$name-$version/$name"
	[ -x "$out" ] && return 0
	need_go
	mkdir -p "$(dirname "$out")"
	echo "install-tools: building $name $version (cached in $(dirname "$out"))" >&2
	(cd "$moddir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$out.tmp.$$" "$pkg")
	mv -f "$out.tmp.$$" "$out"
}

# install NAME VERSION MODULE_PATH [LDFLAGS]: go install of a module without replace directives.
install() {
	local name=$1 version=$2 module=$3 ldflags=${4:-}
	local out="$tools_dir/$name-$version/$name"
	[ -x "$out" ] && return 0
	need_go
	local gobin
	gobin=$(mktemp -d)
	echo "install-tools: installing $name $version (cached in $(dirname "$out"))" >&2
	GOBIN=$gobin go install -trimpath -ldflags "-s -w $ldflags" "$module@$version"
	mkdir -p "$(dirname "$out")"
	mv -f "$gobin/$name" "$out"
	rm -rf "$gobin"
}

# helm reads /version for chart kubeVersion checks: without these the build
# reports v0.0.0-master.
minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
kube_ldflags="-X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"

what=${1:-all}
case $what in
all|kube)
	build etcd "$ETCD_VERSION" "$here/tools/etcd" .
	build kube-apiserver "$KUBE_VERSION" "$here/tools/kube" ./kube-apiserver "$kube_ldflags"
	build kube-controller-manager "$KUBE_VERSION" "$here/tools/kube" ./kube-controller-manager "$kube_ldflags"
	;;&
all|helm)
	# Without the version stamp helm reports "v3.19", which is no SemVer
	# (pyhelm3 parses it).
	install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm \
		"-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
	;;&
all|stripe-mock)
	install stripe-mock "$STRIPE_MOCK_VERSION" github.com/stripe/stripe-mock
	;;
crane)
	# Only `make image` needs it: assembles the OCI image without a daemon.
	install crane "$CRANE_VERSION" github.com/google/go-containerregistry/cmd/crane
	;;
paths)
	for t in etcd:$ETCD_VERSION kube-apiserver:$KUBE_VERSION kube-controller-manager:$KUBE_VERSION helm:$HELM_VERSION stripe-mock:$STRIPE_MOCK_VERSION crane:$CRANE_VERSION; do
		echo "${t%%:*}=$tools_dir/${t%%:*}-${t##*:}/${t%%:*}"
	done
	;;
esac
