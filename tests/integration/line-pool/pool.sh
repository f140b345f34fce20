# Shared parts of the pool scenarios (sourced after ../line/common.sh): more SoftHSM2 tokens
# provisioned like the line token (same image, chip CA and global key), each with its own
# counter, and PKCS#11 calls slowed by the fault-injecting module so that chains overlap.
FAULT_MODULE=$BUILD/tests/faults/libsfid-pkcs11-fault.so

# pool_add_token LABEL COUNT: one more token in the same SoftHSM2 store.
pool_add_token() {
	softhsm2-util --init-token --free --label "$1" --so-pin 12345678 --pin 87654321 \
		>/dev/null || line_fail "cannot create SoftHSM2 token $1"
	"$SFIHSM" provision --module "$SOFTHSM_MODULE" --token "$1" \
		--pin-file "$tmp/pki/pin" --image-key "$tmp/pki/image.key" --image "$tmp/pki/demo.sfi" \
		--max-count "$2" --ca-pub "$tmp/pki/ca-pub.pem" --global-key "$tmp/pki/global.key" \
		>/dev/null || line_fail "sfi-hsm provision of $1 failed"
}

# pool_info LABEL: "SERIAL LEFT GRANTED" of a token.
pool_info() {
	"$SFIHSM" info --json --module "$SOFTHSM_MODULE" --token "$1" --pin-file "$tmp/pki/pin" |
		python3 -c 'import json,sys
d=json.load(sys.stdin)
print(d["serial"], d["licenses_left"], d["licenses_granted"])'
}

# pool_left LABEL: licenses left on a token.
pool_left() {
	pool_info "$1" | cut -d' ' -f2
}

# pool_slow MS: every C_WrapKey (one per license) waits MS first, in sfid only.
pool_slow() {
	[ -f "$FAULT_MODULE" ] || line_fail "the fault-injecting PKCS#11 module is not built"
	printf 'module = %s\nfunction = C_WrapKey\ndelay_ms = %s\n' "$SOFTHSM_MODULE" "$1" \
		>"$tmp/p11-fault.conf"
	export SFID_FAULT_PKCS11=$tmp/p11-fault.conf
}

# pool_write_config SLOTS POOL...: the line configuration with the fault module and a pool.
pool_write_config() {
	local slots=$1
	shift
	line_write_config "$slots"
	sed -i "s|^module = .*|module = $FAULT_MODULE\npool = $*|" "$tmp/sfid.conf"
}

# pool_ledger_agrees LABEL...: for each token, the counts it spent (granted - left) equal
# the licenses the ledger records as issued by it; prints "LABEL:COUNT" per token.
pool_ledger_agrees() {
	local label serial left granted recorded out=
	for label in "$@"; do
		read -r serial left granted < <(pool_info "$label")
		recorded=$(sql "SELECT count(*) FROM licenses WHERE token_serial = '$serial' AND state <> 'void'")
		[ $((granted - left)) -eq "$recorded" ] ||
			line_fail "token $label spent $((granted - left)), the ledger records $recorded issued by it"
		out="$out $label:$recorded"
	done
	echo "$out"
}

# pool_overlap: true when two licenses from different tokens were being issued at once.
pool_overlap() {
	[ "$(sql "SELECT count(*) FROM licenses a JOIN licenses b ON a.token_serial < b.token_serial
		  WHERE a.issued_at IS NOT NULL AND b.issued_at IS NOT NULL
		  AND a.reserved_at < b.issued_at AND b.reserved_at < a.issued_at")" -ge 1 ]
}
