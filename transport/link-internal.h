/* Shared inside the link library only. */
#pragma once

#include <stddef.h>

/* Formats an error sentence into err (when err is not NULL and err_size is not 0). */
__attribute__((format(printf, 3, 4)))
void link_err_printf(char *err, size_t err_size, const char *fmt, ...);
