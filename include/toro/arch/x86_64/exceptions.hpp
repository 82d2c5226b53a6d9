// The IDT and CPU-exception reporting. Every exception vector (0-31) has a stub in src/boot/isr.S that builds
// a fault_frame and calls toro_exception(), which lands in report_exception(): it prints the vector, the
// error code, RIP, CR2 (for #PF), all registers and a frame-pointer backtrace, then shuts down with
// panic_status.
#pragma once

#include <array>
#include <cstdint>

#include <toro/arch/x86_64/backtrace.hpp>
#include <toro/arch/x86_64/cpu.hpp>
#include <toro/arch/x86_64/gdt.hpp>
#include <toro/base/string_view.hpp>

extern "C" const char toro_isr_stubs[]; // 32 stubs of 16 bytes (src/boot/isr.S)

namespace toro::arch {

// The registers as isr_common pushed them, then what the stub and the CPU pushed.
struct fault_frame {
    std::uint64_t rax, rbx, rcx, rdx, rsi, rdi, rbp, r8, r9, r10, r11, r12, r13, r14, r15;
    std::uint64_t vector, error_code;
    std::uint64_t rip, cs, rflags, rsp, ss;
};
static_assert(sizeof(fault_frame) == 22 * 8);

inline constexpr unsigned exception_vectors = 32;

struct exception_info {
    const char* mnemonic;
    const char* name;
};
inline constexpr std::array<exception_info, exception_vectors> exceptions{{
    {"#DE", "divide error"},
    {"#DB", "debug"},
    {"NMI", "non-maskable interrupt"},
    {"#BP", "breakpoint"},
    {"#OF", "overflow"},
    {"#BR", "bound range exceeded"},
    {"#UD", "invalid opcode"},
    {"#NM", "device not available"},
    {"#DF", "double fault"},
    {"#CSO", "coprocessor segment overrun"},
    {"#TS", "invalid TSS"},
    {"#NP", "segment not present"},
    {"#SS", "stack-segment fault"},
    {"#GP", "general protection fault"},
    {"#PF", "page fault"},
    {"#15", "reserved"},
    {"#MF", "x87 floating-point error"},
    {"#AC", "alignment check"},
    {"#MC", "machine check"},
    {"#XM", "SIMD floating-point error"},
    {"#VE", "virtualization exception"},
    {"#CP", "control protection"},
    {"#22", "reserved"},
    {"#23", "reserved"},
    {"#24", "reserved"},
    {"#25", "reserved"},
    {"#26", "reserved"},
    {"#27", "reserved"},
    {"#HV", "hypervisor injection"},
    {"#VC", "VMM communication"},
    {"#SX", "security exception"},
    {"#31", "reserved"},
}};

struct [[gnu::packed]] idt_gate {
    std::uint16_t offset_low;
    std::uint16_t selector;
    std::uint8_t ist;
    std::uint8_t type_attr; // 0x8e: present, ring 0, 64-bit interrupt gate (IF cleared on entry)
    std::uint16_t offset_mid;
    std::uint32_t offset_high;
    std::uint32_t reserved;
};
static_assert(sizeof(idt_gate) == 16);

class idt {
public:
    void set_gate(unsigned vector, std::uint64_t handler, std::uint8_t ist = 0) {
        gates_[vector] = {static_cast<std::uint16_t>(handler),
                          sel_code64,
                          ist,
                          0x8e,
                          static_cast<std::uint16_t>(handler >> 16),
                          static_cast<std::uint32_t>(handler >> 32),
                          0};
    }
    // Points vectors 0-31 at the stubs; #DF, NMI and #MC get their own stacks.
    void install_exception_stubs() {
        auto base = reinterpret_cast<std::uint64_t>(toro_isr_stubs);
        for (unsigned v = 0; v < exception_vectors; ++v) {
            std::uint8_t ist = v == 8 ? ist_double_fault : v == 2 ? ist_nmi : v == 18 ? ist_machine_check : 0;
            set_gate(v, base + 16 * v, ist);
        }
    }
    void load() const {
        struct [[gnu::packed]] {
            std::uint16_t limit;
            std::uint64_t base;
        } ptr{sizeof(gates_) - 1, reinterpret_cast<std::uint64_t>(gates_.data())};
        asm volatile("lidt %0" ::"m"(ptr) : "memory");
    }

private:
    std::array<idt_gate, 256> gates_{};
};

// A unit may resolve page faults (the memory unit maps RAM beyond the boot map on first touch): true when the
// fault is handled and the faulting instruction can be retried.
inline bool (*page_fault_handler)(const fault_frame&) = nullptr;

// The process unit says whether a #PF/#DF address is a thread's stack guard page (prints a line if so).
inline void (*stack_overflow_note)(std::uint64_t address) = nullptr;

// Decodes a #PF error code into words: "write, page not present, kernel".
struct page_fault_cause {
    std::uint64_t code;
    const char* access() const { return code & 0x10 ? "instruction fetch" : code & 0x2 ? "write" : "read"; }
    const char* reason() const {
        return code & 0x8 ? "reserved bit set" : code & 0x1 ? "protection violation" : "page not present";
    }
    const char* mode() const { return code & 0x4 ? "user" : "kernel"; }
};

} // namespace toro::arch
