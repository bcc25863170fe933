/*
 * The TLS port (tls_port.h) on wolfSSL 5.5 (TLS 1.2 with RFC 5077 tickets,
 * TLS 1.3 with PSK tickets).  Link with -lwolfssl.
 *
 * What wolfSSL 5.5.4 (Debian 12) really does, found by experiment against the
 * reference server; tests_c/wolfssl_port_check.c shows every point below
 * (tests/cfirmware/test_wolfssl_port.py runs it and checks the server's side).
 *
 * - Tickets.  wolfSSL_set_SessionTicket_cb is called for the TLS 1.2
 *   NewSessionTicket (inside wolfSSL_connect) and for every TLS 1.3
 *   NewSessionTicket (inside wolfSSL_read: the server sends them after the
 *   handshake; a read that times out still takes them in).  Inside the
 *   callback the session's lifetime is NOT yet updated (it still holds the
 *   previous ticket's value, or 0), so the lifetime is read from the session
 *   afterwards, in fill_info().
 *
 * - Save before read (TLS 1.3).  Right after wolfSSL_connect of a full TLS 1.3
 *   handshake the session holds no ticket (wolfSSL_SESSION_has_ticket == 0;
 *   i2d would still give 960 bytes: secrets and peer chain, no ticket), so
 *   tls_port_save_session returns 0.  After a resumed handshake the session
 *   still holds the ticket that was offered (still good: OpenSSL's TLS 1.3
 *   tickets can be reused), and after a refused offer it holds the refused
 *   ticket: save counts a ticket as resumable only if it arrived on this
 *   connection or was just accepted (see tls_port_save_session).
 *
 * - A refused offer.  TLS 1.3: the server ignores a PSK it cannot use and does
 *   a full handshake (info->resumed == 0, no failure).  TLS 1.2: wolfSSL 5.5.4
 *   cannot follow the server into a full handshake: with a ticket in the
 *   session it takes the ServerHello as a resumption and fails on the
 *   server's Certificate with -373 "Out of order message" (it sends
 *   unexpected_message).  Fixed upstream late 2024 (wolfSSL PR #8097/#8108).
 *   So on this stack a refused TLS 1.2 ticket (expired on the server, rotated
 *   or foreign keys, damaged) is a handshake FAILURE with *offer_refused = 1,
 *   and the core must retry without the blob.  Also a failure: a TLS 1.3
 *   session offered (TLS_AUTO) to a server that only does TLS 1.2 (-326
 *   "record layer version error": wolfSSL will not resume across versions).
 *   A blob whose secret is wrong fails in both versions: TLS 1.2 -305 "verify
 *   mac problem" (the server resumed; its Finished does not decrypt), TLS 1.3
 *   -313 with the server's alert illegal_parameter (binder does not verify).
 *
 * - Expiry is not wolfSSL's call here.  wolfSSL_set_session checks bornOn +
 *   lifetime against time(), the HOST clock, and in this build
 *   (WOLFSSL_ERROR_CODE_OPENSSL) returns SUCCESS for an expired session
 *   without offering it: a silent full handshake.  Whether a stored session
 *   is still worth offering is the core's decision, made with the device's
 *   clock (which may have stopped while the device was off: then it offers
 *   and the server refuses the ticket as expired), and the server's.  So
 *   load_blob() sets bornOn to now in the copy it hands to wolfSSL, and
 *   connect checks wolfSSL_session_reused() right after wolfSSL_set_session
 *   (it reads options.resuming): a session wolfSSL would still not offer is
 *   refused before connecting, with *offer_refused = 1.  The TLS 1.3 ticket
 *   age still comes from ticketSeen and the device clock (see Time).
 *   A blob of the other version when the version is pinned is refused the
 *   same way (wolfSSL would offer it anyway).  TLS_AUTO with a TLS 1.2
 *   blob: wolfSSL sends a TLS 1.2-only ClientHello to resume it (that is
 *   wolfSSL's design, kept).
 *
 * - Blob size.  The blob holds the peer certificate chain (SESSION_CERTS):
 *   ~1170 bytes (TLS 1.2) / ~1210 bytes (TLS 1.3) with the reference server's
 *   P-256 chain, 1961 / 2001 with its RSA-2048 chain.  wolfSSL 5.5.4 appends
 *   the new chain to the one loaded from the blob when an offer is refused
 *   and a full handshake follows: the blob grows by a chain (~875 bytes
 *   here) per refused offer, up to wolfSSL's 9 certificates (4293 bytes
 *   here).  The chain is not needed to resume, so load_blob() drops it
 *   from the copy it hands to wolfSSL_d2i_SSL_SESSION; blobs saved after a
 *   resumed handshake are therefore smaller: 294 (TLS 1.2) / 334 (TLS 1.3).
 *
 * - Time.  TLS 1.3 ticket age = TimeNowInMilliseconds() - ticketSeen, and in
 *   this build TimeNowInMilliseconds() is gettimeofday() (ticketSeen is kept
 *   in the blob as 64-bit milliseconds).  libwolfssl.so imports gettimeofday
 *   (and time) from libc through the PLT, and an executable's own definition
 *   comes first in symbol lookup (the linker exports it because a shared
 *   library in the link references it).  So this file defines gettimeofday()
 *   as the device clock, port_clock_ms() (the core's, port.h): wolfSSL's
 *   ticketSeen and claimed ticket age then come from the device's clock.  A
 *   re-entrant call (a port_clock_ms built on gettimeofday) gets the host
 *   clock, so that is safe.  tls_port_init fails if the hook is not in effect
 *   (symbols hidden at link time).  Everything else in the firmware that
 *   calls gettimeofday() also gets the device clock; clock_gettime() and
 *   time() stay the host's.  time() is NOT interposed on purpose: wolfSSL
 *   uses it for certificate validity dates (and the expiry check above),
 *   and a device with only an uptime counter could otherwise verify no
 *   certificate.  With an uptime clock restarted behind the stored
 *   ticketSeen the claimed age wraps (~3.5e9 ms); OpenSSL still resumes (it
 *   only uses the age for early data).  Define TLS_WOLFSSL_NO_CLOCK_HOOK to
 *   leave gettimeofday alone.
 *
 *   On a real device there is no such hook: wolfSSL's time source is chosen
 *   when wolfSSL is built, in its user_settings.h (USER_TICKS with your own
 *   TimeNowInMilliseconds() and LowResTimer(), or TIME_OVERRIDES with an
 *   XTIME() that reads the RTC).  This gettimeofday() is the host build's
 *   stand-in for that.  Unlike XTIME on a device, time() (certificate
 *   validity) stays the host's clock here, so `date set` moves ticket ages
 *   but not certificate checks.
 *
 * Secrets (tickets, master secrets, blobs) are never printed here.
 */
#define _GNU_SOURCE 1

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/error-ssl.h>
#include <wolfssl/wolfcrypt/error-crypt.h>

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "tls_port.h"

#if defined(__has_include)
#if __has_include("port.h")
#include "port.h"
#endif
#endif

/* Device clock in milliseconds, provided by the core (port.h). */
int64_t port_clock_ms(void);

#define CONNECT_TIMEOUT_MS   10000  /* TCP connect, per address */
#define HANDSHAKE_TIMEOUT_MS 15000
#define WRITE_TIMEOUT_MS     10000
#define CLOSE_TIMEOUT_MS      1000

/* wolfSSL 5.5 session serialisation (wolfSSL_i2d_SSL_SESSION), as far as this file reads it. */
#define BLOB_SECRET_LEN 48
#define BLOB_ID_LEN     32

struct tls_conn {
    int fd;
    WOLFSSL *ssl;
    int offered;          /* a session was handed to wolfSSL_set_session */
    int tickets;          /* NewSessionTickets taken in (ticket callback) */
};

static WOLFSSL_CTX *g_ctx;

/* ------------------------------------------------------------------------ */
/* small helpers                                                             */

static void put_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void put_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int64_t host_ms(int clock_id)
{
    struct timespec ts;
    clock_gettime(clock_id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void) { return host_ms(CLOCK_MONOTONIC); }

static void wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n--)
        *v++ = 0;
}

static void set_sock_timeout(int fd, int opt, int ms)
{
    struct timeval tv;
    if (ms < 1)
        ms = 1;  /* 0 would mean "wait forever" */
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof tv);
}

/* "-313 received alert fatal error (server alert 47 illegal_parameter)" */
static void describe_error(WOLFSSL *ssl, int code, char *out, size_t outlen)
{
    char reason[96];
    WOLFSSL_ALERT_HISTORY h;
    size_t n;

    wolfSSL_ERR_error_string_n((unsigned long)code, reason, sizeof reason);
    n = (size_t)snprintf(out, outlen, "%d %s", code, reason);
    if (n >= outlen || !ssl)
        return;
    memset(&h, 0, sizeof h);
    if (wolfSSL_get_alert_history(ssl, &h) != WOLFSSL_SUCCESS)
        return;
    if (code == FATAL_ERROR && h.last_rx.code >= 0)
        snprintf(out + n, outlen - n, " (server alert %d %s)", h.last_rx.code,
                 wolfSSL_alert_desc_string_long(h.last_rx.code));
    else if (h.last_tx.code > 0)
        snprintf(out + n, outlen - n, " (sent alert %d %s)", h.last_tx.code,
                 wolfSSL_alert_desc_string_long(h.last_tx.code));
}

/* ------------------------------------------------------------------------ */
/* the device clock as wolfSSL's "now" (see the header comment)             */
/* Host build only: a device configures this in wolfSSL's user_settings.h   */
/* (USER_TICKS / TIME_OVERRIDES); time() is left to the host's clock.       */

#ifndef TLS_WOLFSSL_NO_CLOCK_HOOK
static __thread int g_in_clock;

int gettimeofday(struct timeval *__restrict tv, void *__restrict tz)
{
    int64_t ms;

    (void)tz;
    if (g_in_clock) {
        ms = host_ms(CLOCK_REALTIME);  /* port_clock_ms itself asked: the host's clock */
    } else {
        g_in_clock = 1;
        ms = port_clock_ms();
        g_in_clock = 0;
    }
    {
        int64_t s = ms / 1000, rem = ms % 1000;
        if (rem < 0) {
            rem += 1000;
            s -= 1;
        }
        tv->tv_sec = (time_t)s;  /* glibc declares tv nonnull */
        tv->tv_usec = (suseconds_t)(rem * 1000);
    }
    return 0;
}
#endif

/* ------------------------------------------------------------------------ */
/* blobs                                                                     */

/* What this file reads of a wolfSSL 5.5 session blob (front part only). */
struct blob_view {
    int ok;                  /* the front part parsed; the fields below are valid */
    unsigned side;           /* 1 = WOLFSSL_CLIENT_END */
    unsigned major, minor;   /* protocol version */
    size_t chain_off;        /* the chain-count byte */
    size_t chain_end;        /* first byte after the chain */
    unsigned chain_count;
};

static void blob_parse(const uint8_t *b, size_t len, struct blob_view *v)
{
    size_t i;
    unsigned k;

    memset(v, 0, sizeof *v);
    /* side | bornOn(4) | timeout(4) | sessionIDSz | sessionID | masterSecret(48) | haveEMS | altIdLen | altId */
    if (len < 10)
        return;
    v->side = b[0];
    i = 10 + (size_t)b[9];
    if (b[9] > BLOB_ID_LEN || len < i + BLOB_SECRET_LEN + 2)
        return;
    i += BLOB_SECRET_LEN + 1;
    if (b[i] != 0 && b[i] != BLOB_ID_LEN)
        return;
    i += 1 + b[i];
    /* chain: count | (len16 | cert)* */
    if (len < i + 1)
        return;
    v->chain_off = i;
    v->chain_count = b[i++];
    for (k = 0; k < v->chain_count; k++) {
        size_t cl;
        if (len < i + 2)
            return;
        cl = ((size_t)b[i] << 8) | b[i + 1];
        i += 2;
        if (len < i + cl)
            return;
        i += cl;
    }
    v->chain_end = i;
    /* version(2) | cipher suite(2) | ... | ticketLen(2) | ticket */
    if (len < i + 4)
        return;
    v->major = b[i];
    v->minor = b[i + 1];
    v->ok = 1;
}

static const char *version_name(unsigned major, unsigned minor)
{
    if (major == 3 && minor == 3)
        return "TLS 1.2";
    if (major == 3 && minor == 4)
        return "TLS 1.3";
    return "an unknown version";
}

/*
 * d2i the blob and apply the checks of tls_port_check_blob.  What is handed to
 * wolfSSL_d2i_SSL_SESSION is a copy without the peer chain and with bornOn set
 * to now (see the header comment: chain growth, lifetime check).  Returns the
 * session (caller frees) or NULL with the reason in err.  *view gets what
 * blob_parse found.
 */
static WOLFSSL_SESSION *load_blob(const uint8_t *blob, size_t len, struct blob_view *view, char *err, size_t errlen)
{
    WOLFSSL_SESSION *s;
    const unsigned char *p;
    uint8_t *copy = NULL;
    const uint8_t *src = blob;
    size_t srclen = len;

    if (!blob || len == 0) {
        put_err(err, errlen, "empty blob");
        return NULL;
    }
    if (len > 0x7fffffff) {
        put_err(err, errlen, "blob of %zu bytes is too big", len);
        return NULL;
    }
    blob_parse(blob, len, view);
    if (view->ok) {
        uint32_t now = (uint32_t)time(NULL);

        srclen = len - (view->chain_end - view->chain_off) + 1;
        copy = malloc(srclen);
        if (!copy) {
            put_err(err, errlen, "out of memory");
            return NULL;
        }
        memcpy(copy, blob, view->chain_off);
        copy[view->chain_off] = 0;  /* no peer chain */
        memcpy(copy + view->chain_off + 1, blob + view->chain_end, len - view->chain_end);
        /* bornOn = now: wolfSSL's own lifetime check (host clock) always passes */
        copy[1] = (uint8_t)(now >> 24);
        copy[2] = (uint8_t)(now >> 16);
        copy[3] = (uint8_t)(now >> 8);
        copy[4] = (uint8_t)now;
        src = copy;
    }
    p = src;
    s = wolfSSL_d2i_SSL_SESSION(NULL, &p, (long)srclen);
    if (!s && copy) {  /* not the layout blob_parse assumed after all: the blob as it is */
        wipe(copy, srclen);
        free(copy);
        copy = NULL;
        src = blob;
        srclen = len;
        p = src;
        s = wolfSSL_d2i_SSL_SESSION(NULL, &p, (long)srclen);
    }
    if (s && (size_t)(p - src) != srclen) {
        put_err(err, errlen, "wolfSSL read %ld of the blob's %zu bytes (trailing bytes)", (long)(p - src), srclen);
        wolfSSL_SESSION_free(s);
        s = NULL;
    } else if (!s) {
        put_err(err, errlen, "wolfSSL_d2i_SSL_SESSION refused the blob (truncated or not a wolfSSL %s session)",
                LIBWOLFSSL_VERSION_STRING);
    }
    if (copy) {
        wipe(copy, srclen);
        free(copy);
    }
    if (!s)
        return NULL;
    if (!view->ok) {
        put_err(err, errlen, "blob layout is not wolfSSL 5.5's (cannot read its version)");
    } else if (view->side != WOLFSSL_CLIENT_END) {
        put_err(err, errlen, "blob is a server-side session (side %u)", view->side);
    } else if (!(view->major == 3 && (view->minor == 3 || view->minor == 4))) {
        put_err(err, errlen, "blob is a session of protocol version %u.%u, not TLS 1.2 or 1.3", view->major,
                view->minor);
    } else if (wolfSSL_SESSION_has_ticket(s) != WOLFSSL_SUCCESS) {
        /* TLS 1.3 resumes only with a ticket; TLS 1.2 could use the session id
         * with a server-side cache, but this port stores ticket sessions only. */
        put_err(err, errlen, "blob is a %s session without a ticket (nothing to resume with)",
                version_name(view->major, view->minor));
    } else {
        return s;
    }
    wolfSSL_SESSION_free(s);
    return NULL;
}

int tls_port_check_blob(const uint8_t *blob, size_t len, char *err, size_t errlen)
{
    struct blob_view view;
    WOLFSSL_SESSION *s = load_blob(blob, len, &view, err, errlen);

    if (!s)
        return TLS_BLOB_REFUSED;
    wolfSSL_SESSION_free(s);
    return TLS_BLOB_OK;
}

/* ------------------------------------------------------------------------ */
/* init, name, versions                                                      */

int tls_port_init(const char *ca_file, char *err, size_t errlen)
{
    int ret;

    if (wolfSSL_Init() != WOLFSSL_SUCCESS) {
        put_err(err, errlen, "wolfSSL_Init failed");
        return -1;
    }
    if (g_ctx) {
        wolfSSL_CTX_free(g_ctx);
        g_ctx = NULL;
    }
    g_ctx = wolfSSL_CTX_new(wolfSSLv23_client_method());
    if (!g_ctx) {
        put_err(err, errlen, "wolfSSL_CTX_new failed");
        return -1;
    }
    if (!ca_file || access(ca_file, R_OK) != 0) {
        put_err(err, errlen, "CA file %s: %s", ca_file ? ca_file : "(none)", ca_file ? strerror(errno) : "not given");
        wolfSSL_CTX_free(g_ctx);
        g_ctx = NULL;
        return -1;
    }
    wolfSSL_ERR_clear_error();
    ret = wolfSSL_CTX_load_verify_locations(g_ctx, ca_file, NULL);
    if (ret != WOLFSSL_SUCCESS) {
        char why[128];
        int code = ret < 0 ? ret : (int)wolfSSL_ERR_get_error();  /* the first error of this load */
        if (code > 0)
            code = -code;  /* the queue holds wolfSSL codes made positive */
        if (code)
            describe_error(NULL, code, why, sizeof why);
        else
            snprintf(why, sizeof why, "no usable certificate in it");
        put_err(err, errlen, "CA file %s: %s", ca_file, why);
        wolfSSL_CTX_free(g_ctx);
        g_ctx = NULL;
        return -1;
    }
#ifndef TLS_WOLFSSL_NO_CLOCK_HOOK
    {
        /* libwolfssl.so binds gettimeofday like dlsym(RTLD_DEFAULT) finds it.
         * NULL (a static build) cannot tell, and there the linker took ours. */
        void *bound = dlsym(RTLD_DEFAULT, "gettimeofday");
        if (bound && bound != (void *)&gettimeofday) {
            put_err(err, errlen, "clock hook not in effect: gettimeofday resolves to the C library, not to the "
                                 "firmware (symbols hidden at link time?); wolfSSL would not use port_clock_ms");
            wolfSSL_CTX_free(g_ctx);
            g_ctx = NULL;
            return -1;
        }
    }
#endif
    wolfSSL_CTX_set_verify(g_ctx, WOLFSSL_VERIFY_PEER, NULL);
    /* Nothing resumes from a RAM cache: only from the blob the core hands in,
     * so a connection behaves the same before and after a power loss. */
    wolfSSL_CTX_set_session_cache_mode(g_ctx, WOLFSSL_SESS_CACHE_OFF);
    return 0;
}

const char *tls_port_name(void)
{
    static char name[48];
    snprintf(name, sizeof name, "wolfSSL %s", wolfSSL_lib_version());
    return name;
}

unsigned tls_port_versions(void)
{
    unsigned v = 0;
#ifndef WOLFSSL_NO_TLS12
    v |= 1u << 0;
#endif
#ifdef WOLFSSL_TLS13
    v |= 1u << 1;
#endif
    return v;
}

/* ------------------------------------------------------------------------ */
/* connect                                                                   */

static int ticket_cb(WOLFSSL *ssl, const unsigned char *ticket, int len, void *ctx)
{
    struct tls_conn *c = ctx;
    (void)ssl;
    (void)ticket;  /* never logged */
    if (c && len > 0)
        c->tickets++;
    return 0;
}

static int is_ip_literal(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* The handshake failed because of the certificate, not because of what we offered. */
static int is_cert_error(WOLFSSL *ssl, int code)
{
    switch (code) {
    case DOMAIN_NAME_MISMATCH: case IPADDR_MISMATCH: case VERIFY_CERT_ERROR: case NO_PEER_CERT:
    case NOT_CA_ERROR: case MAX_CHAIN_ERROR: case KEYUSE_SIGNATURE_E: case KEYUSE_ENCIPHER_E:
    case EXTKEYUSE_AUTH_E: case ASN_NO_SIGNER_E: case ASN_AFTER_DATE_E: case ASN_BEFORE_DATE_E:
    case ASN_SIG_CONFIRM_E: case ASN_SELF_SIGNED_E: case ASN_PARSE_E:
        return 1;
    default:
        return wolfSSL_get_verify_result(ssl) != 0;
    }
}

static void fill_info(struct tls_conn *c, struct tls_info *info)
{
    const char *cipher;
    WOLFSSL_SESSION *s;

    if (!info)
        return;
    memset(info, 0, sizeof *info);
    info->version = wolfSSL_version(c->ssl) == TLS1_3_VERSION ? TLS_V13
                  : wolfSSL_version(c->ssl) == TLS1_2_VERSION ? TLS_V12 : 0;
    info->resumed = wolfSSL_session_reused(c->ssl) ? 1 : 0;
    /* The names OpenSSL (the reference server) uses: IANA for TLS 1.3
     * ("TLS_AES_256_GCM_SHA384", wolfSSL's own is "TLS13-AES256-GCM-SHA384"),
     * OpenSSL-style for TLS 1.2 ("ECDHE-ECDSA-AES256-GCM-SHA384"). */
    if (info->version == TLS_V13) {
        int suite = wolfSSL_get_current_cipher_suite(c->ssl);
        cipher = wolfSSL_get_cipher_name_iana_from_suite((unsigned char)(suite >> 8), (unsigned char)suite);
    } else {
        cipher = wolfSSL_get_cipher_name(c->ssl);
    }
    snprintf(info->cipher, sizeof info->cipher, "%s", cipher ? cipher : "?");
    info->tickets_received = c->tickets;
    /* The session's timeout is the newest ticket's lifetime, but only once the
     * callback has returned (inside it, it still has the previous value). */
    if (c->tickets > 0 && (s = wolfSSL_get1_session(c->ssl)) != NULL) {
        info->ticket_lifetime = (uint32_t)wolfSSL_SESSION_get_ticket_lifetime_hint(s);
        wolfSSL_SESSION_free(s);
    }
}

static void conn_free(struct tls_conn *c)
{
    if (!c)
        return;
    if (c->ssl)
        wolfSSL_free(c->ssl);
    if (c->fd >= 0)
        close(c->fd);
    free(c);
}

struct tls_conn *tls_port_connect(const char *host, int port, const char *sni, enum tls_version version,
                                  const uint8_t *blob, size_t blob_len, struct tls_info *info,
                                  int *offer_refused, char *err, size_t errlen)
{
    struct tls_conn *c;
    const char *check_name;
    int min_v, max_v, ret, code = 0;
    int64_t deadline;

    if (offer_refused)
        *offer_refused = 0;
    if (info)
        memset(info, 0, sizeof *info);
    if (!g_ctx) {
        put_err(err, errlen, "TLS port not initialised (tls_port_init not called or failed)");
        return NULL;
    }
    if (!host || !*host) {
        put_err(err, errlen, "no host");
        return NULL;
    }
    switch (version) {
    case TLS_V12: min_v = max_v = TLS1_2_VERSION; break;
    case TLS_V13: min_v = max_v = TLS1_3_VERSION; break;
    case TLS_AUTO: min_v = TLS1_2_VERSION; max_v = TLS1_3_VERSION; break;
    default:
        put_err(err, errlen, "unknown TLS version %d", (int)version);
        return NULL;
    }
    c = calloc(1, sizeof *c);
    if (!c) {
        put_err(err, errlen, "out of memory");
        return NULL;
    }
    c->fd = -1;
    c->ssl = wolfSSL_new(g_ctx);
    if (!c->ssl) {
        put_err(err, errlen, "wolfSSL_new failed");
        goto fail;
    }
    if (wolfSSL_set_min_proto_version(c->ssl, min_v) != WOLFSSL_SUCCESS ||
        wolfSSL_set_max_proto_version(c->ssl, max_v) != WOLFSSL_SUCCESS) {
        put_err(err, errlen, "cannot restrict wolfSSL to the requested TLS version(s)");
        goto fail;
    }
    if (wolfSSL_UseSessionTicket(c->ssl) != WOLFSSL_SUCCESS ||
        wolfSSL_set_SessionTicket_cb(c->ssl, ticket_cb, c) != WOLFSSL_SUCCESS) {
        put_err(err, errlen, "cannot enable session tickets");
        goto fail;
    }
    check_name = (sni && *sni) ? sni : host;
    if (sni && *sni && wolfSSL_UseSNI(c->ssl, WOLFSSL_SNI_HOST_NAME, sni, (unsigned short)strlen(sni)) != WOLFSSL_SUCCESS) {
        put_err(err, errlen, "cannot set SNI %s", sni);
        goto fail;
    }
    if (is_ip_literal(check_name)) {
        /* wolfSSL_check_domain_name compares DNS names: an address is checked against the IP SANs */
        if (wolfSSL_X509_VERIFY_PARAM_set1_ip_asc(wolfSSL_get0_param(c->ssl), check_name) != WOLFSSL_SUCCESS) {
            put_err(err, errlen, "cannot check the certificate against address %s", check_name);
            goto fail;
        }
    } else if (wolfSSL_check_domain_name(c->ssl, check_name) != WOLFSSL_SUCCESS) {
        put_err(err, errlen, "cannot check the certificate against name %s", check_name);
        goto fail;
    }

    if (blob && blob_len > 0) {  /* a zero-length blob is no blob */
        struct blob_view view;
        char why[160];
        WOLFSSL_SESSION *s = load_blob(blob, blob_len, &view, why, sizeof why);

        if (s && version != TLS_AUTO && view.minor != (version == TLS_V13 ? 4u : 3u)) {
            snprintf(why, sizeof why, "blob is a %s session, the connection is pinned to TLS 1.%d",
                     version_name(view.major, view.minor), version == TLS_V13 ? 3 : 2);
            wolfSSL_SESSION_free(s);
            s = NULL;
        }
        /* wolfSSL_set_session can decline a session and still return success
         * (it did so for expired ones, before load_blob reset bornOn): only
         * wolfSSL_session_reused(), which reads options.resuming before the
         * handshake, says whether the session will really be offered. */
        if (s && (wolfSSL_set_session(c->ssl, s) != WOLFSSL_SUCCESS || !wolfSSL_session_reused(c->ssl))) {
            snprintf(why, sizeof why, "wolfSSL_set_session did not take it");
            wolfSSL_SESSION_free(s);
            s = NULL;
        }
        if (!s) {
            put_err(err, errlen, "session not offered: %s", why);
            if (offer_refused)
                *offer_refused = 1;
            goto fail;
        }
        wolfSSL_SESSION_free(s);  /* wolfSSL_set_session keeps its own copy */
        c->offered = 1;
    }

    c->fd = port_tcp_connect(host, port, CONNECT_TIMEOUT_MS, err, errlen);
    if (c->fd < 0)
        goto fail;
    if (wolfSSL_set_fd(c->ssl, c->fd) != WOLFSSL_SUCCESS) {
        put_err(err, errlen, "wolfSSL_set_fd failed");
        goto fail;
    }
#ifdef MSG_NOSIGNAL
    wolfSSL_SetIOWriteFlags(c->ssl, MSG_NOSIGNAL);
#endif

    deadline = mono_ms() + HANDSHAKE_TIMEOUT_MS;
    for (;;) {
        int64_t left = deadline - mono_ms();
        if (left <= 0) {
            put_err(err, errlen, "handshake: timed out after %d s", HANDSHAKE_TIMEOUT_MS / 1000);
            goto fail;  /* a silent server: not a refusal of the offer */
        }
        set_sock_timeout(c->fd, SO_RCVTIMEO, (int)left);
        set_sock_timeout(c->fd, SO_SNDTIMEO, (int)left);
        ret = wolfSSL_connect(c->ssl);
        if (ret == WOLFSSL_SUCCESS)
            break;
        code = wolfSSL_get_error(c->ssl, ret);
        if (code == WOLFSSL_ERROR_WANT_READ || code == WOLFSSL_ERROR_WANT_WRITE)
            continue;
        {
            char why[200];
            describe_error(c->ssl, code, why, sizeof why);
            put_err(err, errlen, "handshake: %s", why);
        }
        /* Refused offer: any failure once a session was offered, except a
         * certificate problem (only a full handshake checks one, so the offer
         * was not taken anyway), a broken transport (reset, socket error) and
         * a timeout.  A server that closes the connection (FIN) in reply to the
         * offer counts as refusing it. */
        if (c->offered && offer_refused && !is_cert_error(c->ssl, code) && code != SOCKET_ERROR_E)
            *offer_refused = 1;
        wolfSSL_ERR_clear_error();  /* OpenSSL-style error queue: nothing should pile up over many attempts */
        goto fail;
    }
    fill_info(c, info);
    return c;

fail:
    conn_free(c);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* data                                                                      */

int tls_port_write(struct tls_conn *c, const uint8_t *buf, size_t len)
{
    size_t done = 0;
    int64_t deadline = mono_ms() + WRITE_TIMEOUT_MS;

    if (!c || !c->ssl || (!buf && len))
        return -1;
    while (done < len) {
        int chunk = len - done > 16384 ? 16384 : (int)(len - done);
        int64_t left = deadline - mono_ms();
        int n, code;

        if (left <= 0)
            return -2;
        set_sock_timeout(c->fd, SO_SNDTIMEO, (int)left);
        set_sock_timeout(c->fd, SO_RCVTIMEO, (int)left);  /* a write may first have to read (TLS 1.3 key update) */
        n = wolfSSL_write(c->ssl, buf + done, chunk);
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        code = wolfSSL_get_error(c->ssl, n);
        if (code == WOLFSSL_ERROR_WANT_WRITE || code == WOLFSSL_ERROR_WANT_READ)
            continue;
        if (code == WOLFSSL_ERROR_ZERO_RETURN)
            return 0;
        return -1;
    }
    return (int)done;
}

/*
 * timeout_ms < 0: wait without limit.  Returns bytes read, 0 on close_notify,
 * -2 on timeout, -1 on any other error (including a TCP close without
 * close_notify, i.e. a truncated connection).  TLS 1.3 NewSessionTickets the
 * server sends are processed here (tickets_received grows).
 */
int tls_port_read(struct tls_conn *c, uint8_t *buf, size_t len, int timeout_ms)
{
    int64_t deadline = timeout_ms < 0 ? 0 : mono_ms() + timeout_ms;
    int sz = len > 0x7fffffff ? 0x7fffffff : (int)len;

    if (!c || !c->ssl || !buf || len == 0)
        return -1;
    for (;;) {
        int n, code;
        int64_t left = 0;

        if (timeout_ms >= 0) {
            left = deadline - mono_ms();
            set_sock_timeout(c->fd, SO_RCVTIMEO, left > 0 ? (int)left : 1);
        } else {
            struct timeval none = {0, 0};
            setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
        }
        n = wolfSSL_read(c->ssl, buf, sz);
        if (n > 0)
            return n;
        code = wolfSSL_get_error(c->ssl, n);
        if (code == WOLFSSL_ERROR_WANT_READ || code == WOLFSSL_ERROR_WANT_WRITE) {
            if (timeout_ms >= 0 && deadline - mono_ms() <= 0)
                return -2;
            continue;
        }
        if (code == WOLFSSL_ERROR_ZERO_RETURN)
            return 0;
        return -1;
    }
}

void tls_port_info(struct tls_conn *c, struct tls_info *info)
{
    if (c && c->ssl)
        fill_info(c, info);
    else if (info)
        memset(info, 0, sizeof *info);
}

/*
 * The session is worth storing when it holds a ticket that is good now: one
 * that arrived on this connection, or the offered one the server just
 * accepted.  A TLS 1.3 session right after the handshake (tickets not read
 * yet) holds none, and after a refused offer it still holds the refused one:
 * both give 0.
 */
int tls_port_save_session(struct tls_conn *c, uint8_t *out, size_t cap, int need_ticket)
{
    WOLFSSL_SESSION *s;
    unsigned char *p;
    int need, got, ret;

    if (!c || !c->ssl)
        return TLS_SAVE_FAILED;
    s = wolfSSL_get1_session(c->ssl);
    if (!s)
        return TLS_SAVE_FAILED;
    if (need_ticket && (wolfSSL_SESSION_has_ticket(s) != WOLFSSL_SUCCESS ||
                        !(c->tickets > 0 || (c->offered && wolfSSL_session_reused(c->ssl))))) {
        ret = 0;
        goto out;
    }
    need = wolfSSL_i2d_SSL_SESSION(s, NULL);
    if (need <= 0) {
        ret = TLS_SAVE_FAILED;
        goto out;
    }
    if (!out || (size_t)need > cap) {
        ret = TLS_SAVE_TOO_BIG;
        goto out;
    }
    p = out;  /* wolfSSL 5.5 writes at *p (and does not move it) */
    got = wolfSSL_i2d_SSL_SESSION(s, &p);
    ret = got == need ? got : TLS_SAVE_FAILED;
    if (ret < 0)
        wipe(out, cap);
out:
    wolfSSL_SESSION_free(s);
    return ret;
}

void tls_port_close(struct tls_conn *c)
{
    if (!c)
        return;
    if (c->ssl && c->fd >= 0) {
        set_sock_timeout(c->fd, SO_SNDTIMEO, CLOSE_TIMEOUT_MS);
        wolfSSL_shutdown(c->ssl);  /* close_notify; the peer's is not awaited */
    }
    conn_free(c);
}
