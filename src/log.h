/* log: lines on stderr, which the web server puts in its error log. */
#ifndef API_TOGETHER_LOG_H
#define API_TOGETHER_LOG_H

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

/* Reads API_TOGETHER_LOG_LEVEL, API_TOGETHER_LOG_FORMAT ("text", the default,
 * or "json") and NO_COLOR, and looks once whether stderr is a terminal: text
 * lines are coloured by level only there. Call before threads start; calling
 * it again starts from the defaults (tests do). */
void log_init(void);

/* True when lines of this level are written. */
int log_enabled(enum log_level level);

/* One line written with a single write(2), so lines of several threads and
 * processes never interleave: "TIME LEVEL api-together[PID]: message" (control
 * characters of the message shown as '?'), or with API_TOGETHER_LOG_FORMAT=json
 * {"time","level","pid","msg"} with msg a valid JSON string whatever the
 * message held. Never pass a key here. */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)

#endif
