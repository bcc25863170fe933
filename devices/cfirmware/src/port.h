/*
 * The hardware port: everything the firmware core needs from the board.
 *
 * Why a port layer: on a microcontroller these are a NOR flash driver, the
 * RTC peripheral, the UART and a GPIO or two.  Here (port_posix.c) they are
 * a file, the host clock plus an offset file, the bench's pseudo-terminal and
 * a pipe.  The core (main.c, store.c, app.c) only calls what is declared
 * here, so a port to real hardware replaces one file.
 *
 * Flash model (port_posix.c): NOR flash, erased = 0xFF.  The only write
 * primitive is "program one page", which (as on real NOR) can only clear
 * bits, so a page must be erased first.  Erasing and programming take time
 * (erase_ms per sector, page_ms per page); a power cut (SIGKILL) at any
 * moment leaves exactly the pages programmed so far.
 */
#ifndef PORT_H
#define PORT_H

#include <stddef.h>
#include <stdint.h>

/* ---- flash geometry -------------------------------------------------------
 * 256-byte pages (a common SPI NOR page), 32 pages (8 KiB) a slot, two slots.
 * An Mbed TLS 2.28 session blob with the peer certificate kept is about
 * 0.9-1.6 KiB (EC or RSA leaf), a wolfSSL one with SESSION_CERTS may carry the
 * chain: 8 KiB leaves room for both.  One erase sector = one slot. */
#define FLASH_PAGE_SIZE       256u
#define FLASH_PAGES_PER_SLOT  32u
#define FLASH_SLOT_SIZE       (FLASH_PAGE_SIZE * FLASH_PAGES_PER_SLOT)
#define FLASH_SLOTS           2u
#define FLASH_SIZE            (FLASH_SLOT_SIZE * FLASH_SLOTS)

/* Open (and if missing or short, extend with 0xFF = factory-erased) the flash. */
int port_flash_init(const char *path, unsigned page_ms, unsigned erase_ms);
/* Read any range (no timing: reads are fast on NOR). 0 or -1. */
int port_flash_read(uint32_t addr, void *buf, size_t len);
/* Erase one slot-sized sector (takes erase_ms). 0 or -1. */
int port_flash_erase_sector(unsigned sector);
/* Program one page: bits can only go 1 -> 0 (takes page_ms). 0 or -1. */
int port_flash_program_page(uint32_t addr, const void *data, size_t len);

/* ---- clocks --------------------------------------------------------------- */
/* Milliseconds since this boot (k_uptime_get()). */
int64_t port_uptime_ms(void);
/* Microseconds since this boot, for log timestamps. */
int64_t port_uptime_us(void);

/*
 * The device clock as the firmware believes it (ms; Unix epoch when the board
 * has an RTC).  Provided by the core (main.c), not by the board port: the
 * TLS port may take ticket ages from it (tls_wolfssl.c does, for TLS 1.3).
 */
int64_t port_clock_ms(void);

/*
 * The battery-backed RTC (wall clock, ms since the Unix epoch).  On the host:
 * wall clock + an offset kept in a small file (the battery domain), so it
 * runs on while the device is unpowered.  port_rtc_init(NULL) = no RTC.
 */
void port_rtc_init(const char *offset_file);
int port_rtc_present(void);
int64_t port_rtc_now_ms(void);
int port_rtc_set_ms(int64_t unix_ms);

/* ---- UART (stdin/stdout = the bench's pty) --------------------------------- */
void port_uart_init(void);
/* Transmit; never blocks: when nobody drains the port the bytes are lost, as
 * on a real UART, instead of hanging the firmware. */
void port_uart_write(const void *buf, size_t len);
/* Wait up to timeout_ms (-1 = forever) for input; returns bytes read, 0 on
 * timeout, -1 when the port is gone. */
int port_uart_read(uint8_t *buf, size_t cap, int timeout_ms);

/* ---- board state (the bench's current model) -------------------------------
 * One word per activity change: boot, idle, radio, flash. */
void port_state_init(int fd);
void port_state(const char *word);

/* ---- misc ------------------------------------------------------------------ */
void port_sleep_ms(unsigned ms);
/* Software reset: never returns (re-executes the firmware image). */
void port_reboot_software(void);
/* Remember argv for the software reset. */
void port_set_argv(int argc, char **argv);

/* ---- network (net_posix.c) ---- */
/* A connected TCP socket (TCP_NODELAY set), or -1 with the reason in err ("dns: ...", "tcp: ..."). */
int port_tcp_connect(const char *host, int port, int timeout_ms, char *err, size_t errlen);
/* A stable per-device number (the MQTT client id uses it). */
uint32_t port_device_id(void);

#endif
