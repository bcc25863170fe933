/*
 * Console output in the style of Zephyr's logging and shell:
 *
 *   [00:00:01.234,000] <inf> tls: connected ...
 *   \x1b[1;33m[00:00:01.240,000] <wrn> tls_store: ...\x1b[0m
 *   \x1b[1;32muart:~$ \x1b[m
 *
 * Timestamps are uptime (hours:minutes:seconds.milliseconds,microseconds),
 * warnings yellow, errors red, lines end in CR LF.  No heap: every line is
 * formatted into a fixed buffer and cut if too long.
 */
#ifndef CONSOLE_H
#define CONSOLE_H

#include <stddef.h>

#define CONSOLE_PROMPT "uart:~$ "

enum log_level { LOG_ERR = 1, LOG_WRN = 2, LOG_INF = 3 };

void log_msg(enum log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define LOG_INF(mod, ...) log_msg(LOG_INF, mod, __VA_ARGS__)
#define LOG_WRN(mod, ...) log_msg(LOG_WRN, mod, __VA_ARGS__)
#define LOG_ERR(mod, ...) log_msg(LOG_ERR, mod, __VA_ARGS__)

/* Plain shell output (help text, errors of the shell itself): no log prefix. */
void console_print(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void console_write(const char *text, size_t len);
void console_prompt(void);

#endif
