/*
 * The board's network: one TCP connection, with a timeout.
 *
 * Why here and not in a TLS port: opening a socket is the board's business
 * (lwIP's netconn, a cellular modem's AT socket, a host socket here), and
 * both TLS ports need the same one.  A device must never hang on a dead
 * network, so the connect has a timeout; and TCP_NODELAY is set because TLS
 * stacks write each handshake record with its own send(): with Nagle on,
 * Mbed TLS's Finished waited for the ACK of its ChangeCipherSpec, which the
 * server delays (40 ms on Linux), so a resumed handshake cost 44 ms at the
 * server instead of about 1 ms.  (lwIP: tcp_nagle_disable().)
 */
#include "port.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int port_tcp_connect(const char *host, int port, int timeout_ms, char *err, size_t errlen)
{
    struct addrinfo hints, *res = NULL, *ai;
    char service[16];
    int rc, fd = -1, last_errno = 0;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(service, sizeof service, "%d", port);
    rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "dns: %s: %s", host, gai_strerror(rc));
        return -1;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        struct pollfd pfd;
        int flags, soerr = 0, one = 1;
        socklen_t sl = sizeof soerr;

        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        flags = fcntl(fd, F_GETFL, 0);
        fcntl(fd, F_SETFL, flags | O_NONBLOCK);
        rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
        if (rc != 0 && errno == EINPROGRESS) {
            pfd.fd = fd;
            pfd.events = POLLOUT;
            do {
                rc = poll(&pfd, 1, timeout_ms);
            } while (rc < 0 && errno == EINTR);
            if (rc == 0)
                soerr = ETIMEDOUT;
            else if (rc < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
                soerr = errno;
            rc = soerr ? -1 : 0;
            errno = soerr;
        }
        if (rc == 0) {
            fcntl(fd, F_SETFL, flags);
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            break;
        }
        last_errno = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        snprintf(err, errlen, "tcp: connect %s:%d: %s", host, port,
                 strerror(last_errno ? last_errno : ECONNREFUSED));
    return fd;
}
