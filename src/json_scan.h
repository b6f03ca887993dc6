/* json_scan: a walk over the top-level members of a JSON object, byte by
 * byte and without building anything, for callers that need one or two keys
 * of a document (or their exact byte ranges) rather than the whole of it.
 *
 * The walk is lax: it checks the object's structure (keys, colons, commas,
 * balanced brackets, closed strings) but not what a string or a number holds.
 * Any valid JSON object walks the way a parser reads it; some invalid ones
 * walk too, so a caller that needs validity still has to parse. Nesting is
 * counted, not recursed into: any depth is safe. */
#ifndef API_TOGETHER_JSON_SCAN_H
#define API_TOGETHER_JSON_SCAN_H

#include <stdbool.h>
#include <stddef.h>

/* A walk in progress; fill it with json_scan_object_begin. */
struct json_scan {
	const char *s;
	size_t len;
	size_t pos; /* next byte to read; past the closing '}' once the walk ends */
	bool first; /* no member read yet */
};

/* One member: byte offsets into the walked text, ends exclusive. */
struct json_scan_member {
	size_t key; /* the key, between its quotes, still escaped */
	size_t key_end;
	size_t value; /* the value, quotes or brackets included */
	size_t value_end;
};

/* Starts a walk of s[0..len), which must begin (after whitespace) with '{'.
 * Returns 0, or -1 when it does not. s must outlive the walk. */
int json_scan_object_begin(struct json_scan *js, const char *s, size_t len);

/* Reads the next member into *m. Returns 1 for a member, 0 at the object's
 * closing '}' (js->pos is then just past it; what follows is not read), or
 * -1 when the text is malformed or ends first. Once it returned 0 or -1 it
 * must not be called again. */
int json_scan_object_next(struct json_scan *js, struct json_scan_member *m);

/* True when the key of m, escapes decoded, is exactly key: "us\u0061ge"
 * is "usage". key is ASCII without NUL. */
bool json_scan_key_is(const struct json_scan *js, const struct json_scan_member *m,
		      const char *key);

/* The offset of the first byte at or after i in s[0..len) that is not JSON
 * whitespace (space, tab, CR, LF); len when there is none. */
size_t json_scan_ws(const char *s, size_t len, size_t i);

#endif
