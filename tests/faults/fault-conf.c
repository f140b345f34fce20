/* See fault-conf.h. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fault-conf.h"

static unsigned long counter;
static pthread_mutex_t arm_lock = PTHREAD_MUTEX_INITIALIZER;
static struct stat arm_seen;

static int set_string(char *dst, size_t size, const char *v)
{
	if (strlen(v) >= size)
		return -1;
	strcpy(dst, v);
	return 0;
}

static int set_number(unsigned long *dst, const char *v)
{
	char *end;

	if (!*v || *v == '-')
		return -1;
	errno = 0;
	*dst = strtoul(v, &end, 0);
	return errno || *end ? -1 : 0;
}

/* Reads key = value lines of path into c (keys not given keep their values). */
static int parse_file(const char *path, struct fault_conf *c)
{
	char line[4200];
	unsigned lineno = 0;
	FILE *f;

	f = fopen(path, "re");
	if (!f) {
		fprintf(stderr, "fault: %s: %s\n", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		char *key = line, *eq, *v, *end;
		int bad = 0;

		lineno++;
		line[strcspn(line, "\r\n")] = '\0';
		while (*key == ' ' || *key == '\t')
			key++;
		if (!*key || *key == '#')
			continue;
		eq = strchr(key, '=');
		if (!eq) {
			fprintf(stderr, "fault: %s:%u: expected key = value\n", path, lineno);
			fclose(f);
			return -1;
		}
		end = eq;
		while (end > key && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		*end = '\0';
		v = eq + 1;
		while (*v == ' ' || *v == '\t')
			v++;
		end = v + strlen(v);
		while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
			*--end = '\0';

		if (strcmp(key, "module") == 0)
			bad = set_string(c->module, sizeof(c->module), v);
		else if (strcmp(key, "function") == 0)
			bad = set_string(c->function, sizeof(c->function), v);
		else if (strcmp(key, "op") == 0)
			bad = set_string(c->op, sizeof(c->op), v) ||
			      (strcmp(v, "write") && strcmp(v, "sync") && strcmp(v, "lock") &&
			       strcmp(v, "truncate") && strcmp(v, "any"));
		else if (strcmp(key, "file") == 0)
			bad = set_string(c->file, sizeof(c->file), v);
		else if (strcmp(key, "error") == 0)
			bad = set_string(c->error, sizeof(c->error), v) ||
			      (strcmp(v, "ioerr") && strcmp(v, "full"));
		else if (strcmp(key, "rv") == 0)
			bad = set_number(&c->rv, v), c->have_rv = !bad;
		else if (strcmp(key, "nth") == 0)
			bad = set_number(&c->nth, v);
		else if (strcmp(key, "repeat") == 0)
			bad = strcmp(v, "yes") && strcmp(v, "no"), c->repeat = !strcmp(v, "yes");
		else if (strcmp(key, "delay_ms") == 0)
			bad = set_number(&c->delay_ms, v);
		else if (strcmp(key, "trace") == 0)
			bad = set_string(c->trace, sizeof(c->trace), v);
		else if (strcmp(key, "arm_file") == 0)
			bad = set_string(c->arm_file, sizeof(c->arm_file), v);
		else
			bad = 1;
		if (bad) {
			fprintf(stderr, "fault: %s:%u: bad or unknown key '%s'\n", path, lineno, key);
			fclose(f);
			return -1;
		}
	}
	fclose(f);
	return 0;
}

int fault_conf_load(const char *env, struct fault_conf *c)
{
	const char *path = getenv(env);

	memset(c, 0, sizeof(*c));
	strcpy(c->op, "any");
	strcpy(c->error, "ioerr");
	if (!path || !*path)
		return -1;
	return parse_file(path, c);
}

bool fault_armed(struct fault_conf *c)
{
	struct stat st;

	if (!c->arm_file[0])
		return true;
	if (stat(c->arm_file, &st) < 0)
		return false;
	pthread_mutex_lock(&arm_lock);
	if (st.st_ino != arm_seen.st_ino || st.st_mtim.tv_sec != arm_seen.st_mtim.tv_sec ||
	    st.st_mtim.tv_nsec != arm_seen.st_mtim.tv_nsec || st.st_size != arm_seen.st_size) {
		/* A new arm file: its lines (if any) override the configuration and the count
		 * starts again, so that one process can be walked through many points. */
		arm_seen = st;
		if (st.st_size > 0 && parse_file(c->arm_file, c) < 0)
			c->nth = (unsigned long)-1; /* never hits: the error was printed */
		__atomic_store_n(&counter, 0, __ATOMIC_SEQ_CST);
	}
	pthread_mutex_unlock(&arm_lock);
	return true;
}

unsigned long fault_next(void)
{
	return __atomic_add_fetch(&counter, 1, __ATOMIC_SEQ_CST);
}

bool fault_hits(const struct fault_conf *c, unsigned long n)
{
	if (c->nth == 0)
		return true;
	return n == c->nth || (c->repeat && n > c->nth);
}

void fault_delay(const struct fault_conf *c)
{
	struct timespec ts = { .tv_sec = (time_t)(c->delay_ms / 1000),
			       .tv_nsec = (long)(c->delay_ms % 1000) * 1000000L };

	if (!c->delay_ms)
		return;
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

void fault_trace(const struct fault_conf *c, unsigned long n, const char *name, long result,
		 bool injected)
{
	char line[160];
	int fd, len;

	if (!c->trace[0])
		return;
	len = snprintf(line, sizeof(line), "%lu %s 0x%lx%s\n", n, name, (unsigned long)result,
		       injected ? " injected" : "");
	fd = open(c->trace, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	if (write(fd, line, (size_t)len) < 0) {
		/* A trace that cannot be written only loses a line. */
	}
	close(fd);
}
