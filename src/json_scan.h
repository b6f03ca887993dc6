/* json_scan: JSON read without building anything, for callers that need one
 * or two top-level keys of a document (or their exact byte ranges) rather
 * than the whole of it. Two readers:
 *
 * - json_scan_check: the whole document validated, byte by byte, exactly as
 *   jansson's json_loadb would accept or refuse it, reporting each top-level
 *   member on the way. It takes no memory beyond its own stack frame
 *   (some 300 bytes), whatever the document's size or shape.
 * - json_scan_object_begin / _next: a lax walk over the top-level members of
 *   an object. It checks the structure (keys, colons, commas, balanced
 *   brackets, closed strings) but not what a string or a number holds: any
 *   valid object walks the way a parser reads it, some invalid ones walk too,
 *   so it serves a document already checked (or one whose validity is not
 *   ours to judge).
 *
 * Nesting is counted, not recursed into: any depth is safe. */
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

/* jansson's limit on nesting (JSON_PARSER_MAX_DEPTH): a value inside this
 * many containers is refused. */
#define JSON_SCAN_MAX_DEPTH 2048

/* The rules of json_scan_check: jansson's decoding flags, by their names. */
enum {
	JSON_SCAN_ALLOW_NUL = 1,   /* JSON_ALLOW_NUL: "\u0000" in a string value */
	JSON_SCAN_INT_AS_REAL = 2, /* JSON_DECODE_INT_AS_REAL: any integer that fits a double */
};

/* Why json_scan_check refused a document: the offset of the byte where it
 * stopped and a short reason (a static string). */
struct json_scan_error {
	size_t at;
	const char *why;
};

/* Called by json_scan_check for each member of a top-level object, in order,
 * as soon as its value has been read (the rest of the document may still
 * turn out invalid). Returns 0 to go on; anything else stops the check,
 * which then returns that value. */
typedef int (*json_scan_member_fn)(void *ctx, const char *s, const struct json_scan_member *m);

/* Checks that s[0..len) is one JSON value, and nothing but blanks around
 * it, by the rules jansson's json_loadb applies with JSON_DECODE_ANY and the
 * given flags (JSON_SCAN_*): strict RFC 8259 grammar, UTF-8 without overlong
 * forms or surrogates, escapes whose surrogates pair up, no "\u0000" in a
 * key (nor in a value without JSON_SCAN_ALLOW_NUL), numbers that fit a
 * double (and integers an int64 without JSON_SCAN_INT_AS_REAL), and no value
 * inside JSON_SCAN_MAX_DEPTH containers or more (an empty container at that
 * depth is fine: jansson counts values, not brackets), and no raw NUL
 * outside a string (jansson drops one after a number or a literal; this is
 * the one place the two differ, on purpose). A leading byte order mark
 * is refused, as jansson refuses it. When the value is an object, on_member
 * (may be NULL) sees each of its members.
 * Returns 0 when the document is valid (*is_object says whether it is an
 * object; may be NULL), -1 with *err filled (may be NULL) when it is not,
 * or what on_member returned when that stopped it. */
int json_scan_check(const char *s, size_t len, int flags, json_scan_member_fn on_member, void *ctx,
		    bool *is_object, struct json_scan_error *err);

/* Decodes the JSON string s[at..end) (quotes included) of a document
 * json_scan_check accepted into a malloc'd, NUL-terminated copy (caller
 * frees) and its length in *outlen (may be NULL; "\u0000" decodes to a NUL
 * byte inside it). Returns NULL when memory runs out. */
char *json_scan_string_dup(const char *s, size_t at, size_t end, size_t *outlen);

/* The value of the number s[at..end) of a document json_scan_check
 * accepted, as jansson reads it with JSON_DECODE_INT_AS_REAL (strtod: the
 * nearest double; 0 on underflow). Returns 0, or -1 when memory runs out
 * (a number of more than 63 bytes is copied to be read). */
int json_scan_number(const char *s, size_t at, size_t end, double *out);

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
