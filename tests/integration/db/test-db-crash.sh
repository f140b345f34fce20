#!/bin/bash
# Kills a database writer 200 times at random points and checks the database after each.
set -euo pipefail
dir=$(mktemp -d "${TMPDIR:-/tmp}/sfid-db-crash-XXXXXX")
trap 'rm -rf "$dir"' EXIT
timeout 240 "$1" run "$dir" "${2:-200}"
