// x86 port I/O: inb/outb/inw/outw/inl/outl and port_io, an io_provider over a base port.
// Only meaningful in ring 0 (or with iopl), but it is plain inline asm, so it also compiles on the host.
#pragma once

#include <cstdint>

#include <toro/console/io_provider.hpp>

namespace toro::arch {

// The "memory" clobber keeps the compiler from moving memory accesses across a port access:
// a device may read what we just stored (DMA descriptors) or a read may have side effects.
inline std::uint8_t inb(std::uint16_t port) {
    std::uint8_t v;
    asm volatile("inb %w1, %b0" : "=a"(v) : "Nd"(port) : "memory");
    return v;
}
inline void outb(std::uint16_t port, std::uint8_t v) {
    asm volatile("outb %b0, %w1" : : "a"(v), "Nd"(port) : "memory");
}
inline std::uint16_t inw(std::uint16_t port) {
    std::uint16_t v;
    asm volatile("inw %w1, %w0" : "=a"(v) : "Nd"(port) : "memory");
    return v;
}
inline void outw(std::uint16_t port, std::uint16_t v) {
    asm volatile("outw %w0, %w1" : : "a"(v), "Nd"(port) : "memory");
}
inline std::uint32_t inl(std::uint16_t port) {
    std::uint32_t v;
    asm volatile("inl %w1, %0" : "=a"(v) : "Nd"(port) : "memory");
    return v;
}
inline void outl(std::uint16_t port, std::uint32_t v) {
    asm volatile("outl %0, %w1" : : "a"(v), "Nd"(port) : "memory");
}

// Legacy PC serial ports.
inline constexpr std::uint16_t com1 = 0x3f8;
inline constexpr std::uint16_t com2 = 0x2f8;

// A device's registers in I/O space at base + offset.
struct port_io {
    std::uint16_t base;

    std::uint8_t read8(std::uint16_t offset) const { return inb(static_cast<std::uint16_t>(base + offset)); }
    void write8(std::uint16_t offset, std::uint8_t value) const {
        outb(static_cast<std::uint16_t>(base + offset), value);
    }
};
static_assert(io_provider<port_io>);

} // namespace toro::arch
