#!/usr/bin/env bash
# The test command of netplumb.pipework (run as root on Debian 12; CI runs it through .ci/run).
#
#   bash scripts/test.sh                      all stages: setup unit integration sanity lint molecule
#   bash scripts/test.sh unit [PYTEST_ARGS]   one stage (setup runs first unless NP_SKIP_SETUP=1)
#   bash scripts/test.sh unit,integration -k veth -x
#   bash scripts/test.sh -k veth              all stages, PYTEST_ARGS passed to both pytest stages
#
# Stages (each timed; the run stops at the first failure and always prints a summary):
#   setup        scripts/setup.sh: apt packages, venv, dockerd + OVS, test image (idempotent, fast)
#   unit         pytest tests/unit
#   integration  pytest tests/integration tests/lab (root, dockerd, OVS)
#   sanity       ansible-test sanity --venv --python 3.11, on a copy of the checkout placed at
#                .build/sanity/ansible_collections/netplumb/pipework, with an offline get-pip stand-in
#   lint         ansible-lint (production profile, .ansible-lint), antsibull-changelog lint
#   molecule     molecule test --all (collection mode: extensions/molecule/*/molecule.yml), if any
#
# Environment: NP_KEEP_GOING=1 runs the remaining stages after a failure; NP_SKIP_SETUP=1 skips setup;
# NP_SANITY_ARGS adds arguments to ansible-test sanity (e.g. "--test pylint").
# shellcheck disable=SC2317  # stage_* and trap functions are called indirectly
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/env.sh
source "$here/env.sh"
cd "$NP_REPO" || exit 2

all_stages=(setup unit integration sanity lint molecule)
NP_SANITY_PYTHON=${NP_SANITY_PYTHON:-3.11}

usage() {
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
}

is_stage() {
  local s
  for s in "${all_stages[@]}" all; do [ "$1" = "$s" ] && return 0; done
  return 1
}

# ---- argument parsing --------------------------------------------------------------------------
selected=()
if [ $# -gt 0 ] && [[ $1 != -* ]]; then
  case $1 in
    help) usage; exit 0 ;;
  esac
  IFS=, read -r -a wanted <<<"$1"
  for s in "${wanted[@]}"; do
    is_stage "$s" || { echo "test.sh: unknown stage '$s' (stages: ${all_stages[*]} all)" >&2; exit 2; }
  done
  shift
  for s in "${all_stages[@]}"; do
    for w in "${wanted[@]}"; do
      if [ "$w" = all ] || [ "$w" = "$s" ]; then selected+=("$s"); break; fi
    done
  done
  # setup runs first whatever was asked (it is fast when everything is in place)
  if [ "${NP_SKIP_SETUP:-0}" != 1 ] && [ "${selected[0]}" != setup ]; then
    selected=(setup "${selected[@]}")
  fi
else
  case ${1:-} in
    -h|--help) usage; exit 0 ;;
  esac
  selected=("${all_stages[@]}")
fi
if [ "${NP_SKIP_SETUP:-0}" = 1 ]; then
  filtered=()
  for s in "${selected[@]}"; do [ "$s" = setup ] || filtered+=("$s"); done
  selected=("${filtered[@]}")
fi
pytest_args=("$@")

# ---- bookkeeping -------------------------------------------------------------------------------
declare -A result=() seconds=() note=()
logdir=$NP_REPO/tests/output/test-sh
mkdir -p "$logdir"
run_start=$SECONDS
summary_printed=0

print_summary() {
  [ "$summary_printed" = 1 ] && return
  summary_printed=1
  local s r overall=PASS
  echo
  echo "================================ test.sh summary ================================"
  for s in "${selected[@]}"; do
    r=${result[$s]:-NOT RUN}
    case $r in FAIL*|INTERRUPTED) overall=FAIL ;; esac
    printf '  %-12s %-8s %7s  %s\n' "$s" "$r" "${seconds[$s]:+${seconds[$s]}s}" "${note[$s]:-}"
  done
  printf '  %-12s %-8s %7s\n' total "$overall" "$((SECONDS - run_start))s"
  echo "  logs: $logdir"
  echo "=================================================================================="
}
on_signal() {
  [ -n "${current:-}" ] && result[$current]=INTERRUPTED
  exit 130
}
trap print_summary EXIT
trap on_signal INT TERM

banner() { printf '\n==> [%s] stage %s: %s\n' "$(date +%H:%M:%S)" "$1" "$2"; }

has_test_files() {
  [ -n "$(find "$1" -type f \( -name 'test_*.py' -o -name '*_test.py' \) -print -quit 2>/dev/null)" ]
}

# run_pytest STAGE DIR...: pytest's own summary stays on the console; its last line goes in the summary.
# Directories without test files are left out; none at all makes the stage SKIP.
run_pytest() {
  local stage=$1 log rc last d
  shift
  local dirs=()
  for d in "$@"; do
    if [ -d "$d" ] && has_test_files "$d"; then dirs+=("$d"); fi
  done
  log=$logdir/$stage.log
  if [ ${#dirs[@]} = 0 ]; then
    echo "test.sh: no test files under $*"
    note[$stage]="no test files under $*"
    return 77
  fi
  python -m pytest "${dirs[@]}" "${pytest_args[@]}" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  last=$(grep -E '^=+ .* in [0-9.]+s' "$log" | tail -n 1 | sed -E 's/^=+ //; s/ =+$//')
  note[$stage]=$last
  if [ "$rc" = 5 ]; then
    if [ ${#pytest_args[@]} -gt 0 ]; then
      note[$stage]="no tests selected by: ${pytest_args[*]}"
      return 0
    fi
    note[$stage]="test files exist under ${dirs[*]} but pytest collected none (exit 5)"
    return 1
  fi
  return "$rc"
}

stage_setup() {
  bash "$NP_REPO/scripts/setup.sh"
}

stage_unit() {
  run_pytest unit tests/unit
}

stage_integration() {
  if [ "$(id -u)" != 0 ]; then
    echo "test.sh: integration tests need root" >&2
    note[integration]="needs root"
    return 1
  fi
  bash "$NP_REPO/scripts/services.sh" start || { note[integration]="dockerd/OVS not up"; return 1; }
  # tests/lab: real tests of the lab tool (namespaces, sshd, OVS), same needs as integration tests
  run_pytest integration tests/integration tests/lab
}

# Copy what git would ship (tracked + untracked-not-ignored files that exist) to DEST.
copy_checkout() {
  local dest=$1
  rm -rf "$dest"
  mkdir -p "$dest"
  if git -C "$NP_REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$NP_REPO" ls-files -z --cached --others --exclude-standard \
      | while IFS= read -r -d '' f; do
          if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
        done \
      | tar --null --no-recursion -T - -cf - | tar -xf - -C "$dest"
  else
    tar --exclude=./.build --exclude=./.git --exclude=./tests/output --exclude='*/__pycache__' \
      -cf - . | tar -xf - -C "$dest"
  fi
  # The copy sits inside this checkout's ignored .build/: without a repository of its own,
  # ansible-test would find ours, see only ignored files and skip every target.
  git -C "$dest" init -q
}

# ansible-test bootstraps pip in its venvs with a get-pip.py from a host that is unreachable here:
# put the pip wheel it asks for and scripts/ansible_test_getpip.py in its cache instead.
setup_get_pip() {
  local version cache stand_in
  version=$(python - <<'PY'
import re, types
try:
    from ansible_test._internal.python_requirements import get_venv_packages
    print(get_venv_packages(types.SimpleNamespace(version='3.11'))['pip'])
except Exception:  # fall back to reading the pin from the source
    import ansible_test, os
    src = open(os.path.join(os.path.dirname(ansible_test.__file__), '_internal', 'python_requirements.py')).read()
    print(re.search(r"pip='([0-9.]+)'", src).group(1))
PY
  ) || return 1
  cache=$HOME/.ansible/test/cache
  stand_in=$cache/get_pip_${version//./_}.py
  mkdir -p "$cache"
  if ! compgen -G "$cache/pip-$version-*.whl" >/dev/null; then
    echo "sanity: downloading pip $version wheel for ansible-test's venv bootstrap"
    python -m pip download -q --no-deps --only-binary=:all: "pip==$version" -d "$cache" || return 1
  fi
  cmp -s "$NP_REPO/scripts/ansible_test_getpip.py" "$stand_in" || cp "$NP_REPO/scripts/ansible_test_getpip.py" "$stand_in"
  echo "sanity: pip $version bootstrap: $stand_in"
}

stage_sanity() {
  local dest=$NP_REPO/.build/sanity/ansible_collections/netplumb/pipework rc
  setup_get_pip || { note[sanity]="could not prepare the get-pip stand-in"; return 1; }
  copy_checkout "$dest" || { note[sanity]="could not copy the checkout to $dest"; return 1; }
  # shellcheck disable=SC2086  # NP_SANITY_ARGS is a list of words on purpose
  (cd "$dest" && env -u ANSIBLE_COLLECTIONS_PATH -u PYTHONPATH \
     ansible-test sanity --venv --python "$NP_SANITY_PYTHON" --color no ${NP_SANITY_ARGS:-}) 2>&1 \
    | tee "$logdir/sanity.log"
  rc=${PIPESTATUS[0]}
  rm -rf "$NP_REPO/tests/output/sanity-results"
  if [ -d "$dest/tests/output" ]; then
    cp -r "$dest/tests/output" "$NP_REPO/tests/output/sanity-results"
  fi
  if [ "$rc" != 0 ]; then
    note[sanity]="$(grep -cE '^ERROR: Found [0-9]+ ' "$logdir/sanity.log") test(s) with errors, see $logdir/sanity.log"
  fi
  return "$rc"
}

stage_lint() {
  local rc
  NO_COLOR=1 ansible-lint 2>&1 | tee "$logdir/lint.log"
  rc=${PIPESTATUS[0]}
  note[lint]=$(grep -E '^(Passed|Failed)' "$logdir/lint.log" | tail -n 1 | cut -c1-100)
  [ "$rc" = 0 ] || return "$rc"
  echo "lint: antsibull-changelog lint (changelogs/fragments)"
  antsibull-changelog lint || { note[lint]="antsibull-changelog lint failed"; return 1; }
}

stage_molecule() {
  if ! compgen -G "extensions/molecule/*/molecule.yml" >/dev/null; then
    note[molecule]="no extensions/molecule/*/molecule.yml"
    return 77
  fi
  # Molecule 26 in collection mode: run from the collection root (galaxy.yml), scenarios come from
  # extensions/molecule/<scenario>/molecule.yml.
  local rc
  NO_COLOR=1 molecule test --all 2>&1 | tee "$logdir/molecule.log"
  rc=${PIPESTATUS[0]}
  note[molecule]=$(grep -oE 'Molecule executed .*' "$logdir/molecule.log" | tail -n 1)
  return "$rc"
}

# ---- main --------------------------------------------------------------------------------------
echo "test.sh: stages: ${selected[*]}${pytest_args[*]:+ (pytest args: ${pytest_args[*]})}"
failed=0
for stage in "${selected[@]}"; do
  if [ "$failed" = 1 ] && [ "${NP_KEEP_GOING:-0}" != 1 ]; then
    break
  fi
  current=$stage
  banner "$stage" start
  t0=$SECONDS
  "stage_$stage"
  rc=$?
  seconds[$stage]=$((SECONDS - t0))
  case $rc in
    0) result[$stage]=PASS ;;
    77) result[$stage]=SKIP ;;
    *) result[$stage]="FAIL"; note[$stage]="exit $rc${note[$stage]:+; ${note[$stage]}}"; failed=1 ;;
  esac
  banner "$stage" "${result[$stage]} in ${seconds[$stage]}s"
  current=
done
exit "$failed"
