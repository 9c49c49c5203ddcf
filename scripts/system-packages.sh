#!/usr/bin/env bash
# Debian packages the tests use: Chromium (the Dagster UI's lineage page is rendered headless).
# Installs only what is missing, so a second run costs nothing; where apt-get is absent or
# fails (no root, no mirror), the tests that need a package skip and say which.
set -uo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
  echo "system-packages: cannot install ${missing[*]} (needs apt-get as root); their tests skip" >&2
  exit 0
fi
echo "system-packages: installing ${missing[*]}" >&2
{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } \
  >/tmp/modelmora-apt.log 2>&1 \
  || echo "system-packages: apt-get failed (see /tmp/modelmora-apt.log); their tests skip" >&2
exit 0
