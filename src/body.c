#include "body.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

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

/* Numbers too large for an integer are still valid JSON; \u0000 inside some
 * other string is the upstream's business. */
#define BODY_JSON_FLAGS (JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL)

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
		for (i = 0; i < len && body_is_space(body[i]); i++)
			;
		return i < len && body[i] == '{' ? BODY_JSON : BODY_OTHER;
	}
	return BODY_OTHER;
}

/*
 * Header parameters ("; name=value" lists after a content type or a content
 * disposition).
 */

/* Finds parameter name (case-insensitive) in the header value s[0..n) and
 * copies its value, unquoted, to val. Returns 0, or -1 when it is absent or
 * longer than vallen - 1. */
static int
body_param(const char *s, size_t n, const char *name, char *val, size_t vallen)
{
	size_t namelen = strlen(name);
	size_t i = 0;

	/* The media type or disposition type comes first; it has no quotes. */
	while (i < n && s[i] != ';')
		i++;
	while (i < n) {
		size_t ns, ne, vl = 0;
		int match;

		i++; /* the ';' */
		while (i < n && body_is_space(s[i]))
			i++;
		ns = i;
		while (i < n && s[i] != '=' && s[i] != ';')
			i++;
		ne = i;
		while (ne > ns && body_is_space(s[ne - 1]))
			ne--;
		match = ne - ns == namelen && strncasecmp(s + ns, name, namelen) == 0;
		if (i >= n || s[i] == ';')
			continue;
		i++; /* the '=' */
		while (i < n && body_is_lws(s[i]))
			i++;
		if (i < n && s[i] == '"') {
			for (i++; i < n && s[i] != '"'; i++) {
				if (s[i] == '\\' && i + 1 < n)
					i++;
				if (match) {
					if (vl + 1 >= vallen)
						return -1;
					val[vl++] = s[i];
				}
			}
			/* Whatever follows the closing quote up to ';' is noise. */
			while (i < n && s[i] != ';')
				i++;
		} else {
			size_t vs = i, ve;

			while (i < n && s[i] != ';')
				i++;
			ve = i;
			while (ve > vs && body_is_space(s[ve - 1]))
				ve--;
			if (match) {
				if (ve - vs >= vallen)
					return -1;
				memcpy(val, s + vs, ve - vs);
				vl = ve - vs;
			}
		}
		if (match) {
			val[vl] = '\0';
			return 0;
		}
	}
	return -1;
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

/* True when the part header line h[0..n) is a Content-Disposition naming the
 * field "model". */
static int
body_mp_is_model_header(const char *h, size_t n)
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
	if (body_param(h + off, n - off, "name", name, sizeof(name)) != 0)
		return 0;
	return strcmp(name, "model") == 0;
}

/* Adds to sp the value range of every "model" part of a multipart body.
 * Returns 0 (also when the body is malformed: what was found so far stands),
 * or -1 when memory runs out. */
static int
body_mp_scan(const char *content_type, const char *body, size_t len, struct body_spans *sp)
{
	char boundary[BODY_BOUNDARY_MAX];
	char delim[BODY_BOUNDARY_MAX + 2];
	size_t blen, dlen, p;

	if (content_type == NULL || body_param(content_type, strlen(content_type), "boundary",
					       boundary, sizeof(boundary)) != 0)
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
			if (body_mp_is_model_header(body + h, ll))
				is_model = 1;
			h = (size_t)(e - body) + 1;
		}
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
	struct json_scan js;
	struct json_scan_member m;
	int rc;

	if (json_scan_object_begin(&js, s, len) != 0)
		return -1;
	while ((rc = json_scan_object_next(&js, &m)) == 1) {
		if (s[m.value] == '"' && json_scan_key_is(&js, &m, "model") &&
		    body_spans_add(sp, m.value, m.value_end) != 0)
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

static int
body_inspect_json(const char *body, size_t len, struct body_info *info, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *root, *m, *st;
	const char *name;

	/* Integers as reals: a valid body with a 20-digit number must not be
	 * refused for jansson's sake; we read no integer from it. */
	root = json_loadb(body, len, BODY_JSON_FLAGS, &jerr);
	if (root == NULL) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen,
				 "request body is not valid JSON: %s at line %d column %d",
				 jerr.text, jerr.line, jerr.column);
		return -1;
	}
	if (!json_is_object(root)) {
		body_set_err(err, errlen, "request body must be a JSON object");
		goto fail;
	}
	m = json_object_get(root, "model");
	if (m != NULL) {
		if (!json_is_string(m)) {
			body_set_err(err, errlen, "\"model\" must be a string");
			goto fail;
		}
		name = json_string_value(m);
		/* A C string cannot carry it, and no model has one. */
		if (strlen(name) != json_string_length(m)) {
			body_set_err(err, errlen, "\"model\" must not contain NUL characters");
			goto fail;
		}
		info->model = strdup(name);
		if (info->model == NULL) {
			body_set_err(err, errlen, "out of memory");
			goto fail;
		}
	}
	st = json_object_get(root, "stream");
	info->stream = json_is_true(st);
	json_decref(root);
	return 0;
fail:
	json_decref(root);
	return -1;
}

int
body_inspect(const char *content_type, const char *body, size_t len, struct body_info *info,
	     char *err, size_t errlen)
{
	struct body_spans sp;

	body_spans_init(&sp, len);
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	info->kind = body_kind_of(content_type, body, len);
	info->model = NULL;
	info->stream = false;

	switch (info->kind) {
	case BODY_JSON:
		return body_inspect_json(body, len, info, err, errlen);
	case BODY_MULTIPART:
		if (body_mp_scan(content_type, body, len, &sp) != 0)
			goto oom;
		/* The first "model" part names the model; a value holding NUL is
		 * no model name. */
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
	return -1;
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
		if (body_mp_scan(content_type, body, len, &sp) != 0 || sp.n == 0)
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
