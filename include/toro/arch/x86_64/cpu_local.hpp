// Per-CPU data, reached through GS: GS base points at the running CPU's cpu_local, whose first word points
// at itself, so `mov %gs:0` yields the block and `mov %gs:8` the CPU index in one instruction each. The boot
// CPU's block is set up by kernel_main before anything else runs; the process unit sets up the others'.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include <toro/arch/x86_64/backtrace.hpp>
#include <toro/arch/x86_64/cpu.hpp>

namespace toro {

// CPUs an appliance can use (-smp 1..8); per-CPU tables, heaps and mailboxes are sized by it.
inline constexpr std::uint32_t max_cpus = 8;

namespace arch {

inline constexpr std::uint32_t msr_gs_base = 0xc0000101;

struct cpu_local {
    cpu_local* self = nullptr; // %gs:0
    std::uint32_t index = 0;   // %gs:8: 0 for the boot CPU, then in start-up order
    std::uint32_t apic_id = 0;
    stack_range stack;              // the stack the CPU runs on now, for backtraces
    void* scheduler = nullptr;      // the process unit's per-CPU scheduler, when there is one
    std::uint32_t in_interrupt = 0; // inside a device interrupt handler
};
static_assert(offsetof(cpu_local, index) == 8);

inline std::array<cpu_local, max_cpus> cpu_locals;

// Points GS at CPU `index`'s block. Called once per CPU, on that CPU, before anything reads per-CPU data.
inline void install_cpu_local(std::uint32_t index) {
    cpu_local& c = cpu_locals[index];
    c.self = &c;
    c.index = index;
    wrmsr(msr_gs_base, reinterpret_cast<std::uint64_t>(&c));
}

inline cpu_local& this_cpu() {
    cpu_local* c;
    asm volatile("mov %%gs:0, %0" : "=r"(c));
    return *c;
}
inline std::uint32_t this_cpu_index() {
    std::uint32_t i;
    asm volatile("movl %%gs:8, %0" : "=r"(i));
    return i;
}

} // namespace arch
} // namespace toro
