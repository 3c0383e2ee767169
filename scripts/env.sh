# shellcheck shell=bash
# Source this: puts the project venv on PATH and makes the checkout importable as netplumb.pipework.
NP_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export NP_REPO
export NP_VENV=${NP_VENV:-$NP_REPO/.build/venv}
export NP_COLLECTIONS=$NP_REPO/.build/collections
if [ ! -e "$NP_COLLECTIONS/ansible_collections/netplumb/pipework" ]; then
  mkdir -p "$NP_COLLECTIONS/ansible_collections/netplumb"
  ln -sfn "$NP_REPO" "$NP_COLLECTIONS/ansible_collections/netplumb/pipework"
fi
export PATH="$NP_VENV/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$NP_COLLECTIONS"
export PYTHONPATH="$NP_COLLECTIONS${PYTHONPATH:+:$PYTHONPATH}"
export ANSIBLE_HOST_KEY_CHECKING=False
export ANSIBLE_NOCOLOR=1
export NP_TEST_IMAGE=${NP_TEST_IMAGE:-netplumb/busybox:test}
