#!/usr/bin/env bash
# Build companion's wheel, install it into a brand-new venv (not editable, not
# the repo's .venv), and run the unit tests from a directory outside the repo,
# so that they import the installed package and nothing from the source tree.
#
# Offline: nothing here reaches a package index.
# * The wheel is built from a copy of the files it is made of (pyproject.toml,
#   README.md, companion/), so the checkout gets no build/ or egg-info and a
#   file the wheel forgets cannot be found in the checkout instead. It is built
#   without build isolation by .venv's setuptools (torch requires >= 77).
# * It is installed with --no-deps --no-index. Its dependencies (torch, the
#   engines, pytest ...) are the ones `make` installed into .venv: the new venv
#   sees .venv's site-packages through a one-line .pth file, which appends that
#   folder to sys.path *after* the new venv's own site-packages (so the wheel's
#   companion is the one imported) and runs none of the .pth files inside it (so
#   .venv's editable install of the checkout stays off). The script asserts both.
# * Every unit test runs, the slow ones included (the whole check took 2 min 13 s
#   on 2 cores, 89 s of it pytest); the notebooks and the tests that read the
#   repository's book/ or tools/ are not part of the wheel and skip.
# Extra arguments go to pytest: tools/check_wheel.sh -x -k quant
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv_py="$repo/.venv/bin/python"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INDEX=1 PIP_NO_INPUT=1

# 1. the wheel, from a copy of its sources
mkdir -p "$work/src"
cp "$repo/pyproject.toml" "$repo/README.md" "$work/src/"
cp -r "$repo/companion" "$work/src/companion"
find "$work/src" -name __pycache__ -prune -exec rm -rf {} +
"$venv_py" -m pip wheel -q --no-deps --no-build-isolation -w "$work/dist" "$work/src"
wheel="$(ls "$work"/dist/companion-*.whl)"
echo "built $(basename "$wheel")"

# 2. a fresh venv on the same interpreter as .venv; the wheel alone installed into it
"$venv_py" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --no-deps --no-index "$wheel"
site_new="$("$work/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")"
"$venv_py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" >"$site_new/_dependencies_from_repo_venv.pth"

# 3. the unit tests, from outside the repository
cp -r "$repo/tests" "$work/tests"
find "$work/tests" -name __pycache__ -prune -exec rm -rf {} +
cd "$work"
export PATH="$work/venv/bin:$PATH"   # the wheel's `companion` command
# the recorded runs are the repository's data, not the package's: point the wheel at them
export COMPANION_RECORDS="$repo/benchmarks/results"
"$work/venv/bin/python" - "$repo" "$site_new" <<'EOF'
import sys
import companion
repo, site_new = sys.argv[1], sys.argv[2]
assert companion.__file__.startswith(site_new), f"companion from {companion.__file__}, not the wheel"
assert not any(p == repo or p.startswith(repo + "/companion") for p in sys.path), sys.path
print("companion from", companion.__file__)
EOF
# the repository's pytest settings (markers, warning filters), without addopts' nbval
"$work/venv/bin/python" -m pytest -q -c "$repo/pyproject.toml" --rootdir "$work" \
  -o addopts="" -p no:cacheprovider --strict-markers --durations=10 "$@" tests
