#!/usr/bin/env bash
# Create the workshop's student accounts (run as root, once): student01..studentNN, no login shell password
# (they log in to the hub with the class password only), listed in $QUANTLAB_HUB_STUDENTS for the hub.
#   sudo deploy/jupyterhub/add_students.sh 30 [PREFIX]
#   sudo deploy/jupyterhub/add_students.sh --remove [PREFIX]     # after the workshop: accounts and homes go
set -euo pipefail
list=${QUANTLAB_HUB_STUDENTS:-/srv/quantlab/students.txt}
if [ "${1:-}" = "--remove" ]; then
  prefix=${2:-student}
  [ -f "$list" ] || exit 0
  for u in $(grep "^$prefix" "$list"); do userdel -r "$u" 2>/dev/null || true; done
  sed -i "/^$prefix/d" "$list"
  exit 0
fi
n=${1:?how many students}
prefix=${2:-student}
mkdir -p "$(dirname "$list")"
touch "$list"
for i in $(seq -w 1 "$n"); do
  u="$prefix$i"
  id "$u" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$u"
  grep -qx "$u" "$list" || echo "$u" >> "$list"
done
echo "$(wc -l < "$list") accounts in $list"
