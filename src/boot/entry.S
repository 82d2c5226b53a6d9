/*
 * toro's boot shim: every way into the kernel ends in toro_boot_entry() in 64-bit mode.
 *
 *   Multiboot1 (through the ELF32 wrapper) -.
 *   PVH (XEN_ELFNOTE_PHYS32_ENTRY)         --+-> _start32: GDT, bootstrap map, long mode -.
 *   Linux 64-bit entry (e_entry, rsi->zp)  ---> _start64_linux: our GDT ---------------------+-> start64
 *
 * start64 builds the kernel's page tables, switches CR3 to them, sets the stack, enables SSE, clears BSS and
 * calls C++. What C++ needs (protocol, info pointer, TSC at entry) is left in .boot_noinit, which the BSS
 * clear does not touch.
 *
 * Why the 32-bit code does so little: on shadow-paging hypervisors (this project's CI KVM) code running with
 * paging off is emulated instruction by instruction; filling the page tables there cost 12 ms of a 50 ms boot.
 * So the 32-bit path writes three entries of a bootstrap map (the first 2 MiB, which hold the kernel) and goes
 * to long mode at once; the real tables are filled at native speed in 64-bit code while they are not yet live,
 * then loaded. No table is ever written while live.
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
        .quad 0x00af9b000000ffff        /* 0x08: 64-bit code (L=1), ring 0 */
        .quad 0x00cf93000000ffff        /* 0x10: flat 4 GiB data, valid in 32- and 64-bit mode */
        /* Accessed bits preset: a segment load would otherwise write them into this read-only page. */
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
        cld                             /* EFLAGS other than IF/VM are undefined on entry; rep stos needs DF=0 */
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

        lgdt boot_gdt_ptr               /* cs and the data segments are reloaded by the jump to 64-bit code */

        /* Long mode? (CPUID 0x80000001 edx bit 29; bit 20 is NX) */
        mov $0x80000000, %eax
        cpuid
        cmp $0x80000001, %eax
        jb no_long_mode
        mov $0x80000001, %eax
        cpuid
        bt $29, %edx
        jnc no_long_mode
        mov %edx, %esi

        /* Bootstrap map: one 2 MiB page at 0, which holds the kernel, its BSS, stacks and page tables. Only the
         * entries the CPU walks for those addresses are written; the rest are never used (start64 leaves this
         * map before touching anything above 2 MiB), so their contents do not matter. */
        movl $(boot_bootstrap_pdpt + PTE_PRESENT + PTE_WRITE), boot_bootstrap_pml4
        movl $0, boot_bootstrap_pml4 + 4
        movl $(boot_bootstrap_pd + PTE_PRESENT + PTE_WRITE), boot_bootstrap_pdpt
        movl $0, boot_bootstrap_pdpt + 4
        movl $(PTE_PRESENT + PTE_WRITE + PTE_LARGE), boot_bootstrap_pd
        movl $0, boot_bootstrap_pd + 4

        /* PAE -> CR3 -> EFER.LME (and NXE when the CPU has NX) -> paging on -> far jump into 64-bit code. */
        mov %cr4, %eax
        or $CR4_PAE, %eax
        mov %eax, %cr4
        mov $boot_bootstrap_pml4, %eax
        mov %eax, %cr3
        mov $MSR_EFER, %ecx
        rdmsr
        or $EFER_LME, %eax
        bt $20, %esi
        jnc 3f
        or $EFER_NXE, %eax
3:      wrmsr
        mov %cr0, %eax
        or $(CR0_PG | CR0_PE), %eax
        mov %eax, %cr0
        ljmp $SEL_CODE64, $start64

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
        /* Long mode on the VMM's identity map of low memory (Firecracker maps 1 GiB), rsi -> boot_params. */
        cli
        cld
        rdtsc
        mov %eax, toro_boot_tsc(%rip)
        mov %edx, toro_boot_tsc + 4(%rip)
        mov %rsi, toro_boot_info_addr(%rip)
        movl $BOOT_PROTO_LINUX64, toro_boot_protocol(%rip)
        movl $0, toro_boot_magic(%rip)
        lgdt boot_gdt_ptr(%rip)
        /* NX, if the CPU has it: the VMM set only LME|LMA. */
        mov $0x80000001, %eax
        cpuid
        bt $20, %edx
        jnc 1f
        mov $MSR_EFER, %ecx
        rdmsr
        or $EFER_NXE, %eax
        wrmsr
1:      lea boot_stack_top(%rip), %rsp
        pushq $SEL_CODE64               /* reload cs from our GDT */
        lea start64(%rip), %rax
        pushq %rax
        lretq

/* ---------------------------------------------------------------- 64-bit common path */
start64:
        mov $SEL_DATA, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        xor %eax, %eax
        mov %eax, %fs
        mov %eax, %gs
        lea boot_stack_top(%rip), %rsp

        /*
         * The kernel's identity map, filled now and loaded only when complete.
         *   PML4[0] -> PDPT;  PDPT[0] -> PD0;  PD0[0] -> PT0 (4 KiB pages, PT0[0] absent: the NULL guard)
         *   PD0[1..511]: 2 MiB pages up to 1 GiB
         *   with 1 GiB pages: PDPT[1..63] map 1 GiB..64 GiB; without, the shim stops at 1 GiB
         * toro_boot_mapped_limit says how far the map goes; the memory unit maps RAM and device windows beyond
         * it. Every entry is written, so nothing relies on the memory being zero. Entries are the shim's main
         * cost where a hypervisor emulates guest instructions one by one (kvm_pvm here, ~1.2 us each): each
         * 2 MiB-page table more would be 1k more instructions, ~1.2 ms of boot.
         */
        mov $0x80000001, %eax
        cpuid
        mov %edx, %r8d                  /* bit 26: 1 GiB pages */
        xor %r10d, %r10d                /* r10: the NX bit for data pages, when the CPU has NX (bit 20) */
        bt $20, %r8d
        jnc 5f
        bts $63, %r10
5:

        lea boot_pml4(%rip), %rdi
        lea boot_pdpt + PTE_PRESENT + PTE_WRITE(%rip), %rax
        mov $1, %ecx
        call fill_entries
        xor %eax, %eax
        mov $511, %ecx
        rep stosq

#ifndef TORO_STATIC_PAGE_TABLES
        lea boot_pt0(%rip), %rdi
        xor %eax, %eax
        stosq                           /* PT0[0] = 0: page 0 stays unmapped */
        mov $(0x1000 + PTE_PRESENT + PTE_WRITE), %eax
        or %r10, %rax                   /* data by default; the kernel's text is made executable below */
        mov $0x1000, %edx
        mov $511, %ecx
        call fill_entries

        lea boot_pd(%rip), %rdi
        lea boot_pt0 + PTE_PRESENT + PTE_WRITE(%rip), %rax
        mov $1, %ecx
        call fill_entries
        mov $(0x200000 + PTE_PRESENT + PTE_WRITE + PTE_LARGE), %eax
        or %r10, %rax
        mov $0x200000, %edx
        mov $511, %ecx
        call fill_entries
#endif

        lea boot_pdpt(%rip), %rdi
        lea boot_pd + PTE_PRESENT + PTE_WRITE(%rip), %rax
        mov $1, %ecx
        call fill_entries
        mov $0x40000000, %r9d           /* mapped so far: 1 GiB */
        bt $26, %r8d
        jnc 1f
        mov $(0x40000000 + PTE_PRESENT + PTE_WRITE + PTE_LARGE), %eax
        or %r10, %rax
        mov $0x40000000, %edx
        mov $63, %ecx
        call fill_entries
        mov $(64 << 30), %r9            /* 1 GiB pages: 64 GiB for 63 more entries */
        mov $448, %ecx
        jmp 3f
1:      mov $511, %ecx                  /* without them the memory unit maps what lies above 1 GiB */
3:      xor %eax, %eax
        rep stosq                       /* the rest: not present */
        mov %r9, toro_boot_mapped_limit(%rip)
2:
        /* Guard pages: the page below each stack is left unmapped, so an overflow faults (#DF on its own IST
         * stack) instead of running into what lies below. */
        lea boot_stack_guards(%rip), %rsi
        mov $4, %ecx
4:      lodsq
        shr $12, %rax
        movq $0, boot_pt0(, %rax, 8)
        dec %ecx
        jnz 4b

        /* W^X for the kernel image: text read+execute, rodata read-only; everything else stays writable and,
         * with NX, not executable. (With static page tables the assembled entries carry no NX.) */
        lea __text_start(%rip), %rsi
        lea __text_end(%rip), %rdi
        mov $~(PTE_WRITE | (1 << 63)), %rdx    /* text: not writable, executable */
        call restrict_pages
        lea __rodata_start(%rip), %rsi
        lea __rodata_end(%rip), %rdi
        mov $~PTE_WRITE, %rdx                   /* rodata: not writable (NX from the fill) */
        call restrict_pages

        lea boot_pml4(%rip), %rax
        mov %rax, %cr3                  /* from here on the bootstrap map is dead */

        /* WP: read-only pages bind ring 0 too. SSE: application code may use it (kernel code is built
         * without it, see docs/architecture.md). */
        /* CR0 bits a loader may leave set: TS (the first SSE instruction would fault), CD/NW (uncached),
         * AM, EM. NE: x87 errors as exceptions. */
        mov %cr0, %rax
        and $~(CR0_EM | CR0_TS | CR0_AM | CR0_NW | CR0_CD), %rax
        or $(CR0_MP | CR0_NE | CR0_WP), %rax
        mov %rax, %cr0
        mov %cr4, %rax
        or $(CR4_OSFXSR | CR4_OSXMMEXCPT), %rax
        mov %rax, %cr4

        /* Clear BSS (the linker script keeps it 8-byte aligned and sized; stacks live outside it). */
        lea __bss_start(%rip), %rdi
        lea __bss_end(%rip), %rcx
        sub %rdi, %rcx
        shr $3, %rcx
        xor %eax, %eax
        rep stosq

        xor %ebp, %ebp                  /* ends the frame-pointer chain for backtraces */
        call toro_boot_entry            /* never returns */
3:      cli
        hlt
        jmp 3b


/* fill_entries: write rcx entries at rdi, starting with rax and adding rdx each time. Unrolled by 8 (rcx a
 * multiple of 8 after the first rcx % 8): hypervisors that emulate guest instructions one by one (kvm_pvm
 * here) pay per instruction, and this is the shim's only loop; stosq + add is 2 instructions an entry. */
fill_entries:
        test $7, %ecx
        jz 2f
1:      stosq
        add %rdx, %rax
        dec %ecx
        test $7, %ecx
        jnz 1b
2:      shr $3, %ecx
        jz 4f
3:      .rept 8
        stosq
        add %rdx, %rax
        .endr
        dec %ecx
        jnz 3b
4:      ret

/* restrict_pages: AND rdx into the PT0 entries of the pages of [rsi, rdi) (all below 2 MiB). */
restrict_pages:
        mov %rsi, %rax
        shr $12, %rax
        and %rdx, boot_pt0(, %rax, 8)
        add $0x1000, %rsi
        cmp %rdi, %rsi
        jb restrict_pages
        ret

/* ---------------------------------------------------------------- memory the shim owns */
        /* Stacks, each above a 4 KiB guard page that start64 unmaps. Not cleared (.bss.stack.* lies outside
         * the BSS range start64 clears): nothing reads a stack slot it has not written. */
        .section .bss.stack.boot, "aw", @nobits
        .p2align 12
        .globl boot_stack_bottom, boot_stack_top
        .globl toro_ist_double_fault_top, toro_ist_nmi_top, toro_ist_machine_check_top
guard_boot:     .skip 4096
boot_stack_bottom:
        .skip 16384
boot_stack_top:
guard_df:       .skip 4096
        .skip 8192
toro_ist_double_fault_top:
guard_nmi:      .skip 4096
        .skip 8192
toro_ist_nmi_top:
guard_mc:       .skip 4096
        .skip 8192
toro_ist_machine_check_top:

        .section .rodata.boot, "a"
        .p2align 3
        .globl toro_stack_guards
toro_stack_guards:
boot_stack_guards:
        .quad guard_boot, guard_df, guard_nmi, guard_mc

#ifdef TORO_STATIC_PAGE_TABLES
        /* -Dstatic_page_tables=true: PT0 and PD0, the two dense tables, come assembled in the file (8 KiB more
         * to load) so no guest instruction fills them: the choice for hypervisors that emulate guest code. */
        .section .data.page_tables, "aw"
        .p2align 12
boot_pt0:
        .quad 0                         /* page 0 unmapped: the NULL guard */
        .set addr, 0x1000
        .rept 511
        .quad addr + PTE_PRESENT + PTE_WRITE
        .set addr, addr + 0x1000
        .endr
boot_pd:
        .quad boot_pt0 + PTE_PRESENT + PTE_WRITE
        .set addr, 0x200000
        .rept 511
        .quad addr + PTE_PRESENT + PTE_WRITE + PTE_LARGE
        .set addr, addr + 0x200000
        .endr
#endif

        /* Not cleared by start64: written before the BSS clear (page tables: every entry, by start64). */
        .section .boot_noinit, "aw", @nobits
        .p2align 12
boot_pml4:      .skip 4096
        .globl toro_boot_pdpt
toro_boot_pdpt:                         /* the memory unit maps RAM beyond the boot map through it */
boot_pdpt:      .skip 4096
#ifndef TORO_STATIC_PAGE_TABLES
boot_pd:        .skip 4096              /* PD0: the first GiB */
boot_pt0:       .skip 4096
#endif
boot_bootstrap_pml4:    .skip 4096
boot_bootstrap_pdpt:    .skip 4096
boot_bootstrap_pd:      .skip 4096
        .globl toro_boot_tsc, toro_boot_info_addr, toro_boot_protocol, toro_boot_magic, toro_boot_mapped_limit
toro_boot_tsc:          .skip 8
toro_boot_mapped_limit: .skip 8         /* the identity map covers [0, this) but page 0 */
toro_boot_info_addr:    .skip 8
toro_boot_protocol:     .skip 4
toro_boot_magic:        .skip 4
