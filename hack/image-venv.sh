#!/bin/sh
# Installs Tenantry into /opt/tenantry/venv from wheels alone, pinned by the
# lock file: the one install step of both image builds (hack/image.sh runs it
# in the root filesystem's chroot, the Dockerfile in a RUN).
#   image-venv.sh WHEELS_DIR CONSTRAINTS IMAGE_CONSTRAINTS
set -eu
wheels=$1 constraints=$2 image_constraints=$3
python3 -m venv /opt/tenantry/venv
/opt/tenantry/venv/bin/pip install --quiet --no-index --no-cache-dir --find-links "$wheels" \
	--constraint "$constraints" --constraint "$image_constraints" 'tenantry[server]'
/opt/tenantry/venv/bin/pip check >/dev/null
# Nothing installs at run time: pip and setuptools (which the venv seeds) go.
/opt/tenantry/venv/bin/pip uninstall --quiet --yes pip setuptools
