/*
 * The floor guest of the boot benchmark: it exits through isa-debug-exit as its first instruction, on every
 * entry (PVH, Multiboot through its ELF32 wrapper, the Linux 64-bit entry), so the VMM's wall time for it is
 * the cost of the path itself: firmware plus VMM, no kernel work. `mov $0,%al; out %al,$0xf4` encodes the
 * same in 32- and 64-bit mode, so one piece of code serves every entry.
 */
        .section .note.pvh, "a", @note
        .p2align 2
        .long 4, 4, 18                  /* namesz "Xen\0", descsz, XEN_ELFNOTE_PHYS32_ENTRY */
        .asciz "Xen"
        .p2align 2
        .long _start32

        .section .text.boot32, "ax"
        .globl _start32, _start64_linux
_start32:
_start64_linux:
        mov $0, %al
        out %al, $0xf4
1:      hlt
        jmp 1b
