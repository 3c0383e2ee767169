#!/usr/bin/env bash
# The test command of netplumb.pipework (run as root on Debian 12; CI runs it through .ci/run).
#
#   bash scripts/test.sh                       all stages; ARGS, if any, go to both pytest stages
#   bash scripts/test.sh STAGE[,STAGE] [ARGS]  some stages (setup runs first unless NP_SKIP_SETUP=1)
#     e.g. scripts/test.sh unit -k veth -x         ARGS go to pytest
#          scripts/test.sh sanity --test pylint    one stage only: ARGS go to that stage's tool
#          scripts/test.sh lint roles/ovs_vlan     (ansible-test sanity, ansible-lint, molecule test)
#          scripts/test.sh molecule -s default     (without ARGS: molecule test --all)
#
# Stages (each timed; the run stops at the first failure and always prints a summary):
#   setup        scripts/setup.sh: apt packages, venv, dockerd + OVS, test image (idempotent, fast)
#   unit         pytest tests/unit
#   integration  pytest tests/integration tests/lab (root, dockerd, OVS)
#   sanity       ansible-test sanity --venv --python 3.11 on a copy of the checkout (tracked and
#                untracked-not-ignored files) at /tmp/np-sanity-PID/ansible_collections/netplumb/pipework,
#                with an offline get-pip stand-in (scripts/ansible_test_getpip.py); no ignore files
#   lint         ansible-lint (production profile, .ansible-lint), then antsibull-changelog lint
#   molecule     molecule test --all from the collection root (extensions/molecule/*/molecule.yml), if any
#
# Exit status: 0 when every stage passed or was skipped, 1 otherwise, 2 for bad usage.
# Environment: NP_KEEP_GOING=1 runs the remaining stages after a failure; NP_SKIP_SETUP=1 skips setup;
# NP_INTEGRATION_WORKERS (default 2; 0 = one by one) sets the integration stage's pytest-xdist workers;
# NP_SANITY_ARGS adds arguments to ansible-test sanity. Logs: tests/output/test-sh/<stage>.log.
# shellcheck disable=SC2317  # stage_* and trap functions are called indirectly
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/env.sh
source "$here/env.sh"
cd "$NP_REPO" || exit 2

all_stages=(setup unit integration sanity lint molecule)
NP_SANITY_PYTHON=${NP_SANITY_PYTHON:-3.11}

usage() {
  sed -n '2,/^# shellcheck disable/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

is_stage() {
  local s
  for s in "${all_stages[@]}" all; do [ "$1" = "$s" ] && return 0; done
  return 1
}

# ---- argument parsing --------------------------------------------------------------------------
selected=()
case ${1:-} in
  help|-h|--help) usage; exit 0 ;;
esac
if [ $# -gt 0 ] && [[ $1 != -* ]]; then
  IFS=, read -r -a wanted <<<"$1"
  for w in "${wanted[@]}"; do
    is_stage "$w" || { echo "test.sh: unknown stage '$w' (stages: ${all_stages[*]} all)" >&2; exit 2; }
  done
  shift
  for s in "${all_stages[@]}"; do
    for w in "${wanted[@]}"; do
      if [ "$w" = all ] || [ "$w" = "$s" ]; then selected+=("$s"); break; fi
    done
  done
  # setup runs first whatever was asked (it is fast when everything is in place)
  [ "${selected[0]}" = setup ] || selected=(setup "${selected[@]}")
else
  selected=("${all_stages[@]}")
fi
if [ "${NP_SKIP_SETUP:-0}" = 1 ]; then
  filtered=()
  for s in "${selected[@]}"; do [ "$s" = setup ] || filtered+=("$s"); done
  selected=("${filtered[@]}")
fi
extra_args=("$@")
# Which stage gets extra_args: the only stage asked for, or else the pytest stages.
work_stages=()
for s in "${selected[@]}"; do [ "$s" = setup ] || work_stages+=("$s"); done
args_target=pytest
if [ ${#work_stages[@]} = 1 ]; then
  case ${work_stages[0]} in sanity|lint|molecule) args_target=${work_stages[0]} ;; esac
fi
args_for() {  # args_for TARGET: print extra_args NUL-separated if TARGET receives them
  [ "$1" = "$args_target" ] && [ ${#extra_args[@]} -gt 0 ] && printf '%s\0' "${extra_args[@]}"
  return 0
}
pytest_args=() sanity_args=() lint_args=() molecule_args=()
mapfile -d '' -t pytest_args < <(args_for pytest)
mapfile -d '' -t sanity_args < <(args_for sanity)
mapfile -d '' -t lint_args < <(args_for lint)
mapfile -d '' -t molecule_args < <(args_for molecule)

# ---- bookkeeping -------------------------------------------------------------------------------
declare -A result=() seconds=() note=()
# Logs go to tests/output/test-sh unless another test.sh run in this checkout owns that directory.
logdir=$NP_REPO/tests/output/test-sh
mkdir -p "$logdir"
owner=$(cat "$logdir/.owner" 2>/dev/null || true)
if [ -n "$owner" ] && [ "$owner" != $$ ] && kill -0 "$owner" 2>/dev/null; then
  logdir=$NP_REPO/tests/output/test-sh-$$
  mkdir -p "$logdir"
  echo "test.sh: another run (pid $owner) is using tests/output/test-sh; logs go to $logdir"
else
  echo $$ >"$logdir/.owner"
fi
run_start=$SECONDS
summary_printed=0
sanity_root=

print_summary() {
  [ "$summary_printed" = 1 ] && return
  summary_printed=1
  local s r overall=PASS
  [ -n "$sanity_root" ] && rm -rf "$sanity_root"
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
  [ "$(cat "$logdir/.owner" 2>/dev/null)" = $$ ] && rm -f "$logdir/.owner"
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
  python -m pytest "${dirs[@]}" "${extra_pytest_args[@]}" "${pytest_args[@]}" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  last=$(grep -aE '^=+ .* in [0-9.]+s' "$log" | tail -n 1 | sed -E 's/^=+ //; s/ =+$//')
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
  local extra_pytest_args=()
  run_pytest unit tests/unit
}

stage_integration() {
  if [ "$(id -u)" != 0 ]; then
    echo "test.sh: integration tests need root" >&2
    note[integration]="needs root"
    return 1
  fi
  bash "$NP_REPO/scripts/services.sh" start || { note[integration]="dockerd/OVS not up"; return 1; }
  # tests/lab: real tests of the lab tool (namespaces, sshd, OVS), same needs as integration tests.
  # Most of their time is spent waiting (expected-to-fail pings, revert timers, SSH), so two workers
  # nearly halve the stage. Every test works in its own namespaces, bridges, containers and record
  # store; --dist loadfile keeps each file's tests (which share fixtures) on one worker.
  # NP_INTEGRATION_WORKERS=0 runs them one by one.
  local workers=${NP_INTEGRATION_WORKERS:-2}
  local extra_pytest_args=()
  if [ "$workers" != 0 ]; then extra_pytest_args=(-n "$workers" --dist loadfile); fi
  # A failing integration test runs once more before it counts (busy CI machines time out pings and
  # SSH); a test that fails twice fails the stage, and reruns are listed in the log (R in the summary).
  extra_pytest_args+=(--reruns "${NP_INTEGRATION_RERUNS:-1}")
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
      | tar --null --no-recursion -T - -cf - | tar -xf - -C "$dest" || return 1
  else
    tar --exclude=./.build --exclude=./.git --exclude=./tests/output --exclude='*/__pycache__' \
      -cf - . | tar -xf - -C "$dest" || return 1
  fi
  # A repository of its own, so that ansible-test lists files with git (and never finds an
  # enclosing repository in which the copy would be ignored).
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
  local dest rc d
  if compgen -G "tests/sanity/ignore-*.txt" >/dev/null && [ "${NP_ALLOW_SANITY_IGNORES:-0}" != 1 ]; then
    echo "sanity: this project keeps no sanity ignore files; fix the findings instead:" tests/sanity/ignore-*.txt >&2
    note[sanity]="tests/sanity/ignore-*.txt present"
    return 1
  fi
  setup_get_pip || { note[sanity]="could not prepare the get-pip stand-in"; return 1; }
  # Copies of runs that were killed
  for d in /tmp/np-sanity-*; do
    [ -d "$d" ] && ! kill -0 "${d##*-}" 2>/dev/null && rm -rf "$d"
  done
  # ansible-test rejects the .build/collections symlink (it resolves the working directory), so it
  # runs on a copy; one per run, so that concurrent runs do not remove each other's. A short path
  # keeps its venvs' shebangs under the kernel's 127-character limit.
  sanity_root=/tmp/np-sanity-$$
  dest=$sanity_root/ansible_collections/netplumb/pipework
  copy_checkout "$dest" || { note[sanity]="could not copy the checkout to $dest"; return 1; }
  echo "sanity: testing a copy at $dest"
  # shellcheck disable=SC2086  # NP_SANITY_ARGS is a list of words on purpose
  (cd "$dest" && env -u ANSIBLE_COLLECTIONS_PATH -u PYTHONPATH \
     ansible-test sanity --venv --python "$NP_SANITY_PYTHON" --color no ${NP_SANITY_ARGS:-} "${sanity_args[@]}") 2>&1 \
    | tee "$logdir/sanity.log"
  rc=${PIPESTATUS[0]}
  rm -rf "$logdir/sanity-results"
  if [ -d "$dest/tests/output" ]; then
    cp -r "$dest/tests/output" "$logdir/sanity-results"
    rm -rf "$logdir/sanity-results/.tmp"
  fi
  rm -rf "$sanity_root"
  sanity_root=
  if [ "$rc" != 0 ]; then
    # ansible-test lists the failed tests one per line after this FATAL line
    note[sanity]="failed: $(sed -n '/^FATAL: The [0-9]* sanity test(s) listed below/,/^FATAL: Command/p' "$logdir/sanity.log" \
      | grep -avE '^FATAL' | tr '\n' ' ')(see $logdir/sanity.log)"
  fi
  return "$rc"
}

stage_lint() {
  local rc
  NO_COLOR=1 ansible-lint "${lint_args[@]}" 2>&1 | tee "$logdir/lint.log"
  rc=${PIPESTATUS[0]}
  note[lint]=$(grep -aE '^(Passed|Failed)' "$logdir/lint.log" | tail -n 1 | cut -c1-100)
  [ "$rc" = 0 ] || return "$rc"
  echo "lint: antsibull-changelog lint (changelogs/fragments)"
  antsibull-changelog lint || { note[lint]="antsibull-changelog lint failed"; return 1; }
}

stage_molecule() {
  local rc
  if ! compgen -G "extensions/molecule/*/molecule.yml" >/dev/null; then
    note[molecule]="no extensions/molecule/*/molecule.yml"
    return 77
  fi
  # Molecule 26 in collection mode: run from the collection root (galaxy.yml), scenarios come from
  # extensions/molecule/<scenario>/molecule.yml.
  if [ ${#molecule_args[@]} -gt 0 ]; then
    NO_COLOR=1 molecule test "${molecule_args[@]}" 2>&1 | tee "$logdir/molecule.log"
  else
    NO_COLOR=1 molecule test --all 2>&1 | tee "$logdir/molecule.log"
  fi
  rc=${PIPESTATUS[0]}
  note[molecule]=$(grep -aoE 'Molecule executed .*' "$logdir/molecule.log" | tail -n 1)
  return "$rc"
}

# ---- main --------------------------------------------------------------------------------------
echo "test.sh: stages: ${selected[*]}${extra_args[*]:+ (arguments for $args_target: ${extra_args[*]})}"
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
