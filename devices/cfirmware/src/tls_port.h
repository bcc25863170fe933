/*
 * The TLS port: the only calls the firmware core makes into a TLS stack.
 *
 * Why a port layer: the session-persistence logic (when to store, A/B slots,
 * what to do with a refused blob, clocks) is the same on every stack; only
 * these calls differ.  tls_mbedtls.c implements them on Mbed TLS 2.28
 * (TLS 1.2, RFC 5077 tickets), tls_wolfssl.c on wolfSSL 5.5 (TLS 1.2 and
 * TLS 1.3 PSK tickets).  The core never includes a stack's header.
 *
 * Blobs are the stack's own serialisation (mbedtls_ssl_session_save,
 * wolfSSL_i2d_SSL_SESSION): they hold the session's secrets, so the core
 * never prints them, only their length and a CRC.
 */
#ifndef TLS_PORT_H
#define TLS_PORT_H

#include <stddef.h>
#include <stdint.h>

enum tls_version { TLS_AUTO = 0, TLS_V12 = 12, TLS_V13 = 13 };

/* Result codes of tls_port_load_session (anything else is a stack error code). */
#define TLS_BLOB_OK         0
#define TLS_BLOB_REFUSED   -1   /* the stack refused the blob (version/config mismatch, garbage) */

struct tls_conn;  /* opaque, one connection */

struct tls_info {
    int version;               /* TLS_V12 or TLS_V13 once connected */
    int resumed;               /* 1: the stack reports an abbreviated handshake */
    char cipher[64];
    uint32_t ticket_lifetime;  /* seconds, from the server's (newest) ticket; 0 if none */
    int tickets_received;      /* NewSessionTickets taken in during this connection so far */
};

/* Once per boot: load the CA file the device trusts.  Returns 0 or prints why and returns -1. */
int tls_port_init(const char *ca_file, char *err, size_t errlen);

/* Stack name and version for the boot banner, e.g. "mbedtls 2.28.3". */
const char *tls_port_name(void);

/* Which versions this stack (as built) can do: bitmask of 1<<0 = TLS 1.2, 1<<1 = TLS 1.3. */
unsigned tls_port_versions(void);

/*
 * TCP connect + handshake.  `blob` (may be NULL) is a stored session to offer.
 * `sni` may be empty (then no SNI and hostname check against host).
 * On success returns a connection and fills `info`.  On failure returns NULL,
 * writes a short reason into err, and sets *offer_refused = 1 when a blob was
 * offered and the failure looks like the server refused it (the core then
 * retries once without it when fallback is enabled).
 */
struct tls_conn *tls_port_connect(const char *host, int port, const char *sni, enum tls_version version,
                                  const uint8_t *blob, size_t blob_len, struct tls_info *info,
                                  int *offer_refused, char *err, size_t errlen);

/* Application data; both return bytes moved, 0 on clean close, <0 on error or timeout. */
int tls_port_write(struct tls_conn *c, const uint8_t *buf, size_t len);
int tls_port_read(struct tls_conn *c, uint8_t *buf, size_t len, int timeout_ms);

/* Refresh `info` (tickets_received grows when the stack processed a NewSessionTicket during reads). */
void tls_port_info(struct tls_conn *c, struct tls_info *info);

/* Error results of tls_port_save_session (apart, so the log says which). */
#define TLS_SAVE_TOO_BIG   -1   /* the serialised session is larger than `cap` */
#define TLS_SAVE_FAILED    -2   /* the stack could not get or serialise the session */

/*
 * Serialise the connection's current session into out (the stack's own
 * format).  Returns the length, 0 when the session holds nothing resumable
 * (no ticket) and `need_ticket` is set, TLS_SAVE_TOO_BIG (-1) when it does
 * not fit, or TLS_SAVE_FAILED (-2) on a stack error.  The correct firmware
 * always asks for a ticket; only the early-store bug saves whatever the
 * stack hands out (`need_ticket` 0), as firmware that calls
 * mbedtls_ssl_get_session / wolfSSL_get1_session right after the handshake does.
 */
int tls_port_save_session(struct tls_conn *c, uint8_t *out, size_t cap, int need_ticket);

/* Parse a stored blob without connecting: TLS_BLOB_OK or TLS_BLOB_REFUSED (+ reason in err). */
int tls_port_check_blob(const uint8_t *blob, size_t len, char *err, size_t errlen);

/* close_notify (best effort), close the socket, free everything. */
void tls_port_close(struct tls_conn *c);

#endif
