/* Worker threads: see worker.h. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include <event2/event.h>

#include "worker.h"

#define WORKERS_MAX 16

struct item {
	struct item *next;
	worker_fn work;
	worker_done_fn done;
	void *data;
};

struct workers {
	struct event_base *base;
	pthread_t threads[WORKERS_MAX];
	unsigned n_threads;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct item *todo, **todo_tail;
	struct item *finished, **finished_tail;
	unsigned busy;
	bool stopping;
	int pipe[2];
	struct event *ev;
};

static void *worker_main(void *arg)
{
	struct workers *w = arg;

	pthread_mutex_lock(&w->lock);
	for (;;) {
		struct item *it;

		while (!w->todo && !w->stopping)
			pthread_cond_wait(&w->cond, &w->lock);
		if (!w->todo)
			break;
		it = w->todo;
		w->todo = it->next;
		if (!w->todo)
			w->todo_tail = &w->todo;
		pthread_mutex_unlock(&w->lock);

		it->work(it->data);

		pthread_mutex_lock(&w->lock);
		it->next = NULL;
		*w->finished_tail = it;
		w->finished_tail = &it->next;
		/* A full pipe already means "wake up": nothing is lost when this fails. */
		if (write(w->pipe[1], "", 1) < 0) {
		}
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

/* Runs the completions of finished items on the loop thread. */
static void workers_drain(struct workers *w)
{
	struct item *list;

	pthread_mutex_lock(&w->lock);
	list = w->finished;
	w->finished = NULL;
	w->finished_tail = &w->finished;
	pthread_mutex_unlock(&w->lock);

	while (list) {
		struct item *it = list;

		list = it->next;
		pthread_mutex_lock(&w->lock);
		w->busy--;
		pthread_mutex_unlock(&w->lock);
		if (it->done)
			it->done(it->data);
		free(it);
	}
}

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
	char buf[256];

	while (read(fd, buf, sizeof(buf)) > 0)
		;
	workers_drain(arg);
}

int workers_new(struct event_base *base, unsigned n, struct workers **ret)
{
	struct workers *w;

	if (n == 0 || n > WORKERS_MAX)
		return -EINVAL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->base = base;
	w->todo_tail = &w->todo;
	w->finished_tail = &w->finished;
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	if (pipe2(w->pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
		int r = -errno;

		free(w);
		return r;
	}
	w->ev = event_new(base, w->pipe[0], EV_READ | EV_PERSIST, wake_cb, w);
	if (!w->ev || event_add(w->ev, NULL) < 0) {
		workers_free(w);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < n; i++) {
		if (pthread_create(&w->threads[i], NULL, worker_main, w) != 0) {
			workers_free(w);
			return -EAGAIN;
		}
		w->n_threads++;
	}
	*ret = w;
	return 0;
}

int workers_submit(struct workers *w, worker_fn work, worker_done_fn done, void *data)
{
	struct item *it;

	it = calloc(1, sizeof(*it));
	if (!it)
		return -ENOMEM;
	it->work = work;
	it->done = done;
	it->data = data;
	pthread_mutex_lock(&w->lock);
	if (w->stopping) {
		pthread_mutex_unlock(&w->lock);
		free(it);
		return -ESHUTDOWN;
	}
	*w->todo_tail = it;
	w->todo_tail = &it->next;
	w->busy++;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
	return 0;
}

struct event_base *workers_base(struct workers *w)
{
	return w->base;
}

unsigned workers_busy(struct workers *w)
{
	unsigned n;

	pthread_mutex_lock(&w->lock);
	n = w->busy;
	pthread_mutex_unlock(&w->lock);
	return n;
}

struct workers *workers_free(struct workers *w)
{
	if (!w)
		return NULL;
	pthread_mutex_lock(&w->lock);
	w->stopping = true;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
	for (unsigned i = 0; i < w->n_threads; i++)
		pthread_join(w->threads[i], NULL);
	/* Queued work ran to its end (threads drain the queue before leaving); its results
	 * must still reach the ledger. */
	workers_drain(w);
	if (w->ev)
		event_free(w->ev);
	close(w->pipe[0]);
	close(w->pipe[1]);
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cond);
	free(w);
	return NULL;
}
