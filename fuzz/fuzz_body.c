/* Fuzzes body_inspect and body_rewrite_model (src/body.h), JSON and
 * multipart. Input: the Content-Type header value, LF, the body (an empty
 * first line means no Content-Type). */
#include "fuzz.h"

#include <stdbool.h>

#include "body.h"

/* Names a rewrite puts in: a plain one, and one that needs JSON escapes. */
static const char *const fuzz_models[] = {"gpt-4o-mini", "m\"q\\s/\x01\t\xc3\xa9-x"};
#define FUZZ_N_MODELS (sizeof(fuzz_models) / sizeof(fuzz_models[0]))

/* Rewrites body to model; the result must name model and keep the rest. */
static void
fuzz_rewrite(const char *ct, const char *body, size_t len, const struct body_info *info,
	     const char *model)
{
	struct body_info again;
	char err[256], *out = NULL, *out2 = NULL;
	size_t outlen = 0, outlen2 = 0;
	int rc;

	rc = body_rewrite_model(ct, body, len, model, &out, &outlen);
	if (info->kind == BODY_JSON) {
		/* Every top-level "model" is a string here, so rewritable; none, no rewrite. */
		FUZZ_CHECK(rc == (info->model != NULL ? 0 : -1));
	} else if (info->kind == BODY_MULTIPART && info->model != NULL) {
		FUZZ_CHECK(rc == 0);
	} else if (info->kind == BODY_EMPTY) {
		FUZZ_CHECK(rc == -1);
	}
	if (rc != 0)
		return;
	FUZZ_CHECK(out != NULL && out[outlen] == '\0');
	/* The gateway rewrites only a body that names a model. */
	if (info->model == NULL) {
		free(out);
		return;
	}
	/* What the upstream gets names the new model, and streams as asked. */
	memset(&again, 0, sizeof(again));
	FUZZ_CHECK(body_inspect(ct, out, outlen, &again, err, sizeof(err)) == 0);
	FUZZ_CHECK(again.kind == info->kind);
	FUZZ_CHECK(again.model != NULL && strcmp(again.model, model) == 0);
	FUZZ_CHECK(again.stream == info->stream);
	body_info_free(&again);
	/* The rewrite keeps the body's structure: the same spans are found
	 * again, so a second rewrite to the same model changes nothing. */
	FUZZ_CHECK(body_rewrite_model(ct, out, outlen, model, &out2, &outlen2) == 0);
	FUZZ_CHECK(outlen2 == outlen && memcmp(out2, out, outlen) == 0);
	free(out2);
	free(out);
}

/* body_ask_usage on a JSON body that inspected: the copy inspects the same
 * (model, stream, a longer estimate) and asks no more; a body it leaves has
 * stream_options already. */
static void
fuzz_ask_usage(const char *ctype, const char *body, size_t len, const struct body_info *info)
{
	struct body_info again;
	char *out = NULL;
	size_t outlen = 0;
	char err[256];
	int rc = body_ask_usage(body, len, &out, &outlen);

	FUZZ_CHECK(rc == 0 || rc == 1 || rc == -1);
	if (rc != 1)
		return;
	FUZZ_CHECK(outlen == len + 39 || outlen == len + 40);
	FUZZ_CHECK(body_inspect(ctype, out, outlen, &again, err, sizeof(err)) == 0);
	FUZZ_CHECK(again.kind == BODY_JSON && again.stream == info->stream);
	FUZZ_CHECK((again.model == NULL) == (info->model == NULL));
	FUZZ_CHECK(again.model == NULL || strcmp(again.model, info->model) == 0);
	body_info_free(&again);
	char *twice = NULL;
	size_t twice_len;
	FUZZ_CHECK(body_ask_usage(out, outlen, &twice, &twice_len) == 0 && twice == NULL);
	free(out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *rest;
	size_t len;
	char *ct = fuzz_line(data, size, &rest, &len);
	const char *ctype = *ct != '\0' ? ct : NULL;
	/* An exact-size copy, so reading past the body is caught. */
	char *body = malloc(len > 0 ? len : 1);
	struct body_info info;
	char err[256];
	int rc;

	if (body == NULL)
		abort();
	memcpy(body, rest, len);
	memset(&info, 0x5a, sizeof(info));
	rc = body_inspect(ctype, body, len, &info, err, sizeof(err));
	FUZZ_CHECK(rc == 0 || rc == BODY_INVALID || rc == BODY_AMBIGUOUS);
	FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL);
	if (rc == 0) {
		FUZZ_CHECK(info.model == NULL || strlen(info.model) < len);
		FUZZ_CHECK(info.kind != BODY_EMPTY || len == 0);
		for (size_t i = 0; i < FUZZ_N_MODELS; i++)
			fuzz_rewrite(ctype, body, len, &info, fuzz_models[i]);
		if (info.kind == BODY_JSON)
			fuzz_ask_usage(ctype, body, len, &info);
		body_info_free(&info);
	} else {
		/* Only a JSON or multipart body is refused (a multipart one only
		 * as ambiguous), and it says why. */
		FUZZ_CHECK(err[0] != '\0');
		FUZZ_CHECK(rc == BODY_AMBIGUOUS || info.kind == BODY_JSON);
		char *out = NULL;
		size_t outlen;
		if (body_rewrite_model(ctype, body, len, "gpt-4o-mini", &out, &outlen) == 0)
			free(out);
	}
	free(body);
	free(ct);
	return 0;
}
