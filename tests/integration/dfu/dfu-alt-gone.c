/* Selects an alternate setting on a DfuSe device that has just left the bus, then closes
 * it: the path of a chip that re-enumerates while a DFU slot selects its OSFI or flash
 * alternate. Opens the device at port path 2-1.1, prints "open", waits (running libusb's
 * events) until its hotplug callback sees it leave, prints "left", selects alternate 1 and
 * prints "alt: <libusb error name>", closes the handle and prints "closed".
 *   dfu-alt-gone          through the DfuSe backend's transport_dfu_set_alt()
 *   dfu-alt-gone --raw    libusb_set_interface_alt_setting() alone (libusb 1.0.25 and
 *                         1.0.26 then abort in libusb_close(): the test's proof that it
 *                         meets the bug) */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <libusb.h>

#include "transport-dfu.h"

static libusb_device *target;
static int left;

static void port_path(libusb_device *dev, char *buf, size_t len)
{
	uint8_t ports[8];
	int n = libusb_get_port_numbers(dev, ports, 8);
	size_t off = (size_t)snprintf(buf, len, "%u", libusb_get_bus_number(dev));

	for (int i = 0; i < n && off < len; i++)
		off += (size_t)snprintf(buf + off, len - off, "%c%u", i == 0 ? '-' : '.', ports[i]);
}

static int on_hotplug(libusb_context *ctx, libusb_device *dev, libusb_hotplug_event event,
		      void *user_data)
{
	(void)ctx;
	(void)user_data;
	if (event == LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT && dev == target)
		left = 1;
	return 0;
}

int main(int argc, char **argv)
{
	int raw = argc > 1 && strcmp(argv[1], "--raw") == 0;
	libusb_context *ctx;
	libusb_device **list;
	libusb_device_handle *h = NULL;
	libusb_hotplug_callback_handle cb;
	ssize_t n;
	int r;

	if (libusb_init(&ctx) < 0)
		return 2;
	n = libusb_get_device_list(ctx, &list);
	for (ssize_t i = 0; i < n && !target; i++) {
		char path[32];

		port_path(list[i], path, sizeof(path));
		if (strcmp(path, "2-1.1") == 0)
			target = libusb_ref_device(list[i]);
	}
	libusb_free_device_list(list, 1);
	if (!target || libusb_open(target, &h) < 0 || libusb_claim_interface(h, 0) < 0) {
		fprintf(stderr, "dfu-alt-gone: cannot open the device at 2-1.1\n");
		return 2;
	}
	if (libusb_hotplug_register_callback(ctx, LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT, 0,
					     LIBUSB_HOTPLUG_MATCH_ANY, LIBUSB_HOTPLUG_MATCH_ANY,
					     LIBUSB_HOTPLUG_MATCH_ANY, on_hotplug, NULL, &cb) < 0)
		return 2;
	printf("open\n");
	fflush(stdout);
	for (int i = 0; i < 3000 && !left; i++) {
		struct timeval tv = { 0, 10000 };

		libusb_handle_events_timeout_completed(ctx, &tv, NULL);
	}
	if (!left) {
		fprintf(stderr, "dfu-alt-gone: the device did not leave in 30 s\n");
		return 2;
	}
	printf("left\n");
	fflush(stdout);
	r = raw ? libusb_set_interface_alt_setting(h, 0, 1) : transport_dfu_set_alt(h, 0, 1);
	printf("alt: %s\n", libusb_error_name(r));
	fflush(stdout);
	libusb_close(h);
	printf("closed\n");
	fflush(stdout);
	libusb_hotplug_deregister_callback(ctx, cb);
	libusb_unref_device(target);
	libusb_exit(ctx);
	return 0;
}
