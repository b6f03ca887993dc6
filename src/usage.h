/* usage: the token counts of one upstream answer, as its "usage" object
 * gives them. A leaf: sse.c reads them, upstream.c carries them, proxy.c
 * records them. */
#ifndef API_TOGETHER_USAGE_H
#define API_TOGETHER_USAGE_H

#include <stdbool.h>

struct usage {
	bool found;              /* a "usage" object was seen */
	bool completion_present; /* it had "completion_tokens" */
	long long prompt;        /* prompt_tokens, 0 when absent */
	long long completion;    /* completion_tokens, 0 when absent */
	long long total;         /* total_tokens, else prompt + completion */
};

#endif
