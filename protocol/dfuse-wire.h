/* USB DFU 1.1 with ST's DfuSe extensions (AN3156) and OSFI over DfuSe (docs/protocol.md
 * §11): wire constants only. Both the host library and the emulator may include this
 * header; nothing else is shared between them. */
#pragma once

/* ST's system bootloader in DFU mode. */
#define DFUSE_VID 0x0483
#define DFUSE_PID 0xdf11
#define DFUSE_BCD_DFU_VERSION 0x011a /* bcdDFUVersion of a DfuSe device */

/* Class requests (bmRequestType 0x21 out, 0xa1 in; wIndex = interface number). */
#define DFU_REQTYPE_OUT 0x21
#define DFU_REQTYPE_IN 0xa1
#define DFU_REQ_DETACH 0
#define DFU_REQ_DNLOAD 1
#define DFU_REQ_UPLOAD 2
#define DFU_REQ_GETSTATUS 3
#define DFU_REQ_CLRSTATUS 4
#define DFU_REQ_GETSTATE 5
#define DFU_REQ_ABORT 6
#define DFU_STATUS_LEN 6 /* bStatus, bwPollTimeout[3] LE, bState, iString */

/* States (bState). */
#define DFU_STATE_APP_IDLE 0
#define DFU_STATE_APP_DETACH 1
#define DFU_STATE_IDLE 2
#define DFU_STATE_DNLOAD_SYNC 3
#define DFU_STATE_DNBUSY 4
#define DFU_STATE_DNLOAD_IDLE 5
#define DFU_STATE_MANIFEST_SYNC 6
#define DFU_STATE_MANIFEST 7
#define DFU_STATE_MANIFEST_WAIT_RESET 8
#define DFU_STATE_UPLOAD_IDLE 9
#define DFU_STATE_ERROR 10

/* Status codes (bStatus). */
#define DFU_STATUS_OK 0x00
#define DFU_STATUS_ERR_TARGET 0x01
#define DFU_STATUS_ERR_FILE 0x02
#define DFU_STATUS_ERR_WRITE 0x03
#define DFU_STATUS_ERR_ERASE 0x04
#define DFU_STATUS_ERR_CHECK_ERASED 0x05
#define DFU_STATUS_ERR_PROG 0x06
#define DFU_STATUS_ERR_VERIFY 0x07
#define DFU_STATUS_ERR_ADDRESS 0x08
#define DFU_STATUS_ERR_NOTDONE 0x09
#define DFU_STATUS_ERR_FIRMWARE 0x0a
#define DFU_STATUS_ERR_VENDOR 0x0b
#define DFU_STATUS_ERR_USBR 0x0c
#define DFU_STATUS_ERR_POR 0x0d
#define DFU_STATUS_ERR_UNKNOWN 0x0e
#define DFU_STATUS_ERR_STALLEDPKT 0x0f

/* Descriptors. */
#define USB_DT_DEVICE 0x01
#define USB_DT_CONFIG 0x02
#define USB_DT_STRING 0x03
#define USB_DT_INTERFACE 0x04
#define USB_DT_DFU_FUNCTIONAL 0x21
#define USB_DT_DEVICE_LEN 18
#define USB_DT_CONFIG_LEN 9
#define USB_DT_INTERFACE_LEN 9
#define USB_DT_DFU_FUNCTIONAL_LEN 9
#define USB_CLASS_APP_SPECIFIC 0xfe
#define USB_SUBCLASS_DFU 0x01
#define USB_PROTOCOL_DFU_MODE 0x02
#define USB_PROTOCOL_DFU_RUNTIME 0x01
/* bmAttributes of the functional descriptor. */
#define DFU_ATTR_CAN_DNLOAD 0x01
#define DFU_ATTR_CAN_UPLOAD 0x02
#define DFU_ATTR_MANIFEST_TOLERANT 0x04
#define DFU_ATTR_WILL_DETACH 0x08

/* DfuSe commands: DNLOAD with wBlockNum 0. Addresses follow LSB first. */
#define DFUSE_CMD_GET 0x00
#define DFUSE_CMD_SET_ADDRESS 0x21
#define DFUSE_CMD_ERASE 0x41
#define DFUSE_CMD_READ_UNPROTECT 0x92
#define DFUSE_BLOCK_COMMAND 0 /* DNLOAD: a command; UPLOAD: the Get list */
#define DFUSE_BLOCK_DATA 2    /* first data block: address = (n - 2) * size + pointer */
#define DFUSE_TRANSFER_MAX 2048 /* largest wTransferSize of ST's ROMs for flash and RAM */

/* Memory segment attribute letter of an alt string ('a'..'g'): bit 0 readable, bit 1
 * erasable, bit 2 writable ('g' = all three). */
#define DFUSE_MEM_READABLE 0x1
#define DFUSE_MEM_ERASABLE 0x2
#define DFUSE_MEM_WRITABLE 0x4

/* OSFI over DfuSe (docs/protocol.md §11). The alt is found by this string prefix. */
#define DFUSE_OSFI_ALT_PREFIX "@OSFI v1"
#define DFUSE_OSFI_BLOCK 2	     /* request DNLOAD and answer UPLOAD block */
#define DFUSE_OSFI_REQ_HDR 4	     /* LE16 sub-opcode, LE16 n1 */
#define DFUSE_OSFI_DATA_P1 4	     /* PUT_DATA p1: LE32 file offset */
#define DFUSE_OSFI_ANSWER_HDR 2	     /* LE16 status */
#define DFUSE_OSFI_FINALIZE_GONE_MS 50 /* the device leaves within this after FINALIZE OK */
