/* Fuzzes config_parse (src/config.h) with arbitrary bytes as apis.json. */
#include "fuzz.h"

#include <stdbool.h>

#include "config.h"
#include "upstream.h"

static void
fuzz_check_api(const struct config *cfg, size_t k)
{
	const struct config_api *api = &cfg->apis[k];
	size_t n;

	FUZZ_CHECK(api->id != NULL && api->name != NULL && api->base_url != NULL);
	FUZZ_CHECK(api->api_key != NULL);
	/* http:// or https://, lower case, no trailing '/' after the authority. */
	FUZZ_CHECK(strncmp(api->base_url, "http://", 7) == 0 ||
		   strncmp(api->base_url, "https://", 8) == 0);
	n = strlen(api->base_url);
	FUZZ_CHECK(api->base_url[n - 1] != '/');
	FUZZ_CHECK(strpbrk(api->base_url, "?# \t\r\n") == NULL);
	FUZZ_CHECK(api->weight > 0);
	FUZZ_CHECK(api->rpm >= -1 && api->rpd >= -1);
	FUZZ_CHECK(config_find_api(cfg, api->id) == (long)k);
	for (size_t i = 0; i < api->n_models; i++) {
		FUZZ_CHECK(api->models[i] != NULL);
		FUZZ_CHECK(config_api_model(api, api->models[i]) != NULL);
	}
	for (size_t i = 0; i < api->n_mapping; i++) {
		FUZZ_CHECK(api->mapping[i].key != NULL && api->mapping[i].value != NULL);
		FUZZ_CHECK(config_api_model(api, api->mapping[i].key) != NULL);
	}
	for (size_t i = 0; i < api->n_headers; i++)
		FUZZ_CHECK(api->headers[i].key != NULL && api->headers[i].value != NULL);
	/* The URL every request to this endpoint is built with. */
	const char *host = strstr(api->base_url, "://") + 3;
	size_t origin = (size_t)(host - api->base_url) + strcspn(host, "/");
	char *url = upstream_url(api->base_url, "/v1/chat/completions", "a=1");
	FUZZ_CHECK(url != NULL);
	FUZZ_CHECK(strncmp(url, api->base_url, origin) == 0);
	FUZZ_CHECK(strlen(url) > 4 && strcmp(url + strlen(url) - 4, "?a=1") == 0);
	free(url);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config_issues issues = {0};
	struct config *cfg = (struct config *)1;
	bool any_error = false;
	int rc;

	rc = config_parse((const char *)data, size, &cfg, &issues);
	FUZZ_CHECK(rc == 0 || rc == -1);
	for (size_t i = 0; i < issues.n; i++) {
		FUZZ_CHECK(issues.v[i].path != NULL && issues.v[i].message != NULL);
		any_error |= issues.v[i].error;
	}
	/* -1 exactly when some problem is an error, and then no config. */
	FUZZ_CHECK((rc == -1) == any_error);
	if (rc == -1) {
		FUZZ_CHECK(cfg == NULL);
	} else {
		FUZZ_CHECK(cfg != NULL);
		FUZZ_CHECK(cfg->n_api_keys == 0 || cfg->api_keys != NULL);
		FUZZ_CHECK(cfg->n_apis == 0 || cfg->apis != NULL);
		for (size_t k = 0; k < cfg->n_apis; k++)
			fuzz_check_api(cfg, k);
		config_free(cfg);
	}
	config_issues_free(&issues);
	return 0;
}
