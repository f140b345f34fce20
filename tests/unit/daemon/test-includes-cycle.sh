#!/usr/bin/env bash
# scripts/check-includes fails on an include cycle: include-cycle/ holds two modules that
# include each other's header (slot.h -> job.h -> slot.h) and nothing else wrong.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
check=${CHECK_INCLUDES:-$here/../../../scripts/check-includes}
out=$("$check" "$here/include-cycle" 2>&1)
rc=$?
printf '%s\n' "$out"
if [ "$rc" -ne 1 ]; then
	echo "FAIL: check-includes exited $rc on a cycle, want 1"
	exit 1
fi
case $out in
*"include cycle job -> slot -> job (job.h includes slot.h; slot.h includes job.h)"*) ;;
*)
	echo "FAIL: check-includes did not name the cycle"
	exit 1
	;;
esac
# The same files without the cycle pass.
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-includes.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cp "$here"/include-cycle/* "$tmp"/
printf '/* No longer includes slot.h. */\n#pragma once\n' > "$tmp/job.h"
if ! "$check" "$tmp"; then
	echo "FAIL: check-includes refused files without a cycle"
	exit 1
fi
echo "ok: a cycle fails the check, its absence passes"
