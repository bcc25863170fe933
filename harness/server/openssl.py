"""OpenSSL access beyond what the stdlib ``ssl`` module exposes.

Why this module exists: the reference server runs on CPython's ``ssl`` module
(OpenSSL, what production clouds run), but ``ssl.SSLContext`` has no setter for
the session timeout (= ticket lifetime, enforced by OpenSSL when a ticket comes
back), no session-cache mode and no access to the ticket encryption keys.  Those
three are plain ``SSL_CTX`` calls, so we call them with :mod:`ctypes` on the
very libssl that ``_ssl`` is linked against (found in ``/proc/self/maps``, so
there is never a second copy of OpenSSL with its own ``SSL_CTX`` layout).

Reaching the ``SSL_CTX *`` of a Python ``SSLContext`` relies on CPython's
``PySSLContext`` layout (the pointer is the first field after
``PyObject_HEAD``; true from 3.6 to 3.13).  Because that is an implementation
detail, :func:`ctx_pointer` never trusts it blindly: it sets distinctive values
through the public Python API (``options``, ``num_tickets``) and reads them back
through OpenSSL's getters on the candidate pointer; on mismatch it raises
:class:`EngineError` instead of poking at random memory.
"""

from __future__ import annotations

import ctypes
import logging
import os
import ssl
from dataclasses import dataclass

log = logging.getLogger(__name__)

SSL_CTRL_SET_SESS_CACHE_MODE = 44
SSL_CTRL_GET_SESS_CACHE_MODE = 45
SSL_CTRL_SET_TLSEXT_TICKET_KEYS = 59
SSL_CTRL_GET_TLSEXT_TICKET_KEYS = 58
SSL_SESS_CACHE_OFF = 0x0
SSL_SESS_CACHE_SERVER = 0x2
# OFF alone only stops *adding* sessions; sessions already cached would still be
# found, so "cache off" also turns internal lookup and store off.
SSL_SESS_CACHE_NO_INTERNAL = 0x100 | 0x200
TICKET_KEYS_LEN = 80  # 16 key name + 32 HMAC secret + 32 AES key (OpenSSL 1.1.0+)
KEY_NAME_LEN = 16


class EngineError(RuntimeError):
    """OpenSSL could not be reached or refused a setting."""


def _libssl_path() -> str:
    """Path of the libssl mapped into this process by the ``_ssl`` module."""
    import _ssl  # noqa: F401  (make sure it is loaded)

    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rsplit(None, 1)[-1]
                if "/libssl" in path and path.startswith("/"):
                    return path
    except OSError:
        pass
    # Not Linux, or _ssl linked statically: fall back to the loader's choice,
    # which ctx_pointer() then verifies like any other.
    import ctypes.util

    name = ctypes.util.find_library("ssl")
    if not name:
        raise EngineError("cannot find the libssl used by Python's ssl module")
    return name


@dataclass
class OpenSSL:
    """The few libssl functions the server needs, bound with exact signatures."""

    lib: ctypes.CDLL

    @classmethod
    def load(cls) -> "OpenSSL":
        lib = ctypes.CDLL(_libssl_path())
        lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        lib.SSL_CTX_ctrl.restype = ctypes.c_long
        lib.SSL_CTX_set_timeout.argtypes = [ctypes.c_void_p, ctypes.c_long]
        lib.SSL_CTX_set_timeout.restype = ctypes.c_long
        lib.SSL_CTX_get_timeout.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_get_timeout.restype = ctypes.c_long
        lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_get_options.restype = ctypes.c_uint64
        lib.SSL_CTX_get_num_tickets.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_get_num_tickets.restype = ctypes.c_size_t
        return cls(lib)

    def ctx_pointer(self, context: ssl.SSLContext) -> int:
        """The ``SSL_CTX *`` behind ``context``, verified through OpenSSL getters."""
        offset = object.__basicsize__  # sizeof(PyObject_HEAD)
        ptr = ctypes.c_void_p.from_address(id(context) + offset).value
        if not ptr:
            raise EngineError("SSLContext has no SSL_CTX pointer where CPython keeps it")
        saved_options, saved_tickets = context.options, context.num_tickets
        try:
            probe_tickets = 7
            context.num_tickets = probe_tickets
            context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
            got_tickets = self.lib.SSL_CTX_get_num_tickets(ptr)
            got_options = self.lib.SSL_CTX_get_options(ptr)
            if got_tickets != probe_tickets or got_options != int(context.options):
                raise EngineError(
                    "CPython's SSLContext layout is not the expected one "
                    f"(num_tickets {got_tickets} != {probe_tickets}); "
                    "the server cannot set ticket lifetime or keys on this Python"
                )
        finally:
            context.num_tickets = saved_tickets
            context.options = saved_options
        return int(ptr)

    def set_timeout(self, ctx: int, seconds: int) -> None:
        """Session lifetime: OpenSSL refuses a ticket/session older than this."""
        self.lib.SSL_CTX_set_timeout(ctx, int(seconds))
        if self.lib.SSL_CTX_get_timeout(ctx) != int(seconds):
            raise EngineError(f"OpenSSL did not accept a session timeout of {seconds} s")

    def set_session_cache(self, ctx: int, on: bool) -> None:
        mode = SSL_SESS_CACHE_SERVER if on else SSL_SESS_CACHE_OFF | SSL_SESS_CACHE_NO_INTERNAL
        self.lib.SSL_CTX_ctrl(ctx, SSL_CTRL_SET_SESS_CACHE_MODE, mode, None)
        if self.lib.SSL_CTX_ctrl(ctx, SSL_CTRL_GET_SESS_CACHE_MODE, 0, None) != mode:
            raise EngineError("OpenSSL did not accept the session cache mode")

    def set_ticket_keys(self, ctx: int, keys: bytes) -> None:
        """Install ticket keys (name, HMAC secret, AES key); the old ones stop working."""
        if len(keys) != TICKET_KEYS_LEN:
            raise EngineError(f"ticket keys must be {TICKET_KEYS_LEN} bytes")
        buf = ctypes.create_string_buffer(keys, TICKET_KEYS_LEN)
        ok = self.lib.SSL_CTX_ctrl(ctx, SSL_CTRL_SET_TLSEXT_TICKET_KEYS, TICKET_KEYS_LEN, buf)
        ctypes.memset(buf, 0, TICKET_KEYS_LEN)
        if ok != 1:
            raise EngineError("OpenSSL refused the ticket keys")

    def get_ticket_key_name(self, ctx: int) -> bytes:
        """The 16-byte key name OpenSSL currently puts in front of every ticket."""
        buf = ctypes.create_string_buffer(TICKET_KEYS_LEN)
        ok = self.lib.SSL_CTX_ctrl(ctx, SSL_CTRL_GET_TLSEXT_TICKET_KEYS, TICKET_KEYS_LEN, buf)
        name = buf.raw[:KEY_NAME_LEN]
        ctypes.memset(buf, 0, TICKET_KEYS_LEN)
        if ok != 1:
            raise EngineError("OpenSSL did not return its ticket keys")
        return name


def new_ticket_keys() -> bytes:
    """Fresh random ticket keys: a new epoch."""
    return os.urandom(TICKET_KEYS_LEN)
