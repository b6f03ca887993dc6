/* fuzz: helpers shared by the libFuzzer targets (make fuzz; see README "Tests").
 *
 * Each target feeds one module arbitrary bytes and checks what its contract
 * in the src/ headers promises, not only that nothing crashes: a broken promise
 * aborts, so libFuzzer keeps the input as a crash. */
#ifndef API_TOGETHER_FUZZ_H
#define API_TOGETHER_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Aborts with the broken promise and where it is checked. */
#define FUZZ_CHECK(cond)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: contract broken: %s\n", __FILE__, __LINE__,        \
				#cond);                                                            \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* data[0..size) up to its first LF (or all of it) as a malloc'd C string; *rest
 * and *restlen are what follows the LF. A NUL inside ends the string early,
 * as it would for any C string the gateway receives. */
static inline char *
fuzz_line(const uint8_t *data, size_t size, const uint8_t **rest, size_t *restlen)
{
	const uint8_t *nl = memchr(data, '\n', size);
	size_t n = nl != NULL ? (size_t)(nl - data) : size;
	char *s = malloc(n + 1);

	if (s == NULL)
		abort();
	memcpy(s, data, n);
	s[n] = '\0';
	*rest = nl != NULL ? nl + 1 : data + size;
	*restlen = nl != NULL ? size - n - 1 : 0;
	return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
