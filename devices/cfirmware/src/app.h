/*
 * What the device speaks after the TLS handshake (--app):
 *
 *   mqtt  MQTT 3.1.1: CONNECT (clean session, keep-alive 60 s, client id
 *         "tlsfw-<device id>"), read CONNACK, DISCONNECT.
 *   http  GET /status HTTP/1.1, Host, Connection: close; read the response
 *         until the server closes.
 *
 * Both read at least once after the handshake, which is when a TLS 1.3 stack
 * takes in the server's NewSessionTickets: the session stored afterwards
 * holds them.  Every read has a timeout.
 */
#ifndef APP_H
#define APP_H

#include <stddef.h>

#include "tls_port.h"

enum app_proto { APP_MQTT = 0, APP_HTTP = 1 };

#define APP_TIMEOUT_MS 10000

/* Run the exchange; 0 on success, -1 with a short reason in why. A summary
 * line for the console is written into summary either way. */
int app_exchange(enum app_proto proto, struct tls_conn *c, const char *host, char *summary, size_t slen,
                 char *why, size_t wlen);

const char *app_name(enum app_proto proto);

#endif
