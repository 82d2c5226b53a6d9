// The kernel console: a 16550 UART on COM1 (port 0x3f8), and toro::print(), the kernel's printf.
// Every path (QEMU pc and microvm, Firecracker) has COM1; output is polled, so it works with interrupts off
// and inside fault handlers.
#pragma once

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

template <class... Args>
void print(format_string<Args...> fmt, const Args&... args) {
    format_to(serial_console, fmt, args...);
}

} // namespace toro
