/* OSFI v1 wire constants (docs/protocol.md is normative). Constants only: the host library,
 * the HSM layer and the emulator's chip side all include this, and share nothing else. */
#pragma once

#define OSFI_VERSION 1

/* All multi-byte integers inside OSFI structures are little-endian. (AN3155 framing around
 * them keeps its own big-endian lengths.) */

/* Chip certificate "OSC1". */
#define OSFI_CERT_MAGIC "OSC1"
#define OSFI_CERT_LEN 149
#define OSFI_CERT_SIGNED_LEN 85 /* bytes covered by the signature */
#define OSFI_CERT_OFF_VERSION 4
#define OSFI_CERT_OFF_DEVICE 6
#define OSFI_CERT_OFF_UID 8
#define OSFI_CERT_OFF_PUBKEY 20
#define OSFI_CERT_OFF_SIG 85

#define OSFI_UID_LEN 12
#define OSFI_PUBKEY_LEN 65 /* uncompressed P-256 point 04||X||Y */
#define OSFI_SIG_LEN 64	   /* raw r||s */
#define OSFI_ID_LEN 32	   /* image id / firmware id: SHA-256 */
#define OSFI_NONCE_LEN 12
#define OSFI_TAG_LEN 16
#define OSFI_LICENSE_NONCE_LEN 16
#define OSFI_KEY_LEN 16	    /* AES-128 image and module keys */
#define OSFI_WRAPPED_LEN 24 /* AES key wrap (RFC 3394) of a 16-byte key */

/* License record "OSL1". */
#define OSFI_LICENSE_MAGIC "OSL1"
#define OSFI_LICENSE_LEN 172
#define OSFI_LIC_OFF_VERSION 4
#define OSFI_LIC_OFF_KIND 5
#define OSFI_LIC_OFF_DEVICE 6
#define OSFI_LIC_OFF_TARGET 8
#define OSFI_LIC_OFF_UID 12
#define OSFI_LIC_OFF_ID 24
#define OSFI_LIC_OFF_NONCE 56
#define OSFI_LIC_OFF_HSMPUB 72
#define OSFI_LIC_OFF_COUNTER 137
#define OSFI_LIC_OFF_WRAPPED 141
#define OSFI_LIC_OFF_RESERVED 165
#define OSFI_LICENSE_KIND_CHIP 1
#define OSFI_LICENSE_KIND_GLOBAL 2
#define OSFI_TARGET_IMAGE 0 /* else: module id */
#define OSFI_KEK_LABEL "OSFI-KEK-1"
#define OSFI_MODULE_ID_LABEL "OSFI-MOD-1"

/* Image header "OSFI". */
#define OSFI_IMAGE_MAGIC "OSFI"
#define OSFI_HEADER_LEN 64
#define OSFI_HDR_OFF_FORMAT 4
#define OSFI_HDR_OFF_HDRLEN 6
#define OSFI_HDR_OFF_DEVICE 8
#define OSFI_HDR_OFF_AREAS 10
#define OSFI_HDR_OFF_TOTAL 12
#define OSFI_HDR_OFF_VERSION 16
#define OSFI_HDR_OFF_FLAGS 20
#define OSFI_HDR_OFF_NONCE 24
#define OSFI_HDR_OFF_RESERVED 36
#define OSFI_HDR_OFF_TAG 48
#define OSFI_MAX_AREAS 4096

/* Area descriptor. */
#define OSFI_DESC_LEN 48
#define OSFI_DESC_AUTH_LEN 32 /* descriptor bytes in the AAD (all but the tag) */
#define OSFI_DESC_OFF_TYPE 0
#define OSFI_DESC_OFF_VERSION 2
#define OSFI_DESC_OFF_INDEX 4
#define OSFI_DESC_OFF_TOTAL 6
#define OSFI_DESC_OFF_SIZE 8
#define OSFI_DESC_OFF_ADDR 12
#define OSFI_DESC_OFF_MODULE 16
#define OSFI_DESC_OFF_RESERVED 20
#define OSFI_DESC_OFF_TAG 32

#define OSFI_AREA_FIRMWARE 'F'
#define OSFI_AREA_CONFIG 'C'
#define OSFI_AREA_SECRETS 'K'
#define OSFI_AREA_MODULE 'M'
#define OSFI_AREA_PAUSE 'P'
#define OSFI_AREA_RESUME 'R'

/* Configuration ('C') records: 8 bytes each: register u16, reserved u16, value u32. */
#define OSFI_OPT_RECORD_LEN 8
#define OSFI_OPT_OPTSR 1 /* OPTSR_PRG; bits 15:8 = PRODUCT_STATE */
#define OSFI_OPT_OPTSR2 2
#define OSFI_OPT_NSBOOTR 3
#define OSFI_OPT_SECBOOTR 4
#define OSFI_OPT_SECWM1R 5
#define OSFI_OPT_SECWM2R 6
#define OSFI_OPT_WRP1R 7
#define OSFI_OPT_WRP2R 8
#define OSFI_OPT_EDATA1R 9
#define OSFI_OPT_EDATA2R 10
#define OSFI_OPT_HDP1R 11
#define OSFI_OPT_HDP2R 12
#define OSFI_OPT_MAX 12

/* Sub-opcodes on AN3155 0x50 (Special) and 0x51 (Extended Special). */
#define OSFI_OP_GET_INFO 0x5300	   /* 0x50, no data -> info (64 B) */
#define OSFI_OP_GET_CERT 0x5301	   /* 0x50, no data -> certificate */
#define OSFI_OP_PUT_LICENSE 0x5302 /* 0x51, p1 = target u32, p2 = license record */
#define OSFI_OP_PUT_HEADER 0x5303  /* 0x50, data = 64-byte image header */
#define OSFI_OP_PUT_DATA 0x5304	   /* 0x51, p1 = file offset u32, p2 = 1..1024 bytes */
#define OSFI_OP_FINALIZE 0x5305	   /* 0x50, no data */
#define OSFI_OP_ABORT 0x5306	   /* 0x50, no data */

#define OSFI_INFO_LEN 64
/* The GET_INFO answer of chips that predate the installed image id (bytes 32..63). */
#define OSFI_INFO_LEN_SHORT 32
#define OSFI_INFO_OFF_INSTALLED 32
#define OSFI_DATA_CHUNK 1024

/* Session states reported by GET_INFO. */
#define OSFI_SESSION_IDLE 0
#define OSFI_SESSION_LICENSED 1
#define OSFI_SESSION_STREAMING 2
#define OSFI_SESSION_COMPLETE 3
#define OSFI_SESSION_FINALIZED 4
#define OSFI_SESSION_FAILED 5

/* Status codes (2 bytes, MSB first in the AN3155 status packet). */
#define OSFI_ST_OK 0x0000
#define OSFI_ST_BAD_STATE 0x0001
#define OSFI_ST_NOT_ERASED 0x0002
#define OSFI_ST_SEQUENCE 0x0003
#define OSFI_ST_BAD_LENGTH 0x0004
#define OSFI_ST_LICENSE_MALFORMED 0x0005
#define OSFI_ST_LICENSE_WRONG_CHIP 0x0006
#define OSFI_ST_LICENSE_WRONG_DEVICE 0x0007
#define OSFI_ST_LICENSE_INVALID 0x0008
#define OSFI_ST_NO_LICENSE 0x0009
#define OSFI_ST_HEADER_MALFORMED 0x000a
#define OSFI_ST_HEADER_AUTH 0x000b
#define OSFI_ST_IMAGE_WRONG_DEVICE 0x000c
#define OSFI_ST_IMAGE_MISMATCH 0x000d
#define OSFI_ST_ROLLBACK 0x000e
#define OSFI_ST_DESCRIPTOR_MALFORMED 0x000f
#define OSFI_ST_AREA_TOO_LARGE 0x0010
#define OSFI_ST_AREA_AUTH 0x0011
#define OSFI_ST_BAD_ADDRESS 0x0012
#define OSFI_ST_FLASH_ERROR 0x0013
#define OSFI_ST_MODULE_LICENSE_MISSING 0x0014
#define OSFI_ST_INCOMPLETE 0x0015
#define OSFI_ST_BAD_OPTION 0x0016
#define OSFI_ST_INTERNAL 0x0017
#define _OSFI_ST_MAX 0x0018
