/*
 * The four memory routines the compiler may call on its own (for copies, zeroing and comparisons of large
 * objects) even in freestanding code. rep movsb/stosb are fast on every CPU with ERMS and small everywhere.
 */
        .code64
        .section .text.mem, "ax"

        .globl memcpy
        .type memcpy, @function
memcpy:                                 /* rdi = dst, rsi = src, rdx = n; returns dst */
        mov %rdi, %rax
        mov %rdx, %rcx
        rep movsb
        ret

        .globl memset
        .type memset, @function
memset:                                 /* rdi = dst, esi = byte, rdx = n; returns dst */
        mov %rdi, %r8
        mov %esi, %eax
        mov %rdx, %rcx
        rep stosb
        mov %r8, %rax
        ret

        .globl memmove
        .type memmove, @function
memmove:                                /* copies backwards when dst lies inside [src, src+n) */
        mov %rdi, %rax
        mov %rdx, %rcx
        mov %rdi, %r8
        sub %rsi, %r8
        cmp %rdx, %r8                   /* unsigned dst-src < n: overlapping with dst above src */
        jb 1f
        rep movsb
        ret
1:      lea -1(%rdi,%rdx), %rdi
        lea -1(%rsi,%rdx), %rsi
        std
        rep movsb
        cld
        ret

        .globl memcmp
        .type memcmp, @function
memcmp:                                 /* returns <0, 0, >0 like the C function */
        xor %eax, %eax
        test %rdx, %rdx
        jz 2f
1:      movzbl (%rdi), %eax
        movzbl (%rsi), %ecx
        sub %ecx, %eax
        jnz 2f
        inc %rdi
        inc %rsi
        dec %rdx
        jnz 1b
2:      ret
