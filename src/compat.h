/* compat: stand-ins for the calls outside POSIX that configure did not find
 * (HAVE_EXPLICIT_BZERO, HAVE_GETRANDOM, HAVE_MEMMEM), each with the same
 * behaviour by portable means. Included after the system headers, it lets
 * a call site read as it would on glibc. Where configure found the call,
 * this adds nothing but <sys/random.h>. */
#ifndef API_TOGETHER_COMPAT_H
#define API_TOGETHER_COMPAT_H

#include <stddef.h>
#include <string.h>
#include <sys/types.h>

#ifdef HAVE_SYS_RANDOM_H
#include <sys/random.h>
#endif

#ifndef HAVE_EXPLICIT_BZERO
/* Zeroes n bytes at p; volatile stores, so a compiler cannot drop them as
 * dead when p is freed next (a secret must not stay in freed memory). */
static inline void
compat_explicit_bzero(void *p, size_t n)
{
	volatile unsigned char *v = p;

	while (n-- > 0)
		*v++ = 0;
}
#define explicit_bzero compat_explicit_bzero
#endif

#ifndef HAVE_GETRANDOM
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#ifndef GRND_NONBLOCK
#define GRND_NONBLOCK 0x0001
#endif

/* Fills len bytes at buf from /dev/urandom (flags ignored: it never blocks
 * once the system runs). Returns the bytes read, or -1 when none could be. */
static inline ssize_t
compat_getrandom(void *buf, size_t len, unsigned int flags)
{
	unsigned char *p = buf;
	size_t got = 0;
	int fd;

	(void)flags;
	if ((fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	while (got < len) {
		ssize_t n = read(fd, p + got, len - got);
		if (n > 0)
			got += (size_t)n;
		else if (n == 0 || errno != EINTR)
			break;
	}
	close(fd);
	return got > 0 ? (ssize_t)got : -1;
}
#define getrandom compat_getrandom
#endif

#ifndef HAVE_MEMMEM
/* The first nlen bytes at hay + i (0 <= i <= hlen - nlen) equal to needle,
 * or NULL; an empty needle is found at hay. */
static inline void *
compat_memmem(const void *hay, size_t hlen, const void *needle, size_t nlen)
{
	const unsigned char *h = hay;
	const unsigned char *n = needle;

	if (nlen == 0)
		return (void *)h;
	for (; hlen >= nlen; h++, hlen--)
		if (*h == *n && memcmp(h, n, nlen) == 0)
			return (void *)h;
	return NULL;
}
#define memmem compat_memmem
#endif

#endif
