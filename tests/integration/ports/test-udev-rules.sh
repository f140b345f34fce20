#!/usr/bin/env bash
# systemd/70-sfid.rules run by the system's udev (udevadm test) against a made-up sysfs in a
# private mount namespace: the file parses without a complaint (a broken copy is shown to
# raise one, so the check can fail), USB-serial adapters and the virtual COM port of
# ST-LINK V2-1/V3 probes get mode 0660, group dialout and the stable names
# /dev/sfid/by-serial/SN, /dev/sfid/by-serial/SN-ifNN and /dev/sfid/by-path/..., and a
# ttyACM of another ST product does not. Needs root (a mount namespace over /sys and /dev).
set -euo pipefail
: "${SFID_SOURCE_ROOT:?run through meson test}"
RULES=$SFID_SOURCE_ROOT/systemd/70-sfid.rules

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

if [ "${1:-}" != --inside ]; then
	command -v udevadm >/dev/null || fail "udevadm is missing (package udev, scripts/deps)"
	if [ "$(id -u)" -ne 0 ]; then
		echo "SKIP: needs root for a private mount namespace over /sys and /dev"
		exit 77
	fi
	if ! unshare -m true 2>/dev/null; then
		echo "SKIP: this environment does not allow a private mount namespace (unshare -m)"
		exit 77
	fi
	exec unshare -m --propagation private "$0" --inside
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-udev-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# Nothing udevadm writes (symlinks, its database) reaches the real /dev or /run.
mount -t tmpfs tmpfs /sys
mount -t tmpfs tmpfs /dev
mkdir -p /run/udev
mount -t tmpfs tmpfs /run/udev
mkdir -p /run/udev/rules.d
cp "$RULES" /run/udev/rules.d/70-sfid.rules

# usb_tty PORT VID PID SERIAL INTERFACE acm|ftdi TTY: a USB device on hub port PORT with one
# interface that carries TTY (cdc_acm: the tty below the interface; ftdi_sio: below the
# usb-serial port). Prints the tty's sysfs path.
usb_tty() {
	local port=$1 vid=$2 pid=$3 serial=$4 iface=$5 kind=$6 tty=$7
	local pci=/sys/devices/pci0000:00/0000:00:14.0 dev ifdir ttydir
	mkdir -p /sys/bus/usb /sys/bus/pci /sys/bus/usb-serial /sys/class/tty "$pci/usb1"
	[ -e "$pci/subsystem" ] || ln -s ../../../bus/pci "$pci/subsystem"
	[ -e "$pci/uevent" ] || printf 'PCI_SLOT_NAME=0000:00:14.0\n' >"$pci/uevent"
	[ -e "$pci/usb1/subsystem" ] || ln -s ../../../../bus/usb "$pci/usb1/subsystem"
	[ -e "$pci/usb1/uevent" ] || printf 'DEVTYPE=usb_device\n' >"$pci/usb1/uevent"
	dev=$pci/usb1/$port
	if [ ! -d "$dev" ]; then
		mkdir -p "$dev"
		ln -s ../../../../../bus/usb "$dev/subsystem"
		printf 'DEVTYPE=usb_device\nDRIVER=usb\n' >"$dev/uevent"
		printf '%s\n' "$vid" >"$dev/idVendor"
		printf '%s\n' "$pid" >"$dev/idProduct"
		printf '%s\n' "$serial" >"$dev/serial"
		printf 'Maker\n' >"$dev/manufacturer"
		printf 'Adapter\n' >"$dev/product"
		printf '0100\n' >"$dev/bcdDevice"
		printf '00\n' >"$dev/bDeviceClass"
	fi
	ifdir=$dev/$port:1.$iface
	mkdir -p "$ifdir"
	ln -s ../../../../../../bus/usb "$ifdir/subsystem"
	printf 'DEVTYPE=usb_interface\n' >"$ifdir/uevent"
	printf '%02x\n' "$iface" >"$ifdir/bInterfaceNumber"
	if [ "$kind" = acm ]; then
		printf '02\n' | tee "$ifdir/bInterfaceClass" "$ifdir/bInterfaceSubClass" >/dev/null
		printf '01\n' >"$ifdir/bInterfaceProtocol"
		ttydir=$ifdir/tty/$tty
		mkdir -p "$ttydir"
		ln -s "../../../$port:1.$iface" "$ttydir/device"
		printf 'MAJOR=166\nMINOR=%s\nDEVNAME=%s\n' "${tty#ttyACM}" "$tty" >"$ttydir/uevent"
	else
		printf 'ff\n' | tee "$ifdir/bInterfaceClass" "$ifdir/bInterfaceSubClass" \
			"$ifdir/bInterfaceProtocol" >/dev/null
		mkdir -p "$ifdir/$tty"
		ln -s ../../../../../../../bus/usb-serial "$ifdir/$tty/subsystem"
		: >"$ifdir/$tty/uevent"
		printf '0\n' >"$ifdir/$tty/port_number"
		ttydir=$ifdir/$tty/tty/$tty
		mkdir -p "$ttydir"
		ln -s "../../../$tty" "$ttydir/device"
		printf 'MAJOR=188\nMINOR=%s\nDEVNAME=%s\n' "${tty#ttyUSB}" "$tty" >"$ttydir/uevent"
	fi
	ln -s "$(realpath -m --relative-to="$ttydir" /sys/class/tty)" "$ttydir/subsystem"
	ln -s "$(realpath -m --relative-to=/sys/class/tty "$ttydir")" "/sys/class/tty/$tty"
	echo "$ttydir"
}

# run SYSPATH: udevadm test's output for the device, in $tmp/out.
run() {
	SYSTEMD_DEVICE_VERIFY_SYSFS=0 udevadm test --action=add "$1" >"$tmp/out" 2>&1 ||
		fail "udevadm test $1 failed: $(tail -n 20 "$tmp/out")"
}

# complaints: udev's messages about 70-sfid.rules other than the rules it applied.
complaints() {
	grep -F '70-sfid.rules' "$tmp/out" | grep -v '^Reading rules file' |
		grep -Eiv '70-sfid\.rules:[0-9]+ (MODE|GROUP|LINK) ' || true
}

links() {
	sed -n 's/^DEVLINKS=//p' "$tmp/out" | tr ' ' '\n'
}

has_link() {
	links | grep -x -- "$1" >/dev/null || fail "$2: no link $1; links: $(links | tr '\n' ' ')"
}

echo "# the file parses, and a broken copy would be noticed"
acm=$(usb_tty 1-3 0483 374b 066DFF485754 2 acm ttyACM0)
run "$acm"
[ -z "$(complaints)" ] || fail "udev complains about 70-sfid.rules: $(complaints)"
grep -q '^Reading rules file: /run/udev/rules.d/70-sfid.rules$' "$tmp/out" ||
	fail "udevadm did not read the rules: $(head -n 20 "$tmp/out")"
cp /run/udev/rules.d/70-sfid.rules "$tmp/good.rules"
{ cat "$tmp/good.rules"; printf 'SUBSYSTEM=="tty", ATRS{idVendor}=="0403", GOTO="sfid_nowhere"\n'; } \
	>/run/udev/rules.d/70-sfid.rules
run "$acm"
[ -n "$(complaints)" ] || fail "a broken rule raised no complaint: the check cannot fail"
cp "$tmp/good.rules" /run/udev/rules.d/70-sfid.rules

echo "# ST-LINK V2-1 virtual COM port"
run "$acm"
grep -q '70-sfid.rules:[0-9]* MODE 0660' "$tmp/out" || fail "ST-LINK: no mode 0660: $(complaints)"
grep -q '70-sfid.rules:[0-9]* GROUP [0-9]*' "$tmp/out" || fail "ST-LINK: no group"
has_link /dev/sfid/by-serial/066DFF485754 "ST-LINK 374b"
has_link /dev/sfid/by-serial/066DFF485754-if02 "ST-LINK 374b"
has_link /dev/sfid/by-path/pci-0000:00:14.0-usb-0:3:1.2 "ST-LINK 374b"

echo "# every ST-LINK with a virtual COM port"
n=1
for pid in 3752 374e 374f 3753 3754 3757; do
	p=$(usb_tty "1-4.$n" 0483 "$pid" "STL$pid" 1 acm "ttyACM$n")
	run "$p"
	has_link "/dev/sfid/by-serial/STL$pid" "ST-LINK $pid"
	has_link "/dev/sfid/by-serial/STL$pid-if01" "ST-LINK $pid"
	n=$((n + 1))
done

echo "# another ST device's ttyACM (a user firmware's CDC port) is left alone"
p=$(usb_tty 1-5 0483 5740 USERCDC 0 acm ttyACM9)
run "$p"
! links | grep '^/dev/sfid/' >/dev/null || fail "0483:5740 got sfid links: $(links | tr '\n' ' ')"
! grep -q '70-sfid.rules:[0-9]* MODE' "$tmp/out" || fail "0483:5740 got sfid's mode"

echo "# a four-port FTDI adapter: one name per interface"
p0=$(usb_tty 1-6 0403 6011 FT4ABC01 0 ftdi ttyUSB0)
p3=$(usb_tty 1-6 0403 6011 FT4ABC01 3 ftdi ttyUSB3)
run "$p0"
has_link /dev/sfid/by-serial/FT4ABC01-if00 "FT4232H interface 0"
has_link /dev/sfid/by-path/pci-0000:00:14.0-usb-0:6:1.0 "FT4232H interface 0"
run "$p3"
has_link /dev/sfid/by-serial/FT4ABC01-if03 "FT4232H interface 3"
has_link /dev/sfid/by-path/pci-0000:00:14.0-usb-0:6:1.3 "FT4232H interface 3"
echo "PASS"
