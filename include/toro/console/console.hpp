// The kernel console: a 16550 UART on COM1 (port 0x3f8), and toro::print(), the kernel's printf.
// Every path (QEMU pc and microvm, Firecracker) has COM1; output is polled, so it works with interrupts off
// and inside fault handlers.
#pragma once

#include <toro/arch/x86_64/cpu_local.hpp>
#include <toro/arch/x86_64/port_io.hpp>
#include <toro/console/format.hpp>
#include <toro/console/uart_16550.hpp>

namespace toro {

inline constexpr std::uint16_t com1_port = 0x3f8;

inline uart_16550<arch::port_io> serial_console{arch::port_io{com1_port}};

// Polled 115200 8N1. Before this runs, output still works: the UART starts with a one-byte holding register.
inline void console_init() {
    (void)serial_console.init();
}

// One print at a time across CPUs, so lines do not interleave. The holder's CPU may re-enter (a fault while
// printing gets reported), and a holder that never lets go (it died) is waited for only so long: the console
// must keep working for the report of whatever went wrong.
inline std::uint32_t console_owner = 0; // index + 1 of the CPU printing (atomic)

// Out of line: print is instantiated once per format string, the lock only once.
[[gnu::noinline]] inline bool console_lock() {
    const std::uint32_t me = arch::this_cpu_index() + 1;
    if (__atomic_load_n(&console_owner, __ATOMIC_RELAXED) == me) return false;
    for (std::uint32_t spins = 0; spins < (1u << 24); ++spins) {
        std::uint32_t free = 0;
        if (__atomic_compare_exchange_n(&console_owner, &free, me, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return true;
        __builtin_ia32_pause();
    }
    return false;
}
[[gnu::noinline]] inline void console_unlock(bool taken) {
    if (taken) __atomic_store_n(&console_owner, 0u, __ATOMIC_RELEASE);
}

template <class... Args>
void print(format_string<Args...> fmt, const Args&... args) {
    const bool taken = console_lock();
    format_to(serial_console, fmt, args...);
    console_unlock(taken);
}

} // namespace toro
