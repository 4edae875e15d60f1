#!/usr/bin/env bash
# Start the workshop hub (as root, from the environment quantlab and JupyterHub are installed in).
# Warms the shared, read-only numba cache first when it is not warm yet (a few minutes, once).
#   sudo QUANTLAB_HUB_PASSWORD=a-class-password deploy/jupyterhub/start.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-python3}
export QUANTLAB_SHARED_NUMBA_CACHE=${QUANTLAB_SHARED_NUMBA_CACHE:-/srv/quantlab/numba}
: "${QUANTLAB_HUB_PASSWORD:?set QUANTLAB_HUB_PASSWORD (8 characters or more): the class password}"
command -v configurable-http-proxy >/dev/null || { echo "configurable-http-proxy missing: npm install -g configurable-http-proxy" >&2; exit 1; }
# the kernels are cached per fingerprint of their sources (quantlab/_cache.py): an updated quantlab warms anew
src=$(cd / && "$py" -c 'import quantlab._cache as c; print(c.SRC_PREFIX + c.source_fingerprint())')
if [ ! -f "$QUANTLAB_SHARED_NUMBA_CACHE/$src/.quantlab-warm" ]; then
  # compiled as root into the shared directory: students read it, cannot write it
  # from / : `python -m` puts the current directory first on sys.path, and a quantlab checkout there would be
  # warmed instead of the installed one the students import (numba's cache is per source file)
  (cd / && NUMBA_CACHE_DIR=$QUANTLAB_SHARED_NUMBA_CACHE "$py" -m quantlab.warmup --jobs "$(nproc)")
fi
chmod -R a+rX,go-w "$QUANTLAB_SHARED_NUMBA_CACHE"
exec "$py" -m jupyterhub -f "$here/jupyterhub_config.py" "$@"
