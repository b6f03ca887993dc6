/* Unit tests of config.c: parsing, validation, lookups, snapshots and reload. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

/* ---- helpers ---- */

/* The seed README's config, character for character. */
static const char seed_json[] = "{\n"
				"  \"server\": {\n"
				"    \"port\": 3001,\n"
				"    \"apiKey\": \"sk-123\"\n"
				"  },\n"
				"  \"apis\": [\n"
				"    {\n"
				"      \"id\": \"api1\",\n"
				"      \"name\": \"OpenAI Official API\",\n"
				"      \"baseUrl\": \"https://api.openai.com\",\n"
				"      \"apiKey\": \"sk-your-real-openai-key-here\",\n"
				"      \"rpm\": 60,\n"
				"      \"rpd\": 1000,\n"
				"      \"enabled\": true,\n"
				"      \"models\": [\"gpt-3.5-turbo\", \"gpt-4\"],\n"
				"      \"modelMapping\": {\n"
				"        \"gpt-3.5\": \"gpt-3.5-turbo\"\n"
				"      }\n"
				"    },\n"
				"    {\n"
				"      \"id\": \"api2\",\n"
				"      \"name\": \"Backup API Endpoint\",\n"
				"      \"baseUrl\": \"https://your-backup-api.com\",\n"
				"      \"apiKey\": \"sk-your-backup-key-here\",\n"
				"      \"rpm\": -1,\n"
				"      \"rpd\": 500,\n"
				"      \"enabled\": true,\n"
				"      \"models\": [\"claude-2\", \"claude-instant-1\"]\n"
				"    }\n"
				"  ]\n"
				"}\n";

/* snprintf that fails the test instead of cutting the text short. */
static void fmt(char *buf, size_t len, const char *format, ...)
	__attribute__((format(printf, 3, 4)));

static void
fmt(char *buf, size_t len, const char *format, ...)
{
	va_list ap;
	int n;

	va_start(ap, format);
	n = vsnprintf(buf, len, format, ap);
	va_end(ap);
	assert_true(n >= 0 && (size_t)n < len);
}

/* Test JSON is written with ' for " to stay readable; no test needs a '. */
static char *
dq(const char *s)
{
	char *d = strdup(s);

	assert_non_null(d);
	for (char *p = d; *p != '\0'; p++)
		if (*p == '\'')
			*p = '"';
	return d;
}

static int
parse(const char *quoted, struct config **cfg, struct config_issues *is)
{
	char *text = dq(quoted);
	int rc = config_parse(text, strlen(text), cfg, is);

	free(text);
	return rc;
}

/* A config with one endpoint made of fields (no braces). */
static int
parse_api(const char *fields, struct config **cfg, struct config_issues *is)
{
	char buf[4096];
	fmt(buf, sizeof(buf), "{'server': {'apiKey': 'sk-client'}, 'apis': [{%s}]}", fields);
	return parse(buf, cfg, is);
}

/* As parse_api, with a valid id, baseUrl and models before fields. */
static int
parse_api_with(const char *fields, struct config **cfg, struct config_issues *is)
{
	char buf[4096];
	fmt(buf, sizeof(buf), "'id': 'a', 'baseUrl': 'http://h', 'models': ['m']%s%s",
	    fields[0] != '\0' ? ", " : "", fields);
	return parse_api(buf, cfg, is);
}

static const struct config_issue *
issue_at(const struct config_issues *is, const char *path)
{
	for (size_t i = 0; i < is->n; i++)
		if (strcmp(is->v[i].path, path) == 0)
			return &is->v[i];
	return NULL;
}

/* Fails unless an issue of that kind is at path with exactly message. */
static void
expect_issue(const struct config_issues *is, bool error, const char *path, const char *message)
{
	const struct config_issue *i = issue_at(is, path);

	if (i == NULL) {
		for (size_t k = 0; k < is->n; k++)
			print_error("  have %s: %s\n", is->v[k].path, is->v[k].message);
		fail_msg("no issue at %s", path);
	}
	assert_int_equal(i->error, error);
	assert_string_equal(i->message, message);
}

static size_t
count_errors(const struct config_issues *is)
{
	size_t n = 0;

	for (size_t i = 0; i < is->n; i++)
		n += is->v[i].error;
	return n;
}

/* The single issue of a config with one error. */
static void
expect_only_error(const char *fields, bool full, const char *path, const char *message)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;
	int rc = full ? parse_api(fields, &cfg, &is) : parse_api_with(fields, &cfg, &is);

	assert_int_equal(rc, -1);
	assert_null(cfg);
	if (is.n != 1) {
		for (size_t k = 0; k < is.n; k++)
			print_error("  have %s: %s\n", is.v[k].path, is.v[k].message);
		fail_msg("%zu issues for %s, expected 1", is.n, fields);
	}
	expect_issue(&is, true, path, message);
	config_issues_free(&is);
}

static char tmpdir[64];

static void
write_file(const char *path, const char *quoted)
{
	char *text = dq(quoted);
	size_t len = strlen(text);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
	free(text);
}

/* Replaces path at once, as editors and deploy tools do. */
static void
replace_file(const char *path, const char *quoted)
{
	char tmp[128];

	fmt(tmp, sizeof(tmp), "%s.new", path);
	write_file(tmp, quoted);
	assert_int_equal(rename(tmp, path), 0);
}

static void
tmp_path(char *buf, size_t len, const char *name)
{
	fmt(buf, len, "%s/%s", tmpdir, name);
}

static int
setup_dir(void **state)
{
	(void)state;
	fmt(tmpdir, sizeof(tmpdir), "/tmp/test_config.XXXXXX");
	return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int
teardown_dir(void **state)
{
	char cmd[128];

	(void)state;
	config_set_path(NULL);
	fmt(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static const char one_api_rpm1[] = "{'server': {'apiKey': 'k'}, 'apis': [{'id': 'a', "
				   "'baseUrl': 'http://h', 'models': ['m'], 'rpm': 1}]}";
static const char one_api_rpm2[] = "{'server': {'apiKey': 'k'}, 'apis': [{'id': 'a', "
				   "'baseUrl': 'http://h', 'models': ['m'], 'rpm': 2}]}";
static const char two_apis[] = "{'server': {'apiKey': 'k'}, 'apis': ["
			       "{'id': 'a', 'baseUrl': 'http://h', 'models': ['m']},"
			       "{'id': 'b', 'baseUrl': 'http://h', 'models': ['m']}]}";

/* ---- parsing ---- */

static void
seed_config_loads_unchanged(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;

	(void)state;
	assert_int_equal(config_parse(seed_json, strlen(seed_json), &cfg, &is), 0);
	assert_int_equal(is.n, 0);
	assert_non_null(cfg);
	assert_int_equal(cfg->port, 3001);
	assert_int_equal(cfg->n_api_keys, 1);
	assert_string_equal(cfg->api_keys[0], "sk-123");
	assert_int_equal(cfg->n_apis, 2);
	assert_string_equal(cfg->apis[0].id, "api1");
	assert_string_equal(cfg->apis[0].name, "OpenAI Official API");
	assert_string_equal(cfg->apis[0].base_url, "https://api.openai.com");
	assert_string_equal(cfg->apis[0].api_key, "sk-your-real-openai-key-here");
	assert_int_equal(cfg->apis[0].rpm, 60);
	assert_int_equal(cfg->apis[0].rpd, 1000);
	assert_true(cfg->apis[0].enabled);
	assert_int_equal(cfg->apis[0].n_models, 2);
	assert_string_equal(cfg->apis[0].models[1], "gpt-4");
	assert_int_equal(cfg->apis[0].n_mapping, 1);
	assert_string_equal(cfg->apis[0].mapping[0].key, "gpt-3.5");
	assert_string_equal(cfg->apis[0].mapping[0].value, "gpt-3.5-turbo");
	assert_int_equal(cfg->apis[1].rpm, -1);
	assert_int_equal(cfg->apis[1].rpd, 500);
	assert_int_equal(cfg->apis[1].n_mapping, 0);
	config_free(cfg);
}

static void
example_config_file_loads_without_problems(void **state)
{
	const char *dir = getenv("API_TOGETHER_SRCDIR");
	struct config_issues is = {0};
	struct config *cfg = NULL;
	char path[4096];

	(void)state;
	fmt(path, sizeof(path), "%s/conf/apis.json", dir != NULL && *dir != '\0' ? dir : ".");
	assert_int_equal(config_load_file(path, &cfg, &is), 0);
	assert_int_equal(is.n, 0);
	assert_int_equal(cfg->port, 3001);
	assert_string_equal(cfg->api_keys[0], "sk-123");
	assert_int_equal(cfg->n_apis, 2);
	config_free(cfg);
}

static void
every_default_applies(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;
	const struct config_api *a;

	(void)state;
	assert_int_equal(parse_api_with("", &cfg, &is), 0);
	assert_int_equal(is.n, 0);
	assert_int_equal(cfg->port, 3001);
	assert_int_equal(cfg->max_retries, 10);
	assert_int_equal(cfg->connect_timeout_s, 10);
	assert_int_equal(cfg->timeout_s, 300);
	assert_int_equal(cfg->cooldown_failures, 3);
	assert_int_equal(cfg->cooldown_seconds, 600);
	assert_true(cfg->empty_response_retry);
	assert_true(cfg->max_body_bytes == 10485760);
	assert_true(cfg->cors);
	assert_false(cfg->metrics_public);
	assert_null(cfg->state_file);
	assert_int_equal(cfg->n_forward_paths, 10);
	assert_string_equal(cfg->forward_paths[0], "chat/completions");
	assert_string_equal(cfg->forward_paths[9], "rerank");
	a = &cfg->apis[0];
	assert_string_equal(a->name, "a");
	assert_string_equal(a->api_key, "");
	assert_int_equal(a->rpm, -1);
	assert_int_equal(a->rpd, -1);
	assert_true(a->enabled);
	assert_true(a->stream_usage);
	assert_int_equal(a->n_mapping, 0);
	assert_int_equal(a->n_headers, 0);
	assert_true(a->weight == 1.0);
	config_free(cfg);
}

static void
every_field_is_read(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;
	const struct config_api *a;

	(void)state;
	assert_int_equal(
		parse("{'server': {'apiKey': 'k1', 'apiKeys': ['k2', 'k3'], 'port': 8080,"
		      " 'maxRetries': 2, 'connectTimeoutSeconds': 3, 'timeoutSeconds': 4,"
		      " 'cooldown': {'failures': 5, 'seconds': 0}, 'emptyResponseRetry': false,"
		      " 'maxBodyBytes': 123456789, 'cors': false, 'metricsPublic': true,"
		      " 'stateFile': '/var/s.db', 'forwardPaths': ['chat/completions', 'files/*']},"
		      " 'apis': [{'id': 'x', 'name': 'X', 'baseUrl': 'https://h:8443/api/v1',"
		      " 'apiKey': 'up', 'rpm': 0, 'rpd': 7, 'enabled': false, 'streamUsage': false,"
		      " 'models': ['m1', 'm2'], 'modelMapping': {'a': 'm1', 'b': 'm9'},"
		      " 'weight': 2.5, 'headers': {'api-version': '2024-01-01'}}]}",
		      &cfg, &is),
		0);
	assert_int_equal(is.n, 0);
	assert_int_equal(cfg->n_api_keys, 3);
	assert_string_equal(cfg->api_keys[0], "k1");
	assert_string_equal(cfg->api_keys[2], "k3");
	assert_int_equal(cfg->port, 8080);
	assert_int_equal(cfg->max_retries, 2);
	assert_int_equal(cfg->connect_timeout_s, 3);
	assert_int_equal(cfg->timeout_s, 4);
	assert_int_equal(cfg->cooldown_failures, 5);
	assert_int_equal(cfg->cooldown_seconds, 0);
	assert_false(cfg->empty_response_retry);
	assert_true(cfg->max_body_bytes == 123456789LL);
	assert_false(cfg->cors);
	assert_true(cfg->metrics_public);
	assert_string_equal(cfg->state_file, "/var/s.db");
	assert_int_equal(cfg->n_forward_paths, 2);
	assert_string_equal(cfg->forward_paths[0], "chat/completions");
	assert_string_equal(cfg->forward_paths[1], "files/*");
	a = &cfg->apis[0];
	assert_string_equal(a->name, "X");
	assert_string_equal(a->base_url, "https://h:8443/api/v1");
	assert_string_equal(a->api_key, "up");
	assert_int_equal(a->rpm, 0);
	assert_int_equal(a->rpd, 7);
	assert_false(a->enabled);
	assert_false(a->stream_usage);
	assert_int_equal(a->n_mapping, 2);
	assert_string_equal(a->mapping[1].key, "b");
	assert_string_equal(a->mapping[1].value, "m9");
	assert_true(a->weight == 2.5);
	assert_int_equal(a->n_headers, 1);
	assert_string_equal(a->headers[0].key, "api-version");
	assert_string_equal(a->headers[0].value, "2024-01-01");
	config_free(cfg);
}

static void
null_fields_take_their_default(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;

	(void)state;
	assert_int_equal(parse("{'server': {'apiKey': 'k', 'port': null, 'stateFile': null},"
			       " 'apis': [{'id': 'a', 'baseUrl': 'http://h', 'models': ['m'],"
			       " 'name': null, 'rpm': null, 'headers': null}]}",
			       &cfg, &is),
			 0);
	assert_int_equal(is.n, 0);
	assert_int_equal(cfg->port, 3001);
	assert_null(cfg->state_file);
	assert_string_equal(cfg->apis[0].name, "a");
	assert_int_equal(cfg->apis[0].rpm, -1);
	config_free(cfg);
}

static void
integral_reals_count_as_integers(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;

	(void)state;
	assert_int_equal(parse("{'server': {'apiKey': 'k', 'port': 3.0e3}, 'apis': [{'id': 'a',"
			       " 'baseUrl': 'http://h', 'models': ['m'], 'rpm': 60.0}]}",
			       &cfg, &is),
			 0);
	assert_int_equal(cfg->port, 3000);
	assert_int_equal(cfg->apis[0].rpm, 60);
	config_free(cfg);
	expect_only_error("'rpm': 1.5", false, "apis[0].rpm", "expected an integer >= -1");
}

static void
rpm_below_minus_one_is_named_by_path(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;

	(void)state;
	assert_int_equal(parse("{'server': {'apiKey': 'k'}, 'apis': ["
			       "{'id': 'a', 'baseUrl': 'http://h', 'models': ['m']},"
			       "{'id': 'b', 'baseUrl': 'http://h', 'models': ['m'], 'rpm': -2}]}",
			       &cfg, &is),
			 -1);
	assert_null(cfg);
	assert_int_equal(is.n, 1);
	expect_issue(&is, true, "apis[1].rpm", "expected an integer >= -1");
	config_issues_free(&is);
	expect_only_error("'rpd': '10'", false, "apis[0].rpd", "expected an integer >= -1");
}

/* Every problem is kept, in the order found, however many there are; the
 * list can be freed and filled again. */
static void
many_problems_are_all_kept_in_order(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;
	char text[2048], path[64];
	size_t used;

	(void)state;
	used = (size_t)snprintf(text, sizeof(text),
				"{\"server\": {\"apiKey\": \"k\"}, \"apis\": [{\"id\": \"a\", "
				"\"baseUrl\": \"http://h\", \"models\": [0");
	for (int i = 1; i < 300; i++)
		used += (size_t)snprintf(text + used, sizeof(text) - used, ",%d", i % 10);
	snprintf(text + used, sizeof(text) - used, "]}]}");
	for (int round = 0; round < 2; round++) {
		assert_int_equal(config_parse(text, strlen(text), &cfg, &is), -1);
		assert_null(cfg);
		assert_int_equal(is.n, 300);
		for (size_t i = 0; i < is.n; i++) {
			snprintf(path, sizeof(path), "apis[0].models[%zu]", i);
			assert_string_equal(is.v[i].path, path);
			assert_string_equal(is.v[i].message, "expected a non-empty string");
		}
		config_issues_free(&is);
		assert_null(is.v);
		assert_int_equal(is.n, 0);
	}
}

static void
integer_fields_are_range_checked(void **state)
{
	static const struct {
		const char *server;
		const char *path;
		const char *message;
	} cases[] = {
		{"'port': 0", "server.port", "expected an integer from 1 to 65535"},
		{"'port': 65536", "server.port", "expected an integer from 1 to 65535"},
		{"'port': '3001'", "server.port", "expected an integer from 1 to 65535"},
		{"'maxRetries': 0", "server.maxRetries", "expected an integer >= 1"},
		{"'connectTimeoutSeconds': 0", "server.connectTimeoutSeconds",
		 "expected an integer >= 1"},
		{"'timeoutSeconds': true", "server.timeoutSeconds", "expected an integer >= 1"},
		{"'timeoutSeconds': 99999999999", "server.timeoutSeconds",
		 "expected an integer <= 2147483647"},
		{"'cooldown': {'failures': 0}", "server.cooldown.failures",
		 "expected an integer >= 1"},
		{"'cooldown': {'seconds': -1}", "server.cooldown.seconds",
		 "expected an integer >= 0"},
		{"'cooldown': 5", "server.cooldown", "expected an object"},
		{"'maxBodyBytes': 0", "server.maxBodyBytes", "expected an integer >= 1"},
		{"'maxBodyBytes': 1073741825", "server.maxBodyBytes",
		 "expected an integer <= 1073741824"},
		{"'emptyResponseRetry': 'no'", "server.emptyResponseRetry", "expected a boolean"},
		{"'cors': 1", "server.cors", "expected a boolean"},
		{"'metricsPublic': 'yes'", "server.metricsPublic", "expected a boolean"},
		{"'stateFile': ''", "server.stateFile", "expected a non-empty string"},
		{"'stateFile': 5", "server.stateFile", "expected a non-empty string"},
		{"'apiKeys': 'k2'", "server.apiKeys", "expected an array of strings or objects"},
		{"'apiKeys': ['k2', '']", "server.apiKeys[1]", "expected a non-empty string"},
		{"'apiKey': ''", "server.apiKey", "expected a non-empty string"},
	};
	char buf[512];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct config_issues is = {0};
		struct config *cfg = NULL;

		fmt(buf, sizeof(buf),
		    "{'server': {'apiKey': 'k', %s}, 'apis': [{'id': 'a', "
		    "'baseUrl': 'http://h', 'models': ['m']}]}",
		    cases[i].server);
		/* An empty apiKey replaces the good one: a duplicate-key warning. */
		assert_int_equal(parse(buf, &cfg, &is), -1);
		assert_int_equal(count_errors(&is), 1);
		expect_issue(&is, true, cases[i].path, cases[i].message);
		config_issues_free(&is);
	}
}

/* server.store: "gdbm" or a Redis address, checked at load (a build without
 * Redis support refuses one); storePrefix and storeTimeoutMs. */
static void
store_fields_are_checked(void **state)
{
	static const struct {
		const char *server;
		const char *path;
		const char *message;
	} cases[] = {
		{"'store': 5", "server.store",
		 "expected \"gdbm\" or a Redis address (redis://HOST:PORT, unix:///PATH)"},
		{"'store': 'mysql://h'", "server.store",
		 "expected \"gdbm\" or a Redis address (redis://HOST:PORT, unix:///PATH)"},
		{"'store': 'redis://h:0'", "server.store", "expected a port from 1 to 65535"},
		{"'store': 'redis://:sekret@h:0'", "server.store",
		 "expected a port from 1 to 65535"},
		{"'store': 'unix://h/s.sock'", "server.store",
		 "a Unix socket has a path, no host: unix:///path/redis.sock"},
		{"'storePrefix': ''", "server.storePrefix",
		 "expected a non-empty string of up to 200 bytes, no control characters"},
		{"'storeTimeoutMs': 0", "server.storeTimeoutMs",
		 "expected an integer from 1 to 60000"},
		{"'storeTimeoutMs': 60001", "server.storeTimeoutMs",
		 "expected an integer from 1 to 60000"},
	};
	struct config_issues is = {0};
	struct config *cfg = NULL;
	char buf[512];

	(void)state;
	assert_int_equal(parse("{'server': {'apiKey': 'k', 'store': 'gdbm'}, 'apis': [{'id': 'a', "
			       "'baseUrl': 'http://h', 'models': ['m']}]}",
			       &cfg, &is),
			 0);
	assert_null(cfg->store);
	assert_null(cfg->store_prefix);
	assert_int_equal(cfg->store_timeout_ms, 250);
	config_free(cfg);
	config_issues_free(&is);
	memset(&is, 0, sizeof(is));
	int rc = parse("{'server': {'apiKey': 'k', 'store': 'redis://:pw@10.0.0.5:6380/2', "
		       "'storePrefix': 'gw1:', 'storeTimeoutMs': 100}, 'apis': [{'id': 'a', "
		       "'baseUrl': 'http://h', 'models': ['m']}]}",
		       &cfg, &is);
#ifdef HAVE_HIREDIS
	assert_int_equal(rc, 0);
	assert_string_equal(cfg->store, "redis://:pw@10.0.0.5:6380/2");
	assert_string_equal(cfg->store_prefix, "gw1:");
	assert_int_equal(cfg->store_timeout_ms, 100);
	config_free(cfg);
#else
	/* Without Redis support: a clear error, not a 503 on each request. */
	assert_int_equal(rc, -1);
	expect_issue(&is, true, "server.store",
		     "this build has no Redis support: build it with ./configure --with-redis "
		     "(Debian package libhiredis-dev)");
#endif
	config_issues_free(&is);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(&is, 0, sizeof(is));
		cfg = NULL;
		fmt(buf, sizeof(buf),
		    "{'server': {'apiKey': 'k', %s}, 'apis': [{'id': 'a', "
		    "'baseUrl': 'http://h', 'models': ['m']}]}",
		    cases[i].server);
		assert_int_equal(parse(buf, &cfg, &is), -1);
		assert_int_equal(count_errors(&is), 1);
		expect_issue(&is, true, cases[i].path, cases[i].message);
		for (size_t k = 0; k < is.n; k++)
			assert_null(strstr(is.v[k].message, "sekret"));
		config_issues_free(&is);
	}
}

/* doc/behaviour.md, Configuration (server.forwardPaths). */
static void
forward_paths_are_checked(void **state)
{
	static const struct {
		const char *server;
		const char *path;
		const char *message;
	} cases[] = {
		{"'forwardPaths': 'chat/completions'", "server.forwardPaths",
		 "expected an array of strings"},
		{"'forwardPaths': {'a': 'b'}", "server.forwardPaths",
		 "expected an array of strings"},
		{"'forwardPaths': ['embeddings', '']", "server.forwardPaths[1]",
		 "expected a non-empty string"},
		{"'forwardPaths': [null]", "server.forwardPaths[0]", "expected a non-empty string"},
		{"'forwardPaths': ['a', 7]", "server.forwardPaths[1]",
		 "expected a non-empty string"},
		{"'forwardPaths': ['a', ['b']]", "server.forwardPaths[1]",
		 "expected a non-empty string"},
		{"'forwardPaths': ['chat\\tcompletions']", "server.forwardPaths[0]",
		 "must not contain control characters"},
		{"'forwardPaths': ['chat\\u007f']", "server.forwardPaths[0]",
		 "must not contain control characters"},
		{"'forwardPaths': ['/chat/completions']", "server.forwardPaths[0]",
		 "must not start with '/': a path below /v1/, e.g. \"chat/completions\""},
		{"'forwardPaths': ['/*']", "server.forwardPaths[0]",
		 "must not start with '/': a path below /v1/, e.g. \"chat/completions\""},
		{"'forwardPaths': ['*/completions']", "server.forwardPaths[0]",
		 "'*' is allowed only as the last character"},
		{"'forwardPaths': ['images/*/x']", "server.forwardPaths[0]",
		 "'*' is allowed only as the last character"},
		{"'forwardPaths': ['a**']", "server.forwardPaths[0]",
		 "'*' is allowed only as the last character"},
		{"'forwardPaths': ['chat%2Fcompletions']", "server.forwardPaths[0]",
		 "must not contain spaces, '%', '?' or '#': a path as it is, without escapes or "
		 "query"},
		{"'forwardPaths': ['files?purpose=x']", "server.forwardPaths[0]",
		 "must not contain spaces, '%', '?' or '#': a path as it is, without escapes or "
		 "query"},
		{"'forwardPaths': ['a#b']", "server.forwardPaths[0]",
		 "must not contain spaces, '%', '?' or '#': a path as it is, without escapes or "
		 "query"},
		{"'forwardPaths': ['chat completions']", "server.forwardPaths[0]",
		 "must not contain spaces, '%', '?' or '#': a path as it is, without escapes or "
		 "query"},
	};
	struct config_issues is = {0};
	struct config *cfg = NULL;
	char buf[512];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(&is, 0, sizeof(is));
		cfg = NULL;
		fmt(buf, sizeof(buf),
		    "{'server': {'apiKey': 'k', %s}, 'apis': [{'id': 'a', "
		    "'baseUrl': 'http://h', 'models': ['m']}]}",
		    cases[i].server);
		assert_int_equal(parse(buf, &cfg, &is), -1);
		assert_null(cfg);
		if (count_errors(&is) != 1)
			fail_msg("%zu errors for %s, expected 1", count_errors(&is),
				 cases[i].server);
		expect_issue(&is, true, cases[i].path, cases[i].message);
		config_issues_free(&is);
	}
	/* Every problem of the list is named, each by its index. */
	assert_int_equal(
		parse("{'server': {'apiKey': 'k', 'forwardPaths': ['ok', '', '/x', 'ok/*']},"
		      " 'apis': []}",
		      &cfg, &is),
		-1);
	assert_int_equal(count_errors(&is), 2);
	expect_issue(&is, true, "server.forwardPaths[1]", "expected a non-empty string");
	expect_issue(&is, true, "server.forwardPaths[2]",
		     "must not start with '/': a path below /v1/, e.g. \"chat/completions\"");
	config_issues_free(&is);
	/* null is "not set": the default list. */
	memset(&is, 0, sizeof(is));
	assert_int_equal(
		parse("{'server': {'apiKey': 'k', 'forwardPaths': null}, 'apis': []}", &cfg, &is),
		0);
	assert_int_equal(cfg->n_forward_paths, 10);
	config_free(cfg);
	config_issues_free(&is);
}

/* doc/behaviour.md, Forwarding (which paths): the list given, or the
 * default one (list NULL), against a path below /v1/. */
static void
forward_paths_match_exactly_or_up_to_the_star(void **state)
{
	static const struct {
		const char *list;
		const char *path;
		bool forwarded;
	} cases[] = {
		/* the default list: the inference paths */
		{NULL, "chat/completions", true},
		{NULL, "completions", true},
		{NULL, "embeddings", true},
		{NULL, "responses", true},
		{NULL, "responses/resp_123", true},
		{NULL, "responses/resp_123/input_items", true},
		{NULL, "responses/", true},
		{NULL, "messages", true},
		{NULL, "images/generations", true},
		{NULL, "images/edits", true},
		{NULL, "audio/transcriptions", true},
		{NULL, "audio/speech", true},
		{NULL, "moderations", true},
		{NULL, "rerank", true},
		/* ... and nothing else: the attack of doc/behaviour.md, Forwarding */
		{NULL, "organization/users", false},
		{NULL, "files", false},
		{NULL, "files/file-abc", false},
		{NULL, "fine_tuning/jobs", false},
		{NULL, "batches", false},
		{NULL, "", false},
		{NULL, "images", false},
		{NULL, "audio", false},
		{NULL, "chat", false},
		{NULL, "chat/completions/", false},
		{NULL, "chat/completionsx", false},
		{NULL, "chat/completions/x", false},
		{NULL, "Chat/Completions", false},
		{NULL, "/chat/completions", false},
		{NULL, "chat//completions", false},
		{NULL, "chat%2Fcompletions", false},
		{NULL, "embeddingsx", false},
		{NULL, "messages/batches", false},
		{NULL, "rerank/", false},
		{NULL, "responsesx", false},
		/* "*": everything, as the Node.js original did */
		{"['*']", "organization/users", true},
		{"['*']", "", true},
		{"['*']", "chat/completions", true},
		{"['*']", "a%2Fb%20c", true},
		/* []: nothing */
		{"[]", "chat/completions", false},
		{"[]", "", false},
		/* a custom list: exact entries and a '*' rest, not only after a '/' */
		{"['chat/completions', 'files/*', 'batch*']", "chat/completions", true},
		{"['chat/completions', 'files/*', 'batch*']", "embeddings", false},
		{"['chat/completions', 'files/*', 'batch*']", "files/file-abc", true},
		{"['chat/completions', 'files/*', 'batch*']", "files/a/b/content", true},
		{"['chat/completions', 'files/*', 'batch*']", "files/", true},
		{"['chat/completions', 'files/*', 'batch*']", "files", false},
		{"['chat/completions', 'files/*', 'batch*']", "xfiles/a", false},
		{"['chat/completions', 'files/*', 'batch*']", "batch", true},
		{"['chat/completions', 'files/*', 'batch*']", "batches", true},
		{"['chat/completions', 'files/*', 'batch*']", "batches/b1/cancel", true},
		{"['chat/completions', 'files/*', 'batch*']", "batc", false},
		{"['chat/completions', 'chat/completions']", "chat/completions", true},
	};
	struct config *cfg = NULL;
	char buf[512];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (cases[i].list == NULL)
			fmt(buf, sizeof(buf), "{'server': {'apiKey': 'k'}, 'apis': []}");
		else
			fmt(buf, sizeof(buf),
			    "{'server': {'apiKey': 'k', 'forwardPaths': %s}, 'apis': []}",
			    cases[i].list);
		assert_int_equal(parse(buf, &cfg, NULL), 0);
		if (config_forwards(cfg, cases[i].path) != cases[i].forwarded)
			fail_msg("%s with forwardPaths %s: want %s", cases[i].path,
				 cases[i].list != NULL ? cases[i].list : "(default)",
				 cases[i].forwarded ? "forwarded" : "not forwarded");
		config_free(cfg);
	}
	assert_false(config_forwards(NULL, "chat/completions"));
	assert_int_equal(parse("{'server': {'apiKey': 'k'}, 'apis': []}", &cfg, NULL), 0);
	assert_false(config_forwards(cfg, NULL));
	config_free(cfg);
}

static void
a_client_key_is_required(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;

	(void)state;
	assert_int_equal(parse("{'server': {'port': 1}, 'apis': []}", &cfg, &is), -1);
	expect_issue(&is, true, "server.apiKey", "required (or a non-empty server.apiKeys)");
	config_issues_free(&is);
	assert_int_equal(parse("{'server': {'apiKeys': []}, 'apis': []}", &cfg, &is), -1);
	expect_issue(&is, true, "server.apiKey", "required (or a non-empty server.apiKeys)");
	config_issues_free(&is);
	assert_int_equal(parse("{'server': {'apiKeys': ['k1', 'k2']}, 'apis': []}", &cfg, &is), 0);
	assert_int_equal(cfg->n_api_keys, 2);
	assert_string_equal(cfg->api_keys[1], "k2");
	config_free(cfg);
	config_issues_free(&is);
}

/* doc/behaviour.md, Configuration: client and admin keys. */
static void
client_keys_are_read_and_checked(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;
	const struct config_client *c;

	(void)state;
	assert_int_equal(
		parse("{'server': {'apiKey': 'k1', 'apiKeys': ['k2', {'key': 'sk-client-abcd',"
		      " 'name': 'alice', 'models': ['gpt-4o*', 'o3'], 'expires': '2026-12-31',"
		      " 'enabled': false}], 'adminKeys': ['adm']}, 'apis': []}",
		      &cfg, &is),
		0);
	assert_int_equal(is.n, 1); /* apis: no endpoints configured */
	assert_int_equal(cfg->n_api_keys, 4);
	assert_true(cfg->admin_keys);
	assert_false(cfg->clients[0].admin);
	assert_true(cfg->clients[3].admin);
	assert_string_equal(cfg->api_keys[3], "adm");
	c = &cfg->clients[2];
	assert_string_equal(c->name, "alice");
	assert_string_equal(c->tail, "abcd");
	assert_false(c->enabled);
	assert_int_equal(c->rpm, -1);
	assert_false(config_client_limited(c));
	assert_int_equal(memcmp(c->slot,
				"\x1e"
				"client\x1f",
				8),
			 0);
	assert_null(strstr(c->slot, "abcd"));
	/* A date serves through that day (UTC): 2027-01-01T00:00:00Z. */
	assert_int_equal(c->expires_ms, INT64_C(1798761600000));
	assert_true(config_client_allows(c, "gpt-4o-mini"));
	assert_true(config_client_allows(c, "gpt-4o"));
	assert_true(config_client_allows(c, "o3"));
	assert_false(config_client_allows(c, "o3-mini"));
	assert_false(config_client_allows(c, "claude-3"));
	assert_true(config_client_allows(&cfg->clients[0], "claude-3"));
	config_free(cfg);
	config_issues_free(&is);

	/* An admin key may be an object too: its name is what logs show. */
	assert_int_equal(parse("{'server': {'apiKeys': ['k1'], 'adminKeys': ['adm-1234',"
			       " {'key': 'adm-secret-wxyz', 'name': 'ops'}]}, 'apis': []}",
			       &cfg, &is),
			 0);
	assert_int_equal(cfg->n_api_keys, 3);
	assert_false(cfg->clients[0].admin);
	assert_true(cfg->clients[1].admin && cfg->clients[2].admin);
	assert_null(cfg->clients[1].name);
	assert_string_equal(cfg->clients[2].name, "ops");
	assert_string_equal(cfg->clients[2].tail, "wxyz");
	config_free(cfg);
	config_issues_free(&is);

	/* Without adminKeys every client key is an admin, as before them. */
	assert_int_equal(
		parse("{'server': {'apiKeys': ['k1', {'key': 'k2'}]}, 'apis': []}", &cfg, &is), 0);
	assert_true(cfg->clients[0].admin && cfg->clients[1].admin);
	assert_true(cfg->clients[1].enabled);
	assert_null(cfg->clients[1].models);
	config_free(cfg);
	config_issues_free(&is);

	assert_int_equal(
		parse("{'server': {'apiKey': 'k1', 'apiKeys': ['k1', {'key': 'k2', 'name': 'a b',"
		      " 'models': [], 'expires': '2026-02-30', 'rpm': -2, 'colour': 1}, {'name': "
		      "'x'}],"
		      " 'adminKeys': ['k2']}, 'apis': []}",
		      &cfg, &is),
		-1);
	expect_issue(&is, true, "server.apiKeys[0]", "the same key as an entry before it");
	expect_issue(&is, true, "server.apiKeys[1].name",
		     "expected a string of 1 to 64 bytes, no spaces or control characters");
	expect_issue(&is, true, "server.apiKeys[1].models",
		     "expected a non-empty array of strings");
	expect_issue(&is, true, "server.apiKeys[1].expires",
		     "expected an ISO date (2026-12-31) or date-time (2026-12-31T18:00:00Z)");
	expect_issue(&is, true, "server.apiKeys[1].rpm", "expected an integer >= -1");
	expect_issue(&is, false, "server.apiKeys[1].colour", "unknown field, ignored");
	expect_issue(&is, true, "server.apiKeys[2].key", "expected a non-empty string");
	expect_issue(&is, true, "server.adminKeys[0]", "the same key as an entry before it");
	config_issues_free(&is);
}

static void
expiry_dates_and_times_parse(void **state)
{
	int64_t ms;

	(void)state;
	assert_int_equal(config_parse_expiry("1970-01-01T00:00:00Z", &ms), 0);
	assert_int_equal(ms, 0);
	assert_int_equal(config_parse_expiry("2026-12-07T13:45:00Z", &ms), 0);
	assert_int_equal(ms, INT64_C(1796651100000));
	assert_int_equal(config_parse_expiry("2026-12-07T15:45:00+02:00", &ms), 0);
	assert_int_equal(ms, INT64_C(1796651100000));
	assert_int_equal(config_parse_expiry("2026-12-07T13:45:00.250", &ms), 0);
	assert_int_equal(ms, INT64_C(1796651100000));
	assert_int_equal(config_parse_expiry("2024-02-29", &ms), 0);
	assert_int_equal(config_parse_expiry("2026-13-01", &ms), -1);
	assert_int_equal(config_parse_expiry("2026-12-07T24:00:00Z", &ms), -1);
	assert_int_equal(config_parse_expiry("2026-12-07Tx", &ms), -1);
	assert_int_equal(config_parse_expiry("2026-12-07T13:45:00+0200", &ms), -1);
	assert_int_equal(config_parse_expiry("tomorrow", &ms), -1);
}

static void
top_level_needs_server_and_apis(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;

	(void)state;
	assert_int_equal(parse("[1]", &cfg, &is), -1);
	assert_int_equal(is.n, 1);
	expect_issue(&is, true, "top level", "expected an object");
	config_issues_free(&is);
	assert_int_equal(parse("{}", &cfg, &is), -1);
	assert_int_equal(is.n, 2);
	expect_issue(&is, true, "server", "required");
	expect_issue(&is, true, "apis", "required");
	config_issues_free(&is);
	assert_int_equal(parse("{'server': [], 'apis': {}}", &cfg, &is), -1);
	expect_issue(&is, true, "server", "expected an object");
	expect_issue(&is, true, "apis", "expected an array");
	config_issues_free(&is);
	assert_int_equal(parse("{'server': {'apiKey': 'k'}, 'apis': [5]}", &cfg, &is), -1);
	expect_issue(&is, true, "apis[0]", "expected an object");
	config_issues_free(&is);
}

static void
empty_api_list_loads_with_a_warning(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;

	(void)state;
	assert_int_equal(parse("{'server': {'apiKey': 'k'}, 'apis': []}", &cfg, &is), 0);
	assert_int_equal(cfg->n_apis, 0);
	assert_int_equal(is.n, 1);
	expect_issue(&is, false, "apis", "no endpoints configured");
	config_free(cfg);
	config_issues_free(&is);
}

static void
endpoint_requires_id_base_url_and_models(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;

	(void)state;
	assert_int_equal(parse_api("'name': 'n'", &cfg, &is), -1);
	assert_int_equal(is.n, 3);
	expect_issue(&is, true, "apis[0].id", "required");
	expect_issue(&is, true, "apis[0].baseUrl", "required");
	expect_issue(&is, true, "apis[0].models", "required");
	config_issues_free(&is);
}

static void
duplicate_id_is_an_error(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;

	(void)state;
	assert_int_equal(parse("{'server': {'apiKey': 'k'}, 'apis': ["
			       "{'id': 'a', 'baseUrl': 'http://h', 'models': ['m']},"
			       "{'id': 'b', 'baseUrl': 'http://h', 'models': ['m']},"
			       "{'id': 'a', 'baseUrl': 'http://h', 'models': ['m']}]}",
			       &cfg, &is),
			 -1);
	assert_null(cfg);
	assert_int_equal(is.n, 1);
	expect_issue(&is, true, "apis[2].id", "duplicate id, already used by apis[0]");
	config_issues_free(&is);
}

static void
bad_ids_are_refused(void **state)
{
	(void)state;
	expect_only_error("'id': '', 'baseUrl': 'http://h', 'models': ['m']", true, "apis[0].id",
			  "expected a non-empty string");
	expect_only_error("'id': 7, 'baseUrl': 'http://h', 'models': ['m']", true, "apis[0].id",
			  "expected a non-empty string");
	expect_only_error("'id': 'a\\tb', 'baseUrl': 'http://h', 'models': ['m']", true,
			  "apis[0].id", "must not contain control characters");
	expect_only_error("'name': 5", false, "apis[0].name", "expected a string");
}

static void
base_url_is_normalised(void **state)
{
	static const struct {
		const char *in;
		const char *out;
	} cases[] = {
		{"https://api.openai.com/", "https://api.openai.com"},
		{"HTTPS://Api.Example.com/v1///", "https://Api.Example.com/v1"},
		{"Http://localhost:11434/v1", "http://localhost:11434/v1"},
		{"http://[::1]:8080/", "http://[::1]:8080"},
		{"https://openrouter.ai/api/v1", "https://openrouter.ai/api/v1"},
	};
	char buf[256];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct config_issues is = {0};
		struct config *cfg = NULL;

		fmt(buf, sizeof(buf), "'id': 'a', 'models': ['m'], 'baseUrl': '%s'", cases[i].in);
		assert_int_equal(parse_api(buf, &cfg, &is), 0);
		assert_string_equal(cfg->apis[0].base_url, cases[i].out);
		config_free(cfg);
		config_issues_free(&is);
	}
}

static void
bad_base_urls_are_refused(void **state)
{
	static const struct {
		const char *url;
		const char *message;
	} cases[] = {
		{"ftp://h", "expected an http:// or https:// URL"},
		{"api.openai.com", "expected an http:// or https:// URL"},
		{"", "expected an http:// or https:// URL"},
		{"http://", "has no host"},
		{"https:///v1", "has no host"},
		{"http://:80", "has no host"},
		{"http://[]:80", "has no host"},
		{"http://h:0", "has an invalid port"},
		{"http://h:65536", "has an invalid port"},
		{"http://h:x", "has an invalid port"},
		{"http://h:", "has an invalid port"},
		{"http://[::1]x", "has an invalid host"},
		{"http://h/v1?x=1", "must not have a query or fragment"},
		{"http://h/#top", "must not have a query or fragment"},
		{"http://h /v1", "must not contain spaces or control characters"},
		{"http://h/\\nv1", "must not contain spaces or control characters"},
		{"https://user:sk-pass@h", "must not hold credentials (use apiKey or headers)"},
	};
	char buf[256];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		fmt(buf, sizeof(buf), "'id': 'a', 'models': ['m'], 'baseUrl': '%s'", cases[i].url);
		expect_only_error(buf, true, "apis[0].baseUrl", cases[i].message);
	}
	expect_only_error("'id': 'a', 'models': ['m'], 'baseUrl': 1", true, "apis[0].baseUrl",
			  "expected a string");
}

static void
models_must_be_non_empty_strings(void **state)
{
	(void)state;
	expect_only_error("'id': 'a', 'baseUrl': 'http://h', 'models': []", true, "apis[0].models",
			  "expected a non-empty array of strings");
	expect_only_error("'id': 'a', 'baseUrl': 'http://h', 'models': 'm'", true, "apis[0].models",
			  "expected an array of strings");
	expect_only_error("'id': 'a', 'baseUrl': 'http://h', 'models': ['m', '']", true,
			  "apis[0].models[1]", "expected a non-empty string");
	expect_only_error("'id': 'a', 'baseUrl': 'http://h', 'models': ['m', 3]", true,
			  "apis[0].models[1]", "expected a non-empty string");
}

static void
mapping_values_must_be_non_empty_strings(void **state)
{
	(void)state;
	expect_only_error("'modelMapping': ['a']", false, "apis[0].modelMapping",
			  "expected an object");
	expect_only_error("'modelMapping': {'gpt-3.5': ''}", false,
			  "apis[0].modelMapping[\"gpt-3.5\"]", "expected a non-empty string");
	expect_only_error("'modelMapping': {'ok': 'm', 'x': 1}", false, "apis[0].modelMapping.x",
			  "expected a non-empty string");
}

static void
weight_must_be_positive(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;

	(void)state;
	assert_int_equal(parse_api_with("'weight': 3", &cfg, &is), 0);
	assert_true(cfg->apis[0].weight == 3.0);
	config_free(cfg);
	assert_int_equal(parse_api_with("'weight': 0.25", &cfg, &is), 0);
	assert_true(cfg->apis[0].weight == 0.25);
	config_free(cfg);
	assert_int_equal(is.n, 0);
	expect_only_error("'weight': 0", false, "apis[0].weight", "expected a number > 0");
	expect_only_error("'weight': -1.5", false, "apis[0].weight", "expected a number > 0");
	expect_only_error("'weight': '2'", false, "apis[0].weight", "expected a number > 0");
	expect_only_error("'weight': 1e12", false, "apis[0].weight",
			  "expected a number <= 1000000000");
}

static void
headers_are_checked(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;

	(void)state;
	assert_int_equal(parse_api_with("'headers': {'x-ok': 'v\\tw', 'bad name': 'v',"
					" 'authorization': 'Bearer x', 'HOST': 'h',"
					" 'Content-Length': '1', 'transfer-encoding': 'chunked',"
					" 'Connection': 'close', 'x-crlf': 'a\\r\\nb',"
					" 'x-num': 5, 'x-empty': ''}",
					&cfg, &is),
			 -1);
	assert_int_equal(is.n, 8);
	expect_issue(&is, true, "apis[0].headers[\"bad name\"]", "not a valid header name");
	expect_issue(&is, true, "apis[0].headers.authorization",
		     "set by the gateway, cannot be configured");
	expect_issue(&is, true, "apis[0].headers.HOST", "set by the gateway, cannot be configured");
	expect_issue(&is, true, "apis[0].headers[\"Content-Length\"]",
		     "set by the gateway, cannot be configured");
	expect_issue(&is, true, "apis[0].headers[\"transfer-encoding\"]",
		     "set by the gateway, cannot be configured");
	expect_issue(&is, true, "apis[0].headers.Connection",
		     "set by the gateway, cannot be configured");
	expect_issue(&is, true, "apis[0].headers[\"x-crlf\"]",
		     "must not contain control characters");
	expect_issue(&is, true, "apis[0].headers[\"x-num\"]", "expected a string");
	config_issues_free(&is);
	expect_only_error("'headers': []", false, "apis[0].headers", "expected an object");
}

static void
upstream_key_must_be_one_header_line(void **state)
{
	(void)state;
	expect_only_error("'apiKey': 'sk-a\\r\\nX-Evil: 1'", false, "apis[0].apiKey",
			  "must not contain control characters");
	/* Since key pools an array is one too (the message was "expected a
	 * string"). */
	expect_only_error("'apiKey': 5", false, "apis[0].apiKey",
			  "expected a string or an array of strings");
	expect_only_error("'apiKey': ['sk-a', 'sk-b\\n']", false, "apis[0].apiKey[1]",
			  "must not contain control characters");
}

/* doc/behaviour.md, Key pools: apiKey as an array; each key its own slot,
 * named by a digest, never by the key. */
static void
key_pools_are_read_and_checked(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;

	(void)state;
	assert_int_equal(parse_api_with("'apiKey': ['sk-one-aaaa', 'sk-two-bbbb', 'x']", &cfg, &is),
			 0);
	const struct config_api *a = &cfg->apis[0];
	assert_int_equal(a->n_keys, 3);
	assert_string_equal(a->api_key, "sk-one-aaaa");
	assert_string_equal(a->keys[1].key, "sk-two-bbbb");
	assert_string_equal(a->keys[1].tail, "bbbb");
	assert_string_equal(a->keys[2].tail, ""); /* too short to show any of it */
	for (size_t k = 0; k < 3; k++) {
		assert_null(strstr(a->keys[k].slot, a->keys[k].key));
		assert_int_equal(strncmp(a->keys[k].slot, "a\x1f", 2), 0);
		for (size_t j = 0; j < k; j++)
			assert_string_not_equal(a->keys[j].slot, a->keys[k].slot);
	}
	assert_int_equal(cfg->rate_limit_cooldown_s, 60);
	assert_int_equal(cfg->recheck_minutes, 30);
	config_free(cfg);
	config_issues_free(&is);
	/* One key: the endpoint's own state, as before pools. */
	assert_int_equal(parse_api_with("'apiKey': ['sk-one-aaaa']", &cfg, &is), 0);
	assert_string_equal(cfg->apis[0].keys[0].slot, "a");
	config_free(cfg);
	config_issues_free(&is);
	assert_int_equal(parse_api_with("", &cfg, &is), 0);
	assert_int_equal(cfg->apis[0].n_keys, 1);
	assert_string_equal(cfg->apis[0].api_key, "");
	config_free(cfg);
	config_issues_free(&is);
	expect_only_error("'apiKey': ['sk-a', 'sk-b', 'sk-a']", false, "apis[0].apiKey[2]",
			  "the same key as apiKey[0]");
	expect_only_error("'apiKey': []", false, "apis[0].apiKey", "expected at least one key");
	expect_only_error("'apiKey': ['sk-a', '']", false, "apis[0].apiKey[1]",
			  "expected a non-empty string");
	expect_only_error("'apiKey': ['sk-a', 5]", false, "apis[0].apiKey[1]",
			  "expected a non-empty string");
}

/* apis[].priority: an integer, 0 when not set (doc/behaviour.md,
 * Configuration: fields). */
static void
priority_is_an_integer_default_0(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;

	(void)state;
	assert_int_equal(parse_api_with("", &cfg, &is), 0);
	assert_int_equal(cfg->apis[0].priority, 0);
	config_free(cfg);
	config_issues_free(&is);
	assert_int_equal(parse_api_with("'priority': -3", &cfg, &is), 0);
	assert_int_equal(cfg->apis[0].priority, -3);
	config_free(cfg);
	config_issues_free(&is);
	assert_int_equal(parse_api_with("'priority': 2147483647", &cfg, &is), 0);
	assert_int_equal(cfg->apis[0].priority, 2147483647);
	config_free(cfg);
	config_issues_free(&is);
	expect_only_error("'priority': 1.5", false, "apis[0].priority",
			  "expected an integer >= -2147483647");
	expect_only_error("'priority': '1'", false, "apis[0].priority",
			  "expected an integer >= -2147483647");
	expect_only_error("'priority': 2147483648", false, "apis[0].priority",
			  "expected an integer <= 2147483647");
}

/* A config of endpoints a (serving m and n) and b (serving o, and p by
 * mapping) with server.fallbacks set to fallbacks. */
static int
parse_fallbacks(const char *fallbacks, struct config **cfg, struct config_issues *is)
{
	char buf[4096];
	fmt(buf, sizeof(buf),
	    "{'server': {'apiKey': 'k', 'fallbacks': %s}, 'apis': ["
	    "{'id': 'a', 'baseUrl': 'http://h', 'models': ['m', 'n']},"
	    "{'id': 'b', 'baseUrl': 'http://h', 'models': ['o'], 'modelMapping': {'p': 'o'},"
	    " 'enabled': false}]}",
	    fallbacks);
	return parse(buf, cfg, is);
}

static void
expect_fallback_error(const char *fallbacks, const char *path, const char *message)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;

	assert_int_equal(parse_fallbacks(fallbacks, &cfg, &is), -1);
	assert_null(cfg);
	if (is.n != 1) {
		for (size_t k = 0; k < is.n; k++)
			print_error("  have %s: %s\n", is.v[k].path, is.v[k].message);
		fail_msg("%zu issues for %s, expected 1", is.n, fallbacks);
	}
	expect_issue(&is, true, path, message);
	config_issues_free(&is);
}

/* server.fallbacks: a model to an ordered list of models; config_fallback
 * finds a model's (doc/behaviour.md, Configuration: fields). */
static void
fallbacks_are_read_and_checked(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;

	(void)state;
	assert_int_equal(parse_fallbacks("{'m': ['n', 'p'], 'gone': ['m']}", &cfg, &is), 0);
	assert_int_equal(is.n, 0);
	const struct config_fallback *fb = config_fallback(cfg, "m");
	assert_non_null(fb);
	assert_string_equal(fb->model, "m");
	assert_int_equal(fb->n_to, 2);
	assert_string_equal(fb->to[0], "n");
	assert_string_equal(fb->to[1], "p");
	fb = config_fallback(cfg, "gone");
	assert_non_null(fb);
	assert_int_equal(fb->n_to, 1);
	assert_string_equal(fb->to[0], "m");
	assert_null(config_fallback(cfg, "n"));
	assert_null(config_fallback(cfg, NULL));
	config_free(cfg);
	config_issues_free(&is);
	/* Not set, or empty: none. */
	assert_int_equal(parse_fallbacks("{}", &cfg, &is), 0);
	assert_int_equal(cfg->n_fallbacks, 0);
	config_free(cfg);
	config_issues_free(&is);
	assert_int_equal(parse_fallbacks("null", &cfg, &is), 0);
	assert_null(config_fallback(cfg, "m"));
	config_free(cfg);
	config_issues_free(&is);
	/* A model no endpoint serves may be staged: a warning. */
	assert_int_equal(parse_fallbacks("{'m': ['x', 'n']}", &cfg, &is), 0);
	assert_int_equal(is.n, 1);
	expect_issue(&is, false, "server.fallbacks.m[0]", "no endpoint serves this model");
	config_free(cfg);
	config_issues_free(&is);
	expect_fallback_error("['m']", "server.fallbacks",
			      "expected an object: a model to an array of models");
	expect_fallback_error("{'m': 'n'}", "server.fallbacks.m",
			      "expected a non-empty array of strings");
	expect_fallback_error("{'m': []}", "server.fallbacks.m",
			      "expected a non-empty array of strings");
	expect_fallback_error("{'': ['n']}", "server.fallbacks[\"\"]",
			      "expected a model name: non-empty, no control characters");
	expect_fallback_error("{'m': ['n', 5]}", "server.fallbacks.m[1]",
			      "expected a non-empty string");
	expect_fallback_error("{'m': ['']}", "server.fallbacks.m[0]",
			      "expected a non-empty string");
	expect_fallback_error("{'m': ['n\\r\\nX-Evil: 1']}", "server.fallbacks.m[0]",
			      "must not contain control characters");
	expect_fallback_error("{'m': ['m']}", "server.fallbacks.m[0]",
			      "the requested model itself");
	expect_fallback_error("{'gpt-4o': ['n', 'o', 'n']}", "server.fallbacks[\"gpt-4o\"][2]",
			      "listed twice");
}

static void
syntax_error_gives_line_and_column(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;

	(void)state;
	assert_int_equal(parse("{\n  'server': {\n    'port': 3001,\n  }\n}\n", &cfg, &is), -1);
	assert_null(cfg);
	assert_int_equal(is.n, 1);
	expect_issue(&is, true, "line 4, column 3", "string or '}' expected");
	config_issues_free(&is);
	assert_int_equal(config_parse("", 0, &cfg, &is), -1);
	assert_int_equal(is.n, 1);
	assert_true(is.v[0].error);
	assert_non_null(strstr(is.v[0].path, "line 1"));
	config_issues_free(&is);
}

static void
duplicate_key_is_a_warning_and_the_last_wins(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;

	(void)state;
	assert_int_equal(
		parse("{'server': {'apiKey': 'k1', 'apiKey': 'k2'}, 'apis': []}", &cfg, &is), 0);
	assert_string_equal(cfg->api_keys[0], "k2");
	expect_issue(&is, false, "line 1, column 36",
		     "duplicate object key, the last value is used");
	config_free(cfg);
	config_issues_free(&is);
}

static void
byte_order_mark_is_skipped(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;
	char *text = dq("\xEF\xBB\xBF{'server': {'apiKey': 'k'}, 'apis': []}");

	(void)state;
	assert_int_equal(config_parse(text, strlen(text), &cfg, &is), 0);
	config_free(cfg);
	config_issues_free(&is);
	free(text);
}

static void
unknown_field_is_a_warning_only(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;

	(void)state;
	assert_int_equal(parse("{'server': {'apiKey': 'k', 'apikey': 'x', 'host': 'h',"
			       " 'cooldown': {'minutes': 1}}, 'apis': [{'id': 'a',"
			       " 'baseUrl': 'http://h', 'models': ['m'], 'order': 1}],"
			       " 'logging': true}",
			       &cfg, &is),
			 0);
	assert_non_null(cfg);
	assert_int_equal(is.n, 5);
	assert_int_equal(count_errors(&is), 0);
	expect_issue(&is, false, "server.apikey",
		     "unknown field, ignored (did you mean \"apiKey\"?)");
	expect_issue(&is, false, "server.host", "unknown field, ignored");
	expect_issue(&is, false, "server.cooldown.minutes", "unknown field, ignored");
	expect_issue(&is, false, "apis[0].order", "unknown field, ignored");
	expect_issue(&is, false, "logging", "unknown field, ignored");
	assert_int_equal(cfg->n_api_keys, 1);
	config_free(cfg);
	config_issues_free(&is);
}

static void
odd_keys_are_quoted_in_paths(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;
	char long_key[200], buf[512];

	(void)state;
	memset(long_key, 'k', 150);
	long_key[150] = '\0';
	fmt(buf, sizeof(buf),
	    "{'server': {'apiKey': 'k', 'a\\'b\\\\c\\n': 1, '%s': 1}, 'apis': []}", long_key);
	/* dq turns the escaped \' into \", a quote inside the key. */
	assert_int_equal(parse(buf, &cfg, &is), 0);
	expect_issue(&is, false, "server[\"a\\\"b\\\\c\\u000a\"]", "unknown field, ignored");
	for (size_t i = 0; i < is.n; i++) {
		assert_true(strlen(is.v[i].path) < 100);
		assert_null(strchr(is.v[i].path, '\n'));
	}
	config_free(cfg);
	config_issues_free(&is);
}

static void
all_problems_are_reported_in_one_pass(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;

	(void)state;
	assert_int_equal(parse("{'server': {'port': 0, 'cors': 'yes', 'extra': 1}, 'apis': ["
			       "{'id': 'a', 'baseUrl': 'ftp://h', 'models': []},"
			       "{'id': 'a', 'baseUrl': 'http://h', 'models': ['m'], 'rpm': -5,"
			       " 'weight': 0}]}",
			       &cfg, &is),
			 -1);
	assert_null(cfg);
	expect_issue(&is, true, "server.apiKey", "required (or a non-empty server.apiKeys)");
	expect_issue(&is, true, "server.port", "expected an integer from 1 to 65535");
	expect_issue(&is, true, "server.cors", "expected a boolean");
	expect_issue(&is, false, "server.extra", "unknown field, ignored");
	expect_issue(&is, true, "apis[0].baseUrl", "expected an http:// or https:// URL");
	expect_issue(&is, true, "apis[0].models", "expected a non-empty array of strings");
	expect_issue(&is, true, "apis[1].id", "duplicate id, already used by apis[0]");
	expect_issue(&is, true, "apis[1].rpm", "expected an integer >= -1");
	expect_issue(&is, true, "apis[1].weight", "expected a number > 0");
	assert_int_equal(is.n, 9);
	config_issues_free(&is);
}

static void
issues_are_appended_to_the_list_given(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;

	(void)state;
	for (int i = 0; i < 3; i++)
		assert_int_equal(parse_api_with("'rpm': -9, 'rpd': -9, 'x': 1", &cfg, &is), -1);
	assert_int_equal(is.n, 9);
	assert_string_equal(is.v[8].path, "apis[0].x");
	config_issues_free(&is);
	assert_int_equal(is.n, 0);
	assert_null(is.v);
	/* Without a list the verdict is the same. */
	assert_int_equal(parse_api_with("'rpm': -9", &cfg, NULL), -1);
	assert_null(cfg);
	assert_int_equal(parse_api_with("'x': 1", &cfg, NULL), 0);
	config_free(cfg);
	config_free(NULL);
	config_issues_free(NULL);
}

static void
messages_never_contain_keys(void **state)
{
	static const char *const bad[] = {
		"{'server': {'apiKey': 'sk-SECRET1",
		"{'server': {'apiKey': sk-SECRET2}}",
		"{'server': {'apiKey': 'sk-SECRET3' 'apis': []}",
		"{'server': {'apiKey': 'sk-SECRET4', 'apiKey': 'sk-SECRET5'}, 'apis': [1]}",
		"{'server': {'apiKey': 'sk-SECRET6', 'apiKeys': ['sk-SECRET7', 3, '']},"
		" 'apis': [{'id': 'a', 'apiKey': 'sk-SECRET8\\n', 'models': [],"
		" 'baseUrl': 'https://u:sk-SECRET9@h',"
		" 'headers': {'api-key': 'sk-SECRETA\\r\\n', 'Authorization': 'Bearer sk-SECRETB',"
		" 'x-key': ['sk-SECRETC']}}]}",
		"{'server': {'apiKey': ['sk-SECRETD']}, 'apis': [{'apiKey': 'sk-SECRETE', 'rpm': "
		"'x'}]}",
		"{'server': {'apiKey': 'sk-SECRETF\\u0000'}, 'apis': []}",
		"{'server': {'apiKey': 'sk-SECRETG\\x'}, 'apis': []}",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct config_issues is = {0};
		struct config *cfg = NULL;

		assert_int_equal(parse(bad[i], &cfg, &is), -1);
		assert_true(is.n > 0);
		for (size_t k = 0; k < is.n; k++) {
			if (strstr(is.v[k].message, "SECRET") != NULL ||
			    strstr(is.v[k].path, "SECRET") != NULL)
				fail_msg("case %zu leaks: %s: %s", i, is.v[k].path,
					 is.v[k].message);
		}
		config_issues_free(&is);
	}
}

/* ---- lookups ---- */

static void
mapping_lookup_prefers_the_mapping_then_models(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;
	const struct config_api *a;
	const char *gpt4 = "gpt-4";

	(void)state;
	assert_int_equal(config_parse(seed_json, strlen(seed_json), &cfg, &is), 0);
	a = &cfg->apis[0];
	assert_string_equal(config_api_model(a, "gpt-3.5"), "gpt-3.5-turbo");
	assert_ptr_equal(config_api_model(a, gpt4), gpt4);
	assert_null(config_api_model(a, "claude-2"));
	assert_null(config_api_model(a, "gpt-3.5-turbo-x"));
	assert_null(config_api_model(a, NULL));
	assert_null(config_api_model(&cfg->apis[1], "gpt-3.5"));
	config_free(cfg);
	/* A mapped name that is also listed goes to its target. */
	assert_int_equal(
		parse_api_with("'models': ['m', 'n'], 'modelMapping': {'m': 'n'}", &cfg, &is), 0);
	assert_string_equal(config_api_model(&cfg->apis[0], "m"), "n");
	config_free(cfg);
	config_issues_free(&is);
}

static void
find_api_by_id(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;

	(void)state;
	assert_int_equal(config_parse(seed_json, strlen(seed_json), &cfg, &is), 0);
	assert_int_equal(config_find_api(cfg, "api1"), 0);
	assert_int_equal(config_find_api(cfg, "api2"), 1);
	assert_int_equal(config_find_api(cfg, "api3"), -1);
	assert_int_equal(config_find_api(cfg, "API1"), -1);
	assert_int_equal(config_find_api(cfg, NULL), -1);
	assert_int_equal(config_find_api(NULL, "api1"), -1);
	config_free(cfg);
}

/* ---- files ---- */

static void
load_file_reads_a_file(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;
	char path[128];

	(void)state;
	tmp_path(path, sizeof(path), "load.json");
	write_file(path, two_apis);
	assert_int_equal(config_load_file(path, &cfg, &is), 0);
	assert_int_equal(cfg->n_apis, 2);
	config_free(cfg);
	write_file(path, "{'server': {'apiKey': 'k'}, 'apis': [{'id': 'a'}]}");
	assert_int_equal(config_load_file(path, &cfg, &is), -1);
	assert_null(cfg);
	expect_issue(&is, true, "apis[0].models", "required");
	config_issues_free(&is);
}

static void
unreadable_file_is_one_error_naming_it(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;
	char path[128];

	(void)state;
	tmp_path(path, sizeof(path), "missing.json");
	assert_int_equal(config_load_file(path, &cfg, &is), -1);
	assert_null(cfg);
	assert_int_equal(is.n, 1);
	expect_issue(&is, true, path, strerror(ENOENT));
	config_issues_free(&is);
	assert_int_equal(config_load_file(tmpdir, &cfg, &is), -1);
	expect_issue(&is, true, tmpdir, strerror(EISDIR));
	config_issues_free(&is);
}

static void
oversized_file_is_refused(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;
	char path[128];
	int fd;

	(void)state;
	tmp_path(path, sizeof(path), "big.json");
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	/* A hole reads as zeros: 16 MiB + 1 without writing them. */
	assert_int_equal(ftruncate(fd, 16L * 1024 * 1024 + 1), 0);
	assert_int_equal(close(fd), 0);
	assert_int_equal(config_load_file(path, &cfg, &is), -1);
	assert_int_equal(is.n, 1);
	expect_issue(&is, true, path, "larger than the 16 MiB limit");
	config_issues_free(&is);
	assert_int_equal(unlink(path), 0);
}

/* The limit itself is allowed: the text is read and parsed (zeros are no
 * JSON), not refused for its size. */
static void
file_of_exactly_the_limit_is_read(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;
	char path[128];
	int fd;

	(void)state;
	tmp_path(path, sizeof(path), "limit.json");
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 16L * 1024 * 1024), 0);
	assert_int_equal(close(fd), 0);
	assert_int_equal(config_load_file(path, &cfg, &is), -1);
	assert_int_equal(is.n, 1);
	assert_string_equal(is.v[0].path, "line 1, column 1");
	config_issues_free(&is);
	assert_int_equal(unlink(path), 0);
}

/* A file with no size to go by (a device, a pipe) is read as it comes, and
 * refused once it passes the limit. */
static void
endless_file_stops_at_the_limit(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;

	(void)state;
	assert_int_equal(config_load_file("/dev/zero", &cfg, &is), -1);
	assert_null(cfg);
	assert_int_equal(is.n, 1);
	expect_issue(&is, true, "/dev/zero", "larger than the 16 MiB limit");
	config_issues_free(&is);
}

/* ---- snapshot and reload ---- */

static void
nothing_loaded_gives_null_and_a_reason(void **state)
{
	const char *why = NULL;
	char path[128];

	(void)state;
	config_set_path(NULL);
	assert_null(config_acquire(&why));
	assert_non_null(why);
	tmp_path(path, sizeof(path), "never.json");
	config_set_path(path);
	why = NULL;
	assert_null(config_acquire(&why));
	assert_string_equal(why, "configuration cannot be loaded");
	assert_null(config_acquire(NULL));
	write_file(path, "{'server': {}}");
	why = NULL;
	assert_null(config_acquire(&why));
	assert_string_equal(why, "configuration cannot be loaded");
	config_release(NULL);
	config_set_path(NULL);
}

static void
acquire_returns_the_same_snapshot_until_the_file_changes(void **state)
{
	struct config *a, *b;
	char path[128];

	(void)state;
	tmp_path(path, sizeof(path), "same.json");
	write_file(path, two_apis);
	config_set_path(path);
	a = config_acquire(NULL);
	assert_non_null(a);
	assert_int_equal(a->n_apis, 2);
	b = config_acquire(NULL);
	assert_ptr_equal(a, b);
	config_release(a);
	config_release(b);
	config_set_path(NULL);
}

static void
reload_picks_up_a_changed_file(void **state)
{
	struct config *a, *b, *c;
	char path[128];

	(void)state;
	tmp_path(path, sizeof(path), "reload.json");
	write_file(path, one_api_rpm1);
	config_set_path(path);
	a = config_acquire(NULL);
	assert_non_null(a);
	assert_int_equal(a->apis[0].rpm, 1);
	/* Same size, same inode, likely the same clock tick: only the text differs. */
	write_file(path, one_api_rpm2);
	b = config_acquire(NULL);
	assert_non_null(b);
	assert_int_equal(b->apis[0].rpm, 2);
	/* A snapshot taken before the reload stays valid until released. */
	assert_int_equal(a->apis[0].rpm, 1);
	assert_string_equal(a->apis[0].id, "a");
	config_release(a);
	replace_file(path, two_apis);
	c = config_acquire(NULL);
	assert_non_null(c);
	assert_int_equal(c->n_apis, 2);
	config_release(b);
	config_release(c);
	config_set_path(NULL);
}

static void
broken_reload_keeps_last_good(void **state)
{
	struct config *a, *b, *c;
	const char *why = NULL;
	char path[128];

	(void)state;
	tmp_path(path, sizeof(path), "broken.json");
	write_file(path, one_api_rpm1);
	config_set_path(path);
	a = config_acquire(NULL);
	assert_non_null(a);
	replace_file(path, "{'server': {'apiKey': 'k'}, 'apis': [{'id': 'a', 'rpm': -7}]}");
	b = config_acquire(&why);
	assert_ptr_equal(a, b);
	assert_int_equal(b->apis[0].rpm, 1);
	config_release(b);
	replace_file(path, "{ not json");
	b = config_acquire(NULL);
	assert_ptr_equal(a, b);
	config_release(b);
	replace_file(path, one_api_rpm2);
	c = config_acquire(NULL);
	assert_non_null(c);
	assert_ptr_not_equal(a, c);
	assert_int_equal(c->apis[0].rpm, 2);
	config_release(a);
	config_release(c);
	config_set_path(NULL);
}

static void
deleted_file_keeps_last_good(void **state)
{
	struct config *a, *b;
	char path[128];

	(void)state;
	tmp_path(path, sizeof(path), "deleted.json");
	write_file(path, one_api_rpm1);
	config_set_path(path);
	a = config_acquire(NULL);
	assert_non_null(a);
	assert_int_equal(unlink(path), 0);
	b = config_acquire(NULL);
	assert_ptr_equal(a, b);
	config_release(b);
	write_file(path, one_api_rpm2);
	b = config_acquire(NULL);
	assert_int_equal(b->apis[0].rpm, 2);
	config_release(a);
	config_release(b);
	config_set_path(NULL);
}

/* Sets path's modification time to t seconds since the epoch. */
static void
set_mtime(const char *path, time_t t)
{
	struct timespec ts[2] = {{.tv_sec = t}, {.tv_sec = t}};

	assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static void
acquire_and_release(void)
{
	struct config *cfg = config_acquire(NULL);

	assert_non_null(cfg);
	config_release(cfg);
}

/* doc/behaviour.md, Configuration: Reload: what /v1/status tells of the
 * file in force and of a rejected one. */
static void
info_tells_the_file_in_force_and_why_the_one_on_disk_is_not(void **state)
{
	struct config_info ci;
	struct config *cfg;
	char path[128];
	int64_t loaded;

	(void)state;
	config_set_path(NULL);
	config_info(&ci);
	assert_string_equal(ci.path, "");
	assert_int_equal(ci.loaded_ms, 0);
	assert_false(ci.rejected);
	tmp_path(path, sizeof(path), "info.json");
	write_file(path, one_api_rpm1);
	config_set_path(path);
	config_info(&ci);
	assert_string_equal(ci.path, path);
	assert_int_equal(ci.loaded_ms, 0);
	acquire_and_release();
	config_info(&ci);
	assert_true(ci.loaded_ms > 0);
	assert_false(ci.rejected);
	loaded = ci.loaded_ms;

	/* An edit with two errors: the first one's place and message, how
	 * many, and since when the file on disk says so (its mtime). */
	replace_file(path, "{'server': {'apiKey': 'k'}, 'apis': [{'id': 'a', 'baseUrl': "
			   "'http://h', 'models': ['m'], 'rpm': -7, 'rpd': -9}]}");
	set_mtime(path, 1700000000);
	cfg = config_acquire(NULL);
	assert_int_equal(cfg->apis[0].rpm, 1);
	config_release(cfg);
	config_info(&ci);
	assert_true(ci.rejected);
	assert_string_equal(ci.rejected_at, "apis[0].rpm");
	assert_string_equal(ci.rejected_message, "expected an integer >= -1");
	assert_int_equal(ci.rejected_errors, 2);
	assert_int_equal(ci.rejected_since_ms, 1700000000000LL);
	assert_int_equal(ci.loaded_ms, loaded);

	/* A syntax error: its line and column. */
	replace_file(path, "{\n  'server': ,\n}");
	set_mtime(path, 1700000060);
	acquire_and_release();
	config_info(&ci);
	assert_true(ci.rejected);
	assert_string_equal(ci.rejected_at, "line 2, column 13");
	assert_int_equal(ci.rejected_errors, 1);
	assert_int_equal(ci.rejected_since_ms, 1700000060000LL);

	/* Gone: the file itself is the place. */
	assert_int_equal(unlink(path), 0);
	acquire_and_release();
	config_info(&ci);
	assert_true(ci.rejected);
	assert_string_equal(ci.rejected_at, "");
	assert_string_equal(ci.rejected_message, strerror(ENOENT));
	assert_int_equal(ci.rejected_errors, 1);
	assert_true(ci.rejected_since_ms > 0);
	assert_int_equal(ci.loaded_ms, loaded);

	/* A good file again: no rejection, and a new load. */
	write_file(path, one_api_rpm2);
	cfg = config_acquire(NULL);
	assert_int_equal(cfg->apis[0].rpm, 2);
	config_release(cfg);
	config_info(&ci);
	assert_false(ci.rejected);
	assert_true(ci.loaded_ms >= loaded);
	config_set_path(NULL);
	config_info(&ci);
	assert_string_equal(ci.path, "");
	assert_false(ci.rejected);
}

/* Counts the lines containing needle that fn(arg) writes on stderr. */
static int
count_log_lines(void (*fn)(const char *), const char *arg, const char *needle)
{
	char logpath[128], line[4096];
	int saved, fd, n = 0;
	FILE *f;

	tmp_path(logpath, sizeof(logpath), "stderr.log");
	fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	saved = dup(STDERR_FILENO);
	assert_true(saved >= 0);
	assert_true(dup2(fd, STDERR_FILENO) >= 0);
	fn(arg);
	assert_true(dup2(saved, STDERR_FILENO) >= 0);
	assert_int_equal(close(saved), 0);
	assert_int_equal(close(fd), 0);
	f = fopen(logpath, "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f) != NULL)
		n += strstr(line, needle) != NULL;
	assert_int_equal(fclose(f), 0);
	return n;
}

static void
acquire_five_times(const char *path)
{
	config_set_path(path);
	for (int i = 0; i < 5; i++) {
		struct config *cfg = config_acquire(NULL);

		assert_null(cfg);
	}
}

static void
broken_file_is_reported_once(void **state)
{
	char path[128];

	(void)state;
	tmp_path(path, sizeof(path), "once.json");
	write_file(path, "{'server': {'apiKey': 'sk-SECRET'}, 'apis': [{'rpm': -9}]}");
	assert_int_equal(count_log_lines(acquire_five_times, path, "not loaded"), 1);
	config_set_path(NULL);
	write_file(path, "{'server': {'apiKey': 'sk-SECRET'}, 'apis': [{'rpm': -9}]}");
	assert_int_equal(count_log_lines(acquire_five_times, path, "SECRET"), 0);
	config_set_path(NULL);
	tmp_path(path, sizeof(path), "absent.json");
	assert_int_equal(count_log_lines(acquire_five_times, path, "absent.json"), 1);
	config_set_path(NULL);
}

static void
load_with_warnings_logs_them(const char *path)
{
	struct config *cfg;

	config_set_path(path);
	cfg = config_acquire(NULL);
	assert_non_null(cfg);
	config_release(cfg);
}

static void
warnings_are_logged_when_a_config_loads(void **state)
{
	char path[128];

	(void)state;
	tmp_path(path, sizeof(path), "warn.json");
	write_file(path, "{'server': {'apiKey': 'k', 'porrt': 1}, 'apis': []}");
	assert_int_equal(count_log_lines(load_with_warnings_logs_them, path, "server.porrt"), 1);
	config_set_path(NULL);
}

struct reader_arg {
	int rounds;
	int failures;
};

static void *
reader(void *p)
{
	struct reader_arg *arg = p;

	for (int i = 0; i < arg->rounds; i++) {
		struct config *cfg = config_acquire(NULL);

		if (cfg == NULL || (cfg->n_apis != 1 && cfg->n_apis != 2) ||
		    strcmp(cfg->apis[0].id, "a") != 0)
			arg->failures++;
		config_release(cfg);
	}
	return NULL;
}

static void
concurrent_acquire_and_reload_are_safe(void **state)
{
	struct reader_arg args[4];
	pthread_t th[4];
	char path[128];

	(void)state;
	tmp_path(path, sizeof(path), "threads.json");
	write_file(path, one_api_rpm1);
	config_set_path(path);
	for (int i = 0; i < 4; i++) {
		args[i].rounds = 300;
		args[i].failures = 0;
		assert_int_equal(pthread_create(&th[i], NULL, reader, &args[i]), 0);
	}
	for (int i = 0; i < 30; i++)
		replace_file(path, i % 2 == 0 ? two_apis : one_api_rpm2);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_int_equal(args[i].failures, 0);
	}
	config_set_path(NULL);
}

/* apis[].dayResetTimezone: loaded at load (doc/behaviour.md, Limits and
 * state, rule 26); an unknown or empty zone is an error naming its path. */
static void
day_reset_timezone_is_loaded_or_refused(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;

	(void)state;
	/* The message names the file looked for. */
	assert_int_equal(setenv("TZDIR", "/usr/share/zoneinfo", 1), 0);
	assert_int_equal(parse("{'server': {'apiKey': 'k'}, 'apis': [{'id': 'a',"
			       " 'baseUrl': 'http://h', 'models': ['m'],"
			       " 'dayResetTimezone': 'America/Los_Angeles'},"
			       " {'id': 'b', 'baseUrl': 'http://h', 'models': ['m']}]}",
			       &cfg, &is),
			 0);
	assert_string_equal(cfg->apis[0].day_zone_name, "America/Los_Angeles");
	assert_non_null(cfg->apis[0].day_zone);
	assert_null(cfg->apis[1].day_zone);
	config_free(cfg);
	expect_only_error("'dayResetTimezone': 'Mars/Olympus'", false, "apis[0].dayResetTimezone",
			  "unknown time zone \"Mars/Olympus\" (no zone file "
			  "/usr/share/zoneinfo/Mars/Olympus)");
	expect_only_error("'dayResetTimezone': ''", false, "apis[0].dayResetTimezone",
			  "expected an IANA time zone name");
	expect_only_error("'dayResetTimezone': 8", false, "apis[0].dayResetTimezone",
			  "expected an IANA time zone name");
}

/* apis[].modelLimits (doc/behaviour.md, Limits and state, rule 27): each
 * model's limits (-1 unless given) and its state's name on each key. */
static void
model_limits_are_read_per_key(void **state)
{
	struct config_issues is = {0};
	struct config *cfg = NULL;

	(void)state;
	assert_int_equal(
		parse("{'server': {'apiKey': 'k'}, 'apis': [{'id': 'a',"
		      " 'baseUrl': 'http://h', 'models': ['m', 'n'], 'apiKey': ['k1', 'k2'],"
		      " 'modelLimits': {'m': {'rpm': 1, 'tpd': 500}}},"
		      " {'id': 'b', 'baseUrl': 'http://h', 'models': ['m'],"
		      " 'modelLimits': {'m': {}}}]}",
		      &cfg, &is),
		0);
	const struct config_api *a = &cfg->apis[0];
	assert_int_equal(a->n_model_limits, 1);
	const struct config_model_limit *ml = config_model_limit(a, "m");
	assert_non_null(ml);
	assert_null(config_model_limit(a, "n"));
	assert_true(ml->rpm == 1 && ml->rpd == -1 && ml->tpm == -1 && ml->tpd == 500);
	for (size_t k = 0; k < 2; k++) {
		char want[128];
		fmt(want, sizeof(want), "%s\x1fm", a->keys[k].slot);
		assert_string_equal(ml->slots[k], want);
	}
	ml = config_model_limit(&cfg->apis[1], "m");
	assert_non_null(ml);
	assert_string_equal(ml->slots[0], "b\x1fm");
	assert_true(ml->rpm == -1 && ml->tpd == -1);
	config_free(cfg);
	expect_only_error("'modelLimits': []", false, "apis[0].modelLimits",
			  "expected an object of model names to limits");
	expect_only_error("'modelLimits': {'m': 1}", false, "apis[0].modelLimits.m",
			  "expected an object");
	expect_only_error("'modelLimits': {'m': {'rpm': -2}}", false, "apis[0].modelLimits.m.rpm",
			  "expected an integer >= -1");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(seed_config_loads_unchanged),
		cmocka_unit_test(example_config_file_loads_without_problems),
		cmocka_unit_test(every_default_applies),
		cmocka_unit_test(day_reset_timezone_is_loaded_or_refused),
		cmocka_unit_test(model_limits_are_read_per_key),
		cmocka_unit_test(every_field_is_read),
		cmocka_unit_test(client_keys_are_read_and_checked),
		cmocka_unit_test(expiry_dates_and_times_parse),
		cmocka_unit_test(null_fields_take_their_default),
		cmocka_unit_test(integral_reals_count_as_integers),
		cmocka_unit_test(rpm_below_minus_one_is_named_by_path),
		cmocka_unit_test(many_problems_are_all_kept_in_order),
		cmocka_unit_test(integer_fields_are_range_checked),
		cmocka_unit_test(store_fields_are_checked),
		cmocka_unit_test(forward_paths_are_checked),
		cmocka_unit_test(forward_paths_match_exactly_or_up_to_the_star),
		cmocka_unit_test(a_client_key_is_required),
		cmocka_unit_test(top_level_needs_server_and_apis),
		cmocka_unit_test(empty_api_list_loads_with_a_warning),
		cmocka_unit_test(endpoint_requires_id_base_url_and_models),
		cmocka_unit_test(duplicate_id_is_an_error),
		cmocka_unit_test(bad_ids_are_refused),
		cmocka_unit_test(base_url_is_normalised),
		cmocka_unit_test(bad_base_urls_are_refused),
		cmocka_unit_test(models_must_be_non_empty_strings),
		cmocka_unit_test(mapping_values_must_be_non_empty_strings),
		cmocka_unit_test(weight_must_be_positive),
		cmocka_unit_test(headers_are_checked),
		cmocka_unit_test(upstream_key_must_be_one_header_line),
		cmocka_unit_test(key_pools_are_read_and_checked),
		cmocka_unit_test(priority_is_an_integer_default_0),
		cmocka_unit_test(fallbacks_are_read_and_checked),
		cmocka_unit_test(syntax_error_gives_line_and_column),
		cmocka_unit_test(duplicate_key_is_a_warning_and_the_last_wins),
		cmocka_unit_test(byte_order_mark_is_skipped),
		cmocka_unit_test(unknown_field_is_a_warning_only),
		cmocka_unit_test(odd_keys_are_quoted_in_paths),
		cmocka_unit_test(all_problems_are_reported_in_one_pass),
		cmocka_unit_test(issues_are_appended_to_the_list_given),
		cmocka_unit_test(messages_never_contain_keys),
		cmocka_unit_test(mapping_lookup_prefers_the_mapping_then_models),
		cmocka_unit_test(find_api_by_id),
		cmocka_unit_test(load_file_reads_a_file),
		cmocka_unit_test(unreadable_file_is_one_error_naming_it),
		cmocka_unit_test(oversized_file_is_refused),
		cmocka_unit_test(file_of_exactly_the_limit_is_read),
		cmocka_unit_test(endless_file_stops_at_the_limit),
		cmocka_unit_test(nothing_loaded_gives_null_and_a_reason),
		cmocka_unit_test(acquire_returns_the_same_snapshot_until_the_file_changes),
		cmocka_unit_test(reload_picks_up_a_changed_file),
		cmocka_unit_test(broken_reload_keeps_last_good),
		cmocka_unit_test(deleted_file_keeps_last_good),
		cmocka_unit_test(broken_file_is_reported_once),
		cmocka_unit_test(info_tells_the_file_in_force_and_why_the_one_on_disk_is_not),
		cmocka_unit_test(warnings_are_logged_when_a_config_loads),
		cmocka_unit_test(concurrent_acquire_and_reload_are_safe),
	};

	return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
