/*
 * toro's boot shim: every way into the kernel ends in toro_boot_entry() in 64-bit mode.
 *
 *   Multiboot1 (through the ELF32 wrapper) -.
 *   PVH (XEN_ELFNOTE_PHYS32_ENTRY)         --+-> _start32 --> common32: GDT, page tables, long mode --> start64
 *   Linux 64-bit entry (e_entry, rsi->zp)  ---> back to 32-bit protected mode --> common32
 *
 * The Linux entry drops to 32-bit on purpose: the page tables are then built by one piece of code, always before
 * paging is on (shadow-paging hypervisors trap writes to live tables), and never written while live.
 * start64 sets the stack, enables SSE, clears BSS and calls C++. What C++ needs (protocol, info pointer, TSC at
 * entry) is left in .boot_noinit, which the BSS clear does not touch.
 */
#include "boot_defs.h"

/* ---------------------------------------------------------------- the PVH note (its own PT_NOTE) */
        .section .note.pvh, "a", @note
        .p2align 2
        .long 4                         /* namesz: "Xen\0" */
        .long 4                         /* descsz: a 32-bit physical address */
        .long 18                        /* XEN_ELFNOTE_PHYS32_ENTRY */
        .asciz "Xen"
        .p2align 2
        .long _start32                  /* the ELF32 wrapper reuses this as its Multiboot e_entry */

/* ---------------------------------------------------------------- boot GDT */
        .section .rodata.boot, "a"
        .p2align 3
boot_gdt:
        .quad 0                         /* null */
        .quad 0x00af9a000000ffff        /* 0x08: 64-bit code (L=1), ring 0 */
        .quad 0x00cf92000000ffff        /* 0x10: flat 4 GiB data, valid in 32- and 64-bit mode */
        .quad 0x00cf9a000000ffff        /* 0x18: flat 32-bit code, for the Linux entry's way back down */
boot_gdt_end:
        /* A 10-byte pseudo-descriptor: lgdt in 32-bit mode reads the first 6 bytes, in 64-bit mode all 10. */
boot_gdt_ptr:
        .word boot_gdt_end - boot_gdt - 1
        .quad boot_gdt

msg_no_long_mode:
        .asciz "toro: this CPU has no 64-bit long mode; cannot boot\r\n"

/* ---------------------------------------------------------------- 32-bit entry: Multiboot and PVH */
        .section .text.boot32, "ax"
        .code32
        .globl _start32
        .type _start32, @function
_start32:
        cli
        mov %eax, %edi                  /* Multiboot magic arrives in eax; rdtsc is about to clobber it */
        rdtsc                           /* first thing: the TSC at entry, for boot-time accounting */
        mov %eax, toro_boot_tsc
        mov %edx, toro_boot_tsc + 4
        mov %edi, toro_boot_magic
        mov %ebx, toro_boot_info_addr   /* Multiboot: ebx -> multiboot_info; PVH: ebx -> hvm_start_info */
        movl $0, toro_boot_info_addr + 4

        /* PVH first: its ABI leaves eax undefined, and QEMU's PVH firmware does hand over 0x2BADB002 in it.
         * A start_info magic at [ebx] is the stronger evidence (Multiboot's [ebx] is a small flags word). */
        mov $BOOT_PROTO_PVH, %ecx
        cmp $0xfffffff0, %ebx           /* a pointer this high cannot hold a start_info: don't read it */
        ja 1f
        cmpl $PVH_START_INFO_MAGIC, (%ebx)
        je 2f
1:      mov $BOOT_PROTO_MULTIBOOT, %ecx
        cmp $MULTIBOOT_LOADER_MAGIC, %edi
        je 2f
        mov $BOOT_PROTO_UNKNOWN, %ecx   /* reported by C++, which can print */
2:      mov %ecx, toro_boot_protocol

common32:
        lgdt boot_gdt_ptr
        mov $SEL_DATA, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        mov %eax, %fs
        mov %eax, %gs
        mov $boot_stack_top, %esp       /* only for the calls below; BSS is cleared later, the stack reused */
        ljmp $SEL_CODE32, $1f           /* reload cs from our GDT: the loader's may be gone soon */
1:
        /* Long mode and the optional features, from CPUID 0x80000001 edx. */
        mov $0x80000000, %eax
        cpuid
        cmp $0x80000001, %eax
        jb no_long_mode
        mov $0x80000001, %eax
        cpuid
        bt $29, %edx                    /* LM */
        jnc no_long_mode
        mov %edx, %esi                  /* keep: bit 26 = 1 GiB pages, bit 20 = NX */

        /*
         * Identity map, built while paging is off:
         *   PML4[0] -> PDPT;  PDPT[0] -> PD0;  PD0[0] -> PT0 (4 KiB pages, PT0[0] absent: the NULL guard)
         *   PD0[1..511]: 2 MiB pages up to 1 GiB
         *   with 1 GiB pages: PDPT[1..511] map 1 GiB..512 GiB;  without: PDPT[1..3] -> PD1..PD3 (2 MiB pages to 4 GiB)
         * Every entry of every table is written, so nothing relies on the memory being zero.
         */
        xor %edx, %edx                  /* high half of every entry below 4 GiB */

        mov $boot_pml4, %edi
        mov $(boot_pdpt + PTE_PRESENT + PTE_WRITE), %eax
        mov $1, %ecx
        call fill_entries
        xor %eax, %eax
        xor %ebp, %ebp
        mov $511, %ecx
        call fill_entries

        mov $boot_pt0, %edi
        xor %eax, %eax
        mov $1, %ecx                    /* PT0[0] = 0: page 0 stays unmapped */
        call fill_entries
        mov $(0x1000 + PTE_PRESENT + PTE_WRITE), %eax
        mov $0x1000, %ebp
        mov $511, %ecx
        call fill_entries

        mov $boot_pd, %edi
        mov $(boot_pt0 + PTE_PRESENT + PTE_WRITE), %eax
        mov $1, %ecx
        call fill_entries
        mov $(0x200000 + PTE_PRESENT + PTE_WRITE + PTE_LARGE), %eax
        mov $0x200000, %ebp
        mov $511, %ecx
        call fill_entries

        mov $boot_pdpt, %edi
        mov $(boot_pd + PTE_PRESENT + PTE_WRITE), %eax
        mov $1, %ecx
        call fill_entries
        bt $26, %esi                    /* Page1GB */
        jnc 3f
        mov $(0x40000000 + PTE_PRESENT + PTE_WRITE + PTE_LARGE), %eax
        mov $0x40000000, %ebp           /* the adc in fill_entries carries into the high half past 4 GiB */
        mov $511, %ecx
        call fill_entries
        jmp 4f
3:      mov $(boot_pd + 0x1000 + PTE_PRESENT + PTE_WRITE), %eax
        mov $0x1000, %ebp               /* PD1..PD3 follow PD0 */
        mov $3, %ecx
        call fill_entries
        xor %eax, %eax
        xor %ebp, %ebp
        mov $508, %ecx
        call fill_entries
        mov $(boot_pd + 0x1000), %edi
        mov $(0x40000000 + PTE_PRESENT + PTE_WRITE + PTE_LARGE), %eax
        mov $0x200000, %ebp
        mov $1536, %ecx
        call fill_entries
4:
        /* PAE -> CR3 -> EFER.LME (and NXE when the CPU has NX) -> paging on -> far jump into 64-bit code. */
        mov %cr4, %eax
        or $CR4_PAE, %eax
        mov %eax, %cr4
        mov $boot_pml4, %eax
        mov %eax, %cr3
        mov $MSR_EFER, %ecx
        rdmsr
        or $EFER_LME, %eax
        bt $20, %esi
        jnc 5f
        or $EFER_NXE, %eax
5:      wrmsr
        mov %cr0, %eax
        or $(CR0_PG | CR0_PE | CR0_WP), %eax   /* WP: read-only pages bind ring 0 too */
        mov %eax, %cr0
        ljmp $SEL_CODE64, $start64

/* fill_entries: write ecx 8-byte entries at edi, starting with edx:eax and adding ebp each time. */
fill_entries:
        mov %eax, (%edi)
        mov %edx, 4(%edi)
        add $8, %edi
        add %ebp, %eax
        adc $0, %edx
        dec %ecx
        jnz fill_entries
        ret

/* No long mode: nothing else can run. Say so on COM1, exit through isa-debug-exit, else halt. */
no_long_mode:
        mov $msg_no_long_mode, %esi
        mov $0x3f8, %dx
1:      lodsb
        test %al, %al
        jz 2f
        out %al, %dx
        jmp 1b
2:      mov $PANIC_STATUS, %al
        out %al, $DEBUG_EXIT_PORT
3:      hlt
        jmp 3b

/* ---------------------------------------------------------------- Linux 64-bit entry (e_entry) */
        .section .text.boot64, "ax"
        .code64
        .globl _start64_linux
        .type _start64_linux, @function
_start64_linux:
        cli
        rdtsc
        mov %eax, toro_boot_tsc(%rip)
        mov %edx, toro_boot_tsc + 4(%rip)
        mov %rsi, toro_boot_info_addr(%rip)     /* rsi -> boot_params (the zero page) */
        movl $BOOT_PROTO_LINUX64, toro_boot_protocol(%rip)
        movl $0, toro_boot_magic(%rip)
        /* Leave long mode through compatibility mode: this code is identity-mapped, so turning paging off
         * in the middle of it is safe. */
        lgdt boot_gdt_ptr(%rip)
        lea boot_stack_top(%rip), %rsp
        pushq $SEL_CODE32
        lea 1f(%rip), %rax
        pushq %rax
        lretq                           /* to 1: in 32-bit compatibility mode */
        .code32
1:      mov %cr0, %eax
        and $~CR0_PG, %eax              /* paging off: EFER.LMA drops, we are in protected mode */
        mov %eax, %cr0
        mov $MSR_EFER, %ecx
        rdmsr
        and $~EFER_LME, %eax
        wrmsr
        jmp common32

/* ---------------------------------------------------------------- 64-bit common path */
        .code64
start64:
        mov $SEL_DATA, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        xor %eax, %eax
        mov %eax, %fs
        mov %eax, %gs
        lea boot_stack_top(%rip), %rsp

        /* SSE: the compiler may use it anywhere (memcpy, struct copies). */
        mov %cr0, %rax
        and $~CR0_EM, %rax
        or $CR0_MP, %rax
        mov %rax, %cr0
        mov %cr4, %rax
        or $(CR4_OSFXSR | CR4_OSXMMEXCPT), %rax
        mov %rax, %cr4

        /* Clear BSS (the linker script keeps it 8-byte aligned and sized). */
        lea __bss_start(%rip), %rdi
        lea __bss_end(%rip), %rcx
        sub %rdi, %rcx
        shr $3, %rcx
        xor %eax, %eax
        rep stosq

        xor %ebp, %ebp                  /* ends the frame-pointer chain for backtraces */
        call toro_boot_entry            /* never returns */
1:      cli
        hlt
        jmp 1b

/* ---------------------------------------------------------------- memory the shim owns */
        .section .bss.boot_stack, "aw", @nobits
        .p2align 4
        .globl boot_stack_bottom, boot_stack_top
boot_stack_bottom:
        .skip 16384
boot_stack_top:

        /* Not cleared by start64: written before the BSS clear. */
        .section .boot_noinit, "aw", @nobits
        .p2align 12
boot_pml4:      .skip 4096
boot_pdpt:      .skip 4096
boot_pd:        .skip 4 * 4096          /* PD0 and, without 1 GiB pages, PD1..PD3 */
boot_pt0:       .skip 4096
        .globl toro_boot_tsc, toro_boot_info_addr, toro_boot_protocol, toro_boot_magic
toro_boot_tsc:          .skip 8
toro_boot_info_addr:    .skip 8
toro_boot_protocol:     .skip 4
toro_boot_magic:        .skip 4
