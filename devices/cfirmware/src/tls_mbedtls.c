/*
 * The TLS port on Mbed TLS 2.28 (TLS 1.2 client, RFC 5077 session tickets).
 *
 * The session blob is mbedtls_ssl_session_save()'s own format: a version
 * header (library version and the config options that shape a session),
 * then the session: cipher suite, master secret, the peer certificate (this
 * build keeps it: MBEDTLS_SSL_KEEP_PEER_CERTIFICATE), the ticket and its
 * lifetime hint.  mbedtls_ssl_session_load() refuses a blob written by
 * another library version or config with MBEDTLS_ERR_SSL_VERSION_MISMATCH:
 * that is tls_port_check_blob's job at boot, so a firmware update that
 * changes the library discards the stored session once instead of offering
 * garbage forever.
 *
 * One connection at a time (an MCU has one radio): the connection object is
 * static.  Mbed TLS itself allocates from the heap (records, certificates);
 * the core's buffers do not.
 */
#include "port.h"
#include "tls_port.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* First, alone: this port reads 2.28 internals (mbedtls_ssl_session fields
 * such as master, ticket, ticket_len, which 3.x makes private, and
 * mbedtls_ssl_conf_min_version, which 3.x replaces), so another major
 * version should stop here with one clear line, not a page of errors. */
#include <mbedtls/version.h>
#if MBEDTLS_VERSION_NUMBER < 0x021C0000 || MBEDTLS_VERSION_NUMBER >= 0x03000000
#error "tls_mbedtls.c is written for Mbed TLS 2.28 (libmbedtls-dev of Debian 12); 3.x needs a port"
#endif

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/platform.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include "variant.h"

#if !defined(MBEDTLS_SSL_SESSION_TICKETS) || !defined(MBEDTLS_SSL_CLI_C)
#error "this port needs an Mbed TLS built with MBEDTLS_SSL_SESSION_TICKETS and MBEDTLS_SSL_CLI_C"
#endif

#define HANDSHAKE_TIMEOUT_MS 10000
#define TCP_CONNECT_TIMEOUT_MS 10000

struct tls_conn {
    mbedtls_net_context net;
    mbedtls_ssl_context ssl;
    mbedtls_ssl_config conf;
    mbedtls_ssl_session offered;
    int have_offer;
    struct tls_info info;
};

static mbedtls_entropy_context g_entropy;
static mbedtls_ctr_drbg_context g_drbg;
static mbedtls_x509_crt g_ca;
static int g_ready;
static struct tls_conn g_conn;
static int g_conn_busy;

static void errtext(int ret, char *err, size_t errlen, const char *what)
{
    char buf[96];
    mbedtls_strerror(ret, buf, sizeof buf);
    snprintf(err, errlen, "%s: %s (-0x%04x)", what, buf, (unsigned)-ret);
}

int tls_port_init(const char *ca_file, char *err, size_t errlen)
{
    static const char pers[] = "tlsfw";
    int ret;

    mbedtls_entropy_init(&g_entropy);
    mbedtls_ctr_drbg_init(&g_drbg);
    mbedtls_x509_crt_init(&g_ca);
    ret = mbedtls_ctr_drbg_seed(&g_drbg, mbedtls_entropy_func, &g_entropy, (const unsigned char *)pers,
                                sizeof pers - 1);
    if (ret != 0) {
        errtext(ret, err, errlen, "entropy");
        return -1;
    }
    g_ready = 1;
    if (ca_file == NULL || ca_file[0] == '\0') {
        snprintf(err, errlen, "no CA certificate provisioned (--ca)");
        return -1;
    }
    ret = mbedtls_x509_crt_parse_file(&g_ca, ca_file);
    if (ret < 0) {
        errtext(ret, err, errlen, "CA file");
        return -1;
    }
    return 0;
}

const char *tls_port_name(void)
{
    static char name[32];
    char v[18] = MBEDTLS_VERSION_STRING;
#if defined(MBEDTLS_VERSION_C)
    mbedtls_version_get_string(v);   /* the library really linked, not the headers */
#endif
    snprintf(name, sizeof name, "mbedtls %s", v);
    return name;
}

unsigned tls_port_versions(void)
{
    return 1u << 0;   /* Mbed TLS 2.28: TLS 1.2 only (its TLS 1.3 is a 3.x feature) */
}

/* ------------------------------------------------------------ blob format */

#if FW_TICKET_ONLY
/*
 * BUG (ticket-only): a "compact" store that keeps only what looks like the
 * session: the ticket, its lifetime and the cipher suite.  The master secret
 * is not kept, so the session rebuilt at boot has an all-zero one: the
 * server recognises the ticket and resumes, but the Finished messages are
 * computed from a different master secret and cannot verify.
 *
 *   "TKO1" | suite u16 | lifetime u32 | ticket length u16 | ticket
 */
static int ticket_only_save(const mbedtls_ssl_session *s, uint8_t *out, size_t cap)
{
    size_t need = 12 + s->ticket_len;
    if (need > cap || s->ticket_len > 0xFFFF)
        return TLS_SAVE_TOO_BIG;
    memcpy(out, "TKO1", 4);
    out[4] = (uint8_t)(s->ciphersuite >> 8);
    out[5] = (uint8_t)s->ciphersuite;
    for (int i = 0; i < 4; i++)
        out[6 + i] = (uint8_t)(s->ticket_lifetime >> (24 - 8 * i));
    out[10] = (uint8_t)(s->ticket_len >> 8);
    out[11] = (uint8_t)s->ticket_len;
    memcpy(out + 12, s->ticket, s->ticket_len);
    return (int)need;
}

static int ticket_only_load(mbedtls_ssl_session *s, const uint8_t *blob, size_t len)
{
    if (len < 12 || memcmp(blob, "TKO1", 4) != 0)
        return MBEDTLS_ERR_SSL_BAD_INPUT_DATA;
    size_t tlen = (size_t)blob[10] << 8 | blob[11];
    if (tlen == 0 || 12 + tlen != len)
        return MBEDTLS_ERR_SSL_BAD_INPUT_DATA;
    s->ciphersuite = blob[4] << 8 | blob[5];
    s->compression = MBEDTLS_SSL_COMPRESS_NULL;
    s->ticket_lifetime = (uint32_t)blob[6] << 24 | (uint32_t)blob[7] << 16 | (uint32_t)blob[8] << 8 | blob[9];
    s->ticket = mbedtls_calloc(1, tlen);
    if (s->ticket == NULL)
        return MBEDTLS_ERR_SSL_ALLOC_FAILED;
    memcpy(s->ticket, blob + 12, tlen);
    s->ticket_len = tlen;
    memset(s->master, 0, sizeof s->master);   /* the secret that was never stored */
#if defined(MBEDTLS_HAVE_TIME)
    s->start = time(NULL);
#endif
    return 0;
}
#endif

static int blob_load(mbedtls_ssl_session *s, const uint8_t *blob, size_t len)
{
#if FW_TICKET_ONLY
    return ticket_only_load(s, blob, len);
#else
    return mbedtls_ssl_session_load(s, blob, len);
#endif
}

int tls_port_check_blob(const uint8_t *blob, size_t len, char *err, size_t errlen)
{
    mbedtls_ssl_session s;
    mbedtls_ssl_session_init(&s);
    int ret = blob_load(&s, blob, len);
    mbedtls_ssl_session_free(&s);
    if (ret != 0) {
        errtext(ret, err, errlen, "mbedtls_ssl_session_load");
        return TLS_BLOB_REFUSED;
    }
    return TLS_BLOB_OK;
}

/* ------------------------------------------------------------ connection */

static void conn_free(struct tls_conn *c)
{
    mbedtls_net_free(&c->net);
    mbedtls_ssl_free(&c->ssl);
    mbedtls_ssl_config_free(&c->conf);
    mbedtls_ssl_session_free(&c->offered);
    g_conn_busy = 0;
}

/* Failures that say nothing about the offered session: the network, or the
 * server's certificate.  Anything else after an offer may be the offer. */
static int unrelated_to_offer(int ret, uint32_t verify_flags)
{
    if (verify_flags != 0 && ret == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED)
        return 1;
    switch (ret) {
    case MBEDTLS_ERR_NET_CONNECT_FAILED:
    case MBEDTLS_ERR_NET_SOCKET_FAILED:
    case MBEDTLS_ERR_NET_UNKNOWN_HOST:
    case MBEDTLS_ERR_SSL_TIMEOUT:
        return 1;
    default:
        return 0;
    }
}

struct tls_conn *tls_port_connect(const char *host, int port, const char *sni, enum tls_version version,
                                  const uint8_t *blob, size_t blob_len, struct tls_info *info,
                                  int *offer_refused, char *err, size_t errlen)
{
    struct tls_conn *c = &g_conn;
    int ret;

    *offer_refused = 0;
    memset(info, 0, sizeof *info);
    if (!g_ready) {
        snprintf(err, errlen, "TLS not initialised");
        return NULL;
    }
    if (version == TLS_V13) {
        snprintf(err, errlen, "TLS 1.3 not supported by %s", tls_port_name());
        return NULL;
    }
    if (g_conn_busy)
        tls_port_close(c);   /* one radio, one connection */
    memset(c, 0, sizeof *c);
    g_conn_busy = 1;
    mbedtls_net_init(&c->net);
    mbedtls_ssl_init(&c->ssl);
    mbedtls_ssl_config_init(&c->conf);
    mbedtls_ssl_session_init(&c->offered);

    ret = mbedtls_ssl_config_defaults(&c->conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                      MBEDTLS_SSL_PRESET_DEFAULT);
    if (ret != 0) {
        errtext(ret, err, errlen, "config");
        goto fail;
    }
    mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_ca_chain(&c->conf, &g_ca, NULL);
    mbedtls_ssl_conf_rng(&c->conf, mbedtls_ctr_drbg_random, &g_drbg);
    mbedtls_ssl_conf_min_version(&c->conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_max_version(&c->conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_session_tickets(&c->conf, MBEDTLS_SSL_SESSION_TICKETS_ENABLED);
    mbedtls_ssl_conf_read_timeout(&c->conf, HANDSHAKE_TIMEOUT_MS);
    ret = mbedtls_ssl_setup(&c->ssl, &c->conf);
    if (ret != 0) {
        errtext(ret, err, errlen, "setup");
        goto fail;
    }
    /* Mbed TLS uses one name for SNI and for the certificate check; without
     * an SNI the host (address) is what the certificate must name. */
    ret = mbedtls_ssl_set_hostname(&c->ssl, (sni != NULL && sni[0]) ? sni : host);
    if (ret != 0) {
        errtext(ret, err, errlen, "hostname");
        goto fail;
    }
    if (blob != NULL && blob_len > 0) {
        ret = blob_load(&c->offered, blob, blob_len);
        if (ret == 0)
            ret = mbedtls_ssl_set_session(&c->ssl, &c->offered);
        if (ret != 0) {
            /* The stack will not take the stored session: say so, so the
             * core can connect without it. */
            errtext(ret, err, errlen, "stored session not usable");
            *offer_refused = 1;
            goto fail;
        }
        c->have_offer = 1;
    }

    int fd = port_tcp_connect(host, port, TCP_CONNECT_TIMEOUT_MS, err, errlen);
    if (fd < 0)
        goto fail;
    c->net.fd = fd;
    mbedtls_ssl_set_bio(&c->ssl, &c->net, mbedtls_net_send, NULL, mbedtls_net_recv_timeout);

    while ((ret = mbedtls_ssl_handshake(&c->ssl)) != 0) {
        if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE)
            continue;
        uint32_t flags = mbedtls_ssl_get_verify_result(&c->ssl);
        if (ret == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED && flags != 0 && flags != (uint32_t)-1) {
            char vbuf[128];
            int n = mbedtls_x509_crt_verify_info(vbuf, sizeof vbuf, "", flags);
            while (n > 0 && (vbuf[n - 1] == '\n' || vbuf[n - 1] == ' '))
                vbuf[--n] = '\0';
            snprintf(err, errlen, "certificate verify failed: %s", n > 0 ? vbuf : "?");
        } else {
            errtext(ret, err, errlen, "handshake");
        }
        *offer_refused = c->have_offer && !unrelated_to_offer(ret, flags);
        goto fail;
    }

    /* What happened.  Mbed TLS 2.28 has no public "was this resumed" call;
     * a resumption keeps the offered session's master secret, a full
     * handshake derives a new one, so comparing the two says it. */
    mbedtls_ssl_session now;
    mbedtls_ssl_session_init(&now);
    ret = mbedtls_ssl_get_session(&c->ssl, &now);
    if (ret != 0) {
        mbedtls_ssl_session_free(&now);
        errtext(ret, err, errlen, "get_session");
        goto fail;
    }
    c->info.version = TLS_V12;
    snprintf(c->info.cipher, sizeof c->info.cipher, "%s", mbedtls_ssl_get_ciphersuite(&c->ssl));
    c->info.resumed = c->have_offer && memcmp(now.master, c->offered.master, sizeof now.master) == 0;
    /* A new ticket is one that differs from the offered ticket, also after
     * a full handshake: Mbed TLS 2.28 keeps the offered ticket in the
     * session when the server refuses it and sends no NewSessionTicket
     * (tickets off), and storing that would put the refused ticket back in
     * flash.  After a resumption the same ticket means the server did not
     * renew it. */
    int fresh = now.ticket_len > 0 &&
                (!c->have_offer || now.ticket_len != c->offered.ticket_len ||
                 memcmp(now.ticket, c->offered.ticket, now.ticket_len) != 0);
    c->info.tickets_received = fresh ? 1 : 0;
    c->info.ticket_lifetime = now.ticket_len > 0 ? now.ticket_lifetime : 0;
    mbedtls_ssl_session_free(&now);
    *info = c->info;
    return c;

fail:
    conn_free(c);
    return NULL;
}

int tls_port_write(struct tls_conn *c, const uint8_t *buf, size_t len)
{
    for (;;) {
        int ret = mbedtls_ssl_write(&c->ssl, buf, len);
        if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE)
            continue;
        return ret >= 0 ? ret : -1;
    }
}

int tls_port_read(struct tls_conn *c, uint8_t *buf, size_t len, int timeout_ms)
{
    mbedtls_ssl_conf_read_timeout(&c->conf, (uint32_t)(timeout_ms > 0 ? timeout_ms : 1));
    for (;;) {
        int ret = mbedtls_ssl_read(&c->ssl, buf, len);
        if (ret > 0)
            return ret;
        switch (ret) {
        case MBEDTLS_ERR_SSL_WANT_READ:
        case MBEDTLS_ERR_SSL_WANT_WRITE:
            continue;
        case 0:
        case MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY:
        case MBEDTLS_ERR_SSL_CONN_EOF:
            return 0;
        default:
            return -1;   /* MBEDTLS_ERR_SSL_TIMEOUT included */
        }
    }
}

void tls_port_info(struct tls_conn *c, struct tls_info *info)
{
    /* TLS 1.2: everything is known when the handshake ends. */
    *info = c->info;
}

int tls_port_save_session(struct tls_conn *c, uint8_t *out, size_t cap, int need_ticket)
{
    mbedtls_ssl_session s;
    size_t olen = 0;
    int result;

    mbedtls_ssl_session_init(&s);
    if (mbedtls_ssl_get_session(&c->ssl, &s) != 0) {
        mbedtls_ssl_session_free(&s);
        return TLS_SAVE_FAILED;
    }
    if (s.ticket_len == 0 && need_ticket) {
        result = 0;   /* no ticket: nothing this device can resume after a power loss */
    } else {
#if FW_TICKET_ONLY
        result = ticket_only_save(&s, out, cap);
#else
        int ret = mbedtls_ssl_session_save(&s, out, cap, &olen);
        if (ret == 0)
            result = (int)olen;
        else
            result = ret == MBEDTLS_ERR_SSL_BUFFER_TOO_SMALL ? TLS_SAVE_TOO_BIG : TLS_SAVE_FAILED;
#endif
    }
    mbedtls_ssl_session_free(&s);
    (void)olen;
    return result;
}

void tls_port_close(struct tls_conn *c)
{
    if (c == NULL || !g_conn_busy)
        return;
    if (c->net.fd >= 0) {
        /* close_notify, best effort: a few tries, never a hang. */
        for (int i = 0; i < 4; i++) {
            int ret = mbedtls_ssl_close_notify(&c->ssl);
            if (ret != MBEDTLS_ERR_SSL_WANT_READ && ret != MBEDTLS_ERR_SSL_WANT_WRITE)
                break;
        }
    }
    conn_free(c);
}
