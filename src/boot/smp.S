/*
 * Start-up code of the other CPUs (application processors). The process unit copies the blob between
 * toro_ap_trampoline and toro_ap_trampoline_end to a free page P below 1 MiB, fills its parameter block
 * (toro_ap_params: control registers, stack, CPU index, C++ entry) and sends INIT-SIPI-SIPI with vector P/4096.
 * The AP starts in real mode at P:0 with cs = P >> 4. The blob is position-independent: real-mode code
 * addresses it through ds = cs, and once flat, through ebx = P.
 *
 * real mode -> protected mode (its own small GDT) -> CR4/CR3/EFER/CR0 as the boot CPU has them (paging and
 * long mode at once) -> far jump to toro_ap_start64 in the kernel's text -> stack, then the C++ entry.
 * Only the far jump after paging is enabled executes from P under paging: P is made executable while CPUs
 * start. Every section here is dropped by --gc-sections unless the process unit references it.
 */
        .section .rodata.toro_ap_trampoline, "a"
        .p2align 4
        .globl toro_ap_trampoline, toro_ap_trampoline_end, toro_ap_params
        .code16
toro_ap_trampoline:
        cli
        cld
        mov %cs, %ax
        mov %ax, %ds
        movzwl %ax, %ebx
        shl $4, %ebx                            /* ebx = P, the blob's linear address */
        leal (ap_gdt - toro_ap_trampoline)(%ebx), %eax
        movl %eax, (ap_gdtr + 2 - toro_ap_trampoline)   /* the GDT's linear base, known only now */
        lgdtl (ap_gdtr - toro_ap_trampoline)
        leal (ap_start32 - toro_ap_trampoline)(%ebx), %eax
        movl %eax, (ap_far32 - toro_ap_trampoline)
        movl %cr0, %eax
        orl $1, %eax                            /* PE */
        movl %eax, %cr0
        ljmpl *(ap_far32 - toro_ap_trampoline)  /* loads cs = 0x08: 32-bit code */

        .code32
ap_start32:
        mov $0x10, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        movl (ap_cr4 - toro_ap_trampoline)(%ebx), %eax
        movl %eax, %cr4                         /* PAE, and SSE enabled as on the boot CPU */
        movl (ap_cr3 - toro_ap_trampoline)(%ebx), %eax
        movl %eax, %cr3                         /* the kernel's page tables (below 4 GiB) */
        movl $0xC0000080, %ecx
        movl (ap_efer - toro_ap_trampoline)(%ebx), %eax
        xorl %edx, %edx
        wrmsr                                   /* EFER: LME, NXE */
        movl (ap_cr0 - toro_ap_trampoline)(%ebx), %eax
        movl %eax, %cr0                         /* PG|PE|WP...: long mode is active */
        ljmpl *(ap_far64 - toro_ap_trampoline)(%ebx)    /* cs = 0x18: 64-bit code, into the kernel */

        .p2align 3
ap_gdt:
        .quad 0
        .quad 0x00cf9b000000ffff                /* 0x08: 32-bit code, accessed */
        .quad 0x00cf93000000ffff                /* 0x10: data, accessed */
        .quad 0x00af9b000000ffff                /* 0x18: 64-bit code, accessed */
ap_gdtr:
        .word 4 * 8 - 1
        .long 0                                 /* filled in at run time: P + ap_gdt */
        .p2align 2
ap_far32:
        .long 0                                 /* filled in at run time: P + ap_start32 */
        .word 0x08

        /* The parameter block, struct toro::ap_params in include/toro/proc/smp.hpp. */
        .p2align 3
toro_ap_params:
ap_cr0:         .long 0
ap_cr3:         .long 0
ap_cr4:         .long 0
ap_efer:        .long 0
ap_far64:       .long 0                         /* toro_ap_start64 */
                .word 0x18
                .word 0
ap_stack:       .quad 0
ap_cpu:         .long 0
ap_started:     .long 0
ap_entry:       .quad 0
toro_ap_trampoline_end:

        .section .text.toro_ap_start64, "ax"
        .code64
        .globl toro_ap_start64
toro_ap_start64:
        mov %ebx, %ebx                          /* P, zero-extended: upper halves are undefined here */
        mov $0x10, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        xor %eax, %eax
        mov %eax, %fs
        mov %eax, %gs
        mov (ap_stack - toro_ap_trampoline)(%rbx), %rsp
        mov (ap_cpu - toro_ap_trampoline)(%rbx), %edi
        xor %ebp, %ebp                          /* ends the frame chain for backtraces */
        call *(ap_entry - toro_ap_trampoline)(%rbx)
        ud2                                     /* the entry never returns */
