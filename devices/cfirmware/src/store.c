/* The A/B session store (see store.h for the record format and why). */
#include "store.h"

#include <string.h>

#include "console.h"
#include "variant.h"

#define MOD "tls_store"

/* ---- CRC-32 (IEEE 802.3, reflected, as zlib.crc32), bitwise: the store
 * runs once per connection, so 1 KiB of table is not worth it. */
uint32_t crc32_ieee(uint32_t crc, const void *data, size_t len)
{
    const uint8_t *p = data;
    crc = ~crc;
    while (len--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_i64(uint8_t *p, int64_t v)
{
    put_u32(p, (uint32_t)(uint64_t)v);
    put_u32(p + 4, (uint32_t)((uint64_t)v >> 32));
}

static int64_t get_i64(const uint8_t *p)
{
    return (int64_t)((uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32);
}

/* Header offsets (store.h). */
enum {
    H_MAGIC = 0, H_FORMAT = 4, H_STACK = 5, H_TLSVER = 6, H_FLAGS = 7, H_SEQ = 8, H_LEN = 12,
    H_STORED = 16, H_LIFETIME = 24, H_NAME = 28, H_CRC = 92,
};

static void encode_header(const struct store_record *rec, uint8_t h[STORE_HEADER_SIZE])
{
    memset(h, 0, STORE_HEADER_SIZE);
    memcpy(h + H_MAGIC, STORE_MAGIC, 4);
    h[H_FORMAT] = STORE_FORMAT;
    h[H_STACK] = rec->stack_id;
    h[H_TLSVER] = rec->tls_version;
    h[H_FLAGS] = rec->flags;
    put_u32(h + H_SEQ, rec->seq);
    put_u32(h + H_LEN, rec->length);
    put_i64(h + H_STORED, rec->stored_ms);
    put_u32(h + H_LIFETIME, rec->lifetime_s);
    memcpy(h + H_NAME, rec->server_name, STORE_NAME_MAX);
    h[H_NAME + STORE_NAME_MAX - 1] = '\0';
    put_u32(h + H_CRC, rec->crc);
}

static void decode_header(const uint8_t h[STORE_HEADER_SIZE], struct store_record *rec)
{
    rec->stack_id = h[H_STACK];
    rec->tls_version = h[H_TLSVER];
    rec->flags = h[H_FLAGS];
    rec->seq = get_u32(h + H_SEQ);
    rec->length = get_u32(h + H_LEN);
    rec->stored_ms = get_i64(h + H_STORED);
    rec->lifetime_s = get_u32(h + H_LIFETIME);
    memcpy(rec->server_name, h + H_NAME, STORE_NAME_MAX);
    rec->server_name[STORE_NAME_MAX - 1] = '\0';
    rec->crc = get_u32(h + H_CRC);
}

unsigned store_slots(void)
{
    return FW_AB_SLOTS ? FLASH_SLOTS : 1u;
}

char store_slot_name(unsigned slot)
{
    return (char)('A' + slot);
}

static uint32_t slot_addr(unsigned slot)
{
    return slot * FLASH_SLOT_SIZE;
}

/* CRC of a slot's header (CRC field excluded) and `length` payload bytes,
 * read from flash in small chunks: no slot-sized buffer needed. */
static int slot_crc(unsigned slot, const uint8_t h[STORE_HEADER_SIZE], uint32_t length, uint32_t *out)
{
    uint8_t chunk[FLASH_PAGE_SIZE];
    uint32_t crc = crc32_ieee(0, h, H_CRC);
    uint32_t addr = slot_addr(slot) + STORE_HEADER_SIZE;
    while (length > 0) {
        uint32_t n = length < sizeof chunk ? length : (uint32_t)sizeof chunk;
        if (port_flash_read(addr, chunk, n) != 0)
            return -1;
        crc = crc32_ieee(crc, chunk, n);
        addr += n;
        length -= n;
    }
    *out = crc;
    return 0;
}

/* All bytes 0xFF: erased NOR.  A loop rather than memcmp with a 0xFF-filled
 * constant: filling that takes a range initialiser ([0 ... N] = 0xFF), a
 * GNU extension IAR and Keil reject. */
static int all_erased(const uint8_t *p, size_t n)
{
    while (n--)
        if (*p++ != 0xFF)
            return 0;
    return 1;
}

static void judge(unsigned slot, struct slot_info *info)
{
    uint8_t h[STORE_HEADER_SIZE];
    uint32_t crc;

    memset(info, 0, sizeof *info);
    if (port_flash_read(slot_addr(slot), h, sizeof h) != 0) {
        info->status = SLOT_BAD_HEADER;
        info->why = "read error";
        return;
    }
    if (all_erased(h, sizeof h)) {
        info->status = SLOT_EMPTY;
        return;
    }
    info->seq = get_u32(h + H_SEQ);
    info->length = get_u32(h + H_LEN);
    info->crc = get_u32(h + H_CRC);
    if (memcmp(h + H_MAGIC, STORE_MAGIC, 4) != 0) {
        info->status = SLOT_BAD_HEADER;
        info->why = "no record magic";
        return;
    }
    if (h[H_FORMAT] != STORE_FORMAT) {
        info->status = SLOT_BAD_HEADER;
        info->why = "unknown format version";
        return;
    }
    /* Checked before the CRC: a flipped length bit must not make us read
     * (and trust) past the slot. */
    if (info->length == 0 || info->length > STORE_MAX_PAYLOAD) {
        info->status = SLOT_BAD_HEADER;
        info->why = "length out of range";
        return;
    }
#if FW_CHECK_CRC
    if (slot_crc(slot, h, info->length, &crc) != 0 || crc != info->crc) {
        info->status = SLOT_BAD_CRC;
        return;
    }
#else
    /* BUG (no-crc): the CRC is written but never checked, so a torn or
     * bit-flipped record with a sane header is trusted and offered. */
    (void)crc;
    (void)slot_crc;
#endif
    info->status = SLOT_VALID;
}

void store_scan(struct slot_info info[FLASH_SLOTS])
{
    for (unsigned i = 0; i < FLASH_SLOTS; i++) {
        if (i < store_slots())
            judge(i, &info[i]);
        else
            memset(&info[i], 0, sizeof info[i]);
    }
}

int store_newest(const struct slot_info info[FLASH_SLOTS])
{
    int best = -1;
    for (unsigned i = 0; i < store_slots(); i++) {
        if (info[i].status != SLOT_VALID)
            continue;
        /* Serial-number arithmetic (RFC 1982): seq b is newer than a when
         * (int32_t)(b - a) > 0, so the record after 0xFFFFFFFF (seq 0)
         * still wins over it; a plain ">" would prefer the older record
         * forever after the wrap.  Sound because the two slots' numbers
         * are always close (a write takes the newest + 1). */
        if (best < 0 || (int32_t)(info[i].seq - info[best].seq) > 0)
            best = (int)i;
    }
    return best;
}

int store_load(unsigned slot, struct store_record *rec)
{
    uint8_t h[STORE_HEADER_SIZE];
    if (slot >= store_slots() || port_flash_read(slot_addr(slot), h, sizeof h) != 0)
        return -1;
    decode_header(h, rec);
    if (rec->length == 0 || rec->length > STORE_MAX_PAYLOAD)
        return -1;
    return port_flash_read(slot_addr(slot) + STORE_HEADER_SIZE, rec->payload, rec->length);
}

int store_erase_slot(unsigned slot)
{
    port_state("flash");
    int r = port_flash_erase_sector(slot);
    port_state("idle");
    return r;
}

int store_erase_all(void)
{
    int r = 0;
    port_state("flash");
    for (unsigned i = 0; i < FLASH_SLOTS; i++)
        if (port_flash_erase_sector(i) != 0)
            r = -1;
    port_state("idle");
    return r;
}

/* Program the slot page by page: the header page first, each page complete
 * before the next starts, so a cut leaves a prefix of the record. */
static int program(unsigned slot, const uint8_t h[STORE_HEADER_SIZE], const struct store_record *rec,
                   unsigned pages)
{
    uint8_t page[FLASH_PAGE_SIZE];
    uint32_t total = STORE_HEADER_SIZE + rec->length;
    for (unsigned p = 0; p < pages; p++) {
        uint32_t off = p * FLASH_PAGE_SIZE;
        uint32_t n = total - off < FLASH_PAGE_SIZE ? total - off : FLASH_PAGE_SIZE;
        for (uint32_t i = 0; i < n; i++) {
            uint32_t at = off + i;
            page[i] = at < STORE_HEADER_SIZE ? h[at] : rec->payload[at - STORE_HEADER_SIZE];
        }
        if (port_flash_program_page(slot_addr(slot) + off, page, n) != 0)
            return -1;
    }
    return 0;
}

int store_write(struct store_record *rec)
{
    struct slot_info info[FLASH_SLOTS];
    uint8_t h[STORE_HEADER_SIZE];
    unsigned slot;

    if (rec->length == 0 || rec->length > STORE_MAX_PAYLOAD) {
        LOG_WRN(MOD, "session not stored: %u bytes do not fit a slot (max %u)", (unsigned)rec->length,
                (unsigned)STORE_MAX_PAYLOAD);
        return -1;
    }
    /* The flash is the truth, not what RAM believes: scan again. Only a
     * CRC-checked sequence number counts (a damaged header could claim any). */
    store_scan(info);
    int newest = store_newest(info);
    /* Wraps from 0xFFFFFFFF to 0 (unsigned): store_newest compares serially. */
    rec->seq = newest >= 0 ? info[newest].seq + 1 : 1;
#if FW_AB_SLOTS
    slot = newest == 0 ? 1u : 0u;
#else
    /* BUG (single-slot): the only copy is erased and rewritten in place; a
     * cut between the erase and the last page leaves no valid session. */
    slot = 0;
#endif
    rec->crc = 0;
    encode_header(rec, h);
    uint32_t crc = crc32_ieee(0, h, H_CRC);
    rec->crc = crc32_ieee(crc, rec->payload, rec->length);
    put_u32(h + H_CRC, rec->crc);

    unsigned pages = (STORE_HEADER_SIZE + rec->length + FLASH_PAGE_SIZE - 1) / FLASH_PAGE_SIZE;
    LOG_INF(MOD, "writing slot %c seq %u (%u bytes, %u pages)", store_slot_name(slot), (unsigned)rec->seq,
            (unsigned)rec->length, pages);
    port_state("flash");
    int r = port_flash_erase_sector(slot);
    if (r == 0)
        r = program(slot, h, rec, pages);
    port_state("idle");
    if (r != 0) {
        LOG_ERR(MOD, "flash write failed in slot %c", store_slot_name(slot));
        return -1;
    }
    /* Read back and check, as after any flash write on a real part. */
    struct slot_info check;
    judge(slot, &check);
    if (check.status != SLOT_VALID || check.seq != rec->seq) {
        LOG_ERR(MOD, "slot %c does not verify after the write", store_slot_name(slot));
        return -1;
    }
    LOG_INF(MOD, "session stored in slot %c seq %u", store_slot_name(slot), (unsigned)rec->seq);
    return (int)slot;
}
