/* Fuzzes json_scan_check (src/json_scan.h) against jansson itself: on every
 * input, the verdict (valid or not, an object or not) must be jansson's
 * json_loadb verdict with the same flags, the top-level members it reports
 * must be the keys jansson reads, and the model and stream a body routes on
 * (body_inspect, src/body.h) must be the ones jansson's tree holds. The
 * input is the whole document. */
#include "fuzz.h"

#include <jansson.h>
#include <stdbool.h>

#include "body.h"
#include "json_scan.h"

/* What the check reported of a top-level object. */
struct fuzz_seen {
	json_t *tree; /* jansson's reading of the same bytes */
	size_t models;
	struct json_scan_member model;
	struct json_scan_member stream;
	bool have_stream;
};

static int
fuzz_member(void *ctx, const char *s, const struct json_scan_member *m)
{
	struct fuzz_seen *seen = ctx;
	struct json_scan js = {.s = s};
	size_t klen;
	char *key;

	FUZZ_CHECK(m->key <= m->key_end && m->key_end < m->value && m->value < m->value_end);
	FUZZ_CHECK(s[m->key - 1] == '"' && s[m->key_end] == '"');
	if (json_scan_key_is(&js, m, "model")) {
		seen->models++;
		seen->model = *m;
	} else if (json_scan_key_is(&js, m, "stream")) {
		seen->stream = *m;
		seen->have_stream = true;
	}
	/* A key the check reports is one jansson read, once the document is
	 * valid: kept for the end, when the verdict is known. */
	if (seen->tree != NULL) {
		key = json_scan_string_dup(s, m->key - 1, m->key_end + 1, &klen);
		FUZZ_CHECK(key != NULL);
		FUZZ_CHECK(json_object_getn(seen->tree, key, klen) != NULL);
		free(key);
	}
	return 0;
}

/* The one known difference, on purpose: jansson drops a raw NUL byte that
 * ends a number or a literal ("[1\0]" is valid to it: the byte it puts back
 * is taken for the end of its look-ahead buffer), where json_scan_check
 * refuses any raw NUL outside a string, as RFC 8259 does. True when s, which
 * jansson accepted, holds a NUL and is accepted once its NULs are gone (none
 * is inside a string, or jansson would have refused it). */
static bool
fuzz_jansson_nul_quirk(const char *s, size_t len, int flags)
{
	char *t;
	size_t n = 0;
	bool ok;

	if (memchr(s, '\0', len) == NULL)
		return false;
	t = malloc(len + 1);
	FUZZ_CHECK(t != NULL);
	for (size_t i = 0; i < len; i++)
		if (s[i] != '\0')
			t[n++] = s[i];
	ok = json_scan_check(t, n, flags, NULL, NULL, NULL, NULL) == 0;
	free(t);
	return ok;
}

/* One comparison: json_scan_check with flags against json_loadb with jflags. */
static void
fuzz_compare(const char *s, size_t len, int flags, size_t jflags)
{
	struct fuzz_seen seen;
	struct json_scan_error err = {0, NULL};
	json_error_t jerr;
	bool object = false;
	int rc;

	memset(&seen, 0, sizeof(seen));
	seen.tree = json_loadb(s, len, jflags | JSON_DECODE_ANY, &jerr);
	rc = json_scan_check(s, len, flags, fuzz_member, &seen, &object, &err);
	if (seen.tree == NULL) {
		if (rc == 0)
			fprintf(stderr, "jansson refuses (%s), json_scan accepts\n", jerr.text);
		FUZZ_CHECK(rc == -1);
		FUZZ_CHECK(err.why != NULL && err.at <= len);
		return;
	}
	if (rc != 0 && fuzz_jansson_nul_quirk(s, len, flags)) {
		json_decref(seen.tree);
		return;
	}
	if (rc != 0)
		fprintf(stderr, "jansson accepts, json_scan refuses at %zu: %s\n", err.at, err.why);
	FUZZ_CHECK(rc == 0);
	FUZZ_CHECK(object == json_is_object(seen.tree));
	if (object) {
		json_t *m = json_object_get(seen.tree, "model");
		json_t *st = json_object_get(seen.tree, "stream");

		FUZZ_CHECK((m != NULL) == (seen.models > 0));
		if (m != NULL && json_is_string(m)) {
			size_t n;
			char *v =
				json_scan_string_dup(s, seen.model.value, seen.model.value_end, &n);

			FUZZ_CHECK(s[seen.model.value] == '"');
			FUZZ_CHECK(v != NULL && n == json_string_length(m) &&
				   memcmp(v, json_string_value(m), n) == 0);
			free(v);
		} else if (m != NULL) {
			FUZZ_CHECK(s[seen.model.value] != '"');
		}
		FUZZ_CHECK((st != NULL) == seen.have_stream);
		if (st != NULL)
			FUZZ_CHECK(json_is_true(st) ==
				   (seen.stream.value_end - seen.stream.value == 4 &&
				    memcmp(s + seen.stream.value, "true", 4) == 0));
	}
	json_decref(seen.tree);
}

/* body_inspect under a JSON Content-Type routes as jansson's tree says. */
static void
fuzz_body(const char *s, size_t len)
{
	size_t bom = len >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0 ? 3 : 0;
	json_t *tree =
		json_loadb(s + bom, len - bom, JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, NULL);
	struct body_info info;
	char err[256];
	int rc;

	memset(&info, 0, sizeof(info));
	rc = body_inspect("application/json", s, len, &info, err, sizeof(err));
	if (tree != NULL && rc == BODY_INVALID && memchr(s, '\0', len) != NULL) {
		/* The NUL jansson drops (fuzz_jansson_nul_quirk): refused here. */
		FUZZ_CHECK(fuzz_jansson_nul_quirk(s + bom, len - bom,
						  JSON_SCAN_INT_AS_REAL | JSON_SCAN_ALLOW_NUL));
	} else if (len == 0) {
		/* No body at all is no JSON body. */
		FUZZ_CHECK(rc == 0 && info.kind == BODY_EMPTY && info.model == NULL);
	} else if (tree == NULL || !json_is_object(tree)) {
		FUZZ_CHECK(rc == BODY_INVALID);
	} else {
		json_t *m = json_object_get(tree, "model");

		if (m != NULL &&
		    (!json_is_string(m) || strlen(json_string_value(m)) != json_string_length(m))) {
			FUZZ_CHECK(rc != 0);
		} else if (rc == 0) {
			FUZZ_CHECK((m == NULL) == (info.model == NULL));
			if (m != NULL)
				FUZZ_CHECK(strcmp(info.model, json_string_value(m)) == 0);
			FUZZ_CHECK(info.stream == json_is_true(json_object_get(tree, "stream")));
		} else {
			/* Only a repeated "model" is refused in a valid object. */
			struct json_scan js;
			struct json_scan_member mm;
			size_t models = 0;

			FUZZ_CHECK(m != NULL);
			FUZZ_CHECK(json_scan_object_begin(&js, s + bom, len - bom) == 0);
			while (json_scan_object_next(&js, &mm) == 1)
				models += json_scan_key_is(&js, &mm, "model");
			FUZZ_CHECK(models > 1);
		}
	}
	if (rc == 0)
		body_info_free(&info);
	json_decref(tree);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;

	/* As the body is read (body.c) and as a token reset is (api.c). */
	fuzz_compare(s, size, JSON_SCAN_INT_AS_REAL | JSON_SCAN_ALLOW_NUL,
		     JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL);
	fuzz_compare(s, size, 0, 0);
	fuzz_body(s, size);
	return 0;
}
