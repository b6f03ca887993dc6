/* config_parse: what config.c takes from the parser (config_parse.c) to
 * build its snapshots, which wrap a struct config in memory of their own.
 * Only the config module includes this; everyone else uses config.h, whose
 * config_parse() and config_free() cover a config standing alone. */
#ifndef API_TOGETHER_CONFIG_PARSE_H
#define API_TOGETHER_CONFIG_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

/* Parses and validates text into *cfg, which must be all zeros; its memory
 * stays the caller's. Returns 0 with *cfg filled in (the caller releases what
 * it holds with config_parse_clear), or -1 with *cfg all zeros again. Every
 * problem found is appended to issues (may be NULL), as config_parse does. */
int config_parse_into(struct config *cfg, const char *text, size_t len,
		      struct config_issues *issues);

/* Frees everything config_parse_into put in *cfg and zeroes it; cfg itself
 * is not freed. */
void config_parse_clear(struct config *cfg);

/* Appends one problem, copying path and message. Returns 0, or -1 when out
 * of memory: the list is unchanged, and once the list itself could not grow,
 * every later add fails too (until config_issues_free). */
int config_issue_add(struct config_issues *issues, bool error, const char *path,
		     const char *message);

/* Appends the "top level: out of memory" error; issues may be NULL. */
void config_parse_nomem(struct config_issues *issues);

#endif
