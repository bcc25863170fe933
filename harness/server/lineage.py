"""Which earlier handshake issued what a client offers, and why an offer failed.

Why the server keeps its own table: OpenSSL only says "resumed" or "not";
the harness must say "resumed the ticket issued by handshake 3" or "refused:
that ticket was issued before the key rotation".  The table maps the
*fingerprint* of every ticket and session id this server issued to the
handshake that issued it, the lifetime in force at that moment and the
ticket-key epoch, so no secret is kept beyond what OpenSSL itself holds.

OpenSSL tickets (TLS 1.2 RFC 5077 tickets and TLS 1.3 stateless PSK
identities alike) start with the 16-byte name of the key that sealed them.
Knowing the name of every key we installed tells apart a ticket from an
earlier key epoch ("rotated") from one this server never sealed ("foreign"),
and a ticket sealed under today's key name that is not one we issued (its
bytes were damaged, OpenSSL's HMAC check fails: "decrypt").

Two refusals come from how the handshake failed, not from the offer alone:
the server took a session it issued and the client then could not prove it
holds that session's secret.  TLS 1.3: OpenSSL decrypted the PSK identity and
the binder did not verify ("binder").  TLS 1.2: OpenSSL resumed (it sent its
ChangeCipherSpec and Finished of an abbreviated handshake) and the Finished
exchange failed, the client's alert or the server's own check ("finished").
Both are what a client that stored the ticket without its secret, or with a
wrong one, produces.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from harness.fingerprint import fp

from .clienthello import TLS12, ClientHello, ServerHello

log = logging.getLogger(__name__)

KEY_NAME_LEN = 16

#: OpenSSL's reason when the PSK binder of a TLS 1.3 ClientHello does not verify
BINDER_FAILURE = "BINDER_DOES_NOT_VERIFY"
#: OpenSSL reasons that end a TLS 1.2 abbreviated handshake on its Finished exchange: the
#: client's alert about the server's ChangeCipherSpec/Finished (it cannot decrypt or verify
#: them), or the server's own check of the client's Finished (record or verify_data)
FINISHED_FAILURES = frozenset({
    "SSLV3_ALERT_BAD_RECORD_MAC",
    "TLSV1_ALERT_DECRYPTION_FAILED",
    "TLSV1_ALERT_DECRYPT_ERROR",
    "SSLV3_ALERT_HANDSHAKE_FAILURE",
    "DECRYPTION_FAILED_OR_BAD_RECORD_MAC",
    "DECRYPTION_FAILED",
    "BAD_DECRYPT",
    "DIGEST_CHECK_FAILED",
})


@dataclass(frozen=True)
class Issued:
    """One ticket or session id this server handed out."""

    record_id: int
    mono: float
    lifetime_s: int  # the lifetime in force when it was issued
    version: str
    epoch: int | None = None  # ticket key epoch (tickets only)
    age_add: int | None = None  # TLS 1.3 obfuscation, to decode the client's claimed age


@dataclass
class Verdict:
    """Lineage of one handshake, as it goes into the record."""

    mechanism: str | None = None
    resumed_from: int | None = None
    rejected: str | None = None
    ticket_age_ms: int | None = None
    claimed_age_ms: int | None = None


@dataclass
class Lineage:
    """The issued-ticket table; only touched from the server's loop thread."""

    tickets: dict[str, Issued] = field(default_factory=dict)
    session_ids: dict[str, Issued] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)  # fp(key name) -> epoch
    epoch: int = 0

    def new_epoch(self, key_name: bytes) -> int:
        self.epoch += 1
        self.epochs[fp(key_name)] = self.epoch
        return self.epoch

    def add_ticket(self, ticket: bytes, issued: Issued) -> str:
        key_fp = fp(ticket[:KEY_NAME_LEN])
        epoch = self.epochs.get(key_fp)
        ticket_fp = fp(ticket)
        self.tickets[ticket_fp] = Issued(
            issued.record_id, issued.mono, issued.lifetime_s, issued.version, epoch, issued.age_add
        )
        return ticket_fp

    def add_session_id(self, session_id: bytes, issued: Issued) -> None:
        self.session_ids[fp(session_id)] = issued

    # --- judging one handshake ---------------------------------------------

    def judge(
        self,
        ch: ClientHello | None,
        sh: ServerHello | None,
        version: str | None,
        resumed: bool,
        tickets_on: bool,
        server_versions: tuple[str, ...],
        now: float,
        *,
        failure: str | None = None,
        server_finished: bool = False,
    ) -> Verdict:
        """Mechanism, resumed_from and rejection reason for a finished (or failed) handshake.

        ``failure`` is OpenSSL's reason code (``ssl.SSLError.reason``) when the
        handshake failed on a TLS error; ``server_finished`` says the server
        wrote its Finished (in TLS 1.2 before the client's: it resumed).
        """
        v = Verdict(mechanism="full" if version else None)
        if ch is None:
            return v
        if resumed:
            return self._resumed(ch, sh, version, now)
        kind, secret = self.primary_offer(ch)
        if kind is None or secret is None:
            return v
        offer_version = "TLSv1.3" if kind == "psk" else "TLSv1.2"
        if kind == "psk":
            self._ages(v, ch, 0, now)
        if failure is not None:
            own = self._own_session_failed(ch, sh, failure, server_finished)
            if own is not None:
                v.rejected = own
                return v
        # A 1.2 session offered where 1.3 was negotiated (or the reverse), or to
        # a server that cannot speak that version at all.
        if (version is not None and version != offer_version) or offer_version not in server_versions:
            v.rejected = "version"
            return v
        if kind in ("psk", "ticket") and not tickets_on:
            v.rejected = "tickets-off"
            return v
        if kind == "session-id":
            entry = self.session_ids.get(fp(secret))
            v.rejected = "expired" if entry and now - entry.mono > entry.lifetime_s else "unknown"
            return v
        entry = self.tickets.get(fp(secret))
        key_epoch = self.epochs.get(fp(secret[:KEY_NAME_LEN]))
        if entry is not None:
            if entry.epoch is not None and entry.epoch < self.epoch:
                v.rejected = "rotated"
            elif now - entry.mono > entry.lifetime_s:
                v.rejected = "expired"
            else:
                v.rejected = "unknown"
        elif key_epoch is None:
            v.rejected = "foreign"
        elif key_epoch < self.epoch:
            v.rejected = "rotated"
        else:  # today's key name on bytes we never issued: damaged, OpenSSL's HMAC check failed
            v.rejected = "decrypt"
        return v

    def _own_session_failed(
        self, ch: ClientHello, sh: ServerHello | None, failure: str, server_finished: bool
    ) -> str | None:
        """``binder``/``finished`` when OpenSSL took a session this server issued and the handshake then failed."""
        if failure == BINDER_FAILURE:
            # OpenSSL checks a binder only after decrypting its PSK identity with our key.
            if any(fp(p.identity) in self.tickets for p in ch.psk):
                return "binder"
            return None
        if not server_finished or failure not in FINISHED_FAILURES:
            return None
        if sh is None or sh.version != TLS12 or sh.hello_retry:
            return None
        # A TLS 1.2 server writes its Finished before the client's only when it resumed.
        if ch.ticket and fp(ch.ticket) in self.tickets:
            return "finished"
        if ch.session_id and fp(ch.session_id) in self.session_ids:
            return "finished"
        return None

    def primary_offer(self, ch: ClientHello) -> tuple[str | None, bytes | None]:
        """What the client really offered for resumption, in the order servers try.

        A TLS 1.3 ClientHello carries a random legacy_session_id for middlebox
        compatibility: that is no offer unless it is a session id we issued.
        """
        if ch.psk:
            return "psk", ch.psk[0].identity
        if ch.ticket:
            return "ticket", ch.ticket
        if ch.session_id and (not ch.offers_tls13 or fp(ch.session_id) in self.session_ids):
            return "session-id", ch.session_id
        return None, None

    def offered_session_id(self, ch: ClientHello) -> bytes | None:
        if ch.session_id and (not ch.offers_tls13 or fp(ch.session_id) in self.session_ids):
            return ch.session_id
        return None

    def _resumed(self, ch: ClientHello, sh: ServerHello | None, version: str | None, now: float) -> Verdict:
        if version == "TLSv1.3":
            v = Verdict(mechanism="psk")
            index = sh.selected_psk if sh is not None and sh.selected_psk is not None else 0
            if index < len(ch.psk):
                entry = self.tickets.get(fp(ch.psk[index].identity))
                v.resumed_from = entry.record_id if entry else None
                self._ages(v, ch, index, now)
            return v
        if ch.ticket:
            entry = self.tickets.get(fp(ch.ticket))
            return Verdict(mechanism="ticket", resumed_from=entry.record_id if entry else None)
        entry = self.session_ids.get(fp(ch.session_id))
        return Verdict(mechanism="session-id", resumed_from=entry.record_id if entry else None)

    def _ages(self, v: Verdict, ch: ClientHello, index: int, now: float) -> None:
        entry = self.tickets.get(fp(ch.psk[index].identity))
        if entry is None or entry.age_add is None:
            return
        v.ticket_age_ms = int((now - entry.mono) * 1000)
        v.claimed_age_ms = (ch.psk[index].obfuscated_age - entry.age_add) % (1 << 32)
