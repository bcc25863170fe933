"""Firmware variants: each one a plausible real bug, selectable by name.

The harness's scenarios must prove they catch every one of these; the
default ``correct`` variant must pass them all.  A variant is data (a set of
behaviour switches), not a subclass, so the shell reads one table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    """Behaviour switches of the emulated firmware."""

    name: str
    description: str
    persist: bool = True        # False: session kept only in RAM
    renew: bool = True          # False: tickets received after a resumption are dropped
    atomic: bool = True         # False: one slot, written in place, no CRC, trusted blindly
    fallback: bool = True       # False: give up when the server refuses the stored session
    uptime_clock: bool = False  # True: ticket age counted from boot, not from the RTC
    check_name: bool = True     # False: offer the session to any server name
    store_early: bool = False   # True: store right after the handshake, before the TLS 1.3 ticket is read
    take_tickets: bool = True   # False: TLS 1.3 NewSessionTickets are never taken in
    keep_secret: bool = True    # False: only the ticket is persisted, not the session's secret


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("correct", "A/B slots with CRC, renews tickets, falls back, RTC ages, per-server sessions"),
    Variant("ram-only", "session kept only in RAM: lost at every power loss or reset", persist=False),
    Variant("no-renew", "does not store tickets received after a resumption", renew=False),
    Variant("torn-write", "writes slot A in place without CRC and trusts what it reads back", atomic=False),
    Variant("no-fallback", "gives up (connect failed) when the server refuses the stored session", fallback=False),
    Variant("uptime-clock", "ticket age from uptime: after power loss a TLS 1.3 ticket looks invalid", uptime_clock=True),
    Variant("any-server", "offers the stored session to whatever server it connects to", check_name=False),
    Variant("early-store", "stores the session right after the handshake, before the TLS 1.3 ticket arrives",
            store_early=True),
    Variant("ignores-tickets", "never takes in TLS 1.3 NewSessionTickets (like Mbed TLS >= 3.6.1 without "
            "the opt-in)", take_tickets=False),
    Variant("ticket-only", "persists the ticket bytes but not the session's secret", keep_secret=False),
)}


def get(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r} (known: {', '.join(VARIANTS)})") from None
