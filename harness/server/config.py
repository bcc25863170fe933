"""Server knobs: what a device meets in the field, as one validated dataclass.

Why one dataclass for start-up and run time: a scenario starts the server
with some knobs ("TLS 1.3 only, 2 s lifetime") and changes others between
power cycles (``configure(tickets=False)``).  Both go through
:meth:`ServerConfig.replace`, so a bad value is refused the same way either
way, before OpenSSL ever sees it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

from .app import DEFAULT_GREETING, PROTOCOL_NAMES
from .certs import KEY_TYPES

VERSIONS = ("TLSv1.2", "TLSv1.3")

# Knobs that change a running server; the rest (bind address, certificate)
# need a restart because a device would see a different server.
RUNTIME_KNOBS = frozenset(
    {
        "versions",
        "tickets",
        "ticket_lifetime",
        "tls13_tickets",
        "session_cache",
        "client_cert",
        "handshake_timeout",
        "app_timeout",
        "protocol",
        "greeting",
        "ticket_delay",
        "max_connections",
    }
)

#: The longest ``ticket_delay``: a round trip, not a pause (a value in milliseconds is caught).
MAX_TICKET_DELAY = 30.0


class ServerConfigError(HarnessError, ValueError):
    """A knob has a value the server cannot honour."""


@dataclass(frozen=True)
class ServerConfig:
    """Everything the reference server can be told.

    ``ticket_lifetime`` is OpenSSL's session timeout: the lifetime hint sent
    in tickets *and* the age beyond which OpenSSL refuses a ticket or cached
    session.  ``tickets=False`` disables RFC 5077 tickets and TLS 1.3 tickets
    (in OpenSSL, ``OP_NO_TICKET`` alone would only make TLS 1.3 tickets
    stateful, so the server also issues none).  ``tls13_tickets`` is the
    number of TLS 1.3 tickets after a full handshake (OpenSSL sends one after
    a resumption).

    ``protocol`` is what the server speaks after the handshake (``app.py``):
    ``line`` (echo one line, close), ``none`` (listen, answer nothing),
    ``http``, ``mqtt`` (3.1.1), ``greeting`` (send ``greeting`` first, then
    like ``line``).  ``app_timeout`` is the idle limit of that phase: a
    connection with no application data for that long is closed, which is
    recorded in ``app_end``, never as a handshake ``error``.  Its default is
    generous because a device holding an MQTT connection is normal.  Both are
    read when a connection is accepted, so ``configure()`` applies to the
    next connection.

    ``ticket_delay`` (seconds) makes a TLS 1.3 server behave like one a
    network round trip away, or one that sends its tickets late: what it
    writes after the handshake completed (its NewSessionTickets, then
    anything after them, in order) leaves that long after the handshake's
    end.  The record is still published at the handshake's end.  TLS 1.2
    tickets are part of the handshake and are never delayed.  Read at
    accept, like ``protocol``.

    ``max_connections`` caps the connections open at once, so a flood of
    idle or slow clients costs bounded memory and file descriptors whatever
    the timeouts.  At the cap the server makes room by closing the
    connection that has been in its handshake the longest (its record says
    so); connections past their handshake (devices holding MQTT) are never
    closed for room: if all of them are, new ones wait in the listen backlog
    until one ends.
    """

    host: str = "127.0.0.1"
    port: int = 0
    versions: tuple[str, ...] = VERSIONS
    tickets: bool = True
    ticket_lifetime: int = 7200
    tls13_tickets: int = 2
    session_cache: bool = True
    names: tuple[str, ...] = ("server.test", "localhost")
    ips: tuple[str, ...] = ("127.0.0.1", "::1")
    key_type: str = "ec"
    cert: Path | None = None  # user's own certificate chain (PEM) ...
    key: Path | None = None  # ... its private key ...
    ca: Path | None = None  # ... and the CA the device trusts
    client_cert: bool = False  # require a client certificate signed by client_ca
    client_ca: Path | None = None  # default: the run's CA (or ``ca``)
    handshake_timeout: float = 10.0
    app_timeout: float = 60.0
    protocol: str = "line"
    greeting: str = DEFAULT_GREETING
    ticket_delay: float = 0.0
    max_connections: int = 1000
    log_path: Path | None = None  # default: <workdir>/handshakes.jsonl

    def __post_init__(self) -> None:
        self.validate()

    def replace(self, **changes: Any) -> "ServerConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ServerConfigError(f"unknown server knob(s): {', '.join(sorted(unknown))}")
        if "versions" in changes:
            changes["versions"] = _versions(changes["versions"])
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        object.__setattr__(self, "versions", _versions(self.versions))
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "ips", tuple(self.ips))
        for name in ("cert", "key", "ca", "client_ca", "log_path"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        if not 0 <= int(self.port) <= 65535:
            raise ServerConfigError(f"port must be 0..65535, not {self.port}")
        if int(self.ticket_lifetime) < 1:
            raise ServerConfigError(f"ticket_lifetime must be at least 1 s, not {self.ticket_lifetime}")
        if int(self.tls13_tickets) < 0:
            raise ServerConfigError(f"tls13_tickets must be >= 0, not {self.tls13_tickets}")
        if self.key_type not in KEY_TYPES:
            raise ServerConfigError(f"key_type must be one of {', '.join(KEY_TYPES)}, not {self.key_type!r}")
        if self.handshake_timeout <= 0 or self.app_timeout <= 0:
            raise ServerConfigError("timeouts must be positive")
        if isinstance(self.max_connections, bool) or not isinstance(self.max_connections, int) \
                or self.max_connections < 1:
            raise ServerConfigError(f"max_connections must be a whole number >= 1, not {self.max_connections!r}")
        protocol = str(self.protocol).strip().lower()
        if protocol not in PROTOCOL_NAMES:
            raise ServerConfigError(
                f"unknown application protocol {self.protocol!r} (choose one of {', '.join(PROTOCOL_NAMES)})"
            )
        object.__setattr__(self, "protocol", protocol)
        if not isinstance(self.greeting, str) or "\n" in self.greeting or "\r" in self.greeting:
            raise ServerConfigError(f"greeting must be one line of text, not {self.greeting!r}")
        if len(self.greeting.encode("utf-8", errors="replace")) > 1000:
            raise ServerConfigError("greeting must be at most 1000 bytes")
        object.__setattr__(self, "ticket_delay", _ticket_delay(self.ticket_delay))
        own = [self.cert, self.key, self.ca]
        if any(own) and not all(own):
            raise ServerConfigError("give all of cert, key and ca, or none to generate them")
        if not self.names and not self.ips and not self.cert:
            raise ServerConfigError("the certificate needs at least one name or IP address")
        for ip in self.ips:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise ServerConfigError(f"not an IP address: {ip!r}") from None


def _versions(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split() if v]
    aliases = {"1.2": "TLSv1.2", "tls1.2": "TLSv1.2", "1.3": "TLSv1.3", "tls1.3": "TLSv1.3"}
    out = []
    for v in value:
        name = aliases.get(str(v).lower(), str(v))
        if name not in VERSIONS:
            raise ServerConfigError(f"unsupported TLS version {v!r} (use {', '.join(VERSIONS)})")
        if name not in out:
            out.append(name)
    if not out:
        raise ServerConfigError("at least one TLS version must be enabled")
    return tuple(sorted(out))


def _ticket_delay(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ServerConfigError(f"ticket_delay must be a number of seconds, not {value!r}")
    if not 0 <= value <= MAX_TICKET_DELAY:  # also refuses NaN
        raise ServerConfigError(
            f"ticket_delay must be 0 to {MAX_TICKET_DELAY:g} s (seconds, not milliseconds), not {value!r}"
        )
    return float(value)
