/* The control commands sfid answers: a handler per command of the control protocol
 * (control.h), in a table indexed by the command. */
#pragma once

struct client;
struct control_request;

/* The server's dispatch callback; user_data is the line (struct sfid). */
void commands_dispatch(void *user_data, struct client *c, const struct control_request *req);
