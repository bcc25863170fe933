/*
 * The session store: one TLS session record in NOR flash, A/B slots.
 *
 * Why two slots, a sequence number and a CRC: a power cut can land in the
 * middle of a flash write.  The new record goes into the slot that does NOT
 * hold the newest valid record, and boot trusts a slot only when its CRC
 * checks, so a torn write costs at most the session being written, never the
 * one before it and never the device.  No heap: the record lives in fixed
 * buffers the caller owns.
 *
 * Record format (format version 1, all integers little-endian), at the start
 * of a slot, written page by page from offset 0:
 *
 *   off size field
 *   0   4    magic "TLSR"
 *   4   1    format version (1)
 *   5   1    stack id: 1 = Mbed TLS, 2 = wolfSSL (a blob is only ever given
 *            back to the stack that wrote it)
 *   6   1    TLS version of the session: 12 or 13
 *   7   1    flags: bit 0 = stored_ms is not wall time (board without RTC)
 *   8   4    sequence number (newest valid slot wins at boot; compared
 *            as serial numbers, so it may wrap)
 *   12  4    payload length (<= STORE_MAX_PAYLOAD)
 *   16  8    stored_ms: RTC time (ms since the Unix epoch) the session was stored
 *   24  4    ticket lifetime in seconds (from the server's ticket; 0 = unknown)
 *   28  64   server name the session belongs to (NUL padded, <= 63 chars)
 *   92  4    CRC-32 (IEEE, as zlib.crc32) over bytes 0..91 and the payload
 *   96  n    payload: the TLS stack's own session blob (holds secrets)
 *
 * An all-0xFF header is an empty slot.
 */
#ifndef STORE_H
#define STORE_H

#include <stddef.h>
#include <stdint.h>

#include "port.h"

#define STORE_MAGIC          "TLSR"
#define STORE_FORMAT         1u
#define STORE_HEADER_SIZE    96u
#define STORE_NAME_MAX       64u   /* field size, NUL included */
#define STORE_MAX_PAYLOAD    (FLASH_SLOT_SIZE - STORE_HEADER_SIZE)
#define STORE_FLAG_NO_WALLTIME 0x01u

enum slot_status {
    SLOT_EMPTY = 0,
    SLOT_VALID,
    SLOT_BAD_CRC,
    SLOT_BAD_HEADER,   /* not erased, but no record we can read (torn header, other format) */
};

struct slot_info {
    enum slot_status status;
    uint32_t seq;
    uint32_t length;
    uint32_t crc;       /* as stored */
    const char *why;    /* for SLOT_BAD_HEADER */
};

/* One record in RAM: the header fields and the payload. */
struct store_record {
    uint8_t stack_id;
    uint8_t tls_version;
    uint8_t flags;
    uint32_t seq;
    uint32_t length;
    int64_t stored_ms;
    uint32_t lifetime_s;
    char server_name[STORE_NAME_MAX];
    uint32_t crc;
    uint8_t payload[STORE_MAX_PAYLOAD];
};

uint32_t crc32_ieee(uint32_t crc, const void *data, size_t len);

/* Number of slots this build uses (1 for the single-slot variant). */
unsigned store_slots(void);
char store_slot_name(unsigned slot);

/* Judge every slot (CRC checked unless the no-crc variant). */
void store_scan(struct slot_info info[FLASH_SLOTS]);
/* Index of the newest valid slot, or -1. */
int store_newest(const struct slot_info info[FLASH_SLOTS]);
/* Read a slot judged valid into rec. 0 or -1. */
int store_load(unsigned slot, struct store_record *rec);

/*
 * Write rec (seq and crc are filled in here) into the slot that does not hold
 * the newest valid record; prints the start and end lines.  Returns the slot
 * index, or -1 (the reason printed).
 */
int store_write(struct store_record *rec);

int store_erase_slot(unsigned slot);
int store_erase_all(void);

#endif
