/*
 * Exception entry stubs for vectors 0-31. Each stub is 16 bytes (C++ finds stub n at toro_isr_stubs + 16n),
 * pushes a zero error code when the CPU pushes none, then the vector, and joins isr_common, which saves the
 * general registers as a toro::arch::fault_frame and calls toro_exception(frame*). If that returns, the
 * registers are restored and iretq resumes the interrupted code.
 */
        .code64
        .section .text.isr, "ax"

.macro stub vec, has_error
        .p2align 4
.if \has_error == 0
        pushq $0
.endif
        pushq $\vec
        jmp isr_common
.endm

        .p2align 4
        .globl toro_isr_stubs
toro_isr_stubs:
        /* Error code pushed by the CPU for 8 #DF, 10 #TS, 11 #NP, 12 #SS, 13 #GP, 14 #PF, 17 #AC, 21 #CP,
         * 29 #VC, 30 #SX. */
        stub 0, 0
        stub 1, 0
        stub 2, 0
        stub 3, 0
        stub 4, 0
        stub 5, 0
        stub 6, 0
        stub 7, 0
        stub 8, 1
        stub 9, 0
        stub 10, 1
        stub 11, 1
        stub 12, 1
        stub 13, 1
        stub 14, 1
        stub 15, 0
        stub 16, 0
        stub 17, 1
        stub 18, 0
        stub 19, 0
        stub 20, 0
        stub 21, 1
        stub 22, 0
        stub 23, 0
        stub 24, 0
        stub 25, 0
        stub 26, 0
        stub 27, 0
        stub 28, 0
        stub 29, 1
        stub 30, 1
        stub 31, 0

isr_common:
        /* The CPU aligned rsp to 16 before its 5-word frame; with error, vector and these 15 pushes the
         * frame is 22 words, so rsp stays 16-byte aligned for the call. Order matches fault_frame. */
        push %r15
        push %r14
        push %r13
        push %r12
        push %r11
        push %r10
        push %r9
        push %r8
        push %rbp
        push %rdi
        push %rsi
        push %rdx
        push %rcx
        push %rbx
        push %rax
        cld                             /* the ABI wants DF clear; the interrupted code may have set it */
        mov %rsp, %rdi
        call toro_exception
        pop %rax
        pop %rbx
        pop %rcx
        pop %rdx
        pop %rsi
        pop %rdi
        pop %rbp
        pop %r8
        pop %r9
        pop %r10
        pop %r11
        pop %r12
        pop %r13
        pop %r14
        pop %r15
        add $16, %rsp                   /* vector and error code */
        iretq
