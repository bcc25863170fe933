/* Zephyr-style log lines and prompt on the UART (see console.h). */
#include "console.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "port.h"

#define LINE_MAX_LEN 300

/* Zephyr's LOG_COLOR_CODE_RED / _YELLOW and LOG_COLOR_CODE_DEFAULT. */
#define COLOR_RED     "\x1b[1;31m"
#define COLOR_YELLOW  "\x1b[1;33m"
#define COLOR_DEFAULT "\x1b[0m"
#define PROMPT_COLOR  "\x1b[1;32m"
#define PROMPT_RESET  "\x1b[m"

void console_write(const char *text, size_t len)
{
    port_uart_write(text, len);
}

static void emit(char *buf, size_t used, size_t cap)
{
    if (used > cap - 3)
        used = cap - 3; /* the line was cut: still end it */
    buf[used++] = '\r';
    buf[used++] = '\n';
    port_uart_write(buf, used);
}

void log_msg(enum log_level level, const char *module, const char *fmt, ...)
{
    static const char *const names[] = { "", "err", "wrn", "inf" };
    char buf[LINE_MAX_LEN];
    size_t used = 0;
    int n;
    int64_t us = port_uptime_us();
    int64_t s = us / 1000000;

    const char *color = level == LOG_ERR ? COLOR_RED : level == LOG_WRN ? COLOR_YELLOW : "";
    n = snprintf(buf, sizeof buf, "%s[%02lld:%02lld:%02lld.%03lld,%03lld] <%s> %s: ", color,
                 (long long)(s / 3600), (long long)(s / 60 % 60), (long long)(s % 60),
                 (long long)(us / 1000 % 1000), (long long)(us % 1000), names[level], module);
    used = n > 0 ? (size_t)n : 0;
    va_list ap;
    va_start(ap, fmt);
    n = vsnprintf(buf + used, sizeof buf - used, fmt, ap);
    va_end(ap);
    if (n > 0)
        used += (size_t)n;
    if (used >= sizeof buf)
        used = sizeof buf - 1;
    if (*color) {
        size_t room = sizeof buf - 3 - strlen(COLOR_DEFAULT);
        if (used > room)
            used = room;
        memcpy(buf + used, COLOR_DEFAULT, strlen(COLOR_DEFAULT));
        used += strlen(COLOR_DEFAULT);
    }
    emit(buf, used, sizeof buf);
}

void console_print(const char *fmt, ...)
{
    char buf[LINE_MAX_LEN];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    size_t used = n > 0 ? (size_t)n : 0;
    if (used >= sizeof buf)
        used = sizeof buf - 1;
    emit(buf, used, sizeof buf);
}

void console_prompt(void)
{
    static const char prompt[] = PROMPT_COLOR CONSOLE_PROMPT PROMPT_RESET;
    port_uart_write(prompt, sizeof prompt - 1);
}
