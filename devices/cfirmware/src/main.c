/*
 * tlsfw: a reference TLS client firmware that keeps its TLS session across
 * a complete power loss.  Boot, Zephyr-like shell, connect logic.
 *
 * It is written as it would be for a microcontroller: one thread, one
 * command at a time, fixed buffers (no malloc here or in the store), the
 * board behind port.h, the TLS stack behind tls_port.h.  The host build
 * runs on the simulated bench (devices/sim): stdin/stdout are the UART, a
 * power loss is a SIGKILL, the flash is a file.
 *
 *   fw --flash FILE --reset-cause power-on|brown-out|software --state-fd N
 *      --ca FILE --page-ms MS [--erase-ms MS] [--app mqtt|http] [--rtc-file FILE]
 *
 * The session policy, in one place (cmd_connect):
 *   - offer the stored session only to the server it belongs to, in a TLS
 *     version it can be resumed in, and (with an RTC) while its ticket
 *     lifetime has not run out;
 *   - a refused offer falls back to a full handshake (in TLS 1.2 the server
 *     simply does one; if the stack aborts instead, connect again without it),
 *     and the refused session is erased from flash, not only from RAM;
 *   - store after every handshake that brought a new ticket, and only once
 *     the application exchange is over (TLS 1.3 tickets arrive after the
 *     handshake), into the slot that does not hold the newest record.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "app.h"
#include "console.h"
#include "port.h"
#include "store.h"
#include "tls_port.h"
#include "variant.h"

#define FW_VERSION "1.0.0"
#define BOOT_MS 50          /* bootloader, clocks, flash scan: the "boot" current */
#define RADIO_UP_MS 50      /* modem power-up before the TCP connect */
#define MAX_LINE 256
#define MAX_ARGS 8

/* ------------------------------------------------------------------ RAM */

static struct {
    const char *flash;
    const char *reset_cause;
    const char *ca;
    const char *rtc_file;
    int state_fd;
    unsigned page_ms;
    unsigned erase_ms;
    enum app_proto app;
} g_opt = { NULL, "power-on", "", NULL, -1, 15, 20, APP_MQTT };

/* The session this boot would offer: a copy of the newest valid record. */
static struct store_record g_held;
static int g_held_valid;
static int g_held_slot = -1;          /* -1: in RAM only */
/* Scratch record for the next write (a session is built here, then stored). */
static struct store_record g_new;
static int g_flash_ok;
static int g_tls_ok;

#if FW_CLOCK != FW_CLOCK_RTC
static int64_t g_clock_offset_ms;     /* "date set" without an RTC: RAM only */
#endif

/* ---------------------------------------------------------------- clock */

/*
 * The clock ticket ages are measured with, in ms.  With the battery-backed
 * RTC it is wall time and survives power loss.  Without one it is uptime
 * (plus what "date set" said this boot), which restarts at every reset.
 */
static int64_t clock_now_ms(void)
{
#if FW_CLOCK == FW_CLOCK_RTC
    return port_rtc_now_ms();
#else
    return port_uptime_ms() + g_clock_offset_ms;
#endif
}

/* For the TLS port: ticket ages come from the same clock as the lifetime check. */
int64_t port_clock_ms(void)
{
    return clock_now_ms();
}

static void format_time(int64_t ms, char *out, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || strftime(out, len, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
        snprintf(out, len, "@%lld", (long long)(ms / 1000));
}

/* ----------------------------------------------------------- small helpers */

static const char *version_name(int v)
{
    return v == TLS_V13 ? "TLSv1.3" : v == TLS_V12 ? "TLSv1.2" : "TLS?";
}

static void held_set(const struct store_record *rec, int slot)
{
    if (rec != &g_held)
        memcpy(&g_held, rec, sizeof g_held);
    g_held_valid = 1;
    g_held_slot = slot;
}

static void held_clear(void)
{
    g_held_valid = 0;
    g_held_slot = -1;
    /* The RAM copy holds secrets: wipe it, do not just forget it. */
    memset(&g_held, 0, sizeof g_held);
}

static void print_slots(void)
{
    struct slot_info info[FLASH_SLOTS];
    store_scan(info);
    for (unsigned i = 0; i < store_slots(); i++) {
        char s = store_slot_name(i);
        switch (info[i].status) {
        case SLOT_EMPTY:
            LOG_INF("tls_store", "slot %c: empty", s);
            break;
        case SLOT_VALID:
            LOG_INF("tls_store", "slot %c: valid, seq %u, %u bytes", s, (unsigned)info[i].seq,
                    (unsigned)info[i].length);
            break;
        case SLOT_BAD_CRC:
            LOG_WRN("tls_store", "slot %c: bad CRC, seq %u, %u bytes", s, (unsigned)info[i].seq,
                    (unsigned)info[i].length);
            break;
        case SLOT_BAD_HEADER:
            LOG_WRN("tls_store", "slot %c: unreadable (%s)", s, info[i].why);
            break;
        }
    }
}

/* ------------------------------------------------------------------ boot */

/*
 * Pick the newest valid record and let the stack check its blob.  A blob the
 * stack refuses (another library version after an update, another stack) is
 * erased with a warning and the next one tried: never offered, never retried
 * at every boot.
 */
static void boot_store(void)
{
#if !FW_PERSIST
    /* BUG (ram-only): the session lives in g_held only; flash is never read. */
    LOG_INF("tls_store", "no stored session");
    return;
#endif
    print_slots();
    for (unsigned tries = 0; tries < FLASH_SLOTS; tries++) {
        struct slot_info info[FLASH_SLOTS];
        char err[128];
        store_scan(info);
        int newest = store_newest(info);
        if (newest < 0)
            break;
        if (store_load((unsigned)newest, &g_held) != 0) {
            snprintf(err, sizeof err, "flash read error");
        } else if (g_held.stack_id != FW_STACK_ID) {
            snprintf(err, sizeof err, "written by another TLS stack (id %u)", g_held.stack_id);
        } else if (tls_port_check_blob(g_held.payload, g_held.length, err, sizeof err) == TLS_BLOB_OK) {
            held_set(&g_held, newest);
#if FW_CLOCK == FW_CLOCK_NONE
            /* No RTC: start this boot's clock where the stored session's
             * time left off, so the clock the TLS stack ages tickets with
             * (TLS 1.3) never runs backwards across a reset.  The time spent
             * unpowered is unknown and counted as zero: the age comes out
             * too small, never negative, and the server judges expiry. */
            if (g_held.stored_ms > 0)
                g_clock_offset_ms = g_held.stored_ms;
#endif
            LOG_INF("tls_store", "using slot %c seq %u (%s session)", store_slot_name((unsigned)newest),
                    (unsigned)g_held.seq, version_name(g_held.tls_version));
            return;
        }
        LOG_WRN("tls_store", "stored session refused by %s (%s): discarded", tls_port_name(), err);
        held_clear();
        store_erase_slot((unsigned)newest);
    }
    LOG_INF("tls_store", "no stored session");
}

static void boot(void)
{
    char err[160];
    char when[40];

    port_state("boot");
    port_sleep_ms(BOOT_MS);
    console_write("\r\n", 2);   /* end the line of power-up noise */
    console_print("*** Booting tlsfw v" FW_VERSION " (%s, variant %s) ***", tls_port_name(), FW_VARIANT_NAME);
    LOG_INF("main", "reset cause: %s", g_opt.reset_cause);

#if FW_CLOCK == FW_CLOCK_RTC
    format_time(clock_now_ms(), when, sizeof when);
    LOG_INF("rtc", "battery-backed RTC: %s", when);
#elif FW_CLOCK == FW_CLOCK_UPTIME
    /* BUG (uptime-clock): the board has no RTC, but the firmware treats the
     * uptime counter as if it were one. */
    format_time(clock_now_ms(), when, sizeof when);
    LOG_INF("rtc", "clock: %s", when);
#else
    (void)when;
    LOG_WRN("rtc", "no RTC on this board: ticket lifetimes are left to the server");
#endif

    g_tls_ok = tls_port_init(g_opt.ca, err, sizeof err) == 0;
    if (!g_tls_ok)
        LOG_ERR("tls", "init failed: %s", err);

    g_flash_ok = port_flash_init(g_opt.flash, g_opt.page_ms, g_opt.erase_ms) == 0;
    if (!g_flash_ok)
        LOG_ERR("flash", "cannot open %s: %s", g_opt.flash, strerror(errno));
    else
        boot_store();

    LOG_INF("main", "ready");
    port_state("idle");
}

/* --------------------------------------------------------------- connect */

/* Should the stored session be offered to this server?  Returns 1, or 0 with why. */
static int choose_offer(const char *name, enum tls_version want, char *why, size_t wlen)
{
    if (!g_held_valid) {
        snprintf(why, wlen, "no stored session");
        return 0;
    }
    if (strcmp(g_held.server_name, name) != 0) {
        /* A session (and its ticket) belongs to the server that issued it:
         * offering it elsewhere leaks a linkable identifier for nothing. */
        snprintf(why, wlen, "stored session is for another server");
        return 0;
    }
    if (want != TLS_AUTO && (int)want != g_held.tls_version) {
        snprintf(why, wlen, "stored session is %s", version_name(g_held.tls_version));
        return 0;
    }
#if FW_CLOCK == FW_CLOCK_RTC
    if (g_held.flags & STORE_FLAG_NO_WALLTIME)
        return 1;   /* stored by a build without RTC: its age is unknown, the server decides */
    int64_t age_ms = clock_now_ms() - g_held.stored_ms;
    if (age_ms < 0) {
        /* The RTC is behind the moment of storing (it was set back): the
         * age is unknown, so offer and let the server judge the ticket. */
        LOG_WRN("tls", "RTC is behind the stored session by %lld s: age unknown", (long long)(-age_ms / 1000));
        return 1;
    }
    if (g_held.lifetime_s != 0 && age_ms / 1000 >= (int64_t)g_held.lifetime_s) {
        snprintf(why, wlen, "ticket expired (age %lld s, lifetime %u s)", (long long)(age_ms / 1000),
                 (unsigned)g_held.lifetime_s);
        return 0;
    }
#elif FW_CLOCK == FW_CLOCK_UPTIME
    /* BUG (uptime-clock): ages from an uptime counter, in the unsigned ms
     * arithmetic of k_uptime_get_32().  After a reset "now" is smaller than
     * the stored time, the difference wraps to ~49 days, and a fresh ticket
     * looks expired. */
    uint32_t age_ms = (uint32_t)clock_now_ms() - (uint32_t)g_held.stored_ms;
    if (g_held.lifetime_s != 0 && age_ms / 1000u >= g_held.lifetime_s) {
        snprintf(why, wlen, "ticket expired (age %u s, lifetime %u s)", (unsigned)(age_ms / 1000u),
                 (unsigned)g_held.lifetime_s);
        return 0;
    }
#else
    /* No RTC: no age on the device.  Offering an expired ticket costs
     * nothing: the server refuses it and the fallback does a full handshake. */
#endif
    return 1;
}

static int64_t held_age_s(void)
{
#if FW_CLOCK == FW_CLOCK_NONE
    return -1;
#else
    if (g_held.flags & STORE_FLAG_NO_WALLTIME)
        return -1;
    return (clock_now_ms() - g_held.stored_ms) / 1000;
#endif
}

/*
 * Serialise the connection's session into g_new.  Returns 1 when there is a
 * session worth keeping, 0 otherwise (reason printed).
 */
static int capture_session(struct tls_conn *c, const struct tls_info *info, const char *name)
{
    memset(&g_new, 0, sizeof g_new);
    /* BUG (early-store) takes the session as the stack hands it out, ticket or not. */
    int n = tls_port_save_session(c, g_new.payload, sizeof g_new.payload, !FW_STORE_EARLY);
    if (n == 0) {
        LOG_WRN("tls_store", "session not stored: the server issued no ticket");
        return 0;
    }
    if (n == TLS_SAVE_TOO_BIG) {
        LOG_WRN("tls_store", "session not stored: it does not fit a slot (max %u bytes)", (unsigned)STORE_MAX_PAYLOAD);
        return 0;
    }
    if (n < 0) {
        /* Not the session's size: the stack failed (out of memory, say). */
        LOG_WRN("tls_store", "session not stored: %s could not serialise it", tls_port_name());
        return 0;
    }
    g_new.length = (uint32_t)n;
    g_new.stack_id = FW_STACK_ID;
    g_new.tls_version = (uint8_t)info->version;
    g_new.lifetime_s = info->ticket_lifetime;
    snprintf(g_new.server_name, sizeof g_new.server_name, "%s", name);
    return 1;
}

/* Persist g_new (the time of storing is taken now, with the device clock). */
static void commit_session(void)
{
    g_new.stored_ms = clock_now_ms();
#if FW_CLOCK == FW_CLOCK_NONE
    g_new.flags |= STORE_FLAG_NO_WALLTIME;
#endif
#if !FW_PERSIST
    /* BUG (ram-only): kept in a RAM variable; a power loss takes it. */
    held_set(&g_new, -1);
    LOG_INF("tls_store", "session kept in RAM (%u bytes)", (unsigned)g_new.length);
#else
    if (!g_flash_ok) {
        LOG_ERR("tls_store", "session not stored: no flash");
        return;
    }
    int slot = store_write(&g_new);
    if (slot >= 0)
        held_set(&g_new, slot);
#endif
}

/*
 * A stored session the server refused is dead: forget it in flash too, not
 * only in RAM.  Left there it stays the newest record, so after every power
 * loss boot picks it and the device offers it again (with a server that
 * issues no tickets nothing ever replaces it; on wolfSSL 5.5.4 TLS 1.2 each
 * such offer costs an aborted connection and a second one).  Called once
 * the connection is over, after any new session was stored: that went into
 * the other slot with the next sequence number, so this erase neither
 * touches it nor makes the numbers go back.  (single-slot: the new session
 * was written over the refused one, nothing is left to erase.)
 */
static void erase_refused(int slot)
{
    if (slot < 0 || (g_held_valid && g_held_slot == slot))
        return;
    if (store_erase_slot((unsigned)slot) == 0)
        LOG_WRN("tls_store", "refused session erased from slot %c", store_slot_name((unsigned)slot));
    else
        LOG_ERR("tls_store", "erasing the refused session in slot %c failed", store_slot_name((unsigned)slot));
}

static void connect_failed(const char *reason)
{
    port_state("idle");
    LOG_ERR("tls", "connect failed: %s", reason);
}

static void tls_connect(const char *host, int port, enum tls_version want, const char *sni)
{
    char why[160];
    char err[160];
    char summary[128];
    struct tls_info info;
    int refused = 0;
    int refused_slot = -1;   /* the flash slot of a stored session the server refused */
    /* The name the session belongs to: the SNI, or the host without one. */
    const char *name = sni[0] ? sni : host;

    if (!g_tls_ok) {
        connect_failed("TLS not initialised (see boot log)");
        return;
    }
    if (want == TLS_V13 && !(tls_port_versions() & 2u)) {
        snprintf(err, sizeof err, "TLS 1.3 not supported by %s", tls_port_name());
        connect_failed(err);
        return;
    }
    if (want == TLS_V12 && !(tls_port_versions() & 1u)) {
        snprintf(err, sizeof err, "TLS 1.2 not supported by %s", tls_port_name());
        connect_failed(err);
        return;
    }

    int offer = choose_offer(name, want, why, sizeof why);
    if (offer) {
        int64_t age = held_age_s();
        char agetext[32];
        if (age >= 0)
            snprintf(agetext, sizeof agetext, "age %lld s", (long long)age);
        else
            snprintf(agetext, sizeof agetext, "age unknown");
        if (g_held_slot >= 0)
            LOG_INF("tls", "offering stored session (%s, slot %c seq %u, %u bytes, %s)",
                    version_name(g_held.tls_version), store_slot_name((unsigned)g_held_slot), (unsigned)g_held.seq,
                    (unsigned)g_held.length, agetext);
        else
            LOG_INF("tls", "offering session from RAM (%s, %u bytes, %s)", version_name(g_held.tls_version),
                    (unsigned)g_held.length, agetext);
    } else {
        LOG_INF("tls", "offering nothing (%s)", why);
    }

    port_state("radio");
    port_sleep_ms(RADIO_UP_MS);
    struct tls_conn *c = tls_port_connect(host, port, sni, want, offer ? g_held.payload : NULL,
                                          offer ? g_held.length : 0, &info, &refused, err, sizeof err);
    if (c == NULL && offer && refused) {
#if FW_FALLBACK
        /* The stack aborted because of the offer: forget the session and
         * connect again without it. */
        LOG_WRN("tls", "stored session refused (%s): full handshake without it", err);
        refused_slot = g_held_slot;
        held_clear();
        offer = 0;
        c = tls_port_connect(host, port, sni, want, NULL, 0, &info, &refused, err, sizeof err);
#else
        /* BUG (no-fallback): a refused session ends the attempt. */
        char msg[200];
        snprintf(msg, sizeof msg, "server refused the stored session (%s)", err);
        connect_failed(msg);
        return;
#endif
    }
    if (c == NULL) {
        erase_refused(refused_slot);
        connect_failed(err);
        return;
    }
    if (offer && !info.resumed) {
#if FW_FALLBACK
        /* The server did a full handshake instead (expired, rotated keys,
         * unknown): that handshake is the fallback; its session replaces
         * the refused one. */
        LOG_WRN("tls", "server refused the stored session: full handshake");
        refused_slot = g_held_slot;
        held_clear();
#else
        /* BUG (no-fallback): treats the refusal as a failure and hangs up. */
        tls_port_close(c);
        connect_failed("server refused the stored session");
        return;
#endif
    }
    LOG_INF("tls", "handshake done %s %s resumed=%s", version_name(info.version), info.cipher,
            info.resumed ? "yes" : "no");

    int have_new = 0;
#if FW_STORE_EARLY
    /* BUG (early-store): the session is saved the moment the handshake
     * ends.  In TLS 1.2 the ticket came inside the handshake, so this works;
     * in TLS 1.3 the NewSessionTickets arrive after it, so what is saved
     * holds no ticket (or the previous one), and nothing later saves again. */
    if (info.tickets_received > 0 || info.version == TLS_V13) {
        if (capture_session(c, &info, name)) {
            commit_session();
            port_state("radio");
        }
    }
#endif

    int app_ok = app_exchange(g_opt.app, c, name, summary, sizeof summary, why, sizeof why) == 0;
    if (app_ok)
        LOG_INF("app", "%s", summary);
    else
        LOG_WRN("app", "%s", why);

#if !FW_STORE_EARLY
    /* Now the stack has taken in whatever tickets the server sent (TLS 1.3
     * sends them after the handshake; they were read with the reply). */
    tls_port_info(c, &info);
    if (info.tickets_received > 0)
        have_new = capture_session(c, &info, name);
#endif
    tls_port_close(c);
    port_state("idle");
    if (have_new)
        commit_session();
#if !FW_STORE_EARLY
    else if (info.resumed && info.tickets_received == 0)
        LOG_INF("tls_store", "session unchanged (no new ticket)");
    else if (info.tickets_received == 0)
        LOG_WRN("tls_store", "session not stored: the server issued no ticket");
#endif
    erase_refused(refused_slot);
    LOG_INF("tls", "connected %s %s resumed=%s", version_name(info.version), info.cipher,
            info.resumed ? "yes" : "no");
}

/* ------------------------------------------------------------------ shell */

static void cmd_help(void)
{
    console_print("Available commands:");
    console_print("  tls connect <host> <port> <1.2|1.3|auto> <sni|->  connect, resume if possible");
    console_print("  tls session                show the stored session (never its secrets)");
    console_print("  tls session erase          erase the stored session");
    console_print("  date [get]                 show the clock");
    console_print("  date set <unix-seconds>    set the clock");
    console_print("  kernel reboot cold         software reset");
    console_print("  help                       this text");
}

static void cmd_tls_session(void)
{
    if (g_flash_ok && FW_PERSIST)
        print_slots();
    if (!g_held_valid) {
        LOG_INF("tls_store", "session: none");
        return;
    }
    char where[32];
    char agetext[32];
    int64_t age = held_age_s();
    if (g_held_slot >= 0)
        snprintf(where, sizeof where, "slot %c seq %u", store_slot_name((unsigned)g_held_slot), (unsigned)g_held.seq);
    else
        snprintf(where, sizeof where, "RAM only");
    if (age >= 0)
        snprintf(agetext, sizeof agetext, "age %lld s", (long long)age);
    else
        snprintf(agetext, sizeof agetext, "age unknown");
    /* Length and CRC identify a record; the blob itself holds secrets. */
    LOG_INF("tls_store", "session: %s for %s, %s, %u bytes, crc 0x%08x, %s, lifetime %u s",
            version_name(g_held.tls_version), g_held.server_name, where, (unsigned)g_held.length,
            (unsigned)crc32_ieee(0, g_held.payload, g_held.length), agetext, (unsigned)g_held.lifetime_s);
}

static void cmd_tls_erase(void)
{
    if (g_flash_ok && store_erase_all() != 0) {
        LOG_ERR("tls_store", "erase failed");
        return;
    }
    held_clear();
    LOG_INF("tls_store", "session erased");
}

static void cmd_tls_connect(int argc, char **argv)
{
    /* tls connect <host> <port> [<version> [<sni>]] */
    if (argc < 4 || argc > 6) {
        connect_failed("usage: tls connect <host> <port> <1.2|1.3|auto> <sni|->");
        return;
    }
    char *end;
    long port = strtol(argv[3], &end, 10);
    if (*end != '\0' || port <= 0 || port > 65535) {
        connect_failed("bad port");
        return;
    }
    enum tls_version want = TLS_AUTO;
    if (argc >= 5) {
        if (strcmp(argv[4], "1.2") == 0)
            want = TLS_V12;
        else if (strcmp(argv[4], "1.3") == 0)
            want = TLS_V13;
        else if (strcmp(argv[4], "auto") != 0) {
            char msg[80];
            snprintf(msg, sizeof msg, "unknown TLS version '%.20s' (1.2, 1.3, auto)", argv[4]);
            connect_failed(msg);
            return;
        }
    }
    const char *sni = argc >= 6 && strcmp(argv[5], "-") != 0 ? argv[5] : "";
    if (strlen(sni) >= STORE_NAME_MAX || strlen(argv[2]) >= STORE_NAME_MAX) {
        connect_failed("server name too long");
        return;
    }
    tls_connect(argv[2], (int)port, want, sni);
}

static void cmd_date(int argc, char **argv)
{
    char when[40];
    if (argc >= 2 && strcmp(argv[1], "set") == 0) {
        char *end;
        double v = argc == 3 ? strtod(argv[2], &end) : NAN;
        if (argc != 3 || *end != '\0' || !isfinite(v) || v < 0 || v >= 253402300800.0) {
            console_print("date: usage: date set <unix-seconds>");
            return;
        }
        int64_t ms = (int64_t)llround(v * 1000.0);
#if FW_CLOCK == FW_CLOCK_RTC
        if (port_rtc_set_ms(ms) != 0) {
            LOG_ERR("date", "RTC write failed");
            return;
        }
#else
        g_clock_offset_ms = ms - port_uptime_ms();
#endif
    } else if (argc > 2 || (argc == 2 && strcmp(argv[1], "get") != 0)) {
        console_print("date: usage: date [get] | date set <unix-seconds>");
        return;
    }
    format_time(clock_now_ms(), when, sizeof when);
#if FW_CLOCK == FW_CLOCK_NONE
    LOG_INF("date", "%s (no RTC: until the next reset)", when);
#else
    LOG_INF("date", "%s", when);
#endif
}

static void execute(char *line)
{
    char *argv[MAX_ARGS + 1];
    int argc = 0;
    for (char *tok = strtok(line, " \t"); tok != NULL && argc < MAX_ARGS; tok = strtok(NULL, " \t"))
        argv[argc++] = tok;
    argv[argc] = NULL;
    if (argc == 0)
        return;
    if (strcmp(argv[0], "help") == 0) {
        cmd_help();
    } else if (strcmp(argv[0], "tls") == 0 && argc >= 2 && strcmp(argv[1], "connect") == 0) {
        cmd_tls_connect(argc, argv);
    } else if (strcmp(argv[0], "tls") == 0 && argc == 2 && strcmp(argv[1], "session") == 0) {
        cmd_tls_session();
    } else if (strcmp(argv[0], "tls") == 0 && argc == 3 && strcmp(argv[1], "session") == 0 &&
               strcmp(argv[2], "erase") == 0) {
        cmd_tls_erase();
    } else if (strcmp(argv[0], "tls") == 0) {
        console_print("tls: usage: tls connect <host> <port> <version> <sni> | tls session [erase]");
    } else if (strcmp(argv[0], "date") == 0) {
        cmd_date(argc, argv);
    } else if (strcmp(argv[0], "kernel") == 0 && argc == 3 && strcmp(argv[1], "reboot") == 0 &&
               (strcmp(argv[2], "cold") == 0 || strcmp(argv[2], "warm") == 0)) {
        port_reboot_software();
    } else {
        char shown[41];
        size_t n = 0;
        for (const char *p = argv[0]; *p && n < sizeof shown - 1; p++)
            shown[n++] = (*p >= 0x20 && *p < 0x7f) ? *p : '?';
        shown[n] = '\0';
        console_print("\x1b[1;31m%s: command not found\x1b[0m", shown);
    }
}

/*
 * The shell's line editor: echo what is typed, backspace erases, CR, LF or
 * CR LF ends the line, other control bytes (line noise) are dropped, a line
 * longer than MAX_LINE is cut.  Each line runs to completion before the next
 * byte is read, as on an MCU.
 */
static void shell_run(void)
{
    static char line[MAX_LINE + 1];
    static size_t len;
    static int after_cr;
    uint8_t in[128];
    char echo[sizeof in * 3];

    console_prompt();
    for (;;) {
        int n = port_uart_read(in, sizeof in, -1);
        if (n < 0)
            return;
        size_t e = 0;
        for (int i = 0; i < n; i++) {
            uint8_t b = in[i];
            if (b == '\r' || b == '\n') {
                if (b == '\n' && after_cr && len == 0) {
                    after_cr = 0;
                    continue;
                }
                after_cr = b == '\r';
                console_write(echo, e);
                e = 0;
                console_write("\r\n", 2);
                line[len] = '\0';
                len = 0;
                execute(line);
                console_prompt();
                continue;
            }
            after_cr = 0;
            if (b == 0x08 || b == 0x7F) {
                if (len > 0) {
                    len--;
                    memcpy(echo + e, "\b \b", 3);
                    e += 3;
                }
            } else if (b >= 0x20 && b < 0x7F && len < MAX_LINE) {
                line[len++] = (char)b;
                echo[e++] = (char)b;
            }
        }
        console_write(echo, e);
    }
}

/* ------------------------------------------------------------------ main */

/* A crash must be visible on the console (the device file forbids it). */
static void fatal(int sig)
{
    static const char msg[] = "\r\n>>> FATAL ERROR: firmware crashed (signal)\r\n";
    ssize_t r = write(1, msg, sizeof msg - 1);
    (void)r;
    (void)sig;
    _exit(128 + 6);
}

static void usage(void)
{
    fprintf(stderr, "usage: fw --flash FILE [--reset-cause power-on|brown-out|software] [--state-fd N]\n"
                    "          [--ca FILE] [--page-ms MS] [--erase-ms MS] [--app mqtt|http] [--rtc-file FILE]\n");
}

static int parse_args(int argc, char **argv)
{
    static const struct option opts[] = {
        { "flash", required_argument, NULL, 'f' },     { "reset-cause", required_argument, NULL, 'r' },
        { "state-fd", required_argument, NULL, 's' },  { "ca", required_argument, NULL, 'c' },
        { "page-ms", required_argument, NULL, 'p' },   { "erase-ms", required_argument, NULL, 'e' },
        { "app", required_argument, NULL, 'a' },       { "rtc-file", required_argument, NULL, 't' },
        { "help", no_argument, NULL, 'h' },            { NULL, 0, NULL, 0 },
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'f': g_opt.flash = optarg; break;
        case 'r':
            if (strcmp(optarg, "power-on") && strcmp(optarg, "brown-out") && strcmp(optarg, "software")) {
                fprintf(stderr, "fw: bad --reset-cause %s\n", optarg);
                return -1;
            }
            g_opt.reset_cause = optarg;
            break;
        case 's': g_opt.state_fd = atoi(optarg); break;
        case 'c': g_opt.ca = optarg; break;
        case 'p': g_opt.page_ms = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'e': g_opt.erase_ms = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'a':
            if (strcmp(optarg, "mqtt") == 0)
                g_opt.app = APP_MQTT;
            else if (strcmp(optarg, "http") == 0)
                g_opt.app = APP_HTTP;
            else {
                fprintf(stderr, "fw: bad --app %s (mqtt, http)\n", optarg);
                return -1;
            }
            break;
        case 't': g_opt.rtc_file = optarg; break;
        default: return -1;
        }
    }
    if (optind != argc || g_opt.flash == NULL)
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    static char rtc_default[PATH_MAX];

    if (parse_args(argc, argv) != 0) {
        usage();
        return 2;
    }
    port_set_argv(argc, argv);
    signal(SIGPIPE, SIG_IGN);   /* a server that hangs up is an error code, not a death */
    signal(SIGSEGV, fatal);
    signal(SIGBUS, fatal);
    signal(SIGFPE, fatal);
    signal(SIGILL, fatal);
    signal(SIGABRT, fatal);

    port_uart_init();
    port_state_init(g_opt.state_fd);
#if FW_CLOCK == FW_CLOCK_RTC
    if (g_opt.rtc_file == NULL) {
        /* The battery domain sits beside the flash: <flash dir>/rtc. */
        const char *slash = strrchr(g_opt.flash, '/');
        if (slash == NULL)
            snprintf(rtc_default, sizeof rtc_default, "rtc");
        else
            snprintf(rtc_default, sizeof rtc_default, "%.*s/rtc", (int)(slash - g_opt.flash), g_opt.flash);
        g_opt.rtc_file = rtc_default;
    }
    port_rtc_init(g_opt.rtc_file);
#else
    (void)rtc_default;
    port_rtc_init(NULL);
#endif
    boot();
    shell_run();
    return 0;
}
