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

/* The first line of a secret file (a PIN, a password) into out: NUL-terminated, without its
 * line end, at most size - 1 bytes read; every byte of out after the line is wiped. The
 * file must be a regular file that others can neither read nor write (a secret there is as
 * good as published, or anyone could plant one); it is opened without waiting. Returns 0
 * with the line's length in *ret_len; -EPERM (not a regular file, or open to others),
 * -EINVAL (the first line is empty), -errno (open, fstat, read); out is all zero then. */
int sfi_secret_read_line(const char *path, char *out, size_t size, size_t *ret_len);
