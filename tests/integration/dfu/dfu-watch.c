/* A long-running libusb client for the DFU tests: prints every arrival and departure of an
 * 0483:DF11 device that its hotplug callback sees ("arrived PORTPATH DEVNUM", "left PORTPATH
 * DEVNUM"), keeps the device at port path 2-1.1 open while it is there, and after one second
 * with it open prints how many times libusb's event loop woke up ("idle-wakeups N"): a node
 * that is always writable would make that loop spin. Runs until SIGTERM. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <libusb.h>

static volatile sig_atomic_t quit;
static libusb_device_handle *handle;
static libusb_device *open_dev;
static int want_open;

static void on_term(int sig)
{
	(void)sig;
	quit = 1;
}

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
	char path[32];

	(void)ctx;
	(void)user_data;
	port_path(dev, path, sizeof(path));
	printf("%s %s %u\n", event == LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED ? "arrived" : "left",
	       path, libusb_get_device_address(dev));
	fflush(stdout);
	if (event == LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED && strcmp(path, "2-1.1") == 0 && !handle)
		want_open = 1;
	if (event == LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT && dev == open_dev)
		want_open = -1;
	if (want_open == 1 && !open_dev)
		open_dev = libusb_ref_device(dev);
	return 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(void)
{
	libusb_context *ctx;
	libusb_hotplug_callback_handle cb;
	double opened_at = 0;
	long wakeups = 0;
	int reported = 0;

	signal(SIGTERM, on_term);
	if (libusb_init(&ctx) < 0 || !libusb_has_capability(LIBUSB_CAP_HAS_HOTPLUG)) {
		fprintf(stderr, "dfu-watch: libusb without hotplug\n");
		return 1;
	}
	if (libusb_hotplug_register_callback(ctx, LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED |
					     LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT,
					     LIBUSB_HOTPLUG_ENUMERATE, 0x0483, 0xdf11,
					     LIBUSB_HOTPLUG_MATCH_ANY, on_hotplug, NULL, &cb) < 0) {
		fprintf(stderr, "dfu-watch: cannot register the hotplug callback\n");
		return 1;
	}
	printf("watching\n");
	fflush(stdout);
	while (!quit) {
		struct timeval tv = { .tv_sec = 0, .tv_usec = 200000 };

		if (want_open == 1 && open_dev && !handle) {
			if (libusb_open(open_dev, &handle) == 0) {
				opened_at = now_s();
				wakeups = 0;
				reported = 0;
			}
			want_open = 0;
		}
		if (want_open == -1) {
			if (handle)
				libusb_close(handle);
			handle = NULL;
			libusb_unref_device(open_dev);
			open_dev = NULL;
			want_open = 0;
		}
		libusb_handle_events_timeout_completed(ctx, &tv, NULL);
		wakeups++;
		if (handle && !reported && now_s() - opened_at >= 1.0) {
			printf("idle-wakeups %ld\n", wakeups);
			fflush(stdout);
			reported = 1;
		}
	}
	if (handle)
		libusb_close(handle);
	if (open_dev)
		libusb_unref_device(open_dev);
	libusb_hotplug_deregister_callback(ctx, cb);
	libusb_exit(ctx);
	return 0;
}
