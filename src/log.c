#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "clock.h"

enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

/* Set by log_init before threads start, read-only afterwards. */
static enum log_level log_threshold = LOG_LEVEL_INFO;
static enum log_format log_format = LOG_FORMAT_TEXT;
static int log_colour;
/* The process's id for every line: getpid is a system call, and glibc no
 * longer keeps it; nothing forks after log_init. 0: log_init not called. */
static pid_t log_pid;

static const char *const log_names[] = {"error", "warn", "info", "debug"};

static pid_t
log_the_pid(void)
{
	return log_pid != 0 ? log_pid : getpid();
}

/* The Node.js original's colours (errors red, warnings yellow, the rest
 * green); debug lines, which it did not have, dim so they recede. */
static const char *const log_colours[] = {"\033[31m", "\033[33m", "\033[32m", "\033[2m"};
#define LOG_COLOUR_END "\033[0m"

/* Longest message kept, and longest text line (as before colours). */
#define LOG_MSG_MAX 2048
#define LOG_TEXT_MAX 2048
/* A JSON line: room for a message whose bytes all need escapes. */
#define LOG_JSON_MAX 8192

static void
log_init_level(void)
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

void
log_init(void)
{
	const char *fmt = getenv("API_TOGETHER_LOG_FORMAT");
	const char *no_colour = getenv("NO_COLOR");
	int unknown = 0;

	log_pid = getpid();
	log_threshold = LOG_LEVEL_INFO;
	log_format = LOG_FORMAT_TEXT;
	if (fmt != NULL && strcasecmp(fmt, "json") == 0)
		log_format = LOG_FORMAT_JSON;
	else if (fmt != NULL && *fmt != '\0' && strcasecmp(fmt, "text") != 0)
		unknown = 1;
	/* Once: a terminal does not become a file later. NO_COLOR counts when
	 * set and not empty (no-color.org). A log file or pipe gets no escapes:
	 * they would be noise to grep and to whoever reads it later. */
	log_colour = log_format == LOG_FORMAT_TEXT && isatty(STDERR_FILENO) &&
		     (no_colour == NULL || *no_colour == '\0');
	log_init_level();
	if (unknown)
		log_msg(LOG_LEVEL_WARN, "API_TOGETHER_LOG_FORMAT: unknown format, using text");
}

int
log_enabled(enum log_level level)
{
	return level <= log_threshold;
}

/* Appends s (n bytes) to buf of size cap at *len, as far as it fits. */
static void
log_put(char *buf, size_t cap, size_t *len, const char *s, size_t n)
{
	if (n > cap - *len)
		n = cap - *len;
	memcpy(buf + *len, s, n);
	*len += n;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0 when the bytes
 * there are no valid UTF-8 (overlong forms and surrogates included). */
static size_t
log_utf8_len(const unsigned char *s, size_t n)
{
	size_t want;
	unsigned char lo = 0x80, hi = 0xbf;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		want = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		want = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		want = 4;
	else
		return 0;
	if (s[0] == 0xe0)
		lo = 0xa0;
	else if (s[0] == 0xed)
		hi = 0x9f;
	else if (s[0] == 0xf0)
		lo = 0x90;
	else if (s[0] == 0xf4)
		hi = 0x8f;
	if (n < want || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < want; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return want;
}

/* The code point of the valid UTF-8 sequence at s, n bytes long. */
static unsigned
log_utf8_cp(const unsigned char *s, size_t n)
{
	static const unsigned char lead_bits[] = {0, 0x7f, 0x1f, 0x0f, 0x07};
	unsigned cp = s[0] & lead_bits[n];

	for (size_t i = 1; i < n; i++)
		cp = cp << 6 | (s[i] & 0x3f);
	return cp;
}

/* Whether code point cp must never reach a reader as is: the C0 controls,
 * DEL and the C1 controls (U+0080-U+009F, which an 8-bit terminal obeys as
 * escapes: U+009B is CSI), and the bidi embeddings, overrides and isolates
 * (U+202A-U+202E, U+2066-U+2069), which make a line read differently from
 * what it holds ("Trojan Source"). */
static int
log_is_control(unsigned cp)
{
	return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || (cp >= 0x202a && cp <= 0x202e) ||
	       (cp >= 0x2066 && cp <= 0x2069);
}

/* Appends msg as the inside of a JSON string: every control of
 * log_is_control escaped as \uXXXX (\n, \t, \r for the usual three), every
 * byte that is not valid UTF-8 as U+FFFD, so a reader never gets broken JSON,
 * a terminal escape or a reordered line. Stops before an escape that would
 * not fit whole, leaving room for tail bytes. */
static void
log_json_string(char *buf, size_t cap, size_t *len, const char *msg, size_t msg_len, size_t tail)
{
	static const char log_hex[] = "0123456789abcdef";
	const unsigned char *s = (const unsigned char *)msg;
	char esc[8];

	for (size_t i = 0; i < msg_len;) {
		/* A run of printable ASCII other than '"' and '\\' goes as it is. */
		size_t run = 0;
		while (i + run < msg_len && s[i + run] >= 0x20 && s[i + run] < 0x7f &&
		       s[i + run] != '"' && s[i + run] != '\\')
			run++;
		if (run > 0) {
			if (run > cap - *len || cap - *len - run < tail)
				run = cap - *len > tail ? cap - *len - tail : 0;
			if (run == 0)
				return;
			memcpy(buf + *len, s + i, run);
			*len += run;
			i += run;
			continue;
		}
		size_t n = log_utf8_len(s + i, msg_len - i);
		const char *out = (const char *)s + i;
		size_t out_len = n;
		unsigned cp = n == 0 ? 0 : log_utf8_cp(s + i, n);

		if (n == 0) {
			out = "\\ufffd";
			out_len = 6;
			n = 1;
		} else if (s[i] == '"' || s[i] == '\\') {
			esc[0] = '\\';
			esc[1] = (char)s[i];
			out = esc;
			out_len = 2;
		} else if (s[i] == '\n' || s[i] == '\t' || s[i] == '\r') {
			esc[0] = '\\';
			esc[1] = s[i] == '\n' ? 'n' : s[i] == '\t' ? 't' : 'r';
			out = esc;
			out_len = 2;
		} else if (log_is_control(cp)) {
			memcpy(esc, "\\u", 2);
			for (int k = 0; k < 4; k++)
				esc[2 + k] = log_hex[(cp >> (12 - 4 * k)) & 0xf];
			out = esc;
			out_len = 6;
		}
		if (out_len > cap - *len || cap - *len - out_len < tail)
			return;
		memcpy(buf + *len, out, out_len);
		*len += out_len;
		i += n;
	}
}

/* Rewrites buf[start, *len) in place so a text line stays one plain line
 * whatever a message carried in: each control of log_is_control becomes one
 * '?', and so does each byte that is no valid UTF-8 (a raw 0x9b is CSI to an
 * 8-bit terminal). Never lengthens the text. */
static void
log_text_neutralise(char *buf, size_t start, size_t *len)
{
	unsigned char *s = (unsigned char *)buf;
	size_t out = start;

	for (size_t i = start; i < *len;) {
		/* Printable ASCII, nearly every byte of a line, stays as it is. */
		if (s[i] >= 0x20 && s[i] < 0x7f) {
			s[out++] = s[i++];
			continue;
		}
		size_t n = log_utf8_len(s + i, *len - i);

		if (n == 0 || log_is_control(log_utf8_cp(s + i, n))) {
			s[out++] = '?';
			i += n == 0 ? 1 : n;
			continue;
		}
		memmove(s + out, s + i, n);
		out += n;
		i += n;
	}
	*len = out;
}

static void
log_write(const char *line, size_t len)
{
	/* One write: lines from several threads and processes never mix. */
	if (write(STDERR_FILENO, line, len) < 0)
		return; /* nowhere left to report it */
}

static void
log_write_json(enum log_level level, const char *msg, size_t msg_len)
{
	static const char tail[] = "\"}\n";
	char line[LOG_JSON_MAX];
	char when[32];
	size_t len;
	int n;

	clock_iso8601(clock_now_ms(), when, sizeof(when));
	n = snprintf(line, sizeof(line), "{\"time\":\"%s\",\"level\":\"%s\",\"pid\":%ld,\"msg\":\"",
		     when, log_names[level], (long)log_the_pid());
	if (n < 0 || (size_t)n >= sizeof(line) - sizeof(tail))
		return;
	len = (size_t)n;
	log_json_string(line, sizeof(line), &len, msg, msg_len, sizeof(tail) - 1);
	log_put(line, sizeof(line), &len, tail, sizeof(tail) - 1);
	log_write(line, len);
}

static void
log_write_text(enum log_level level, const char *msg, size_t msg_len)
{
	char line[LOG_TEXT_MAX + 16]; /* + a colour and its end */
	char when[32];
	size_t len = 0, start, end;
	int n;

	if (log_colour)
		log_put(line, sizeof(line), &len, log_colours[level], strlen(log_colours[level]));
	start = len;
	end = start + LOG_TEXT_MAX - 2; /* a line's text, as it was before colours */
	clock_iso8601(clock_now_ms(), when, sizeof(when));
	n = snprintf(line + len, end - len, "%s %s api-together[%ld]: ", when, log_names[level],
		     (long)log_the_pid());
	if (n < 0)
		return;
	len += (size_t)n < end - len ? (size_t)n : end - len - 1;
	log_put(line, end, &len, msg, msg_len);
	log_text_neutralise(line, start, &len);
	if (log_colour)
		log_put(line, sizeof(line), &len, LOG_COLOUR_END, strlen(LOG_COLOUR_END));
	line[len++] = '\n';
	log_write(line, len);
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
	char msg[LOG_MSG_MAX];
	va_list ap;
	int n;

	if (!log_enabled(level))
		return;
	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (log_format == LOG_FORMAT_JSON)
		log_write_json(level, msg, (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1);
	else
		log_write_text(level, msg, (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1);
}
