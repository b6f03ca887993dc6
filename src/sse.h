/* sse: token usage from an upstream answer, whole JSON or a server-sent-event
 * stream read chunk by chunk as it passes through. */
#ifndef API_TOGETHER_SSE_H
#define API_TOGETHER_SSE_H

#include <stdbool.h>
#include <stddef.h>

#include "usage.h"

/* Reads the top-level "usage" object of a JSON answer (the last one when the
 * key repeats). Only that object is parsed; the rest of the answer is walked
 * for its structure, not validated. Returns 0 (with out->found false when
 * there is none, it is not a valid object, or the body is not a JSON object
 * followed by nothing but whitespace). */
int usage_from_json(const char *body, size_t len, struct usage *out);

struct sse_parser;

/* A parser for one stream. Returns NULL when memory runs out. */
struct sse_parser *sse_parser_new(void);

/* Feeds the next bytes of the stream, split anywhere (even inside a line or
 * a CRLF). Lines longer than an internal bound are skipped, not kept. */
void sse_parser_feed(struct sse_parser *p, const char *data, size_t len);

/* The usage of the last "data:" event that carried a non-null "usage"
 * (an unterminated last line is taken into account). */
void sse_parser_usage(struct sse_parser *p, struct usage *out);

/* True once any "data:" line other than "[DONE]" has been seen. */
bool sse_parser_saw_data(const struct sse_parser *p);

void sse_parser_free(struct sse_parser *p);

/* The removal of the usage-only event (a "data:" JSON object with empty
 * "choices" and a "usage") from a stream whose usage the gateway asked for
 * itself (doc/behaviour.md, Forwarding), so the client gets the bytes it
 * would have got without the gateway. Only the current event is held back
 * (until the blank line that ends it); one longer than an internal bound
 * goes on as it comes. The usage is read by an sse_parser fed the same
 * bytes. */
struct sse_filter;

/* Where the bytes that go on are sent; false when they cannot be (the
 * client is gone). */
typedef bool (*sse_emit_fn)(void *ctx, const char *data, size_t len);

/* Returns NULL when memory runs out. */
struct sse_filter *sse_filter_new(void);

/* Feeds the next bytes of the stream, split anywhere; the complete events
 * among them, but the usage-only one, go to emit in order. Returns false
 * as soon as emit does. */
bool sse_filter_feed(struct sse_filter *f, const char *data, size_t len, sse_emit_fn emit,
		     void *ctx);

/* The stream ended: the event still held goes to emit unless it is the
 * usage-only one. Returns what emit did (true when nothing was held). */
bool sse_filter_end(struct sse_filter *f, sse_emit_fn emit, void *ctx);

void sse_filter_free(struct sse_filter *f);

#endif
