/* Fuzzes sfid's configuration parser (inih behind sfid-config.c) with arbitrary file text.
 * A refused file names itself and a line ("fuzz.conf:N: ..."); an accepted one has slots
 * with distinct names and ports that config_slot_find() finds where they are, and the
 * required keys set. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sfid-config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char path[] = "fuzz.conf";
	struct config *c = NULL;
	char err[512];
	char *text;
	int r;

	if (size > 64 * 1024)
		return 0;
	text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';

	err[0] = '\0';
	r = config_parse_string(path, text, &c, err, sizeof(err));
	if (r < 0) {
		size_t n = strlen(path);

		/* Every refusal says where: the file, then a line number. */
		if (c || strncmp(err, path, n) != 0 || err[n] != ':' ||
		    !isdigit((unsigned char)err[n + 1]))
			abort();
	} else {
		if (r != 0 || !c || c->n_slots == 0 || c->n_slots > CONFIG_SLOTS_MAX ||
		    !c->hsm_module || !c->hsm_token || !c->db_path || !c->socket_path ||
		    !c->station || (!c->hsm_pin_file == !c->hsm_pin_credential))
			abort();
		for (size_t i = 0; i < c->n_slots; i++) {
			if (!c->slots[i].port || !c->slots[i].name[0] ||
			    config_slot_find(c, c->slots[i].name) != (int)i)
				abort();
			for (size_t j = 0; j < i; j++)
				if (strcmp(c->slots[i].port, c->slots[j].port) == 0)
					abort();
		}
		config_free(c);
	}
	free(text);
	return 0;
}
