#include "json_scan.h"

#include <string.h>

static bool
json_scan_is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

size_t
json_scan_ws(const char *s, size_t len, size_t i)
{
	while (i < len && json_scan_is_space(s[i]))
		i++;
	return i;
}

/* s[i] is '"'. Sets *end past the closing quote. The content of a string is
 * most of a document's bytes, so the quotes are found with memchr rather than
 * one byte at a time: a quote ends the string unless an odd run of
 * backslashes comes right before it. The run cannot reach back past the
 * opening quote, and the byte before it is no backslash, so the run is read
 * from its start, as a byte-by-byte walk would read it. */
static int
json_scan_skip_string(const char *s, size_t len, size_t i, size_t *end)
{
	size_t from = i + 1;

	while (from < len) {
		const char *q = memchr(s + from, '"', len - from);
		size_t at, k;

		if (q == NULL)
			return -1;
		at = (size_t)(q - s);
		for (k = at; k > i + 1 && s[k - 1] == '\\'; k--)
			;
		if ((at - k) % 2 == 0) {
			*end = at + 1;
			return 0;
		}
		from = at + 1;
	}
	return -1;
}

/* Skips one value at s[i]; containers by counting brackets rather than by
 * recursion, so any depth is safe. */
static int
json_scan_skip_value(const char *s, size_t len, size_t i, size_t *end)
{
	size_t depth = 0;

	if (i >= len)
		return -1;
	if (s[i] == '"')
		return json_scan_skip_string(s, len, i, end);
	if (s[i] != '{' && s[i] != '[') {
		size_t st = i;

		while (i < len && !json_scan_is_space(s[i]) && s[i] != ',' && s[i] != '}' &&
		       s[i] != ']')
			i++;
		if (i == st)
			return -1;
		*end = i;
		return 0;
	}
	while (i < len) {
		switch (s[i]) {
		case '"':
			if (json_scan_skip_string(s, len, i, &i) != 0)
				return -1;
			continue;
		case '{':
		case '[':
			depth++;
			break;
		case '}':
		case ']':
			if (--depth == 0) {
				*end = i + 1;
				return 0;
			}
			break;
		default:
			break;
		}
		i++;
	}
	return -1;
}

int
json_scan_object_begin(struct json_scan *js, const char *s, size_t len)
{
	size_t i = json_scan_ws(s, len, 0);

	js->s = s;
	js->len = len;
	js->pos = i + 1;
	js->first = true;
	return i < len && s[i] == '{' ? 0 : -1;
}

int
json_scan_object_next(struct json_scan *js, struct json_scan_member *m)
{
	const char *s = js->s;
	size_t len = js->len;
	size_t i = json_scan_ws(s, len, js->pos);
	size_t kend, vend;

	if (i >= len)
		return -1;
	if (s[i] == '}') {
		js->pos = i + 1;
		return 0;
	}
	if (!js->first) {
		if (s[i] != ',')
			return -1;
		i = json_scan_ws(s, len, i + 1);
		if (i >= len)
			return -1;
	}
	js->first = false;
	if (s[i] != '"' || json_scan_skip_string(s, len, i, &kend) != 0)
		return -1;
	m->key = i + 1;
	m->key_end = kend - 1;
	i = json_scan_ws(s, len, kend);
	if (i >= len || s[i] != ':')
		return -1;
	i = json_scan_ws(s, len, i + 1);
	if (json_scan_skip_value(s, len, i, &vend) != 0)
		return -1;
	m->value = i;
	m->value_end = vend;
	js->pos = vend;
	return 1;
}

static int
json_scan_hex4(const char *s, unsigned *out)
{
	unsigned v = 0;

	for (int k = 0; k < 4; k++) {
		char c = s[k];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (unsigned)(c - 'A' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

bool
json_scan_key_is(const struct json_scan *js, const struct json_scan_member *m, const char *key)
{
	const char *s = js->s;
	size_t end = m->key_end, n = 0;

	for (size_t i = m->key; i < end; i++) {
		char c = s[i];

		if (c == '\\') {
			if (++i >= end)
				return false;
			switch (s[i]) {
			case 'u': {
				unsigned cp;

				/* key is ASCII: an escape of NUL or beyond ASCII (a
				 * surrogate half among them) matches none of it. */
				if (end - i < 5 || json_scan_hex4(s + i + 1, &cp) != 0 || cp == 0 ||
				    cp >= 0x80)
					return false;
				c = (char)cp;
				i += 4;
				break;
			}
			case '"':
			case '\\':
			case '/':
				c = s[i];
				break;
			case 'b':
				c = '\b';
				break;
			case 'f':
				c = '\f';
				break;
			case 'n':
				c = '\n';
				break;
			case 'r':
				c = '\r';
				break;
			case 't':
				c = '\t';
				break;
			default:
				return false; /* no such escape: no key a parser would read */
			}
		}
		if (key[n] == '\0' || key[n] != c)
			return false;
		n++;
	}
	return key[n] == '\0';
}
