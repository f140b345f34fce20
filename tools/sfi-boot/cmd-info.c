/* sfi-boot info: bootloader version, commands, device id, UID, flash size, product state;
 * on a chip that speaks OSFI, its GET_INFO (product state, session record, installed image). */
#include <stdio.h>
#include <string.h>

#include "osfi.h"
#include "sfi-boot.h"

/* FLASH_OPTSR_CUR of the STM32H5 (non-secure flash registers at 0x40022000); PRODUCT_STATE
 * is bits 15:8. The bootloader may refuse to read it. */
#define STM32H5_FLASH_OPTSR_CUR 0x40022050u

static const char *part_name(uint32_t pid)
{
	switch (pid) {
	case STM32_PID_H56X_H57X:
		return "STM32H562/H563/H573";
	case STM32_PID_H503:
		return "STM32H503";
	case 0x478:
		return "STM32H523/H533";
	case STM32_PID_G47X_G48X:
		return "STM32G47x/G48x";
	default:
		return "unknown part";
	}
}

static const char *product_state_name(uint8_t ps)
{
	switch (ps) {
	case STM32H5_PS_OPEN:
		return "Open";
	case STM32H5_PS_PROVISIONING:
		return "Provisioning";
	case STM32H5_PS_IROT_PROVISIONED:
		return "iROT-Provisioned";
	case STM32H5_PS_TZ_CLOSED:
		return "TZ-Closed";
	case STM32H5_PS_CLOSED:
		return "Closed";
	case STM32H5_PS_LOCKED:
		return "Locked";
	default:
		return "unknown";
	}
}

/* Reads memory for info; a NACK is an answer ("protection active"), not a failure. */
static int info_read(struct sfi_boot *b, uint32_t addr, uint8_t *buf, size_t n, bool *ret_ok)
{
	int r = link_read_memory(b->link, addr, buf, n);

	if (r == -AN3155_E_NACK) {
		*ret_ok = false;
		return 0;
	}
	if (r < 0)
		return r;
	*ret_ok = true;
	return 0;
}

/* GET_INFO of an OSFI chip (docs/protocol.md §5.3). Returns 1 with *info filled, 0 when the
 * chip refused it, or a negative link error. */
static int info_osfi(struct sfi_boot *b, struct osfi_info *info)
{
	uint8_t ans[AN3155_SPECIAL_MAX_ANSWER];
	uint16_t status = 0;
	size_t alen = 0;
	int r;

	r = link_special(b->link, OSFI_OP_GET_INFO, NULL, 0, ans, sizeof(ans), &alen, &status);
	if (r == -AN3155_E_NACK)
		return 0;
	if (r < 0)
		return r;
	if (status != OSFI_ST_OK || osfi_info_decode(ans, alen, info) < 0)
		return 0;
	return 1;
}

static void info_print_osfi(const struct osfi_info *i)
{
	printf("osfi session:  %s, last status %s\n", osfi_session_state_name(i->session_state),
	       osfi_status_name(i->last_status));
	if (i->last_status != OSFI_ST_OK)
		printf("               (%s)\n", osfi_status_message(i->last_status));
	printf("installed:     ");
	if (osfi_info_has_installed(i)) {
		for (size_t k = 0; k < OSFI_ID_LEN; k++)
			printf("%02x", i->installed_id[k]);
		printf(" (image id of the last finalized session)\n");
	} else {
		printf("no OSFI session finalized\n");
	}
}

/* info over USB DFU: the descriptors, then GET_INFO on the OSFI alternate for the chip's
 * UID and product state (the USB serial string is not the chip's identity). */
static int info_run_dfu(struct sfi_boot *b)
{
	struct transport_identity id;
	struct transport_answer a = { 0 };
	struct osfi_request req = { .subop = OSFI_OP_GET_INFO, .answer_max = OSFI_INFO_LEN };
	uint8_t ans[OSFI_INFO_LEN];
	struct osfi_info oi;
	bool osfi = false;
	int r;

	r = sfi_boot_dfu_describe(b, &osfi);
	if (r != SFI_BOOT_EXIT_OK)
		return r;
	if (!osfi) {
		printf("osfi:          no \"@OSFI v1\" alternate setting\n");
		return SFI_BOOT_EXIT_OK;
	}
	r = transport_identify_sync(b->tp, &id);
	if (r < 0)
		return sfi_boot_dfu_fail(b, r, "identify");
	printf("device id:     0x%03x (%s)\n", id.pid, part_name(id.pid));
	r = transport_osfi_sync(b->tp, &req, ans, sizeof(ans), &a);
	if (r < 0)
		return sfi_boot_dfu_fail(b, r, "OSFI GET_INFO");
	if (a.status != OSFI_ST_OK || osfi_info_decode(ans, a.len, &oi) < 0) {
		sfi_boot_error("OSFI GET_INFO: the chip answered %s", osfi_status_name(a.status));
		return SFI_BOOT_EXIT_REFUSED;
	}
	printf("uid:           ");
	for (size_t i = 0; i < sizeof(oi.uid); i++)
		printf("%02x", oi.uid[i]);
	printf("\n");
	printf("product state: %s (0x%02x)\n", product_state_name(oi.product_state),
	       oi.product_state);
	info_print_osfi(&oi);
	return SFI_BOOT_EXIT_OK;
}

static int info_run(struct sfi_boot *b, int argc, char **argv)
{
	struct an3155_get_info g;
	struct an3155_version_info v;
	struct osfi_info oi;
	uint8_t uid[STM32H5_UID_LEN], fs[2], optsr[4];
	uint32_t pid;
	bool ok, osfi = false;
	int r;

	if (!b->link)
		return info_run_dfu(b);
	r = link_get(b->link, &g);
	if (r < 0)
		return sfi_boot_fail(b, r, "Get");
	printf("port:          %s\n", link_port_name(b->link));
	printf("bootloader:    protocol %u.%u\n", g.version >> 4, g.version & 0xf);
	printf("commands:     ");
	for (size_t i = 0; i < g.n_cmds; i++)
		printf(" %02x", g.cmds[i]);
	printf("\n");

	if (an3155_get_has(&g, AN3155_CMD_GET_VERSION)) {
		r = link_get_version(b->link, &v);
		if (r < 0)
			return sfi_boot_fail(b, r, "Get Version");
		printf("version:       0x%02x (option bytes %02x %02x)\n", v.version, v.option1,
		       v.option2);
	}
	if (!an3155_get_has(&g, AN3155_CMD_GET_ID)) {
		sfi_boot_error("the bootloader does not offer Get ID");
		return SFI_BOOT_EXIT_REFUSED;
	}
	r = link_get_id(b->link, &pid);
	if (r < 0)
		return sfi_boot_fail(b, r, "Get ID");
	printf("device id:     0x%03x (%s)\n", pid, part_name(pid));

	/* A chip that speaks OSFI reports its product state and UID in GET_INFO, which a
	 * protected chip still answers (Read Memory of the flash registers may be refused). */
	if (an3155_get_has(&g, AN3155_CMD_SPECIAL) &&
	    an3155_get_has(&g, AN3155_CMD_EXTENDED_SPECIAL)) {
		r = info_osfi(b, &oi);
		if (r < 0)
			return sfi_boot_fail(b, r, "OSFI GET_INFO");
		osfi = r == 1;
	}

	if (!an3155_get_has(&g, AN3155_CMD_READ_MEMORY)) {
		if (osfi) {
			printf("uid:           ");
			for (size_t i = 0; i < sizeof(oi.uid); i++)
				printf("%02x", oi.uid[i]);
			printf("\n");
			printf("product state: %s (0x%02x)\n", product_state_name(oi.product_state),
			       oi.product_state);
			info_print_osfi(&oi);
		} else {
			printf("uid:           not readable (no Read Memory command)\n");
		}
		return SFI_BOOT_EXIT_OK;
	}
	r = info_read(b, STM32H5_UID_ADDR, uid, sizeof(uid), &ok);
	if (r < 0)
		return sfi_boot_fail(b, r, "reading the UID");
	if (!ok && osfi) {
		memcpy(uid, oi.uid, sizeof(uid));
		ok = true;
	}
	if (ok) {
		printf("uid:           ");
		for (size_t i = 0; i < sizeof(uid); i++)
			printf("%02x", uid[i]);
		printf("\n");
	} else {
		printf("uid:           not readable (protection active)\n");
	}

	r = info_read(b, STM32H5_FLASHSIZE_ADDR, fs, sizeof(fs), &ok);
	if (r < 0)
		return sfi_boot_fail(b, r, "reading the flash size");
	if (ok)
		printf("flash size:    %u KiB\n", fs[0] | fs[1] << 8);
	else
		printf("flash size:    not readable (protection active)\n");

	if (osfi) {
		printf("product state: %s (0x%02x)\n", product_state_name(oi.product_state),
		       oi.product_state);
		info_print_osfi(&oi);
		return SFI_BOOT_EXIT_OK;
	}
	r = info_read(b, STM32H5_FLASH_OPTSR_CUR, optsr, sizeof(optsr), &ok);
	if (r < 0)
		return sfi_boot_fail(b, r, "reading the option bytes");
	if (ok)
		printf("product state: %s (0x%02x)\n", product_state_name(optsr[1]), optsr[1]);
	else
		printf("product state: not readable\n");
	return SFI_BOOT_EXIT_OK;
}

const struct sfi_boot_command sfi_boot_cmd_info = {
	.name = "info",
	.args = "",
	.summary = "bootloader version, commands, device id, UID, flash size, product state",
	.min_args = 0,
	.max_args = 0,
	.run = info_run,
};
