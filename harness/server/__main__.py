"""``python -m harness.server``: the reference server for labs running it apart from pytest.

Why a standalone mode: on a real bench the server often runs on a lab PC
the device reaches over the LAN, started once, while tests or people watch
its output.  ``--json`` gives machines one JSON object per line; without it
people get readable lines.  Ctrl-C or SIGTERM stops it cleanly with exit
code 0.

Each connection gives two lines: one when the handshake completes or fails
(``{"event": "handshake", ...}``, the evidence, printed at once even if the
device then keeps the connection for an hour) and, for a completed
handshake, one when the connection ends (``{"event": "closed", ...}``, the
same record with the application fields final: what the device said over
``--protocol`` and how the connection ended).  Consumers that count
handshakes should count ``handshake`` events.

``--protocol`` is what the server speaks after the handshake, to match the
firmware under test: ``line`` (default: echo one line, close), ``none``
(answer nothing; the device closes, or the idle timeout does), ``http`` (one
request, a 200, close), ``mqtt`` (MQTT 3.1.1: CONNACK, PINGRESP, PUBACK,
SUBACK, ...), ``greeting`` (send ``--greeting`` first, then like ``line``).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import tempfile
import threading
from pathlib import Path

from harness.errors import HarnessError

from .app import DEFAULT_GREETING, PROTOCOL_NAMES
from .config import ServerConfig, ServerConfigError
from .records import HandshakeRecord
from .server import ReferenceServer


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness.server",
        description="Reference TLS server that records every handshake and its resumption lineage.",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback; a lab binds its LAN address)")
    p.add_argument("--port", type=int, default=4433, help="TCP port, 0 = any free port (default 4433)")
    v = p.add_mutually_exclusive_group()
    v.add_argument("--tls12-only", action="store_true", help="offer TLS 1.2 only")
    v.add_argument("--tls13-only", action="store_true", help="offer TLS 1.3 only")
    v.add_argument("--versions", help="comma-separated, e.g. TLSv1.2,TLSv1.3")
    p.add_argument("--no-tickets", action="store_true", help="issue and accept no session tickets")
    p.add_argument("--lifetime", type=int, default=7200, metavar="S", help="ticket/session lifetime in seconds")
    p.add_argument("--tls13-tickets", type=int, default=2, metavar="N", help="TLS 1.3 tickets per full handshake")
    p.add_argument("--no-session-cache", action="store_true", help="no session-id resumption")
    p.add_argument("--names", default="server.test,localhost", help="DNS names in the generated certificate")
    p.add_argument("--ips", default="127.0.0.1,::1", help="IP addresses in the generated certificate")
    p.add_argument("--key", choices=("ec", "rsa"), default="ec", help="key type (ECDSA P-256 or RSA-2048)")
    p.add_argument("--cert", type=Path, help="your own certificate chain (PEM)")
    p.add_argument("--key-file", type=Path, help="its private key (PEM)")
    p.add_argument("--ca", type=Path, help="the CA the device trusts (PEM)")
    p.add_argument("--client-cert", action="store_true", help="require a client certificate")
    p.add_argument("--client-ca", type=Path, help="CA for client certificates (default: the server CA)")
    p.add_argument("--handshake-timeout", type=float, default=10.0, metavar="S")
    p.add_argument(
        "--protocol", choices=PROTOCOL_NAMES, default="line",
        help="what the server speaks after the handshake: line (echo one line, close; default), none (answer "
        "nothing), http (one request, 200, close), mqtt (MQTT 3.1.1 broker that keeps nothing), greeting "
        "(send --greeting first, then like line)",
    )
    p.add_argument("--greeting", default=DEFAULT_GREETING, metavar="TEXT",
                   help=f"line sent first with --protocol greeting (default {DEFAULT_GREETING!r})")
    p.add_argument("--app-timeout", type=float, default=60.0, metavar="S",
                   help="close a connection after S seconds without application data (default 60)")
    p.add_argument("--ticket-delay", type=float, default=0.0, metavar="S",
                   help="TLS 1.3: send the tickets (and what follows them) S seconds after the handshake, as a "
                   "network round trip or a late server would (default 0; TLS 1.2 tickets are never delayed)")
    p.add_argument("--max-connections", type=int, default=1000, metavar="N",
                   help="connections open at once; at the cap the longest-running handshake is closed to make "
                   "room (default 1000)")
    p.add_argument("--log", type=Path, help="handshake log, JSON lines (default: WORKDIR/handshakes.jsonl)")
    p.add_argument("--workdir", type=Path, help="where the CA, certificate and log go (default: a temp dir)")
    p.add_argument("--json", action="store_true", help="one JSON object per line on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the listening line (the log file still gets every record)")
    p.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    return p


def _split(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    versions: tuple[str, ...] | str = ("TLSv1.2", "TLSv1.3")
    if args.tls12_only:
        versions = ("TLSv1.2",)
    elif args.tls13_only:
        versions = ("TLSv1.3",)
    elif args.versions:
        versions = args.versions
    same = {name: getattr(args, name) for name in _SAME_NAME}
    renamed = {knob: getattr(args, option) for knob, option in _RENAMED.items()}
    return ServerConfig(versions=versions, tickets=not args.no_tickets,  # type: ignore[arg-type]
                        session_cache=not args.no_session_cache, names=_split(args.names), ips=_split(args.ips),
                        **same, **renamed)


#: knobs whose command-line option has the same name
_SAME_NAME = ("host", "port", "tls13_tickets", "cert", "ca", "client_cert", "client_ca", "handshake_timeout",
              "app_timeout", "protocol", "greeting", "ticket_delay", "max_connections")
#: knob -> the option that sets it
_RENAMED = {"ticket_lifetime": "lifetime", "key_type": "key", "key": "key_file", "log_path": "log"}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        config = config_from_args(args)
    except ServerConfigError as e:
        parser.error(str(e))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tls-server-"))
    stop = threading.Event()
    out_lock = threading.Lock()

    def emit(line: str) -> None:
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def on_record(rec: HandshakeRecord) -> None:
        if args.json:
            emit(json.dumps({"event": "handshake", **rec.to_dict()}))
        else:
            emit(rec.summary())

    def on_closed(rec: HandshakeRecord) -> None:
        if args.json:
            emit(json.dumps({"event": "closed", **rec.to_dict()}))
        else:
            took = f" after {rec.closed_mono - rec.mono:.1f} s" if rec.closed_mono is not None else ""
            emit(f"#{rec.id} {rec.peer} closed{took}: {rec.app_summary()}")

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = ReferenceServer(config, workdir=workdir)
    if not args.quiet:
        server.add_listener(on_record)
        server.add_closed_listener(on_closed)
    try:
        server.start()
    except HarnessError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    try:
        if args.json:
            emit(json.dumps({"event": "listening", "host": server.host, "port": server.port, "ca": str(server.ca_path)}))
        else:
            emit(f"listening on {server.host}:{server.port}; CA {server.ca_path}; log {server.log.path}")  # type: ignore[union-attr]
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
