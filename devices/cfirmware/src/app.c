/* Application protocols after the handshake (see app.h). Fixed buffers only. */
#include "app.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "port.h"

const char *app_name(enum app_proto proto)
{
    return proto == APP_HTTP ? "http" : "mqtt";
}

static int write_all(struct tls_conn *c, const uint8_t *buf, size_t len)
{
    while (len > 0) {
        int n = tls_port_write(c, buf, len);
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* ------------------------------------------------------------------ MQTT */

#define MQTT_KEEPALIVE_S 60

static int mqtt(struct tls_conn *c, char *summary, size_t slen, char *why, size_t wlen)
{
    uint8_t pkt[64];
    uint8_t in[8];
    size_t got = 0;
    char client_id[24];
    int idlen = snprintf(client_id, sizeof client_id, "tlsfw-%08x", (unsigned)port_device_id());

    /* CONNECT: fixed header, remaining length (< 128: one byte), variable
     * header "MQTT" level 4, flags clean-session, keep-alive; payload: id. */
    size_t n = 0;
    size_t remaining = 10 + 2 + (size_t)idlen;
    pkt[n++] = 0x10;
    pkt[n++] = (uint8_t)remaining;
    pkt[n++] = 0x00; pkt[n++] = 0x04;
    memcpy(pkt + n, "MQTT", 4); n += 4;
    pkt[n++] = 0x04;                      /* protocol level 4 = 3.1.1 */
    pkt[n++] = 0x02;                      /* clean session, no will, no credentials */
    pkt[n++] = MQTT_KEEPALIVE_S >> 8; pkt[n++] = MQTT_KEEPALIVE_S & 0xFF;
    pkt[n++] = (uint8_t)(idlen >> 8); pkt[n++] = (uint8_t)idlen;
    memcpy(pkt + n, client_id, (size_t)idlen); n += (size_t)idlen;
    if (write_all(c, pkt, n) != 0) {
        snprintf(why, wlen, "mqtt: CONNECT not sent");
        return -1;
    }
    /* CONNACK: 0x20 0x02 <session present> <return code>, maybe in pieces. */
    while (got < 4) {
        int r = tls_port_read(c, in + got, 4 - got, APP_TIMEOUT_MS);
        if (r == 0) {
            snprintf(why, wlen, "mqtt: server closed before CONNACK");
            return -1;
        }
        if (r < 0) {
            snprintf(why, wlen, "mqtt: no CONNACK (read failed or timed out)");
            return -1;
        }
        got += (size_t)r;
    }
    if (in[0] != 0x20 || in[1] != 0x02) {
        snprintf(why, wlen, "mqtt: expected CONNACK, got packet 0x%02x", in[0]);
        return -1;
    }
    if (in[3] != 0) {
        snprintf(why, wlen, "mqtt: CONNACK return code %u", in[3]);
        return -1;
    }
    static const uint8_t disconnect[] = { 0xE0, 0x00 };
    if (write_all(c, disconnect, sizeof disconnect) != 0) {
        snprintf(why, wlen, "mqtt: DISCONNECT not sent");
        return -1;
    }
    snprintf(summary, slen, "mqtt: CONNECT %s, CONNACK 0, DISCONNECT", client_id);
    return 0;
}

/* ------------------------------------------------------------------ HTTP */

static int http(struct tls_conn *c, const char *host, char *summary, size_t slen, char *why, size_t wlen)
{
    char req[256];
    char head[64];   /* only the status line is kept; the rest is read and dropped */
    uint8_t buf[512];
    size_t headlen = 0;
    int head_done = 0;
    size_t total = 0;

    int n = snprintf(req, sizeof req,
                     "GET /status HTTP/1.1\r\nHost: %s\r\nUser-Agent: tlsfw/1.0\r\nConnection: close\r\n\r\n",
                     host);
    if (n < 0 || (size_t)n >= sizeof req) {
        snprintf(why, wlen, "http: host name too long");
        return -1;
    }
    if (write_all(c, (const uint8_t *)req, (size_t)n) != 0) {
        snprintf(why, wlen, "http: request not sent");
        return -1;
    }
    /* Connection: close: the response ends when the server closes. */
    for (;;) {
        int r = tls_port_read(c, buf, sizeof buf, APP_TIMEOUT_MS);
        if (r == 0)
            break;
        if (r < 0) {
            if (total > 0)
                break; /* a TCP close without close_notify after the reply: done */
            snprintf(why, wlen, "http: no response (read failed or timed out)");
            return -1;
        }
        for (int i = 0; i < r && !head_done; i++) {
            if (buf[i] == '\r' || buf[i] == '\n' || headlen == sizeof head - 1)
                head_done = 1;
            else
                head[headlen++] = (char)buf[i];
        }
        total += (size_t)r;
    }
    head[headlen] = '\0';
    int status = 0;
    if (sscanf(head, "HTTP/1.%*d %d", &status) != 1) {
        snprintf(why, wlen, "http: no HTTP response (%zu bytes)", total);
        return -1;
    }
    if (status != 200) {
        snprintf(why, wlen, "http: status %d", status);
        return -1;
    }
    snprintf(summary, slen, "http: GET /status -> %d, %zu bytes", status, total);
    return 0;
}

int app_exchange(enum app_proto proto, struct tls_conn *c, const char *host, char *summary, size_t slen,
                 char *why, size_t wlen)
{
    summary[0] = why[0] = '\0';
    return proto == APP_HTTP ? http(c, host, summary, slen, why, wlen) : mqtt(c, summary, slen, why, wlen);
}
