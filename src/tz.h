/* tz: the calendar of an IANA time zone, read once from its TZif file.
 *
 * A zone is loaded at config load into the snapshot and read by every
 * thread without a lock, so a day limit can roll over at a provider's
 * midnight (doc/behaviour.md, Limits and state, rule 26) without setting
 * the process's TZ per request. A NULL zone is the responder's local one
 * (TZ honoured, through clock.h). */
#ifndef API_TOGETHER_TZ_H
#define API_TOGETHER_TZ_H

#include <stddef.h>
#include <stdint.h>

struct tz_zone;

/* Loads zone name (e.g. "America/Los_Angeles") from $TZDIR, else
 * /usr/share/zoneinfo. Returns a zone the caller frees with tz_free, or
 * NULL with err set (an unknown or malformed zone). */
struct tz_zone *tz_load(const char *name, char *err, size_t errlen);

/* Parses a TZif file of len bytes (versions 1 to 4: the 64-bit section
 * when there is one, and its footer's rule past the last transition).
 * Returns a zone the caller frees, or NULL with err set. */
struct tz_zone *tz_parse(const unsigned char *data, size_t len, char *err, size_t errlen);

void tz_free(struct tz_zone *z);

/* The offset from UTC in seconds of z at t_s (seconds since the epoch). */
long tz_offset_s(const struct tz_zone *z, int64_t t_s);

/* The calendar day (YYYYMMDD) of t_ms in z (NULL: the local zone). */
long tz_day(const struct tz_zone *z, int64_t t_ms);

/* Milliseconds from t_ms to the next midnight of z (NULL: the local zone). */
int64_t tz_ms_to_midnight(const struct tz_zone *z, int64_t t_ms);

#endif
