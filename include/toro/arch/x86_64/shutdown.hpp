// Powering off: toro::arch::shutdown(status).
//
// Status mapping: with QEMU's `-device isa-debug-exit,iobase=0xf4,iosize=0x04`, writing v to port 0xf4 makes
// QEMU exit with (v << 1) | 1, so status s in 0..127 surfaces as host exit code 2s+1 and CloudIt maps it back
// to s. Statuses outside 0..127 are reported as 127. Without that device the write is ignored and we fall
// back to a reset (PCI reset register 0xcf9, then the 8042 controller — Firecracker's way to stop a guest —
// then a triple fault); under QEMU's -no-reboot a reset ends the VM with exit code 0.
#pragma once

#include <cstdint>

#include <toro/arch/x86_64/cpu.hpp>
#include <toro/arch/x86_64/port_io.hpp>

namespace toro::arch {

inline constexpr std::uint16_t debug_exit_port = 0xf4;

inline void debug_exit(std::uint8_t status) {
    outb(debug_exit_port, status);
}

[[noreturn]] inline void shutdown(int status) {
    cli();
    debug_exit(static_cast<std::uint8_t>(status < 0 || status > 127 ? 127 : status));
    outb(0xcf9, 0x02); // PCI reset control: hard reset (pc/q35)
    outb(0xcf9, 0x06);
    outb(0x64, 0xfe); // 8042 pulse reset line (pc, Firecracker)
    // Triple fault: an empty IDT makes the next exception unrecoverable.
    struct [[gnu::packed]] {
        std::uint16_t limit = 0;
        std::uint64_t base = 0;
    } empty;
    asm volatile("lidt %0; int3" ::"m"(empty));
    halt_forever();
}

} // namespace toro::arch
