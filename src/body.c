#include "body.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dynbuf.h"
#include "compat.h"
#include "json_scan.h"

/* Longest multipart boundary we accept; RFC 2046 allows 70, be generous. */
#define BODY_BOUNDARY_MAX 256

/* What the Content-Type header says, before looking at the bytes. */
enum body_ctype { BODY_CT_NONE, BODY_CT_JSON, BODY_CT_MULTIPART, BODY_CT_FORM, BODY_CT_OTHER };

/* Byte ranges [start, end) of the body to replace. */
struct body_span {
	size_t start;
	size_t end;
};

/* The spans found, in order: v[0..n) reads buf's entries. */
struct body_spans {
	struct dynbuf buf;
	struct body_span *v;
	size_t n;
};

static int
body_is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int
body_is_lws(char c)
{
	return c == ' ' || c == '\t';
}

static void
body_set_err(char *err, size_t errlen, const char *msg)
{
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s", msg);
}

static void
body_spans_init(struct body_spans *sp, size_t body_len)
{
	/* A span takes at least 2 bytes of the body (a JSON string's quotes;
	 * a multipart delimiter between parts), so there are at most
	 * body_len / 2 + 1 of them. */
	size_t most = body_len / 2 + 1;

	dynbuf_init(&sp->buf, most > SIZE_MAX / sizeof(*sp->v) ? SIZE_MAX : most * sizeof(*sp->v));
	sp->v = NULL;
	sp->n = 0;
}

static int
body_spans_add(struct body_spans *sp, size_t start, size_t end)
{
	struct body_span *s = dynbuf_addz(&sp->buf, sizeof(*s));

	if (s == NULL)
		return -1;
	s->start = start;
	s->end = end;
	sp->v = dynbuf_ptr(&sp->buf);
	sp->n++;
	return 0;
}

static void
body_spans_free(struct body_spans *sp)
{
	dynbuf_free(&sp->buf);
	sp->v = NULL;
	sp->n = 0;
}

/* The media type alone: "Application/JSON; charset=utf-8" is JSON. */
static enum body_ctype
body_classify(const char *ct)
{
	const char *end;
	size_t n;

	if (ct == NULL)
		return BODY_CT_NONE;
	while (body_is_lws(*ct))
		ct++;
	end = strchr(ct, ';');
	n = end != NULL ? (size_t)(end - ct) : strlen(ct);
	while (n > 0 && body_is_lws(ct[n - 1]))
		n--;
	if (n == 0)
		return BODY_CT_NONE;
	if (n == 16 && strncasecmp(ct, "application/json", n) == 0)
		return BODY_CT_JSON;
	if (n > 5 && strncasecmp(ct + n - 5, "+json", 5) == 0)
		return BODY_CT_JSON;
	if (n == 19 && strncasecmp(ct, "multipart/form-data", n) == 0)
		return BODY_CT_MULTIPART;
	if (n == 33 && strncasecmp(ct, "application/x-www-form-urlencoded", n) == 0)
		return BODY_CT_FORM;
	return BODY_CT_OTHER;
}

/* jansson's flags as the body was once parsed with (JSON_DECODE_INT_AS_REAL
 * | JSON_ALLOW_NUL): numbers too large for an integer are still valid JSON;
 * \u0000 inside some other string is the upstream's business. */
#define BODY_JSON_FLAGS (JSON_SCAN_INT_AS_REAL | JSON_SCAN_ALLOW_NUL)

/* The length of a UTF-8 byte order mark at the start of body: 3 or 0. RFC
 * 8259 (section 8.1) lets a parser ignore one, and upstreams that do would
 * read the object after it: it must route on its model like any other. */
static size_t
body_bom(const char *body, size_t len)
{
	return len >= 3 && memcmp(body, "\xef\xbb\xbf", 3) == 0 ? 3 : 0;
}

static enum body_kind
body_kind_of(const char *content_type, const char *body, size_t len)
{
	size_t i;

	if (len == 0)
		return BODY_EMPTY;
	switch (body_classify(content_type)) {
	case BODY_CT_JSON:
		return BODY_JSON;
	case BODY_CT_MULTIPART:
		return BODY_MULTIPART;
	case BODY_CT_NONE:
	case BODY_CT_FORM:
	case BODY_CT_OTHER:
		/* Clients like `curl -d '{...}'` send JSON as a form, and upstreams
		 * read JSON whatever its label: a body that looks like an object
		 * routes on its model, or a client could reach any endpoint with
		 * a model none of them is configured for. */
		for (i = body_bom(body, len); i < len && body_is_space(body[i]); i++)
			;
		return i < len && body[i] == '{' ? BODY_JSON : BODY_OTHER;
	}
	return BODY_OTHER;
}

/*
 * Header parameters ("; name=value" lists after a content type or a content
 * disposition).
 */

/* One parameter of a header value: its name and its value, still quoted
 * when it was; no '=' leaves the value empty with has_value false. */
struct body_param_at {
	size_t name, name_end;
	size_t value, value_end;
	bool has_value;
};

/* Reads the parameter after s[*i] (the media or disposition type, or the
 * previous parameter) into *p and moves *i past it. Returns false when there
 * is none left. */
static bool
body_param_next(const char *s, size_t n, size_t *i, struct body_param_at *p)
{
	size_t k = *i;

	/* The type comes first, and quotes end only within a parameter. */
	while (k < n && s[k] != ';')
		k++;
	if (k >= n) {
		*i = k;
		return false;
	}
	k++; /* the ';' */
	while (k < n && body_is_space(s[k]))
		k++;
	p->name = k;
	while (k < n && s[k] != '=' && s[k] != ';')
		k++;
	p->name_end = k;
	while (p->name_end > p->name && body_is_space(s[p->name_end - 1]))
		p->name_end--;
	p->has_value = k < n && s[k] == '=';
	p->value = p->value_end = k;
	if (p->has_value) {
		k++; /* the '=' */
		while (k < n && body_is_lws(s[k]))
			k++;
		p->value = k;
		if (k < n && s[k] == '"') {
			for (k++; k < n && s[k] != '"'; k++)
				if (s[k] == '\\' && k + 1 < n)
					k++;
			p->value_end = k < n ? k + 1 : k;
			/* Whatever follows the closing quote up to ';' is noise. */
			while (k < n && s[k] != ';')
				k++;
		} else {
			while (k < n && s[k] != ';')
				k++;
			p->value_end = k;
			while (p->value_end > p->value && body_is_space(s[p->value_end - 1]))
				p->value_end--;
		}
	}
	*i = k;
	return true;
}

static bool
body_param_is(const char *s, const struct body_param_at *p, const char *name)
{
	size_t namelen = strlen(name);

	return p->name_end - p->name == namelen && strncasecmp(s + p->name, name, namelen) == 0;
}

/* Finds parameter name (case-insensitive) in the header value s[0..n) and
 * copies its value, unquoted, to val. Returns 0, or -1 when it is absent or
 * longer than vallen - 1. */
static int
body_param(const char *s, size_t n, const char *name, char *val, size_t vallen)
{
	struct body_param_at p;
	size_t i = 0, vl = 0;

	while (body_param_next(s, n, &i, &p)) {
		if (!p.has_value || !body_param_is(s, &p, name))
			continue;
		if (p.value < p.value_end && s[p.value] == '"') {
			for (size_t k = p.value + 1; k < p.value_end && s[k] != '"'; k++) {
				if (s[k] == '\\' && k + 1 < p.value_end)
					k++;
				if (vl + 1 >= vallen)
					return -1;
				val[vl++] = s[k];
			}
		} else {
			if (p.value_end - p.value >= vallen)
				return -1;
			memcpy(val, s + p.value, p.value_end - p.value);
			vl = p.value_end - p.value;
		}
		val[vl] = '\0';
		return 0;
	}
	return -1;
}

/* How many times parameter name appears in the header value s[0..n), with
 * a value or without. */
static size_t
body_param_count(const char *s, size_t n, const char *name)
{
	struct body_param_at p;
	size_t i = 0, count = 0;

	while (body_param_next(s, n, &i, &p))
		if (body_param_is(s, &p, name))
			count++;
	return count;
}

/*
 * multipart/form-data
 */

/* Index of the next delimiter line "--boundary" at or after from, or len.
 * A delimiter starts a line and is followed by "--", blanks or the line end,
 * so a boundary that merely prefixes some content is not one. */
static size_t
body_mp_delim(const char *body, size_t len, size_t from, const char *delim, size_t dlen)
{
	while (from < len) {
		const char *hit = memmem(body + from, len - from, delim, dlen);
		size_t p, after;

		if (hit == NULL)
			break;
		p = (size_t)(hit - body);
		after = p + dlen;
		if ((p == 0 || body[p - 1] == '\n') &&
		    (after == len || body_is_space(body[after]) ||
		     (after + 1 < len && body[after] == '-' && body[after + 1] == '-')))
			return p;
		from = p + 1;
	}
	return len;
}

/* What a multipart scan saw that parsers may read differently. */
struct body_mp_seen {
	size_t models;   /* parts named "model" */
	bool name_star;  /* a part named with name*= (RFC 2231), which we do not decode */
	bool boundaries; /* the Content-Type names its boundary more than once */
};

/* True when the part header line h[0..n) is a Content-Disposition naming the
 * field "model". A name*= parameter is noted in seen (may be NULL). */
static int
body_mp_is_model_header(const char *h, size_t n, struct body_mp_seen *seen)
{
	static const char cd[] = "content-disposition";
	const size_t cdlen = sizeof(cd) - 1;
	const char *colon = memchr(h, ':', n);
	size_t namelen, off;
	char name[8];

	if (colon == NULL)
		return 0;
	namelen = (size_t)(colon - h);
	while (namelen > 0 && body_is_lws(h[namelen - 1]))
		namelen--;
	if (namelen != cdlen || strncasecmp(h, cd, cdlen) != 0)
		return 0;
	off = (size_t)(colon - h) + 1;
	if (seen != NULL && body_param_count(h + off, n - off, "name*") > 0)
		seen->name_star = true;
	if (body_param(h + off, n - off, "name", name, sizeof(name)) != 0)
		return 0;
	return strcmp(name, "model") == 0;
}

/* Adds to sp the value range of every "model" part of a multipart body,
 * and counts in seen (may be NULL) what makes the body ambiguous. Returns 0
 * (also when the body is malformed: what was found so far stands), or -1
 * when memory runs out. */
static int
body_mp_scan(const char *content_type, const char *body, size_t len, struct body_spans *sp,
	     struct body_mp_seen *seen)
{
	char boundary[BODY_BOUNDARY_MAX];
	char delim[BODY_BOUNDARY_MAX + 2];
	size_t blen, dlen, p;

	if (content_type == NULL)
		return 0;
	if (seen != NULL && body_param_count(content_type, strlen(content_type), "boundary") > 1)
		seen->boundaries = true;
	if (body_param(content_type, strlen(content_type), "boundary", boundary,
		       sizeof(boundary)) != 0)
		return 0;
	blen = strlen(boundary);
	if (blen == 0)
		return 0;
	delim[0] = '-';
	delim[1] = '-';
	memcpy(delim + 2, boundary, blen);
	dlen = blen + 2;

	p = body_mp_delim(body, len, 0, delim, dlen);
	while (p < len) {
		size_t after = p + dlen, h, cstart = 0, next, cend;
		int is_model = 0, have_body = 0;
		const char *nl;

		if (after + 1 < len && body[after] == '-' && body[after + 1] == '-')
			break; /* the close delimiter */
		nl = memchr(body + after, '\n', len - after);
		if (nl == NULL)
			break;
		h = (size_t)(nl - body) + 1;
		while (h < len) {
			const char *e = memchr(body + h, '\n', len - h);
			size_t ll;

			if (e == NULL)
				break;
			ll = (size_t)(e - body) - h;
			if (ll > 0 && body[h + ll - 1] == '\r')
				ll--;
			if (ll == 0) {
				cstart = (size_t)(e - body) + 1;
				have_body = 1;
				break;
			}
			if (ll >= dlen && memcmp(body + h, delim, dlen) == 0)
				break; /* a part with no blank line: next delimiter */
			if (body_mp_is_model_header(body + h, ll, seen))
				is_model = 1;
			h = (size_t)(e - body) + 1;
		}
		if (is_model && seen != NULL)
			seen->models++;
		if (!have_body) {
			/* Resume at the next delimiter, if any, after the headers. */
			next = body_mp_delim(body, len, after, delim, dlen);
			if (next >= len || next <= p)
				break;
			p = next;
			continue;
		}
		next = body_mp_delim(body, len, cstart, delim, dlen);
		if (next >= len)
			break; /* no delimiter closes this part */
		/* The CRLF (or LF) before the delimiter belongs to it. */
		cend = next;
		if (cend > cstart && body[cend - 1] == '\n')
			cend--;
		if (cend > cstart && body[cend - 1] == '\r')
			cend--;
		/* A model part whose blank line runs straight into the next
		 * delimiter has no value of its own to replace. */
		if (is_model && next > cstart && body_spans_add(sp, cstart, cend) != 0)
			return -1;
		p = next;
	}
	return 0;
}

/*
 * JSON, raw: the top-level object walked byte by byte (json_scan.h), so that
 * a rewrite keeps everything the client sent.
 */

/* Adds to sp the range, quotes included, of the string value of every
 * top-level "model" key; a client may write it as "mod\u0065l". Returns 0,
 * or -1 when the body is not a JSON object this walk understands or memory
 * runs out. */
static int
body_json_scan(const char *s, size_t len, struct body_spans *sp)
{
	size_t bom = body_bom(s, len);
	struct json_scan js;
	struct json_scan_member m;
	int rc;

	if (json_scan_object_begin(&js, s + bom, len - bom) != 0)
		return -1;
	while ((rc = json_scan_object_next(&js, &m)) == 1) {
		if (s[bom + m.value] == '"' && json_scan_key_is(&js, &m, "model") &&
		    body_spans_add(sp, bom + m.value, bom + m.value_end) != 0)
			return -1;
	}
	return rc;
}

/* model as a JSON string literal, quotes included; malloc'd. */
static char *
body_json_quote(const char *model, size_t *outlen)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = strlen(model), o = 0;
	char *q;

	if (n > (SIZE_MAX - 3) / 6)
		return NULL;
	q = malloc(n * 6 + 3);
	if (q == NULL)
		return NULL;
	q[o++] = '"';
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)model[i];
		char e = 0;

		switch (c) {
		case '"':
			e = '"';
			break;
		case '\\':
			e = '\\';
			break;
		case '\b':
			e = 'b';
			break;
		case '\f':
			e = 'f';
			break;
		case '\n':
			e = 'n';
			break;
		case '\r':
			e = 'r';
			break;
		case '\t':
			e = 't';
			break;
		default:
			break;
		}
		if (e != 0) {
			q[o++] = '\\';
			q[o++] = e;
		} else if (c < 0x20) {
			q[o++] = '\\';
			q[o++] = 'u';
			q[o++] = '0';
			q[o++] = '0';
			q[o++] = hex[c >> 4];
			q[o++] = hex[c & 0xf];
		} else {
			q[o++] = (char)c;
		}
	}
	q[o++] = '"';
	q[o] = '\0';
	*outlen = o;
	return q;
}

/* body with every span replaced by repl; malloc'd. */
static int
body_splice(const char *body, size_t len, const struct body_spans *sp, const char *repl,
	    size_t repllen, char **out, size_t *outlen)
{
	size_t total = len, o = 0, from = 0;
	char *buf;

	for (size_t k = 0; k < sp->n; k++) {
		total -= sp->v[k].end - sp->v[k].start;
		if (total > SIZE_MAX - repllen)
			return -1;
		total += repllen;
	}
	/* One spare byte keeps malloc(0) out and leaves room for a NUL. */
	if (total == SIZE_MAX)
		return -1;
	buf = malloc(total + 1);
	if (buf == NULL)
		return -1;
	for (size_t k = 0; k < sp->n; k++) {
		memcpy(buf + o, body + from, sp->v[k].start - from);
		o += sp->v[k].start - from;
		memcpy(buf + o, repl, repllen);
		o += repllen;
		from = sp->v[k].end;
	}
	memcpy(buf + o, body + from, len - from);
	o += len - from;
	buf[o] = '\0';
	*out = buf;
	*outlen = o;
	return 0;
}

/*
 * Public
 */

/* What the check saw of a JSON body's top-level members. */
struct body_json_seen {
	size_t models;         /* "model" keys */
	bool model_not_string; /* one of them is not a string */
	struct json_scan_member model, stream;
	bool have_stream;
	long long max_out; /* the last max_*tokens that is a whole number */
};

/* The whole number >= 0 at s[from..to), or -1 (a fraction, a sign, a
 * string, or beyond 2^60). */
static long long
body_json_count(const char *s, size_t from, size_t to)
{
	long long n = 0;

	if (from >= to)
		return -1;
	for (size_t i = from; i < to; i++) {
		if (s[i] < '0' || s[i] > '9' || n > (INT64_C(1) << 60) / 10)
			return -1;
		n = n * 10 + (s[i] - '0');
	}
	return n;
}

static int
body_json_member(void *ctx, const char *s, const struct json_scan_member *m)
{
	struct body_json_seen *seen = ctx;
	struct json_scan js = {.s = s};

	/* Most keys differ from both at their first byte: no decoding then. */
	if (m->key_end > m->key && s[m->key] != 'm' && s[m->key] != 's' && s[m->key] != '\\')
		return 0;
	if (json_scan_key_is(&js, m, "model")) {
		seen->models++;
		seen->model = *m;
		if (s[m->value] != '"')
			seen->model_not_string = true;
	} else if (json_scan_key_is(&js, m, "stream")) {
		/* The last one counts, as a parser keeps the last. */
		seen->stream = *m;
		seen->have_stream = true;
	} else if (json_scan_key_is(&js, m, "max_tokens") ||
		   json_scan_key_is(&js, m, "max_completion_tokens") ||
		   json_scan_key_is(&js, m, "max_output_tokens")) {
		long long n = body_json_count(s, m->value, m->value_end);
		if (n >= 0)
			seen->max_out = n;
	}
	return 0;
}

/* Line and column (in characters) of offset at, for a message. */
static void
body_json_where(const char *s, size_t at, int *line, int *column)
{
	int l = 1, c = 1;

	for (size_t i = 0; i < at; i++) {
		if (s[i] == '\n') {
			l++;
			c = 1;
		} else if (((unsigned char)s[i] & 0xc0) != 0x80) {
			c++;
		}
	}
	*line = l;
	*column = c;
}

static int
body_inspect_json(const char *body, size_t len, struct body_info *info, char *err, size_t errlen)
{
	struct body_json_seen seen = {0};
	struct json_scan_error jerr;
	size_t bom = body_bom(body, len), mlen;
	bool object;
	int line, column;

	/* Validated byte by byte as jansson would, without building a tree:
	 * the body can be as large as server.maxBodyBytes, and a tree of it
	 * took some 80 times its size (doc/behaviour.md, Forwarding). */
	if (json_scan_check(body + bom, len - bom, BODY_JSON_FLAGS, body_json_member, &seen,
			    &object, &jerr) != 0) {
		body_json_where(body, bom + jerr.at, &line, &column);
		if (err != NULL && errlen > 0)
			snprintf(err, errlen,
				 "request body is not valid JSON: %s at line %d column %d",
				 jerr.why, line, column);
		return BODY_INVALID;
	}
	if (!object) {
		body_set_err(err, errlen, "request body must be a JSON object");
		return BODY_INVALID;
	}
	if (seen.model_not_string) {
		body_set_err(err, errlen, "\"model\" must be a string");
		return BODY_INVALID;
	}
	if (seen.models > 1) {
		/* Parsers keep the first or the last: one upstream could serve a
		 * model the gateway did not route on. */
		body_set_err(err, errlen, "\"model\" must appear once in the request body");
		return BODY_AMBIGUOUS;
	}
	if (seen.models == 1) {
		const char *v = body + bom;

		info->model =
			json_scan_string_dup(v, seen.model.value, seen.model.value_end, &mlen);
		if (info->model == NULL) {
			body_set_err(err, errlen, "out of memory");
			return BODY_INVALID;
		}
		/* A C string cannot carry it, and no model has one. */
		if (strlen(info->model) != mlen) {
			free(info->model);
			info->model = NULL;
			body_set_err(err, errlen, "\"model\" must not contain NUL characters");
			return BODY_INVALID;
		}
	}
	info->stream = seen.have_stream && seen.stream.value_end - seen.stream.value == 4 &&
		       memcmp(body + bom + seen.stream.value, "true", 4) == 0;
	info->estimate = (long long)(len / 4) + seen.max_out;
	return 0;
}

int
body_inspect(const char *content_type, const char *body, size_t len, struct body_info *info,
	     char *err, size_t errlen)
{
	struct body_mp_seen seen = {0, false, false};
	struct body_spans sp;

	body_spans_init(&sp, len);
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	info->kind = body_kind_of(content_type, body, len);
	info->model = NULL;
	info->stream = false;
	info->estimate = 0;

	switch (info->kind) {
	case BODY_JSON:
		return body_inspect_json(body, len, info, err, errlen);
	case BODY_MULTIPART:
		if (body_mp_scan(content_type, body, len, &sp, &seen) != 0)
			goto oom;
		/* Parsers differ on these: the first or the last model part, a
		 * name*= decoded or not, the first or the last boundary. */
		if (seen.models > 1 || seen.name_star || seen.boundaries) {
			body_spans_free(&sp);
			body_set_err(err, errlen,
				     seen.boundaries ? "the Content-Type names its boundary twice"
				     : seen.name_star
					     ? "a multipart part is named with name*"
					     : "the request body has more than one \"model\" part");
			return BODY_AMBIGUOUS;
		}
		/* The model part names the model; a value holding NUL is no model
		 * name. */
		if (sp.n > 0 &&
		    memchr(body + sp.v[0].start, '\0', sp.v[0].end - sp.v[0].start) == NULL) {
			info->model = strndup(body + sp.v[0].start, sp.v[0].end - sp.v[0].start);
			if (info->model == NULL)
				goto oom;
		}
		body_spans_free(&sp);
		return 0;
	case BODY_EMPTY:
	case BODY_OTHER:
		break;
	}
	return 0;
oom:
	body_spans_free(&sp);
	body_set_err(err, errlen, "out of memory");
	return BODY_INVALID;
}

void
body_info_free(struct body_info *info)
{
	if (info == NULL)
		return;
	free(info->model);
	info->model = NULL;
}

int
body_rewrite_model(const char *content_type, const char *body, size_t len, const char *model,
		   char **out, size_t *outlen)
{
	struct body_spans sp;
	char *repl = NULL;
	size_t repllen;
	int rc = -1;

	if (model == NULL || out == NULL || outlen == NULL)
		return -1;
	body_spans_init(&sp, len);
	switch (body_kind_of(content_type, body, len)) {
	case BODY_JSON:
		if (body_json_scan(body, len, &sp) != 0 || sp.n == 0)
			goto done;
		repl = body_json_quote(model, &repllen);
		if (repl == NULL)
			goto done;
		rc = body_splice(body, len, &sp, repl, repllen, out, outlen);
		break;
	case BODY_MULTIPART:
		if (body_mp_scan(content_type, body, len, &sp, NULL) != 0 || sp.n == 0)
			goto done;
		rc = body_splice(body, len, &sp, model, strlen(model), out, outlen);
		break;
	case BODY_EMPTY:
	case BODY_OTHER:
		break;
	}
done:
	free(repl);
	body_spans_free(&sp);
	return rc;
}

/* The member a stream's request gains when the gateway asks for its usage. */
static const char body_usage_member[] = "\"stream_options\":{\"include_usage\":true}";

int
body_ask_usage(const char *body, size_t len, char **out, size_t *outlen)
{
	size_t at = body_bom(body, len), mlen = sizeof(body_usage_member) - 1;
	struct json_scan js;
	struct json_scan_member m;
	bool empty = true;
	int rc;

	if (out == NULL || outlen == NULL || json_scan_object_begin(&js, body + at, len - at) != 0)
		return -1;
	size_t open = json_scan_ws(body + at, len - at, 0) + at; /* the '{' */
	while ((rc = json_scan_object_next(&js, &m)) == 1) {
		empty = false;
		/* The client's stream_options stand as sent, include_usage
		 * or not (doc/behaviour.md, Forwarding). */
		if (json_scan_key_is(&js, &m, "stream_options"))
			return 0;
	}
	if (rc != 0)
		return -1;
	/* Right after the '{': no other member moves, whatever follows. */
	size_t n = len + mlen + (empty ? 0 : 1);
	char *copy = malloc(n);
	if (copy == NULL)
		return -1;
	memcpy(copy, body, open + 1);
	memcpy(copy + open + 1, body_usage_member, mlen);
	if (!empty)
		copy[open + 1 + mlen] = ',';
	memcpy(copy + n - (len - open - 1), body + open + 1, len - open - 1);
	*out = copy;
	*outlen = n;
	return 1;
}
