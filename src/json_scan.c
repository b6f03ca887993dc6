#include "json_scan.h"

#include <stdlib.h>
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

/*
 * The check: jansson's verdict without jansson's tree.
 */

/* Byte classes inside a string: 0 for a byte that stands for itself. */
enum { JSON_SCAN_PLAIN = 0, JSON_SCAN_QUOTE, JSON_SCAN_ESC, JSON_SCAN_CTRL, JSON_SCAN_HIGH };

#define JSON_SCAN_X4(c) c, c, c, c
#define JSON_SCAN_X16(c) JSON_SCAN_X4(c), JSON_SCAN_X4(c), JSON_SCAN_X4(c), JSON_SCAN_X4(c)
static const unsigned char json_scan_class[256] = {
	JSON_SCAN_X16(JSON_SCAN_CTRL),
	JSON_SCAN_X16(JSON_SCAN_CTRL), /* 0x00-0x1f */
	0,
	0,
	JSON_SCAN_QUOTE,
	0,
	JSON_SCAN_X4(0),
	JSON_SCAN_X4(0),
	JSON_SCAN_X4(0), /* 0x20- */
	JSON_SCAN_X16(0),
	JSON_SCAN_X16(0), /* 0x30-0x4f */
	JSON_SCAN_X4(0),
	JSON_SCAN_X4(0),
	JSON_SCAN_X4(0), /* 0x50-0x5b */
	JSON_SCAN_ESC,
	0,
	0,
	0, /* 0x5c-0x5f */
	JSON_SCAN_X16(0),
	JSON_SCAN_X16(0), /* 0x60-0x7f */
	JSON_SCAN_X16(JSON_SCAN_HIGH),
	JSON_SCAN_X16(JSON_SCAN_HIGH),
	JSON_SCAN_X16(JSON_SCAN_HIGH),
	JSON_SCAN_X16(JSON_SCAN_HIGH),
	JSON_SCAN_X16(JSON_SCAN_HIGH),
	JSON_SCAN_X16(JSON_SCAN_HIGH),
	JSON_SCAN_X16(JSON_SCAN_HIGH),
	JSON_SCAN_X16(JSON_SCAN_HIGH), /* 0x80-0xff */
};

/* The digits of 2^1024 - 2^970, halfway between DBL_MAX and 2^1024: a
 * decimal at least this large rounds to infinity, which strtod reports as
 * ERANGE and jansson as "real number overflow". 309 digits, no trailing 0. */
static const char json_scan_dbl_edge[] =
	"179769313486231580793728971405303415079934132710037826936173778980444968292764750946649"
	"017977587207096330286416692887910946555547851940402630657488671505820681908902000708383"
	"676273854845817711531764475730270069855571366959622842914819860834936475292719074168444"
	"365510704342711559699508093042880177904174497792";

/* A bit per open container: set for an object. */
struct json_scan_stack {
	unsigned long long bits[(JSON_SCAN_MAX_DEPTH + 63) / 64];
	size_t n;
};

static bool
json_scan_is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Length of the valid UTF-8 sequence at s[i] (a byte >= 0x80), or 0: the
 * rules of jansson's utf8_check_full (no overlong form, no surrogate, at
 * most U+10FFFF). */
static size_t
json_scan_utf8(const unsigned char *s, size_t len, size_t i)
{
	unsigned char c = s[i], lo = 0x80, hi = 0xbf;
	size_t n;

	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4;
	else
		return 0;
	if (len - i < n)
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (s[i + 1] < lo || s[i + 1] > hi)
		return 0;
	for (size_t k = 2; k < n; k++)
		if (s[i + k] < 0x80 || s[i + k] > 0xbf)
			return 0;
	return n;
}

/* The string at s[i] == '"'. Sets *end past its closing quote and *nul when
 * it holds "\u0000". Returns 0, or -1 with err->at and err->why set. */
static int
json_scan_check_string(const char *str, size_t len, size_t i, size_t *end, bool *nul,
		       struct json_scan_error *err)
{
	const unsigned char *s = (const unsigned char *)str;
	unsigned cp, lo;
	size_t n;

	*nul = false;
	for (i++;;) {
		while (i < len && json_scan_class[s[i]] == JSON_SCAN_PLAIN)
			i++;
		if (i >= len) {
			err->why = "premature end of input";
			goto fail;
		}
		switch (json_scan_class[s[i]]) {
		case JSON_SCAN_QUOTE:
			*end = i + 1;
			return 0;
		case JSON_SCAN_CTRL:
			err->why = "control character in a string";
			goto fail;
		case JSON_SCAN_HIGH:
			n = json_scan_utf8(s, len, i);
			if (n == 0) {
				err->why = "invalid UTF-8";
				goto fail;
			}
			i += n;
			continue;
		default:
			break;
		}
		/* An escape. */
		if (++i >= len) {
			err->why = "premature end of input";
			goto fail;
		}
		switch (s[i]) {
		case '"':
		case '\\':
		case '/':
		case 'b':
		case 'f':
		case 'n':
		case 'r':
		case 't':
			i++;
			continue;
		case 'u':
			break;
		default:
			err->why = "invalid escape";
			goto fail;
		}
		if (len - i < 5 || json_scan_hex4(str + i + 1, &cp) != 0) {
			err->why = "invalid escape";
			goto fail;
		}
		i += 5;
		if (cp == 0)
			*nul = true;
		if (cp >= 0xdc00 && cp <= 0xdfff) {
			err->why = "invalid Unicode escape: a lone low surrogate";
			goto fail;
		}
		if (cp >= 0xd800 && cp <= 0xdbff) {
			/* Its low half must follow at once, as an escape. */
			if (len - i < 6 || s[i] != '\\' || s[i + 1] != 'u' ||
			    json_scan_hex4(str + i + 2, &lo) != 0 || lo < 0xdc00 || lo > 0xdfff) {
				err->why = "invalid Unicode escape: a lone high surrogate";
				goto fail;
			}
			i += 6;
		}
	}
fail:
	err->at = i;
	return -1;
}

/* Parses the exponent's digits s[i..end) into a magnitude capped far above
 * anything that could matter (a body of 10^15 digits is not held in memory). */
static long long
json_scan_exponent(const char *s, size_t i, size_t end)
{
	const long long cap = 1000000000000000LL;
	long long e = 0;

	for (; i < end; i++) {
		e = e * 10 + (s[i] - '0');
		if (e > cap)
			return cap;
	}
	return e;
}

/* True when the decimal digits s[from..to) (skipping one '.'), read as
 * 0.DIGITS x 10^309, are at least json_scan_dbl_edge as 0.EDGE x 10^309. */
static bool
json_scan_digits_reach_edge(const char *s, size_t from, size_t to)
{
	size_t k = 0;

	for (size_t i = from; i < to; i++) {
		if (s[i] == '.')
			continue;
		if (json_scan_dbl_edge[k] == '\0')
			return true; /* equal so far and the edge ends: at least */
		if (s[i] != json_scan_dbl_edge[k])
			return s[i] > json_scan_dbl_edge[k];
		k++;
	}
	return json_scan_dbl_edge[k] == '\0';
}

/* The number at s[i] ('-' or a digit). Sets *end past it. jansson reads
 * every number with strtod under JSON_DECODE_INT_AS_REAL (and integers with
 * strtoll otherwise) and refuses one that overflows; that is decided here
 * from the digits, without a copy. Returns 0, or -1 with err set. */
static int
json_scan_check_number(const char *s, size_t len, size_t i, int flags, size_t *end,
		       struct json_scan_error *err)
{
	size_t start = i, ia, ib, mend, sig = 0;
	bool neg = false, integer = true;
	long long x, e = 0;

	if (s[i] == '-') {
		neg = true;
		i++;
	}
	ia = i;
	if (i >= len || !json_scan_is_digit(s[i]))
		goto fail;
	if (s[i] == '0') {
		i++;
		if (i < len && json_scan_is_digit(s[i]))
			goto fail;
	} else {
		while (i < len && json_scan_is_digit(s[i]))
			i++;
	}
	ib = i;
	if (i < len && s[i] == '.') {
		integer = false;
		i++;
		if (i >= len || !json_scan_is_digit(s[i]))
			goto fail;
		while (i < len && json_scan_is_digit(s[i]))
			i++;
	}
	mend = i;
	if (i < len && (s[i] == 'e' || s[i] == 'E')) {
		bool eneg = false;
		size_t exp_at;

		integer = false;
		i++;
		if (i < len && (s[i] == '+' || s[i] == '-'))
			eneg = s[i++] == '-';
		if (i >= len || !json_scan_is_digit(s[i]))
			goto fail;
		exp_at = i;
		while (i < len && json_scan_is_digit(s[i]))
			i++;
		e = json_scan_exponent(s, exp_at, i);
		if (eneg)
			e = -e;
	}
	*end = i;

	if (integer && !(flags & JSON_SCAN_INT_AS_REAL)) {
		/* strtoll: -9223372036854775808 ... 9223372036854775807. */
		static const char max[] = "9223372036854775807", min[] = "9223372036854775808";
		size_t n = ib - ia;

		if (n < 19 || (n == 19 && memcmp(s + ia, neg ? min : max, 19) <= 0))
			return 0;
		err->why = "integer out of range";
		goto fail_at_start;
	}
	/* The value is 0.D x 10^x, D's first digit not 0; x <= 308 always fits
	 * a double, x >= 310 never does, x == 309 is read digit by digit. */
	if (s[ia] != '0') {
		sig = ia;
		x = (long long)(ib - ia);
	} else {
		size_t z = ib + 1;

		if (ib >= mend)
			return 0; /* zero */
		while (z < mend && s[z] == '0')
			z++;
		if (z >= mend)
			return 0; /* zero */
		sig = z;
		x = -(long long)(z - ib - 1);
	}
	x += e;
	if (x <= 308)
		return 0;
	if (x == 309 && !json_scan_digits_reach_edge(s, sig, mend))
		return 0;
	err->why = "number out of range";
	goto fail_at_start;
fail:
	err->why = "invalid number";
	err->at = i;
	return -1;
fail_at_start:
	err->at = start;
	return -1;
}

static void
json_scan_push(struct json_scan_stack *st, bool object)
{
	unsigned long long bit = 1ULL << (st->n % 64);

	if (object)
		st->bits[st->n / 64] |= bit;
	else
		st->bits[st->n / 64] &= ~bit;
	st->n++;
}

static bool
json_scan_top_is_object(const struct json_scan_stack *st)
{
	size_t k = st->n - 1;

	return (st->bits[k / 64] >> (k % 64)) & 1;
}

/* The literal lit at s[i]; jansson reads a whole run of letters as one
 * word, and what follows a literal must be a separator anyway. */
static bool
json_scan_literal(const char *s, size_t len, size_t i, const char *lit, size_t n)
{
	return len - i >= n && memcmp(s + i, lit, n) == 0;
}

int
json_scan_check(const char *s, size_t len, int flags, json_scan_member_fn on_member, void *ctx,
		bool *is_object, struct json_scan_error *err)
{
	struct json_scan_stack st;
	struct json_scan_error scratch;
	struct json_scan_member m = {0, 0, 0, 0};
	bool top_object = false, nul;
	size_t i, end;
	int rc;

	if (err == NULL)
		err = &scratch;
	st.n = 0;
	i = json_scan_ws(s, len, 0);
	if (i < len && s[i] == '{')
		top_object = true;
	if (is_object != NULL)
		*is_object = top_object;

value:
	/* A value starts at s[i] (blanks skipped), inside st.n containers. */
	if (st.n >= JSON_SCAN_MAX_DEPTH) {
		err->why = "nesting too deep";
		goto fail;
	}
	if (st.n == 1 && top_object)
		m.value = i;
	if (i >= len) {
		err->why = "premature end of input";
		goto fail;
	}
	switch (s[i]) {
	case '{':
		json_scan_push(&st, true);
		i = json_scan_ws(s, len, i + 1);
		if (i < len && s[i] == '}') {
			i++;
			st.n--;
			goto after;
		}
		goto key;
	case '[':
		json_scan_push(&st, false);
		i = json_scan_ws(s, len, i + 1);
		if (i < len && s[i] == ']') {
			i++;
			st.n--;
			goto after;
		}
		goto value;
	case '"':
		if (json_scan_check_string(s, len, i, &end, &nul, err) != 0)
			goto fail_at;
		if (nul && !(flags & JSON_SCAN_ALLOW_NUL)) {
			err->why = "\\u0000 in a string";
			goto fail;
		}
		i = end;
		goto after;
	case 't':
		if (!json_scan_literal(s, len, i, "true", 4))
			break;
		i += 4;
		goto after;
	case 'f':
		if (!json_scan_literal(s, len, i, "false", 5))
			break;
		i += 5;
		goto after;
	case 'n':
		if (!json_scan_literal(s, len, i, "null", 4))
			break;
		i += 4;
		goto after;
	default:
		if (s[i] == '-' || json_scan_is_digit(s[i])) {
			if (json_scan_check_number(s, len, i, flags, &i, err) != 0)
				goto fail_at;
			goto after;
		}
		break;
	}
	err->why = "invalid token";
	goto fail;

key:
	/* A key starts at s[i] (blanks skipped), in the object on top. */
	if (i >= len || s[i] != '"') {
		err->why = i >= len ? "premature end of input" : "string or '}' expected";
		goto fail;
	}
	if (json_scan_check_string(s, len, i, &end, &nul, err) != 0)
		goto fail_at;
	if (nul) {
		err->why = "\\u0000 in an object key";
		goto fail;
	}
	if (st.n == 1) {
		m.key = i + 1;
		m.key_end = end - 1;
	}
	i = json_scan_ws(s, len, end);
	if (i >= len || s[i] != ':') {
		err->why = i >= len ? "premature end of input" : "':' expected";
		goto fail;
	}
	i = json_scan_ws(s, len, i + 1);
	goto value;

after:
	/* A value ended just before s[i]. */
	if (st.n == 1 && top_object && on_member != NULL) {
		m.value_end = i;
		rc = on_member(ctx, s, &m);
		if (rc != 0)
			return rc;
	}
	i = json_scan_ws(s, len, i);
	if (st.n == 0) {
		if (i < len) {
			err->why = "end of input expected";
			goto fail;
		}
		return 0;
	}
	if (i >= len) {
		err->why = "premature end of input";
		goto fail;
	}
	if (json_scan_top_is_object(&st)) {
		if (s[i] == ',') {
			i = json_scan_ws(s, len, i + 1);
			goto key;
		}
		if (s[i] == '}') {
			i++;
			st.n--;
			goto after;
		}
		err->why = "',' or '}' expected";
		goto fail;
	}
	if (s[i] == ',') {
		i = json_scan_ws(s, len, i + 1);
		goto value;
	}
	if (s[i] == ']') {
		i++;
		st.n--;
		goto after;
	}
	err->why = "',' or ']' expected";
fail:
	err->at = i;
fail_at:
	return -1;
}

/* Appends code point cp as UTF-8 at o. */
static size_t
json_scan_put_utf8(char *o, unsigned cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xc0 | (cp >> 6));
		o[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xe0 | (cp >> 12));
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (char)(0xf0 | (cp >> 18));
	o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	o[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

char *
json_scan_string_dup(const char *s, size_t at, size_t end, size_t *outlen)
{
	/* Decoding never lengthens: an escape of 2 bytes gives 1, one of 6 at
	 * most 3, a pair of 12 gives 4. */
	char *out = malloc(end - at + 1);
	size_t o = 0;

	if (out == NULL)
		return NULL;
	for (size_t i = at + 1; i + 1 < end; i++) {
		unsigned cp, lo;

		if (s[i] != '\\') {
			out[o++] = s[i];
			continue;
		}
		i++;
		switch (s[i]) {
		case 'b':
			out[o++] = '\b';
			break;
		case 'f':
			out[o++] = '\f';
			break;
		case 'n':
			out[o++] = '\n';
			break;
		case 'r':
			out[o++] = '\r';
			break;
		case 't':
			out[o++] = '\t';
			break;
		case 'u':
			/* Checked: four hex digits, a high surrogate's low half after it. */
			(void)json_scan_hex4(s + i + 1, &cp);
			i += 4;
			if (cp >= 0xd800 && cp <= 0xdbff) {
				(void)json_scan_hex4(s + i + 3, &lo);
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				i += 6;
			}
			o += json_scan_put_utf8(out + o, cp);
			break;
		default: /* '"', '\\', '/' */
			out[o++] = s[i];
			break;
		}
	}
	out[o] = '\0';
	if (outlen != NULL)
		*outlen = o;
	return out;
}

int
json_scan_number(const char *s, size_t at, size_t end, double *out)
{
	char small[64], *buf = small;
	size_t n = end - at;

	/* strtod wants a terminated string; the document need not be one. */
	if (n >= sizeof(small)) {
		buf = malloc(n + 1);
		if (buf == NULL)
			return -1;
	}
	memcpy(buf, s + at, n);
	buf[n] = '\0';
	*out = strtod(buf, NULL);
	if (buf != small)
		free(buf);
	return 0;
}
