#!/usr/bin/env bash
# Put the revision to run, and the DVC data of the stages named, into the shared workspace.
# Every node of a cluster sees this one folder at the same path: the rl stage's Ray Train
# workers change into the driver's folder to read their inputs, and rank 0 writes the model
# and checkpoints there for the driver (and a resumed run) to find. Safe to re-run: an
# existing checkout is moved to the ref, and DVC fetches only what is missing.
#   EMOREASON_GIT_URL, EMOREASON_GIT_REF (branch, tag or commit), EMOREASON_WORKSPACE
#   (default /workspace/emoreason); arguments: stages of dvc.yaml, e.g. `emoreason-checkout rl`.
# Installed in the worker images as /usr/local/bin/emoreason-checkout.
set -euo pipefail
: "${EMOREASON_GIT_URL:?set EMOREASON_GIT_URL}" "${EMOREASON_GIT_REF:?set EMOREASON_GIT_REF}"
workspace=${EMOREASON_WORKSPACE:-/workspace/emoreason}
[ -d "$workspace/.git" ] || git clone --depth 1 "$EMOREASON_GIT_URL" "$workspace"
cd "$workspace"
git fetch --depth 1 origin "$EMOREASON_GIT_REF"
git checkout --force FETCH_HEAD
# --with-deps: the outputs of every stage upstream; --allow-missing: the stages' own outputs
# may not exist yet (a first run).
dvc pull --with-deps --allow-missing "$@"
