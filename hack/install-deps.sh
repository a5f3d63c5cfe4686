#!/usr/bin/env bash
# Installs the Debian packages the test bed runs (PostgreSQL, Redis) and what
# invoice PDFs need (WeasyPrint's Pango, a font; pdftotext, which the tests read
# them back with) and the dashboard's browser tests (chromium) when they are
# missing. Does nothing when they are there; says what to do when not root.
set -euo pipefail

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
command -v setpriv >/dev/null || missing+=(util-linux)
ls /usr/lib/*/libpango-1.0.so.0 >/dev/null 2>&1 || missing+=(libpango-1.0-0)
ls /usr/lib/*/libpangoft2-1.0.so.0 >/dev/null 2>&1 || missing+=(libpangoft2-1.0-0)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
command -v pdftotext >/dev/null || missing+=(poppler-utils)
# The dashboard's browser tests drive Debian's chromium through Playwright (no browser download).
command -v chromium >/dev/null || missing+=(chromium)
# The Argo CD health checks (manifests/argocd/) are run by a real Lua interpreter.
command -v lua5.4 >/dev/null || missing+=(lua5.4)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing ${missing[*]}; install them (sudo apt-get install ${missing[*]}) and re-run." >&2
	exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packages start system services on the default ports; the test bed
# starts its own servers and needs none of them. Only those installed now:
# a server that was already there is left as it was.
for service in redis-server postgresql; do
	[[ " ${missing[*]} " == *" $service "* ]] || continue
	service "$service" stop >/dev/null 2>&1 || true
done
