/* Shared parts of the fault-injection libraries (tests only): a small "key = value"
 * configuration file named by an environment variable, the call counter with its arm file,
 * and the trace. Nothing here is secret: the files hold call numbers and error codes. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct fault_conf {
	char module[4096];	/* PKCS#11: the real module */
	char function[64];	/* PKCS#11: only calls of this function count ("" = all) */
	char op[16];		/* SQLite: write, sync, lock, truncate or any */
	char file[256];		/* SQLite: only files whose name contains this ("" = all) */
	char error[16];		/* SQLite: ioerr or full */
	unsigned long rv;	/* PKCS#11: the CK_RV returned by a failed call */
	bool have_rv;
	unsigned long nth;	/* the counted call that fails or is delayed (0 = every one) */
	bool repeat;		/* from the nth on, every counted call */
	unsigned long delay_ms;	/* delay the affected call(s) by this much first */
	char trace[4096];	/* append "N NAME RESULT" per counted call */
	char arm_file[4096];	/* count only while this file exists ("" = always); a new
				 * arm file (other inode, time or size) restarts the count
				 * and its own key = value lines override these (nth, rv, op,
				 * error, function, repeat, delay_ms) */
};

/* Reads the file named by the environment variable env. Returns 0, or -1 after printing
 * the problem to stderr (no variable: -1 without a message). */
int fault_conf_load(const char *env, struct fault_conf *c);
/* True while counting (arm file present or none configured); takes a new arm file in. */
bool fault_armed(struct fault_conf *c);
/* The number of this counted call (1, 2, ...), thread-safe. */
unsigned long fault_next(void);
/* True when call number n is to be affected (failed and/or delayed). */
bool fault_hits(const struct fault_conf *c, unsigned long n);
/* Sleeps delay_ms when set. */
void fault_delay(const struct fault_conf *c);
/* Appends one trace line when a trace file is configured. */
void fault_trace(const struct fault_conf *c, unsigned long n, const char *name, long result,
		 bool injected);
