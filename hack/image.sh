#!/usr/bin/env bash
# `make image`: Tenantry's OCI image (operator and API, entrypoint `tenantry`)
# without a container daemon, written to build/image/tenantry-<version>.oci.tar
# (an OCI image layout in a tar: `skopeo copy oci-archive:...`, or unpacked
# into a folder, `crane push FOLDER REF`).
#
#   1. the root filesystem: Debian bookworm's packages (hack/image-packages.txt)
#      by mmdebstrap from this machine's apt sources, with user tenantry
#      (10001); cached by the hash of the package list and the sources;
#   2. the application layer: /opt/tenantry/venv from wheels alone, pinned by
#      constraints.txt (hack/image-venv.sh, in a chroot of step 1), and helm
#      in /usr/local/bin; the customer-instance chart is package data;
#   3. assembled by crane on a registry of its own on loopback, platform
#      linux/amd64 set explicitly, then pulled into the OCI archive.
#
# The whole image is rebuilt only when one of its inputs changed (the
# sources, the lock file, the package list, helm's version, these scripts).
# Needs root (mmdebstrap, chroot); installs mmdebstrap when missing.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${TENANTRY_IMAGE_CACHE:-$HOME/.cache/tenantry/image}
out=$repo/build/image
python=${PYTHON:-python3}
suite=bookworm
debian_python=3.11.2  # bookworm's python3: markers such as python_full_version < "3.11.3" hold
uid=10001
started=$(date +%s)

log() { echo "image: $*" >&2; }
[ "$(id -u)" -eq 0 ] || { log "needs root (mmdebstrap and chroot build the root filesystem)"; exit 1; }
command -v mmdebstrap >/dev/null || {
	log "installing mmdebstrap"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null; }
}
bash "$repo/hack/install-tools.sh" helm
bash "$repo/hack/install-tools.sh" crane
tool() { bash "$repo/hack/install-tools.sh" paths | sed -n "s/^$1=//p"; }
helm=$(tool helm) crane=$(tool crane)
version=$("$python" -c 'import tomllib,sys; print(tomllib.load(open(sys.argv[1],"rb"))["project"]["version"])' "$repo/pyproject.toml")
packages=$(grep -v '^\s*#' "$repo/hack/image-packages.txt" | grep -v '^\s*$' | sort | paste -sd, -)

# This machine's apt sources (its mirror); Debian's own when there are none.
sources=/etc/apt/sources.list.d/debian.sources
[ -f "$sources" ] || sources=/etc/apt/sources.list
[ -s "$sources" ] || sources="http://deb.debian.org/debian"

work=$(mktemp -d)
registry_pid=
cleanup() {
	[ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null
	mountpoint -q "$work/root/dev" 2>/dev/null && umount "$work/root/dev"
	rm -rf "$work"
}
trap cleanup EXIT

# What `pip install .` reads, links followed (operator/charts), in a stable order:
# its hash is the sources' part of the image's key.
mkdir -p "$work/src"
tar -C "$repo" -ch --exclude=__pycache__ pyproject.toml README.md \
	$("$python" -c 'import tomllib,sys; print(" ".join(tomllib.load(open(sys.argv[1],"rb"))["tool"]["setuptools"]["package-dir"].values()))' "$repo/pyproject.toml") \
	| tar -x -C "$work/src"
sources_hash=$(tar -C "$work/src" -c --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner . | sha256sum | cut -c1-16)

rootfs_key=$(printf '%s\n' "$suite" "$packages" "uid=$uid" "$(cat "$sources" 2>/dev/null || echo "$sources")" | sha256sum | cut -c1-16)
image_key=$(cat "$repo/constraints.txt" "$repo/hack/image-constraints.txt" "$repo/hack/image.sh" \
	"$repo/hack/image-venv.sh" \
	<(echo "$rootfs_key $sources_hash $helm $crane") | sha256sum | cut -c1-16)
image=$out/tenantry-$version.oci.tar
if [ -f "$image" ] && [ "$(cat "$out/.key" 2>/dev/null)" = "$image_key" ]; then
	log "up to date: $image ($(du -m "$image" | cut -f1) MB)"
	exit 0
fi

# 1. The root filesystem, cached.
rootfs=$cache/rootfs-$rootfs_key.tar
mkdir -p "$cache"
if [ ! -f "$rootfs" ]; then
	log "building the root filesystem ($packages) with mmdebstrap from $sources"
	mmdebstrap --quiet --variant=apt --architectures=amd64 --include="$packages" \
		--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
		--dpkgopt='path-include=/usr/share/doc/*/copyright' \
		--dpkgopt='path-exclude=/usr/share/locale/*' \
		--customize-hook="echo 'tenantry:x:$uid:$uid:Tenantry:/tmp:/usr/sbin/nologin' >> \"\$1/etc/passwd\"" \
		--customize-hook="echo 'tenantry:x:$uid:' >> \"\$1/etc/group\"" \
		--customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*' \
		--skip=output/dev \
		"$suite" "$rootfs.$$.tmp.tar" "$sources"  # the name's ending picks the format
	mv -f "$rootfs.$$.tmp.tar" "$rootfs"
else
	log "root filesystem from the cache ($rootfs)"
fi

# 2. The application layer: wheels (cached by the lock file), the venv, helm.
log "building Tenantry's wheel and fetching the locked wheels"
wheels=$cache/wheels-$(cat "$repo/constraints.txt" "$repo/hack/image-constraints.txt" | sha256sum | cut -c1-16)
mkdir -p "$wheels" "$work/wheels"
"$python" -m pip wheel --quiet --no-deps --no-build-isolation -w "$work/wheels" "$work/src" 2>/dev/null \
	|| "$python" -m pip wheel --quiet --no-deps -w "$work/wheels" "$work/src"
wheel=$(ls "$work/wheels"/tenantry-*.whl)
# Debian bookworm's: CPython 3.11 on x86_64 with glibc 2.36, so any manylinux
# wheel up to 2.36 (pip does not widen an explicit --platform by itself).
platforms=(--platform manylinux2014_x86_64)
for glibc in $(seq 17 36); do platforms+=(--platform "manylinux_2_${glibc}_x86_64"); done
"$python" -m pip download --quiet --dest "$wheels" --only-binary=:all: "${platforms[@]}" \
	--python-version "$debian_python" --implementation cp --abi cp311 --abi abi3 --abi none \
	--constraint "$repo/constraints.txt" --constraint "$repo/hack/image-constraints.txt" \
	"tenantry[server] @ file://$wheel" \
	--requirement "$repo/hack/image-constraints.txt"  # markers are judged by this interpreter
rm -f "$wheels"/tenantry-*.whl  # today's is in $work/wheels; a cached one would be stale
cp "$wheels"/*.whl "$work/wheels/"

log "installing the virtualenv in the root filesystem"
mkdir -p "$work/root"
tar -C "$work/root" -xf "$rootfs"
mkdir -p "$work/root/dev"  # the layer ships no device nodes: a runtime mounts /dev
mount --bind /dev "$work/root/dev"
mkdir -p "$work/root/tmp/build"
cp -r "$work/wheels" "$repo/constraints.txt" "$repo/hack/image-constraints.txt" \
	"$repo/hack/image-venv.sh" "$work/root/tmp/build/"
# Nothing of this machine's environment (pip's settings) reaches the chroot.
chroot "$work/root" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/tmp LANG=C.UTF-8 \
	/bin/sh /tmp/build/image-venv.sh /tmp/build/wheels /tmp/build/constraints.txt \
	/tmp/build/image-constraints.txt
umount "$work/root/dev"
rm -rf "$work/root/tmp/build"
install -D -m 0755 "$helm" "$work/root/usr/local/bin/helm"
tar -C "$work/root" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
	-cf "$work/app.tar" opt/tenantry usr/local/bin/helm

# 3. The image, on a registry of crane's own on loopback.
port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$crane" registry serve --address "127.0.0.1:$port" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 50); do
	"$crane" catalog --insecure "127.0.0.1:$port" >/dev/null 2>&1 && break
	sleep 0.1
done
ref=127.0.0.1:$port/tenantry:$version
log "assembling $ref"
"$crane" append --insecure --oci-empty-base --platform linux/amd64 \
	-f "$rootfs" -f "$work/app.tar" -t "$ref" >/dev/null 2>"$work/crane.log" \
	|| { cat "$work/crane.log" >&2; exit 1; }
"$crane" mutate --insecure "$ref" --set-platform linux/amd64 \
	--entrypoint /opt/tenantry/venv/bin/tenantry \
	--user "$uid:$uid" --workdir /tmp \
	--env PATH=/opt/tenantry/venv/bin:/usr/local/bin:/usr/bin:/bin \
	--env HOME=/tmp --env PYTHONDONTWRITEBYTECODE=1 --env PYTHONUNBUFFERED=1 \
	--label org.opencontainers.image.title=tenantry \
	--label "org.opencontainers.image.version=$version" \
	--label org.opencontainers.image.licenses=Apache-2.0 \
	--exposed-ports 8000/tcp,8080/tcp,8081/tcp \
	-t "$ref" >/dev/null 2>"$work/crane.log" || { cat "$work/crane.log" >&2; exit 1; }
rm -rf "$work/layout" && mkdir -p "$out"
"$crane" pull --insecure --format oci "$ref" "$work/layout" 2>"$work/crane.log" \
	|| { cat "$work/crane.log" >&2; exit 1; }
tar -C "$work/layout" -cf "$image.tmp" .
mv -f "$image.tmp" "$image"
echo "$image_key" >"$out/.key"
log "wrote $image ($(du -m "$image" | cut -f1) MB) in $(($(date +%s) - started)) s"
