#!/usr/bin/env bash
# OpenSC's pkcs11-tool sees the provisioned objects with the documented labels and
# attributes, can read the firmware id and counter, and cannot read the OEM key.
set -euo pipefail
. "$(dirname "$0")/hsm-lib.sh"
command -v pkcs11-tool >/dev/null || { echo "pkcs11-tool missing: skipped"; exit 77; }

make_token oem
hsm provision oem --image-key k.bin --image image.sfi --max-count 42 --ca-pub ca.pub \
	--global-key g.bin >/dev/null

export SFID_TEST_PIN=1234
p11() {
	timeout 60 pkcs11-tool --module "$SOFTHSM_MODULE" --token-label oem --login \
		--pin env:SFID_TEST_PIN "$@" 2>"$WORK/p11.err"
}
p11 -O >objects.txt

# block KIND LABEL: the lines pkcs11-tool prints for that object, header line included.
block() {
	awk -v kind="$1" -v label="$2" '
		function flush() { if (hit) printf "%s", buf; buf = ""; hit = 0 }
		/^[A-Z]/ { flush(); inblk = index($0, kind) == 1 }
		inblk { buf = buf $0 "\n" }
		inblk && $1 == "label:" { l = $2; gsub("\047", "", l); if (l == label) hit = 1 }
		END { flush() }' objects.txt
}
need() { # need KIND LABEL PATTERN
	block "$1" "$2" | grep -E "$3" >/dev/null || { cat objects.txt >&2; fail "$1 $2: no /$3/"; }
}
refuse() {
	if block "$1" "$2" | grep -E "$3" >/dev/null; then cat objects.txt >&2; fail "$1 $2: has /$3/"; fi
}

need "Secret Key Object" osfi-oem-key "AES length 16"
need "Secret Key Object" osfi-oem-key "Access: *sensitive"
need "Secret Key Object" osfi-oem-key "extractable"
refuse "Secret Key Object" osfi-oem-key "Usage: .*(encrypt|decrypt|wrap|unwrap|sign|derive)"
need "Secret Key Object" osfi-global-key "AES length 32"
need "Secret Key Object" osfi-global-key "Usage: *derive"
refuse "Secret Key Object" osfi-global-key "extractable"
need "Private Key Object" osfi-license-key "EC"
need "Private Key Object" osfi-license-key "Usage: *derive"
refuse "Private Key Object" osfi-license-key "Usage: .*sign"
need "Private Key Object" osfi-license-key "never extractable"
need "Private Key Object" osfi-audit-key "Usage: *sign"
refuse "Private Key Object" osfi-audit-key "Usage: .*derive"
need "Public Key Object" osfi-license-key "EC_POINT"
need "Public Key Object" osfi-audit-key "EC_POINT"
need "Public Key Object" osfi-ca-pub "EC_POINT"
need "Data object" osfi-firmware-id "application: *'osfi'"
need "Data object" osfi-firmware-id "flags: *private"
refuse "Data object" osfi-firmware-id "modifiable"
need "Data object" osfi-counter "flags: *modifiable private"

# Data objects read back as documented: image id, LE32 remaining count.
p11 --read-object --type data --label osfi-firmware-id -o fwid.bin
[ "$(od -An -tx1 fwid.bin | tr -d ' \n')" = "$(head -c 64 image.sfi | sha256sum | cut -d' ' -f1)" ] ||
	fail "firmware id object is not the image id"
p11 --read-object --type data --label osfi-counter -o counter.bin
[ "$(od -An -tu4 counter.bin | tr -d ' ')" = 42 ] || fail "counter object is not LE32 42"

# The OEM key never comes out in clear.
if p11 --read-object --type secrkey --label osfi-oem-key -o oem.bin; then
	fail "pkcs11-tool read the OEM key"
fi
[ ! -s oem.bin ] || fail "OEM key bytes written"

# After a license, pkcs11-tool sees the decremented counter.
hsm license oem --cert chip1.cert --image image.sfi --out chip1.lic >/dev/null
p11 --read-object --type data --label osfi-counter -o counter.bin
[ "$(od -An -tu4 counter.bin | tr -d ' ')" = 41 ] || fail "counter not 41 after a license"
[ "$(p11 -O --type data | grep -c "label: *'osfi-counter'")" = 1 ] || fail "stale counter objects"
echo "pkcs11-tool: objects and attributes as documented"
