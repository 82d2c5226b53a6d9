// Context switching for cooperative threads: the context_switch concept, its archetype, and x86_64_context,
// the implementation the kernel uses (and the host tests too: it is plain System V x86-64 code).
//
// A switch saves only what the System V ABI says a callee must preserve: rbx, rbp, r12-r15 and rsp. Every
// other register is dead across the call by the calling convention, and kernel code uses no SSE/x87 state
// (built -mno-sse), so there is nothing else to save. Like Zircon's, the saved context is the stack itself.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>

namespace toro {

using thread_entry = void (*)(void*);

// prepare(stack_top, entry, arg): lays out a new context on the stack ending at stack_top (16-byte aligned)
// so that switching to the returned stack pointer calls entry(arg) with a correctly aligned stack; entry
// must never return. switch_to(save, next): saves the running context, stores its stack pointer in *save and
// resumes the context whose stack pointer is next; returns when some other switch resumes *save.
template <class C>
concept context_switch = requires(std::byte* top, thread_entry entry, void* arg, std::uintptr_t* save,
                                  std::uintptr_t next) {
    { C::prepare(top, entry, arg) } -> std::same_as<std::uintptr_t>;
    { C::switch_to(save, next) } -> std::same_as<void>;
};

struct context_switch_archetype {
    static std::uintptr_t prepare(std::byte*, thread_entry, void*) { return 0; }
    static void switch_to(std::uintptr_t*, std::uintptr_t) {}
};
static_assert(context_switch<context_switch_archetype>);

extern "C" {
// Push the callee-saved registers, store rsp in *save (rdi), load next (rsi) into rsp, pop, ret.
[[gnu::naked, gnu::used]] inline void toro_context_switch(std::uintptr_t*, std::uintptr_t) {
    asm("push %rbp\n\t"
        "push %rbx\n\t"
        "push %r12\n\t"
        "push %r13\n\t"
        "push %r14\n\t"
        "push %r15\n\t"
        "mov %rsp, (%rdi)\n\t"
        "mov %rsi, %rsp\n\t"
        "pop %r15\n\t"
        "pop %r14\n\t"
        "pop %r13\n\t"
        "pop %r12\n\t"
        "pop %rbx\n\t"
        "pop %rbp\n\t"
        "ret");
}
// A new context's first "return" lands here with the entry in rbx and its argument in r12 (see prepare).
// rsp is 16-byte aligned at this point, as the ABI wants before a call; rbp is 0, ending backtraces.
[[gnu::naked, gnu::used]] inline void toro_context_start() {
    asm("mov %r12, %rdi\n\t"
        "call *%rbx\n\t"
        "ud2"); // entry returned: it must not
}
}

struct x86_64_context {
    static std::uintptr_t prepare(std::byte* top, thread_entry entry, void* arg) {
        auto* sp =
            reinterpret_cast<std::uintptr_t*>(reinterpret_cast<std::uintptr_t>(top) & ~std::uintptr_t{15});
        // The start address sits just below the aligned top: once `ret` pops it, rsp is 16-byte aligned.
        *--sp = reinterpret_cast<std::uintptr_t>(&toro_context_start);
        *--sp = 0;                                       // rbp
        *--sp = reinterpret_cast<std::uintptr_t>(entry); // rbx
        *--sp = reinterpret_cast<std::uintptr_t>(arg);   // r12
        *--sp = 0;                                       // r13
        *--sp = 0;                                       // r14
        *--sp = 0;                                       // r15
        return reinterpret_cast<std::uintptr_t>(sp);
    }
    static void switch_to(std::uintptr_t* save, std::uintptr_t next) { toro_context_switch(save, next); }
};
static_assert(context_switch<x86_64_context>);

} // namespace toro
