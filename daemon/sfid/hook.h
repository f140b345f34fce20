/* The result hook ([hooks] result in sfid.conf): an executable given one JSON line on its
 * standard input for every finished chip, for an MES or a label printer. It runs beside the
 * line, never on a slot's path: sfid spawns it and goes on, at most HOOKS_RUNNING_MAX at a
 * time (the next lines wait in a queue, the oldest are dropped with a warning beyond
 * HOOKS_QUEUE_MAX), and kills one that is still running after its timeout. */
#pragma once

struct event_base;
struct hooks;

#define HOOKS_RUNNING_MAX 4
#define HOOKS_QUEUE_MAX 256

/* Returns NULL when out of memory. */
struct hooks *hooks_new(struct event_base *base, const char *exe, unsigned timeout_ms);
/* Kills and reaps the hooks still running. Accepts NULL. */
struct hooks *hooks_free(struct hooks *h);
/* Runs the hook with line (no newline) on its standard input, now or when one ends. */
void hooks_result(struct hooks *h, const char *line);
