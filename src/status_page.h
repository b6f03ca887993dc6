/* status_page: GET /status, one self-contained HTML page that shows
 * /v1/status as a card per endpoint and refreshes itself from it. */
#ifndef API_TOGETHER_STATUS_PAGE_H
#define API_TOGETHER_STATUS_PAGE_H

#include "config.h"
#include "request.h"

/* Answers GET or HEAD /status (routes.c refuses other methods). Without a key, or
 * with a wrong ?key=, the page shows its login form; with a right ?key= its
 * script keeps the key in the browser's sessionStorage and fetches
 * v1/status. The answer holds no figure and no key either way. cfg is NULL
 * when no config loaded (the page then says so, status 500). Returns the
 * status written. */
int status_page_handle(struct request *r, const struct config *cfg);

/* The value of the first "key" parameter of query (form-encoded: '+' is a
 * space, %XX a byte), malloc'd; "" when it decodes to a NUL byte; NULL when
 * there is none or when out of memory. The caller wipes and frees it. */
char *status_page_query_key(const char *query);

#endif
