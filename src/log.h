/* log: lines on stderr, which the web server puts in its error log. */
#ifndef API_TOGETHER_LOG_H
#define API_TOGETHER_LOG_H

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

/* Reads API_TOGETHER_LOG_LEVEL. Call once before threads start. */
void log_init(void);

/* True when lines of this level are written. */
int log_enabled(enum log_level level);

/* One line "TIME LEVEL message" written with a single write(2), so lines of
 * several threads and processes never interleave. Never pass a key here. */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)

#endif
