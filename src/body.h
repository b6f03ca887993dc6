/* body: find and rewrite the top-level "model" of a request body, JSON or
 * multipart/form-data, leaving every other byte as the client sent it. */
#ifndef API_TOGETHER_BODY_H
#define API_TOGETHER_BODY_H

#include <stdbool.h>
#include <stddef.h>

enum body_kind {
	BODY_EMPTY,     /* no body */
	BODY_JSON,      /* a JSON object */
	BODY_MULTIPART, /* multipart/form-data */
	BODY_OTHER      /* anything else: forwarded untouched, no model */
};

struct body_info {
	enum body_kind kind;
	char *model; /* malloc'd; NULL when the body names no model */
	bool stream; /* JSON "stream": true */
	/* The tokens a request reserves where a token limit applies
	 * (doc/behaviour.md, Limits and state, rule 22): a JSON body's bytes
	 * / 4 plus its max_tokens, max_completion_tokens or max_output_tokens
	 * (the last one given); 0 for a body that is not JSON. */
	long long estimate;
};

/* body_inspect's refusals. */
enum {
	BODY_INVALID = -1,  /* a JSON body that is not a valid object with a string model */
	BODY_AMBIGUOUS = -2 /* parsers could read a different model from it than we do */
};

/* Classifies body by content_type (may be NULL) and reads its model
 * (doc/behaviour.md, Forwarding). A JSON body is one whose content type is
 * application/json or ends in +json, or, with any other type but
 * multipart/form-data, one whose first non-blank byte (after a UTF-8 byte
 * order mark, if any) is '{' (it must then parse: an upstream may read it as
 * JSON anyway). JSON is validated as jansson would validate it, byte by byte,
 * in no memory beyond the model's copy, whatever its size or depth.
 * Returns 0 and fills *info (free with body_info_free); BODY_INVALID when a
 * JSON body does not parse, is not an object, or has a "model" that is not
 * a string (or memory runs out); BODY_AMBIGUOUS when a JSON body has "model"
 * twice at top level, or a multipart one has more than one "model" part, a
 * part named with name*=, or a Content-Type naming its boundary twice. A
 * refusal puts a client-facing reason in err (may be NULL) and leaves *info
 * with nothing to free. */
int body_inspect(const char *content_type, const char *body, size_t len, struct body_info *info,
		 char *err, size_t errlen);

void body_info_free(struct body_info *info);

/* Copies body with the value of its top-level "model" (every top-level
 * "model" key of a JSON object; every "model" part of a multipart body)
 * replaced by model. Returns 0 and a malloc'd copy in *out / *outlen
 * (caller frees), or -1 when the body has no model to replace or memory
 * runs out. */
int body_rewrite_model(const char *content_type, const char *body, size_t len, const char *model,
		       char **out, size_t *outlen);

/* Copies a JSON object body with "stream_options":{"include_usage":true}
 * added as its first member, every other byte as it was (doc/behaviour.md,
 * Forwarding: a stream's usage where a token limit applies). Returns 1 and a
 * malloc'd copy in *out / *outlen (caller frees); 0 when the body already
 * has a top-level "stream_options" (it goes as sent; *out untouched); -1
 * when the body is not a JSON object or memory runs out. */
int body_ask_usage(const char *body, size_t len, char **out, size_t *outlen);

#endif
