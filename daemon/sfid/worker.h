/* Worker threads for blocking calls (PKCS#11, database commits). Work runs on a thread;
 * its completion runs later on the event loop, woken through a pipe. */
#pragma once

struct event_base;
struct workers;

/* Runs on a worker thread. */
typedef void (*worker_fn)(void *data);
/* Runs on the event loop after work finished. */
typedef void (*worker_done_fn)(void *data);

/* Starts n threads serving base. Returns 0 or a negative errno. */
int workers_new(struct event_base *base, unsigned n, struct workers **ret);
/* Queues work. Returns 0 or -ENOMEM / -ESHUTDOWN. */
int workers_submit(struct workers *w, worker_fn work, worker_done_fn done, void *data);
/* The event loop the completions run on. */
struct event_base *workers_base(struct workers *w);
/* Number of items queued or running. */
unsigned workers_busy(struct workers *w);
/* Waits for queued work to finish, runs the completions, stops the threads. Accepts NULL. */
struct workers *workers_free(struct workers *w);
