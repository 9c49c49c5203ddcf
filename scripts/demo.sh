#!/usr/bin/env bash
# The main job, offline, on this repository's own modelmora.yml:
# lock → install (download, convert, validate, benchmark) → serve smoke test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_XET=1 USE_TF=0 TOKENIZERS_PARALLELISM=false
export TRANSFORMERS_VERBOSITY=error
MM=.venv/bin/modelmora
set -x
$MM lock --check      # the committed lock matches modelmora.yml and the installed package
$MM install           # cold: ~1-2 min on 2 cores; afterwards a no-op in well under a second
$MM list
$MM show minilm
$MM show tiny-chat
$MM show tiny-vit
.venv/bin/python scripts/serve_smoke.py
