#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "clock.h"

/* Set once by log_init before threads start, read-only afterwards. */
static enum log_level log_threshold = LOG_LEVEL_INFO;

static const char *const log_names[] = {"error", "warn", "info", "debug"};

void
log_init(void)
{
	const char *v = getenv("API_TOGETHER_LOG_LEVEL");

	if (v == NULL || *v == '\0')
		return;
	for (size_t i = 0; i < sizeof(log_names) / sizeof(log_names[0]); i++) {
		if (strcasecmp(v, log_names[i]) == 0) {
			log_threshold = (enum log_level)i;
			return;
		}
	}
	if (strcasecmp(v, "warning") == 0)
		log_threshold = LOG_LEVEL_WARN;
	else
		log_msg(LOG_LEVEL_WARN, "API_TOGETHER_LOG_LEVEL: unknown level, using info");
}

int
log_enabled(enum log_level level)
{
	return level <= log_threshold;
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
	char line[2048];
	char when[32];
	va_list ap;
	size_t len;
	int n;

	if (!log_enabled(level))
		return;
	clock_iso8601(clock_now_ms(), when, sizeof(when));
	n = snprintf(line, sizeof(line), "%s %s api-together[%ld]: ", when, log_names[level],
		     (long)getpid());
	if (n < 0)
		return;
	len = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
	va_start(ap, fmt);
	n = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	len += (size_t)n;
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	/* A line must stay one plain line whatever a message carried in: no
	 * line breaks, no terminal escapes. */
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
			line[i] = '?';
	line[len++] = '\n';
	/* One write: lines from several threads and processes never mix. */
	if (write(STDERR_FILENO, line, len) < 0)
		return; /* nowhere left to report it */
}
