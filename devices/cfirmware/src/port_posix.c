/*
 * The hardware port on a POSIX host (the simulated bench, devices/sim).
 *
 * Power loss is a SIGKILL of this process: RAM is gone, no flush, no atexit.
 * What must survive is therefore written with plain pwrite() into the flash
 * file, page by page: a SIGKILL cannot lose data the kernel already holds,
 * so after a cut the file holds exactly the pages programmed so far (fsync
 * would only matter for a host crash, which is not what the bench models,
 * and would add disk latency to the page time).
 */
#define _GNU_SOURCE
#include "port.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- clocks */

static struct timespec g_boot;

static int64_t ts_us(const struct timespec *t)
{
    return (int64_t)t->tv_sec * 1000000 + t->tv_nsec / 1000;
}

static void clocks_init(void)
{
    if (g_boot.tv_sec == 0 && g_boot.tv_nsec == 0)
        clock_gettime(CLOCK_MONOTONIC, &g_boot);
}

int64_t port_uptime_us(void)
{
    struct timespec now;
    clocks_init();
    clock_gettime(CLOCK_MONOTONIC, &now);
    return ts_us(&now) - ts_us(&g_boot);
}

int64_t port_uptime_ms(void)
{
    return port_uptime_us() / 1000;
}

void port_sleep_ms(unsigned ms)
{
    struct timespec t = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
    /* nanosleep resumes after a signal with the time left: the delay is a
     * physical property of the flash, not something a signal shortens. */
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

/* ---------------------------------------------------------------- flash */

static int g_flash_fd = -1;
static unsigned g_page_ms = 15;
static unsigned g_erase_ms = 20;
static uint32_t g_flash_hash = 2166136261u;
/* What an erased sector reads: filled with memset at init, because the
 * range initialiser that would make it a constant ([0 ... N] = 0xFF) is a
 * GNU extension IAR and Keil reject. */
static uint8_t g_erased[FLASH_SLOT_SIZE];

/*
 * Test hook of the host build (no MCU port has it): with
 * TLSFW_CUT_AT_FLASH_OP=N in the environment, power fails during the N-th
 * flash operation of this boot (erases and page programs, counted from 1):
 * the process SIGKILLs itself instead of doing it.  In this flash model a
 * cut inside an operation leaves the state before it (both delay first,
 * then write), so N = 1, 2, ... reaches every state a cut can leave during
 * a write, deterministically, where a test that sleeps and then kills
 * races the firmware's timing.
 */
static long g_cut_at_op;     /* 0: never */
static long g_flash_ops;

static void flash_op_begins(void)
{
    if (g_cut_at_op > 0 && ++g_flash_ops == g_cut_at_op)
        raise(SIGKILL);
}

int port_flash_init(const char *path, unsigned page_ms, unsigned erase_ms)
{
    const char *cut = getenv("TLSFW_CUT_AT_FLASH_OP");
    struct stat st;
    char full[PATH_MAX];

    memset(g_erased, 0xFF, sizeof g_erased);
    g_cut_at_op = cut != NULL ? strtol(cut, NULL, 10) : 0;
    g_page_ms = page_ms;
    g_erase_ms = erase_ms;
    g_flash_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (g_flash_fd < 0)
        return -1;
    if (fstat(g_flash_fd, &st) != 0)
        return -1;
    /* A missing or short image is a factory-fresh chip: erased, all 0xFF.
     * Only the missing tail is written; an existing record is never touched. */
    for (off_t off = st.st_size - st.st_size % FLASH_PAGE_SIZE; off < (off_t)FLASH_SIZE; off += FLASH_PAGE_SIZE) {
        size_t keep = off < st.st_size ? (size_t)(st.st_size - off) : 0;
        if (pwrite(g_flash_fd, g_erased + keep, FLASH_PAGE_SIZE - keep, off + (off_t)keep) < 0)
            return -1;
    }
    /* A stable per-device id: the flash image is the device. */
    if (realpath(path, full) == NULL)
        snprintf(full, sizeof full, "%s", path);
    for (const char *p = full; *p; p++)
        g_flash_hash = (g_flash_hash ^ (uint8_t)*p) * 16777619u;
    return 0;
}

uint32_t port_device_id(void)
{
    return g_flash_hash;
}

int port_flash_read(uint32_t addr, void *buf, size_t len)
{
    if (g_flash_fd < 0 || addr + len > FLASH_SIZE)
        return -1;
    ssize_t n = pread(g_flash_fd, buf, len, addr);
    return n == (ssize_t)len ? 0 : -1;
}

int port_flash_erase_sector(unsigned sector)
{
    if (g_flash_fd < 0 || sector >= FLASH_SLOTS)
        return -1;
    flash_op_begins();
    /* The erase takes its time first; a cut during it leaves the old data
     * (the model is coarse: real NOR may leave a half-erased sector, which
     * the CRC catches just the same). */
    port_sleep_ms(g_erase_ms);
    ssize_t n = pwrite(g_flash_fd, g_erased, sizeof g_erased, (off_t)sector * FLASH_SLOT_SIZE);
    return n == (ssize_t)sizeof g_erased ? 0 : -1;
}

int port_flash_program_page(uint32_t addr, const void *data, size_t len)
{
    uint8_t page[FLASH_PAGE_SIZE];
    const uint8_t *src = data;

    if (g_flash_fd < 0 || len > FLASH_PAGE_SIZE || addr % FLASH_PAGE_SIZE != 0 || addr + len > FLASH_SIZE)
        return -1;
    flash_op_begins();
    if (port_flash_read(addr, page, len) != 0)
        return -1;
    /* NOR programming can only clear bits: the result is old AND new. */
    for (size_t i = 0; i < len; i++)
        page[i] &= src[i];
    port_sleep_ms(g_page_ms);
    ssize_t n = pwrite(g_flash_fd, page, len, addr);
    return n == (ssize_t)len ? 0 : -1;
}

/* ---------------------------------------------------------------- RTC */

static char g_rtc_file[PATH_MAX];
static int g_rtc_present;

void port_rtc_init(const char *offset_file)
{
    clocks_init();
    g_rtc_present = offset_file != NULL;
    if (offset_file != NULL)
        snprintf(g_rtc_file, sizeof g_rtc_file, "%s", offset_file);
}

int port_rtc_present(void)
{
    return g_rtc_present;
}

static int64_t host_now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* The battery domain: the offset (ms) from the host's wall clock. A missing
 * or unreadable file is a flat backup battery: back to the host's time. */
static int64_t rtc_offset_ms(void)
{
    char buf[64];
    int fd = open(g_rtc_file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    return strtoll(buf, NULL, 10);
}

int64_t port_rtc_now_ms(void)
{
    if (!g_rtc_present)
        return 0;
    return host_now_ms() + rtc_offset_ms();
}

int port_rtc_set_ms(int64_t unix_ms)
{
    char tmp[PATH_MAX + 8];
    char buf[32];
    if (!g_rtc_present)
        return -1;
    int len = snprintf(buf, sizeof buf, "%lld\n", (long long)(unix_ms - host_now_ms()));
    /* Write then rename: a cut mid-write leaves the old offset, never half a number. */
    snprintf(tmp, sizeof tmp, "%s.new", g_rtc_file);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, buf, (size_t)len);
    close(fd);
    if (n != len || rename(tmp, g_rtc_file) != 0)
        return -1;
    return 0;
}

/* ---------------------------------------------------------------- UART */

void port_uart_init(void)
{
    /* Both ends of the pty master are one open file description: poll for
     * input, and never block on output. */
    for (int fd = 0; fd <= 1; fd++) {
        int fl = fcntl(fd, F_GETFL);
        if (fl >= 0)
            fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    }
}

void port_uart_write(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = write(1, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return; /* EAGAIN: nobody drains the port; the rest is lost, like a real UART's */
        }
        p += n;
        len -= (size_t)n;
    }
}

int port_uart_read(uint8_t *buf, size_t cap, int timeout_ms)
{
    struct pollfd pfd = { .fd = 0, .events = POLLIN };
    for (;;) {
        int r = poll(&pfd, 1, timeout_ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            return 0;
        ssize_t n = read(0, buf, cap);
        if (n > 0)
            return (int)n;
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n < 0 && errno == EIO) {
            /* A pty master whose slave side is not open reads EIO: the
             * cable is unplugged, not the end of the world. */
            port_sleep_ms(50);
            return 0;
        }
        return -1;
    }
}

/* ---------------------------------------------------------------- state */

static int g_state_fd = -1;

void port_state_init(int fd)
{
    g_state_fd = fd;
}

void port_state(const char *word)
{
    char buf[16];
    if (g_state_fd < 0)
        return;
    int len = snprintf(buf, sizeof buf, "%s\n", word);
    if (write(g_state_fd, buf, (size_t)len) < 0 && errno != EAGAIN)
        g_state_fd = -1; /* the bench went away; keep running regardless */
}

/* ---------------------------------------------------------------- reset */

static int g_argc;
static char **g_argv;

void port_set_argv(int argc, char **argv)
{
    g_argc = argc;
    g_argv = argv;
}

void port_reboot_software(void)
{
    /* RAM must really be gone after a reset: re-execute the image (same pid,
     * so the bench still owns it), with the reset cause set to software. */
    static char *argv[64];
    static char cause[] = "software";
    int n = 0;
    for (int i = 0; i < g_argc && n < 60; i++) {
        argv[n++] = g_argv[i];
        if (strcmp(g_argv[i], "--reset-cause") == 0 && i + 1 < g_argc) {
            argv[n++] = cause;
            i++;
        }
    }
    int has = 0;
    for (int i = 0; i < n; i++)
        if (strcmp(argv[i], "--reset-cause") == 0)
            has = 1;
    if (!has) {
        argv[n++] = "--reset-cause";
        argv[n++] = cause;
    }
    argv[n] = NULL;
    execv("/proc/self/exe", argv);
    /* exec failed: a real MCU would still reset; the closest is to die. */
    _exit(1);
}
