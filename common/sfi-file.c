/* Whole-file reads (sfi-file.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sfi-error.h"
#include "sfi-file.h"

int sfi_fd_read(int fd, size_t max, uint8_t **ret, size_t *ret_len)
{
	struct stat st;
	uint8_t *buf;
	size_t size, off = 0;
	off_t pos;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	pos = lseek(fd, 0, SEEK_CUR);
	if (pos < 0)
		return -errno;
	size = st.st_size > pos ? (size_t)(st.st_size - pos) : 0;
	if ((uint64_t)size > max)
		return -EFBIG;
	buf = malloc(size + 1);
	if (!buf)
		return -ENOMEM;
	while (off < size) {
		ssize_t n = read(fd, buf + off, size - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int r = n < 0 ? -errno : -EIO;

			free(buf);
			return r;
		}
		off += (size_t)n;
	}
	buf[off] = 0;
	*ret = buf;
	*ret_len = off;
	return 0;
}

int sfi_file_read(const char *path, size_t max, uint8_t **ret, size_t *ret_len)
{
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	r = sfi_fd_read(fd, max, ret, ret_len);
	close(fd);
	return r;
}

const char *sfi_file_strerror(int r)
{
	if (r == -EINVAL)
		return "not a regular file";
	if (r == -EFBIG)
		return "file too large";
	return sfi_strerror(r);
}

int sfi_secret_read_line(const char *path, char *out, size_t size, size_t *ret_len)
{
	struct stat st;
	size_t n = 0;
	int fd, r = 0;

	if (size == 0)
		return -EINVAL;
	memset(out, 0, size);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode) || (st.st_mode & (S_IROTH | S_IWOTH))) {
		r = -EPERM;
		goto out;
	}
	while (n < size - 1) {
		ssize_t k = read(fd, out + n, size - 1 - n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			r = -errno;
			goto out;
		}
		if (k == 0)
			break;
		n += (size_t)k;
	}
	out[n] = '\0';
	n = strcspn(out, "\r\n");
	explicit_bzero(out + n, size - n);
	if (n == 0)
		r = -EINVAL;
out:
	close(fd);
	if (r < 0)
		explicit_bzero(out, size);
	else
		*ret_len = n;
	return r;
}
