/* The seam between h5emu's chip loop (h5emu.c, emu-chip.c) and the umockdev harness
 * (emu-umockdev.c) that presents each emulated chip as a USB-serial adapter, so that host
 * code runs libserialport unchanged. Without --umockdev, chips sit on plain PTYs and no
 * line or termios events arrive (clients then use 8N1, e.g. stm32flash -m 8n1). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* What the host last set on the adapter: termios (baud, parity, size) and modem lines. */
struct emu_port_settings {
	uint32_t baud;	/* 0 when the host never set it */
	uint8_t data_bits;
	char parity;	/* 'N', 'E', 'O' */
	uint8_t stop_bits;
	bool dtr;	/* asserted */
	bool rts;	/* asserted */
};

struct emu_port_ops {
	/* Called, possibly from the harness thread, whenever the host changes termios or the
	 * modem lines of adapter `index`. Implementations copy *s and wake their loop. */
	void (*settings_changed)(void *user_data, unsigned index, const struct emu_port_settings *s);
	void *user_data;
};

struct emu_umockdev;

/* Creates a umockdev testbed with `count` USB-serial adapters (VID:PID 0403:6001, serial
 * number "<serial_prefix>NNNN", one physical USB port each, nodes /dev/ttyUSB<n>) whose
 * device nodes are PTYs, and serves their serial ioctls. On success *ret_master_fds[i]
 * is the chip side (PTY master) of adapter i and *ret is the harness.
 * Sets UMOCKDEV_DIR in this process's environment; children need LD_PRELOAD too
 * (emu_umockdev_child_env). Returns 0 or a negative errno. */
int emu_umockdev_start(unsigned count, const char *serial_prefix, const struct emu_port_ops *ops,
		       int *ret_master_fds, struct emu_umockdev **ret);

/* As emu_umockdev_start, with `ports_per_adapter` (1..8) ports on each adapter: adapter i
 * is USB interface i % K of USB device i / K (serial number "<serial_prefix>NNNN" of the
 * device, VID:PID 0403:6010 for 2 ports, 0403:6011 for more), as a multi-port adapter
 * (FT2232H, FT4232H) presents itself. */
int emu_umockdev_start_multi(unsigned count, unsigned ports_per_adapter,
			     const char *serial_prefix, const struct emu_port_ops *ops,
			     int *ret_master_fds, struct emu_umockdev **ret);

/* Writes KEY=VALUE lines (UMOCKDEV_DIR, LD_PRELOAD) that a client process needs to see
 * the testbed into `path`. Returns 0 or a negative errno. */
int emu_umockdev_write_env(struct emu_umockdev *u, const char *path);

/* Unplugs adapter `index` (remove uevent, node and sysfs entry gone, PTY hung up) or plugs
 * it back with a fresh PTY, returned in *ret_master_fd. Returns 0 or a negative errno. */
int emu_umockdev_unplug(struct emu_umockdev *u, unsigned index);
int emu_umockdev_plug(struct emu_umockdev *u, unsigned index, int *ret_master_fd);

/* Device node path of adapter `index` as host code sees it ("/dev/ttyUSB3"). */
const char *emu_umockdev_node(struct emu_umockdev *u, unsigned index);

/* The harness's UMockdevTestbed (the USB DFU harness adds its devices to the same one). */
void *emu_umockdev_testbed(struct emu_umockdev *u);

void emu_umockdev_stop(struct emu_umockdev *u);
