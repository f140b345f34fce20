#!/bin/bash
# Runs the tamper suite in a private temp dir.
set -euo pipefail
dir=$(mktemp -d "${TMPDIR:-/tmp}/sfid-audit-tamper-XXXXXX")
trap 'rm -rf "$dir"' EXIT
"$1" "$2" "$dir"
