/* AN3155 USART bootloader, host side: frame encoders, answer decoders and a sans-I/O
 * transaction engine. Pure code: no I/O, no clocks, no logging, no allocation.
 *
 * The engine runs one command's conversation. A driver (blocking or event loop) asks it
 * what to do with an3155_xfer_next(): send the pending bytes (report them with
 * an3155_xfer_wrote()), then receive up to io.rx_want bytes (hand them to
 * an3155_xfer_feed()) within io.timeout_ms, or report an expired timer with
 * an3155_xfer_timeout() and a vanished port with an3155_xfer_port_gone(). When
 * an3155_xfer_next() says DONE the result accessors are valid; FAILED gives an error from
 * an3155_xfer_result(). Retries and resynchronisation are the driver's policy. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "an3155-wire.h"
#include "sfi-error.h"

/* Errors, returned negated (-AN3155_E_NACK): enum an3155_error, the AN3155 block of the
 * error space (sfi-error.h), so that one int carries them or an errno value. */
/* The same as sfi_strerror(). */
const char *an3155_strerror(int r);

/* Steps of a conversation, used to say where a command failed. */
enum an3155_step {
	AN3155_STEP_SYNC,	/* 0x7F, waiting for ACK/NACK */
	AN3155_STEP_COMMAND,	/* opcode + complement */
	AN3155_STEP_ADDRESS,	/* 4-byte address + XOR */
	AN3155_STEP_COUNT,	/* Read Memory N-1 + complement */
	AN3155_STEP_DATA,	/* data block, erase list, sector list */
	AN3155_STEP_SUBOP,	/* Special sub-opcode */
	AN3155_STEP_PACKET1,	/* Special / Extended Special first packet */
	AN3155_STEP_PACKET2,	/* Extended Special second packet */
	AN3155_STEP_ANSWER,	/* bytes the chip sends after the last ACK of a request */
	AN3155_STEP_STATUS,	/* Special status packet */
	AN3155_STEP_FINAL_ACK,	/* ACK closing an answer, or the result of an operation */
	_AN3155_STEP_MAX,
};

/* Returns a static name of a step ("address"). */
const char *an3155_step_to_string(enum an3155_step s);
/* Returns a static name of a command opcode ("Write Memory"), "unknown command" if none. */
const char *an3155_command_to_string(uint8_t op);

/* ---- Encoders. Each checks its arguments and its output room; returns the number of
 * bytes written (> 0) or a negative errno (-EINVAL bad argument, -ENOBUFS no room). ---- */

#define AN3155_ERASE_MAX_PAGES 256 /* pages per Extended Erase command (our choice) */
#define AN3155_WP_MAX_SECTORS 256

/* Opcode and its complement. */
int an3155_encode_command(uint8_t op, uint8_t *out, size_t outmax);
/* 4-byte address, MSB first, then the XOR of the four bytes. */
int an3155_encode_address(uint32_t addr, uint8_t *out, size_t outmax);
/* Read Memory count: N-1 and its complement, 1 <= n <= 256. */
int an3155_encode_read_count(size_t n, uint8_t *out, size_t outmax);
/* Write Memory block: N-1, the data padded with 0xFF to a multiple of 4, XOR of all;
 * 1 <= n <= 256. */
int an3155_encode_write_block(const uint8_t *data, size_t n, uint8_t *out, size_t outmax);
/* Extended Erase special code (mass 0xFFFF, bank 1 0xFFFE, bank 2 0xFFFD) and its XOR. */
int an3155_encode_erase_special(uint16_t code, uint8_t *out, size_t outmax);
/* Extended Erase page list: count-1 (2 bytes), pages (2 bytes each), XOR of all;
 * 1 <= n <= AN3155_ERASE_MAX_PAGES, page numbers below 0xFFF0. */
int an3155_encode_erase_pages(const uint16_t *pages, size_t n, uint8_t *out, size_t outmax);
/* Write Protect sector list: N-1, sector codes, XOR; 1 <= n <= 256. */
int an3155_encode_write_protect(const uint8_t *sectors, size_t n, uint8_t *out, size_t outmax);
/* Special sub-opcode: 2 bytes MSB first and their XOR. */
int an3155_encode_subop(uint16_t subop, uint8_t *out, size_t outmax);
/* Special packet: length (2 bytes MSB first, <= max), data, XOR over length and data. */
int an3155_encode_packet(const uint8_t *data, size_t n, size_t max, uint8_t *out, size_t outmax);

/* XOR of a buffer. */
uint8_t an3155_xor(const uint8_t *buf, size_t n);
/* Checks a host frame that ends with an XOR over everything before it (as built by the
 * block, list and packet encoders). Returns 0, -AN3155_E_CHECKSUM, or -EINVAL if empty. */
int an3155_check_xor(const uint8_t *frame, size_t n);

/* ---- Decoders of the chip's answers (without the leading and closing ACKs). ---- */

struct an3155_get_info {
	uint8_t version;	/* bootloader protocol version, 0x40 = 4.0 */
	uint8_t n_cmds;
	uint8_t cmds[256];
};

/* Get answer: N, version, N command codes. Returns 0 or -AN3155_E_UNEXPECTED on a length
 * mismatch. */
int an3155_decode_get(const uint8_t *buf, size_t n, struct an3155_get_info *ret);
/* True when the Get list names opcode op. */
bool an3155_get_has(const struct an3155_get_info *g, uint8_t op);

struct an3155_version_info {
	uint8_t version;
	uint8_t option1, option2;
};
/* Get Version answer: version and two option bytes. */
int an3155_decode_get_version(const uint8_t *buf, size_t n, struct an3155_version_info *ret);

/* Get ID answer: N, then N+1 bytes of product id, MSB first (N+1 <= 4). */
int an3155_decode_get_id(const uint8_t *buf, size_t n, uint32_t *ret_pid);

/* ---- Transaction engine ---- */

/* Timeouts of the steps, in milliseconds. */
struct an3155_timeouts {
	unsigned ack_ms;	  /* sync, command, address, count, sub-opcode, packets */
	unsigned block_ms;	  /* Write Memory data ACK, Read Memory data */
	unsigned mass_erase_ms;	  /* mass or bank erase */
	unsigned page_erase_ms;	  /* per page of an erase list */
	unsigned special_ms;	  /* Special / Extended Special answer (the chip works) */
};

/* Defaults close to stm32flash: 1 s per step, 35 s mass erase, 5 s per page, 15 s for a
 * Special answer. */
void an3155_timeouts_default(struct an3155_timeouts *t);

enum an3155_next {
	AN3155_NEXT_IO,		/* io is filled: send, then receive */
	AN3155_NEXT_DONE,	/* finished; results valid */
	AN3155_NEXT_FAILED,	/* finished; an3155_xfer_result() < 0 */
};

struct an3155_io {
	const uint8_t *tx;	/* bytes still to send (valid until the next engine call) */
	size_t tx_len;
	size_t rx_want;		/* after sending: bytes to receive, at most */
	unsigned timeout_ms;	/* for this wait, counted from the end of sending */
	unsigned wait_id;	/* changes whenever a new wait starts: re-arm the timer */
};

#define AN3155_TX_MAX (3 + AN3155_XSPECIAL_MAX_DATA)	/* largest request frame */

/* One command's conversation. Allocate it anywhere; fields are private. */
struct an3155_xfer {
	struct an3155_timeouts t;
	uint8_t op;
	uint8_t stage;		/* position in the command's script */
	enum an3155_step step;
	int result;		/* 1 running, 0 done, < 0 error */
	bool committed;		/* a request with side effects reached the chip */
	bool nack_ok;		/* sync: NACK means already synced */
	unsigned wait_id;
	unsigned wait_ms;

	uint8_t tx[AN3155_TX_MAX];
	size_t tx_len, tx_off;

	uint8_t rx[AN3155_SPECIAL_MAX_ANSWER + 4];
	size_t rx_len, rx_want;

	/* Request parameters; caller buffers are borrowed until the transfer ends. */
	uint32_t addr;
	size_t len;
	const uint8_t *data;
	const uint8_t *data2;
	size_t len2;
	const uint16_t *pages;
	uint16_t erase_code;
	uint16_t subop;
	uint8_t *out;
	size_t out_max;

	/* Results. */
	struct an3155_get_info get;
	struct an3155_version_info version;
	uint32_t pid;
	size_t out_len;
	uint16_t status;
};

/* Each starter resets *x for one command and checks its arguments: 0 or -EINVAL. */
void an3155_xfer_sync(struct an3155_xfer *x, const struct an3155_timeouts *t);
void an3155_xfer_get(struct an3155_xfer *x, const struct an3155_timeouts *t);
void an3155_xfer_get_version(struct an3155_xfer *x, const struct an3155_timeouts *t);
void an3155_xfer_get_id(struct an3155_xfer *x, const struct an3155_timeouts *t);
/* Reads n (1..256) bytes into out. */
int an3155_xfer_read_memory(struct an3155_xfer *x, const struct an3155_timeouts *t,
			    uint32_t addr, uint8_t *out, size_t n);
/* Writes n (1..256) bytes, padded with 0xFF to a multiple of 4. */
int an3155_xfer_write_memory(struct an3155_xfer *x, const struct an3155_timeouts *t,
			     uint32_t addr, const uint8_t *data, size_t n);
/* Extended Erase with a special code (AN3155_ERASE_MASS/BANK1/BANK2). */
int an3155_xfer_erase_special(struct an3155_xfer *x, const struct an3155_timeouts *t,
			      uint16_t code);
/* Extended Erase of a page list (1..AN3155_ERASE_MAX_PAGES). */
int an3155_xfer_erase_pages(struct an3155_xfer *x, const struct an3155_timeouts *t,
			    const uint16_t *pages, size_t n);
void an3155_xfer_go(struct an3155_xfer *x, const struct an3155_timeouts *t, uint32_t addr);
int an3155_xfer_write_protect(struct an3155_xfer *x, const struct an3155_timeouts *t,
			      const uint8_t *sectors, size_t n);
void an3155_xfer_write_unprotect(struct an3155_xfer *x, const struct an3155_timeouts *t);
/* Special 0x50: data (0..128 bytes); the answer data (<= out_max, <= 1024) goes to out. */
int an3155_xfer_special(struct an3155_xfer *x, const struct an3155_timeouts *t, uint16_t subop,
			const uint8_t *data, size_t n, uint8_t *out, size_t out_max);
/* Extended Special 0x51: packet 1 (0..128 bytes), packet 2 (0..1024 bytes). */
int an3155_xfer_xspecial(struct an3155_xfer *x, const struct an3155_timeouts *t,
			 uint16_t subop, const uint8_t *p1, size_t n1, const uint8_t *p2,
			 size_t n2);

/* What to do now. Fills *io only for AN3155_NEXT_IO. */
enum an3155_next an3155_xfer_next(const struct an3155_xfer *x, struct an3155_io *io);
/* n bytes of io.tx were written. */
void an3155_xfer_wrote(struct an3155_xfer *x, size_t n);
/* Bytes received. Returns how many were taken: at least one if the transfer was waiting,
 * running on through following receive-only steps, stopping when the engine has something
 * to send or has finished. Bytes that arrive while the engine is sending fail the transfer
 * with AN3155_E_UNEXPECTED; bytes left over after it finished are the driver's to drop. */
size_t an3155_xfer_feed(struct an3155_xfer *x, const uint8_t *buf, size_t n);
/* The timer of the current wait expired. */
void an3155_xfer_timeout(struct an3155_xfer *x);
/* The port vanished. */
void an3155_xfer_port_gone(struct an3155_xfer *x);

/* 0 when done, a negative error when failed, 1 while running. */
int an3155_xfer_result(const struct an3155_xfer *x);
/* The step that was running when the transfer ended (or is running now). */
enum an3155_step an3155_xfer_step(const struct an3155_xfer *x);
/* True once a request that changes the chip (write data, erase list, Go address, special
 * packets) has been sent completely: retrying could repeat its effect. */
bool an3155_xfer_committed(const struct an3155_xfer *x);
/* Writes "Write Memory: NACK at the address step" style text for a failed transfer. */
void an3155_xfer_describe(const struct an3155_xfer *x, char *buf, size_t size);

/* Results after DONE. */
const struct an3155_get_info *an3155_xfer_get_info(const struct an3155_xfer *x);
const struct an3155_version_info *an3155_xfer_version_info(const struct an3155_xfer *x);
uint32_t an3155_xfer_pid(const struct an3155_xfer *x);
/* Sync: true when the chip answered NACK (it was already synchronised). */
bool an3155_xfer_was_synced(const struct an3155_xfer *x);
/* Special: answer data length (bytes written to out) and status. */
size_t an3155_xfer_answer_len(const struct an3155_xfer *x);
uint16_t an3155_xfer_status(const struct an3155_xfer *x);

/* ---- Retry policy: the one every driver follows ----
 *
 * A transfer that failed with a lost or garbled answer (timeout, bytes out of turn, too
 * long, bad checksum) is run again from its start after a resynchronisation, at most
 * `retries` times. A NACK is the chip's word and a vanished port is final: never retried.
 * A request with side effects that reached the chip whole is sent again only when a second
 * copy cannot change the outcome: Extended Erase (erasing again erases the same), the OSFI
 * reads GET_INFO and GET_CERT, and PUT_DATA (the chip answers a repeated last chunk as
 * before without applying it twice, docs/protocol.md §5.2). Write Memory, Go, PUT_LICENSE,
 * PUT_HEADER, FINALIZE and ABORT are not. A sync is not retried here: its driver offers
 * 0x7F until answered. */

/* True when a command with this opcode (and, for 0x50/0x51, sub-opcode) may be sent again
 * after its request reached the chip whole. */
bool an3155_repeat_safe(uint8_t op, uint16_t subop);
/* True when the failed transfer x (error r, `tries` retries made so far) is to be run again
 * after a resynchronisation. */
bool an3155_retry_allowed(const struct an3155_xfer *x, int r, unsigned tries, unsigned retries);

/* A resynchronisation ends when this many sync rounds in a row were answered (ACK or NACK),
 * each followed by a quiet line: the first answer may be a stale one, a late answer of the
 * failed command, and only a second one proves the chip listens to us. */
#define AN3155_RESYNC_ROUNDS 2
