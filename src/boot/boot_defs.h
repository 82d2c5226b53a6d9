/* Constants shared by the boot shim's assembly files (and mirrored in include/toro/boot/handoff.hpp). */
#pragma once

/* Boot protocol ids handed to C++ (toro::boot_protocol). */
#define BOOT_PROTO_UNKNOWN 0
#define BOOT_PROTO_MULTIBOOT 1
#define BOOT_PROTO_PVH 2
#define BOOT_PROTO_LINUX64 3

#define MULTIBOOT_LOADER_MAGIC 0x2BADB002 /* in eax on Multiboot entry */
#define PVH_START_INFO_MAGIC 0x336ec578   /* hvm_start_info.magic */

/* Boot GDT selectors. */
#define SEL_CODE64 0x08
#define SEL_DATA 0x10

#define CR0_PE (1 << 0)
#define CR0_MP (1 << 1)
#define CR0_EM (1 << 2)
#define CR0_TS (1 << 3)
#define CR0_NE (1 << 5)
#define CR0_WP (1 << 16)
#define CR0_AM (1 << 18)
#define CR0_NW (1 << 29)
#define CR0_CD (1 << 30)
#define CR0_PG (1 << 31)
#define CR4_PAE (1 << 5)
#define CR4_OSFXSR (1 << 9)
#define CR4_OSXMMEXCPT (1 << 10)
#define MSR_EFER 0xC0000080
#define EFER_LME (1 << 8)
#define EFER_NXE (1 << 11)

#define PTE_PRESENT 0x1
#define PTE_WRITE 0x2
#define PTE_LARGE 0x80 /* PS: 2 MiB page in a PD, 1 GiB page in a PDPT */

/* isa-debug-exit port and the status a boot-shim failure exits with (see docs/architecture.md). */
#define DEBUG_EXIT_PORT 0xf4
#define PANIC_STATUS 101
