/* Whole-file reads for the host code (images, licenses, keys' companions, option files). */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Reads the whole regular file at path, of at most max bytes, into a malloc'ed buffer
 * (*ret, free() it; one NUL byte follows the data, so a text file is a C string; an empty
 * file gives *ret_len 0). The file is opened without waiting, so a named pipe or a device
 * is refused at once instead of blocking the caller. Returns 0, -EINVAL (not a regular
 * file), -EFBIG (larger than max), -ENOMEM, -EIO (shorter than its size said) or -errno
 * (open, fstat, read). Nothing is returned on failure. */
int sfi_file_read(const char *path, size_t max, uint8_t **ret, size_t *ret_len);
/* The same for the file open on fd, from its current offset to its end; fd stays open. */
int sfi_fd_read(int fd, size_t max, uint8_t **ret, size_t *ret_len);
/* The operator's words for an sfi_file_read() error: "not a regular file",
 * "file too large", else sfi_strerror(). */
const char *sfi_file_strerror(int r);
