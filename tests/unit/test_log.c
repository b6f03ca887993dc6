#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <pty.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"

/* Where stderr goes while a test logs: a pipe (a log file, for isatty) or a
 * pseudo-terminal (a person's terminal). */
struct sink {
	int read_fd;  /* what the test reads the lines from */
	int write_fd; /* what becomes stderr */
	int saved;    /* the real stderr, put back after */
};

static void
sink_pipe(struct sink *s)
{
	int fds[2];

	assert_int_equal(pipe(fds), 0);
	s->read_fd = fds[0];
	s->write_fd = fds[1];
}

static void
sink_pty(struct sink *s)
{
	struct termios t;

	assert_int_equal(openpty(&s->read_fd, &s->write_fd, NULL, NULL, NULL), 0);
	/* Raw: the terminal passes the bytes as written ("\n" stays "\n"). */
	assert_int_equal(tcgetattr(s->write_fd, &t), 0);
	cfmakeraw(&t);
	assert_int_equal(tcsetattr(s->write_fd, TCSANOW, &t), 0);
}

/* Puts the sink in stderr's place and runs log_init there, as main() does. */
static void
sink_begin(struct sink *s)
{
	s->saved = dup(STDERR_FILENO);
	assert_true(s->saved >= 0);
	assert_int_equal(dup2(s->write_fd, STDERR_FILENO), STDERR_FILENO);
	log_init();
}

/* Puts stderr back; returns what was logged (up to cap - 1 bytes, NUL-ended). */
static size_t
sink_end(struct sink *s, char *buf, size_t cap)
{
	size_t len = 0;
	struct pollfd p = {.fd = s->read_fd, .events = POLLIN};

	assert_int_equal(dup2(s->saved, STDERR_FILENO), STDERR_FILENO);
	close(s->saved);
	close(s->write_fd);
	/* A pty master reports EIO once the other side is closed and drained. */
	while (len < cap - 1 && poll(&p, 1, 200) > 0) {
		ssize_t n = read(s->read_fd, buf + len, cap - 1 - len);

		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(s->read_fd);
	buf[len] = '\0';
	return len;
}

static int
env_reset(void **state)
{
	(void)state;
	unsetenv("API_TOGETHER_LOG_FORMAT");
	unsetenv("API_TOGETHER_LOG_LEVEL");
	unsetenv("NO_COLOR");
	return 0;
}

static void
text_on_a_pipe_is_plain(void **state)
{
	struct sink s;
	char buf[4096], want[64];

	(void)state;
	sink_pipe(&s);
	sink_begin(&s);
	log_info("hello %s", "world");
	log_error("broken");
	sink_end(&s, buf, sizeof(buf));
	assert_null(strchr(buf, '\033'));
	assert_true(buf[0] == '2' && buf[4] == '-' && strstr(buf, "Z info ") == buf + 23);
	snprintf(want, sizeof(want), " info api-together[%ld]: hello world\n", (long)getpid());
	assert_non_null(strstr(buf, want));
	snprintf(want, sizeof(want), " error api-together[%ld]: broken\n", (long)getpid());
	assert_non_null(strstr(buf, want));
}

static void
text_neutralises_control_characters(void **state)
{
	struct sink s;
	char buf[4096];

	(void)state;
	sink_pipe(&s);
	sink_begin(&s);
	log_warn("a\nb\033[31mc\rd\x7f"
		 "e");
	sink_end(&s, buf, sizeof(buf));
	assert_non_null(strstr(buf, ": a?b?[31mc?d?e\n"));
	assert_int_equal(strchr(buf, '\n') - buf + 1, (long)strlen(buf));
}

static void
text_neutralises_c1_bidi_and_bytes_no_utf8(void **state)
{
	/* U+0085 and U+009B (C1: CSI to an 8-bit terminal), a raw 0x9b, the
	 * bidi overrides U+202E and U+202A and the isolate U+2066 and U+2069;
	 * an e-acute, U+2028 and U+2030 (next to the bidi range) are kept. */
	struct sink s;
	char buf[4096];

	(void)state;
	sink_pipe(&s);
	sink_begin(&s);
	log_warn("a\xc2\x85"
		 "b\xc2\x9b"
		 "c\x9b[31md\xe2\x80\xae"
		 "e\xe2\x80\xaa"
		 "f\xe2\x81\xa6"
		 "g\xe2\x81\xa9"
		 "h\xc3\xa9\xe2\x80\xa8\xe2\x80\xb0.");
	sink_end(&s, buf, sizeof(buf));
	assert_non_null(strstr(buf, ": a?b?c?[31md?e?f?g?h\xc3\xa9\xe2\x80\xa8\xe2\x80\xb0.\n"));
}

static void
text_line_is_capped_as_before(void **state)
{
	struct sink s;
	char buf[8192], big[5000];

	(void)state;
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	sink_pipe(&s);
	sink_begin(&s);
	log_info("%s", big);
	assert_int_equal(sink_end(&s, buf, sizeof(buf)), 2047);
	assert_int_equal(buf[2046], '\n');
}

static void
tty_lines_are_coloured_by_level(void **state)
{
	static const char *const want[] = {"\033[31m", "\033[33m", "\033[32m", "\033[2m"};
	struct sink s;
	char buf[4096];
	char *line, *save = NULL;
	int i = 0;

	(void)state;
	setenv("API_TOGETHER_LOG_LEVEL", "debug", 1);
	sink_pty(&s);
	sink_begin(&s);
	log_error("e");
	log_warn("w");
	log_info("i");
	log_debug("d");
	sink_end(&s, buf, sizeof(buf));
	for (line = strtok_r(buf, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		size_t n = strlen(line);

		assert_true(i < 4);
		assert_memory_equal(line, want[i], strlen(want[i]));
		assert_true(n > 4 && strcmp(line + n - 4, "\033[0m") == 0);
		/* Only the level's colour and its end: the text between stays plain. */
		assert_ptr_equal(strchr(line + 1, '\033'), line + n - 4);
		i++;
	}
	assert_int_equal(i, 4);
}

static void
no_color_turns_colours_off(void **state)
{
	struct sink s;
	char buf[4096];

	(void)state;
	setenv("NO_COLOR", "1", 1);
	sink_pty(&s);
	sink_begin(&s);
	log_error("no colour here");
	sink_end(&s, buf, sizeof(buf));
	assert_non_null(strstr(buf, "no colour here\n"));
	assert_null(strchr(buf, '\033'));
}

static void
empty_no_color_keeps_colours(void **state)
{
	struct sink s;
	char buf[4096];

	(void)state;
	setenv("NO_COLOR", "", 1);
	sink_pty(&s);
	sink_begin(&s);
	log_error("red");
	sink_end(&s, buf, sizeof(buf));
	assert_memory_equal(buf, "\033[31m", 5);
}

/* Parses the one JSON line in buf; checks its fields; returns it. */
static json_t *
json_line(const char *buf, const char *level)
{
	json_error_t err;
	json_t *j, *pid;
	const char *t;

	assert_int_equal(strchr(buf, '\n') - buf + 1, (long)strlen(buf));
	for (const char *p = buf; *p != '\n'; p++)
		assert_true((unsigned char)*p >= 0x20 && *p != 0x7f);
	/* jansson refuses invalid UTF-8 and raw control characters. */
	j = json_loads(buf, JSON_REJECT_DUPLICATES, &err);
	if (j == NULL)
		fail_msg("not JSON (%s): %s", err.text, buf);
	assert_int_equal(json_object_size(j), 4);
	t = json_string_value(json_object_get(j, "time"));
	assert_non_null(t);
	assert_int_equal(strlen(t), 24);
	assert_int_equal(t[23], 'Z');
	assert_string_equal(json_string_value(json_object_get(j, "level")), level);
	pid = json_object_get(j, "pid");
	assert_true(json_is_integer(pid));
	assert_int_equal(json_integer_value(pid), getpid());
	assert_true(json_is_string(json_object_get(j, "msg")));
	return j;
}

static void
json_is_one_object_per_line(void **state)
{
	struct sink s;
	char buf[4096];
	json_t *j;

	(void)state;
	setenv("API_TOGETHER_LOG_FORMAT", "json", 1);
	sink_pipe(&s);
	sink_begin(&s);
	log_warn("POST /v1/chat/completions model=\"gpt-4o\" status=200");
	sink_end(&s, buf, sizeof(buf));
	j = json_line(buf, "warn");
	assert_string_equal(json_string_value(json_object_get(j, "msg")),
			    "POST /v1/chat/completions model=\"gpt-4o\" status=200");
	json_decref(j);
}

static void
json_escapes_every_control_character_and_bad_utf8(void **state)
{
	/* Quote, backslash, tab, newline, CR, ^A, ESC, DEL, U+0085 (C1), an
	 * e-acute and a snowman (kept), then bytes that are no UTF-8: a lone
	 * 0xff, a cut sequence, an overlong '/', a surrogate. */
	static const char msg[] =
		"q\" b\\ t\t n\n r\r a\x01 e\x1b[31m d\x7f c1\xc2\x85 "
		"\xc3\xa9\xe2\x98\x83 ff\xff cut\xe2\x98 long\xc0\xaf sur\xed\xa0\x80.";
	static const char want[] =
		"q\" b\\ t\t n\n r\r a\x01 e\x1b[31m d\x7f c1\xc2\x85 "
		"\xc3\xa9\xe2\x98\x83 ff\xef\xbf\xbd cut\xef\xbf\xbd\xef\xbf\xbd "
		"long\xef\xbf\xbd\xef\xbf\xbd sur\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd.";
	struct sink s;
	char buf[4096];
	json_t *j;

	(void)state;
	setenv("API_TOGETHER_LOG_FORMAT", "json", 1);
	sink_pipe(&s);
	sink_begin(&s);
	log_error("%s", msg);
	sink_end(&s, buf, sizeof(buf));
	j = json_line(buf, "error");
	assert_string_equal(json_string_value(json_object_get(j, "msg")), want);
	assert_non_null(strstr(buf, "a\\u0001 e\\u001b[31m d\\u007f c1\\u0085 "));
	assert_non_null(strstr(buf, "t\\t n\\n r\\r"));
	json_decref(j);
}

static void
json_escapes_bidi_controls(void **state)
{
	/* Embeddings, overrides and isolates escaped; U+2028 and U+2030 kept. */
	static const char msg[] = "a\xe2\x80\xaa b\xe2\x80\xae c\xe2\x81\xa6 d\xe2\x81\xa9 "
				  "e\xe2\x80\xa8 f\xe2\x80\xb0.";
	struct sink s;
	char buf[4096];
	json_t *j;

	(void)state;
	setenv("API_TOGETHER_LOG_FORMAT", "json", 1);
	sink_pipe(&s);
	sink_begin(&s);
	log_error("%s", msg);
	sink_end(&s, buf, sizeof(buf));
	j = json_line(buf, "error");
	assert_string_equal(json_string_value(json_object_get(j, "msg")), msg);
	assert_non_null(
		strstr(buf, "a\\u202a b\\u202e c\\u2066 d\\u2069 e\xe2\x80\xa8 f\xe2\x80\xb0."));
	assert_null(strstr(buf, "\xe2\x80\xae"));
	json_decref(j);
}

static void
json_on_a_tty_has_no_colour(void **state)
{
	struct sink s;
	char buf[4096];
	json_t *j;

	(void)state;
	setenv("API_TOGETHER_LOG_FORMAT", "JSON", 1);
	sink_pty(&s);
	sink_begin(&s);
	log_info("plain");
	sink_end(&s, buf, sizeof(buf));
	j = json_line(buf, "info");
	json_decref(j);
}

static void
json_long_message_stays_valid(void **state)
{
	struct sink s;
	char buf[16384], big[3000];
	json_t *j;
	size_t n;

	(void)state;
	/* Every byte needs a six-byte escape, and the message is cut too. */
	memset(big, 0x01, sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	setenv("API_TOGETHER_LOG_FORMAT", "json", 1);
	sink_pipe(&s);
	sink_begin(&s);
	log_info("%s", big);
	n = sink_end(&s, buf, sizeof(buf));
	assert_true(n <= 8192);
	j = json_line(buf, "info");
	assert_true(strlen(json_string_value(json_object_get(j, "msg"))) > 1000);
	json_decref(j);

	/* Escapes, then plain text that reaches the end of the line: the plain
	 * run is cut where the line ends, and the line is still whole JSON. */
	memset(big, 0x01, 1300);
	memset(big + 1300, 'a', 700);
	big[2000] = '\0';
	close(s.read_fd);
	sink_pipe(&s);
	sink_begin(&s);
	log_info("%s", big);
	n = sink_end(&s, buf, sizeof(buf));
	assert_true(n <= 8192);
	assert_true(n > 8100);
	j = json_line(buf, "info");
	const char *msg = json_string_value(json_object_get(j, "msg"));
	size_t len = strlen(msg);
	assert_true(len > 1300 && len < 2000);
	assert_int_equal(msg[len - 1], 'a');
	json_decref(j);
}

/* A line's time: the second's part is kept per thread, the milliseconds
 * are the caller's; going back in time, or to another day, must not show
 * the second kept. */
static void
time_is_iso8601_to_the_millisecond(void **state)
{
	char b[32];

	(void)state;
	clock_iso8601(1700000000123LL, b, sizeof(b));
	assert_string_equal(b, "2023-11-14T22:13:20.123Z");
	clock_iso8601(1700000000999LL, b, sizeof(b));
	assert_string_equal(b, "2023-11-14T22:13:20.999Z");
	clock_iso8601(1700000001000LL, b, sizeof(b));
	assert_string_equal(b, "2023-11-14T22:13:21.000Z");
	clock_iso8601(1600000000007LL, b, sizeof(b));
	assert_string_equal(b, "2020-09-13T12:26:40.007Z");
	clock_iso8601(0, b, sizeof(b));
	assert_string_equal(b, "1970-01-01T00:00:00.000Z");
	clock_iso8601(1700000000123LL, b, 11);
	assert_string_equal(b, "2023-11-14");
}

static void
unknown_format_warns_and_writes_text(void **state)
{
	struct sink s;
	char buf[4096];

	(void)state;
	setenv("API_TOGETHER_LOG_FORMAT", "xml", 1);
	sink_pipe(&s);
	sink_begin(&s);
	log_info("after");
	sink_end(&s, buf, sizeof(buf));
	assert_non_null(strstr(buf, " warn api-together["));
	assert_non_null(strstr(buf, "API_TOGETHER_LOG_FORMAT: unknown format, using text\n"));
	assert_non_null(strstr(buf, "]: after\n"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(text_on_a_pipe_is_plain, env_reset),
		cmocka_unit_test_setup(text_neutralises_control_characters, env_reset),
		cmocka_unit_test_setup(text_neutralises_c1_bidi_and_bytes_no_utf8, env_reset),
		cmocka_unit_test_setup(text_line_is_capped_as_before, env_reset),
		cmocka_unit_test_setup(tty_lines_are_coloured_by_level, env_reset),
		cmocka_unit_test_setup(no_color_turns_colours_off, env_reset),
		cmocka_unit_test_setup(empty_no_color_keeps_colours, env_reset),
		cmocka_unit_test_setup(json_is_one_object_per_line, env_reset),
		cmocka_unit_test_setup(json_escapes_every_control_character_and_bad_utf8,
				       env_reset),
		cmocka_unit_test_setup(json_escapes_bidi_controls, env_reset),
		cmocka_unit_test_setup(json_on_a_tty_has_no_colour, env_reset),
		cmocka_unit_test_setup(json_long_message_stays_valid, env_reset),
		cmocka_unit_test_setup(time_is_iso8601_to_the_millisecond, env_reset),
		cmocka_unit_test_setup(unknown_format_warns_and_writes_text, env_reset),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
