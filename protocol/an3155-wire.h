/* AN3155 USART bootloader wire constants. Constants only: both the host library and the
 * STM32H5 emulator include this header, and nothing else is shared between them. */
#pragma once

#define AN3155_SYNC 0x7f
#define AN3155_ACK 0x79
#define AN3155_NACK 0x1f

#define AN3155_CMD_GET 0x00
#define AN3155_CMD_GET_VERSION 0x01
#define AN3155_CMD_GET_ID 0x02
#define AN3155_CMD_READ_MEMORY 0x11
#define AN3155_CMD_GO 0x21
#define AN3155_CMD_WRITE_MEMORY 0x31
#define AN3155_CMD_ERASE 0x43
#define AN3155_CMD_EXTENDED_ERASE 0x44
#define AN3155_CMD_SPECIAL 0x50
#define AN3155_CMD_EXTENDED_SPECIAL 0x51
#define AN3155_CMD_WRITE_PROTECT 0x63
#define AN3155_CMD_WRITE_UNPROTECT 0x73
#define AN3155_CMD_READOUT_PROTECT 0x82
#define AN3155_CMD_READOUT_UNPROTECT 0x92
#define AN3155_CMD_GET_CHECKSUM 0xa1

/* Extended Erase special codes (2 bytes, MSB first). */
#define AN3155_ERASE_MASS 0xffff
#define AN3155_ERASE_BANK1 0xfffe
#define AN3155_ERASE_BANK2 0xfffd

#define AN3155_MAX_BLOCK 256	   /* Read/Write Memory bytes per command */
#define AN3155_SPECIAL_MAX_DATA 128 /* 0x50 data, 0x51 first packet */
#define AN3155_XSPECIAL_MAX_DATA 1024 /* 0x51 second packet */
#define AN3155_SPECIAL_MAX_ANSWER 1024 /* data packet of a 0x50 answer (OSFI limit) */

/* Device ids answered by Get ID. */
#define STM32_PID_H56X_H57X 0x484
#define STM32_PID_H503 0x474
#define STM32_PID_G47X_G48X 0x469

/* STM32H5 memory map. */
#define STM32H5_FLASH_BASE 0x08000000u
#define STM32H5_FLASH_SIZE (2u * 1024 * 1024)
#define STM32H5_FLASH_SECTOR 8192u
#define STM32H5_FLASH_BANK_SIZE (1024u * 1024)
#define STM32H5_FLASH_WRITE_UNIT 16u
#define STM32H5_SRAM_BASE 0x20000000u
#define STM32H5_SRAM_SIZE (640u * 1024)
#define STM32H5_OTP_BASE 0x08fff000u
#define STM32H5_OTP_SIZE 2048u
#define STM32H5_UID_ADDR 0x08fff800u
#define STM32H5_UID_LEN 12u
#define STM32H5_FLASHSIZE_ADDR 0x08fff80cu /* u16, KiB */
#define STM32H5_OBK_BASE 0x0ffd0000u
#define STM32H5_OBK_SIZE 8192u

/* Product states (PRODUCT_STATE option byte, OPTSR_PRG[15:8]). */
#define STM32H5_PS_OPEN 0xed
#define STM32H5_PS_PROVISIONING 0x17
#define STM32H5_PS_IROT_PROVISIONED 0x2e
#define STM32H5_PS_TZ_CLOSED 0xc6
#define STM32H5_PS_CLOSED 0x72
#define STM32H5_PS_LOCKED 0x5c
