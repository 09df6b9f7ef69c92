#!/bin/sh
# tce-entrypoint: the container's ENTRYPOINT. It runs `tce "$@"`, exactly as if `tce` were the
# entrypoint, after one first-start step: when TCE_ROLE is set and the node's persistent volume
# (TCE_HOME, default /var/lib/tce) has never been initialised, `tce init TCE_HOME --role TCE_ROLE`
# creates the node's own key ring (keys/keyring.json, mode 0600) and working folders there.
#
# Why here and not in the image: a key ring baked into an image would be shared by every
# container made from it, and stage 1 and stage 2 must never share one. Why the marker is
# TCE_HOME/tce.yaml: `tce init` writes it (a reference copy of every default; the node reads its
# configuration from TCE_CONFIG, mounted read-only) and refuses to run twice, and a key ring is
# never overwritten, so a restart or an image upgrade keeps the keys.
set -eu

home="${TCE_HOME:-/var/lib/tce}"
if [ -n "${TCE_ROLE:-}" ] && [ ! -e "$home/tce.yaml" ]; then
    # stdout stays the command's own (e.g. `status --json`); init reports on stderr.
    tce init "$home" --role "$TCE_ROLE" 1>&2
fi
exec tce "$@"
