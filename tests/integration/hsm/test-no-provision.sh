#!/bin/bash
# sfid links no provisioning code: no function that the provisioning library
# (hsm/hsm-provision.c: token set-up, wipe, key generation, refill, audit key rotation)
# defines is in the sfid executable. The same check on sfi-hsm, which links that library,
# must find every one of its exported functions, so the check is known to see them.
# Env: NM, PROVISION_LIB (libsfihsm-provision.a), SFID, SFI_HSM.
# With --expect-linked, SFID names an executable that does link provisioning code (sfi-hsm):
# the test then passes only if the check reports it, which shows the check fails when it must.
set -euo pipefail

expect_linked=false
[ "${1:-}" = --expect-linked ] && expect_linked=true

fail() { echo "FAIL: $*"; exit 1; }

for f in "$PROVISION_LIB" "$SFID" "$SFI_HSM"; do
	[ -f "$f" ] || fail "$f is missing"
done

# Function names defined in the library (global T, local t), without the suffixes the
# compiler adds to split or specialised copies (.cold, .part.0, .isra.0, .constprop.0),
# and without the names reserved to the implementation (leading underscore: the
# sanitizers' per-object constructors are the same in every object).
names() {
	"$NM" --defined-only "$@" | awk '($2 == "T" || $2 == "t") && $3 !~ /^_/ { print $3 }' |
		sed 's/\..*$//' | sort -u
}

lib_all=$(names "$PROVISION_LIB")
lib_global=$("$NM" --defined-only --extern-only "$PROVISION_LIB" | awk '$2 == "T" { print $3 }' | sort -u)
[ -n "$lib_global" ] || fail "$PROVISION_LIB defines no function"
echo "provisioning functions: $(echo "$lib_global" | tr '\n' ' ')"

missing=$(comm -23 <(echo "$lib_global") <(names "$SFI_HSM"))
[ -z "$missing" ] || fail "sfi-hsm lacks provisioning functions the check looks for: $missing"

linked=$(comm -12 <(echo "$lib_all") <(names "$SFID"))
if $expect_linked; then
	[ -n "$linked" ] || fail "the check found no provisioning code in $SFID, which links it"
	echo "the check reports $SFID: $(echo "$linked" | tr '\n' ' ')"
	exit 0
fi
[ -z "$linked" ] || fail "sfid contains provisioning code: $(echo "$linked" | tr '\n' ' ')"
echo "sfid: none of the $(echo "$lib_all" | wc -l) provisioning functions"
