/*
 * Build variants: the correct firmware and a few field bugs, each a few lines.
 *
 * build.py passes exactly one -DFW_VARIANT_<NAME>; this header turns it into
 * feature switches the code tests with #if, so every bug is visible where it
 * lives (grep for the switch).  Nothing here is a runtime option: a device
 * ships one build, and so does the bench.
 *
 *   correct       A/B slots, CRC, fallback, store after the application
 *                 exchange, battery-backed RTC for ticket lifetimes.
 *   ram-only      FW_PERSIST 0: the session lives in a RAM variable only.
 *   no-fallback   FW_FALLBACK 0: a refused stored session = connect failed.
 *   no-crc        FW_CHECK_CRC 0: boot trusts any slot with a sane header.
 *   single-slot   FW_AB_SLOTS 0: one slot, erased and rewritten in place.
 *   ticket-only   FW_TICKET_ONLY 1 (tls_mbedtls.c): only the ticket and its
 *                 lifetime are persisted, the master secret is not.
 *   early-store   FW_STORE_EARLY 1: store right after the handshake, before
 *                 the application exchange (TLS 1.3 tickets come later).
 *   uptime-clock  FW_CLOCK_UPTIME: no RTC, yet ticket ages are computed
 *                 from uptime as if it were one.
 *   no-rtc        FW_CLOCK_NONE: a board without an RTC, handled correctly:
 *                 no lifetime check on the device, the server decides.
 */
#ifndef VARIANT_H
#define VARIANT_H

#define FW_CLOCK_RTC     1   /* battery-backed RTC: wall time survives power loss */
#define FW_CLOCK_UPTIME  2   /* BUG: uptime treated as a wall clock */
#define FW_CLOCK_NONE    3   /* no RTC, and the firmware knows it */

#if defined(FW_VARIANT_CORRECT)
#define FW_VARIANT_NAME "correct"
#elif defined(FW_VARIANT_RAM_ONLY)
#define FW_VARIANT_NAME "ram-only"
#define FW_PERSIST 0
#elif defined(FW_VARIANT_NO_FALLBACK)
#define FW_VARIANT_NAME "no-fallback"
#define FW_FALLBACK 0
#elif defined(FW_VARIANT_NO_CRC)
#define FW_VARIANT_NAME "no-crc"
#define FW_CHECK_CRC 0
#elif defined(FW_VARIANT_SINGLE_SLOT)
#define FW_VARIANT_NAME "single-slot"
#define FW_AB_SLOTS 0
#elif defined(FW_VARIANT_TICKET_ONLY)
#define FW_VARIANT_NAME "ticket-only"
#define FW_TICKET_ONLY 1
#elif defined(FW_VARIANT_EARLY_STORE)
#define FW_VARIANT_NAME "early-store"
#define FW_STORE_EARLY 1
#elif defined(FW_VARIANT_UPTIME_CLOCK)
#define FW_VARIANT_NAME "uptime-clock"
#define FW_CLOCK FW_CLOCK_UPTIME
#elif defined(FW_VARIANT_NO_RTC)
#define FW_VARIANT_NAME "no-rtc"
#define FW_CLOCK FW_CLOCK_NONE
#else
#error "build with exactly one -DFW_VARIANT_<NAME> (see devices/cfirmware/build.py)"
#endif

/* Defaults: the correct firmware. */
#ifndef FW_PERSIST
#define FW_PERSIST 1
#endif
#ifndef FW_FALLBACK
#define FW_FALLBACK 1
#endif
#ifndef FW_CHECK_CRC
#define FW_CHECK_CRC 1
#endif
#ifndef FW_AB_SLOTS
#define FW_AB_SLOTS 1
#endif
#ifndef FW_TICKET_ONLY
#define FW_TICKET_ONLY 0
#endif
#ifndef FW_STORE_EARLY
#define FW_STORE_EARLY 0
#endif
#ifndef FW_CLOCK
#define FW_CLOCK FW_CLOCK_RTC
#endif

/* Which TLS stack this image is linked with (the record says, so a stored
 * blob is never handed to another stack after a firmware change). */
#if defined(FW_STACK_MBEDTLS)
#define FW_STACK_ID 1
#elif defined(FW_STACK_WOLFSSL)
#define FW_STACK_ID 2
#else
#error "build with -DFW_STACK_MBEDTLS or -DFW_STACK_WOLFSSL"
#endif

#endif
