/* Shared by the transport core and its backends only. */
#pragma once

#include "transport.h"

struct transport {
	const struct transport_ops *ops;
	void *priv;
	struct transport_options opt;
	char *entry;			/* the options' entry sequence, copied */
	bool busy;
	transport_done_fn done;
	void *done_data;
	int result;			/* of the last operation */
	unsigned depth;			/* calls into the backend under way */
	bool closed;			/* closed during one of them: freed when it returns */
};

/* The port vanished while no operation ran: tells the options' lost callback. */
void transport_port_lost(struct transport *t);
