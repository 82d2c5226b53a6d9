// toro-vmm's devices as pure models, so tests can script them without KVM: the port-I/O bus (COM1, the
// isa-debug-exit port, the two reset ports) and the MMIO bus (Firecracker's boot timer).
//
// COM1 is a 16550 reduced to what a polled console needs, with the reset values rust-vmm's vm-superio
// serial (Firecracker's) uses: LSR always reads THR empty and transmitter idle (0x60), IIR reads "no
// interrupt pending" (0x01, no FIFO bits: Firecracker's UART has no FIFO, so guests see the same
// one-byte holding register here), IER/LCR/MCR/scratch and the divisor latch read back what was
// written. No interrupts are raised and nothing is ever received.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace toro::tools::vmm {

// What the run loop does after a device access.
struct io_action {
    enum kind_t { run, exit } kind = run;
    int status = 0;            // process exit status when kind == exit
    const char* why = nullptr; // for the launcher's message; nullptr: exit quietly
    static io_action keep_running() { return {}; }
    static io_action exit_with(int status, const char* why) { return {exit, status, why}; }
};

class serial_16550 {
public:
    // Register offsets from the base port.
    static constexpr std::uint8_t thr = 0, ier = 1, iir = 2, lcr = 3, mcr = 4, lsr = 5, msr = 6, scr = 7;
    static constexpr std::uint8_t lcr_dlab = 0x80;
    static constexpr std::uint8_t lsr_idle = 0x60;  // THR empty | transmitter empty
    static constexpr std::uint8_t iir_none = 0x01;  // bit 0 is active-low "interrupt pending"
    static constexpr std::uint8_t msr_lines = 0xb0; // DCD | DSR | CTS: a cable that is always ready

    void write(std::uint8_t offset, std::uint8_t v) {
        const bool dlab = (lcr_ & lcr_dlab) != 0;
        switch (offset & 7) {
        case thr:
            if (dlab)
                dll_ = v;
            else
                output_.push_back(static_cast<char>(v));
            break;
        case ier:
            if (dlab)
                dlm_ = v;
            else
                ier_ = v & 0x0f; // the upper nibble is reserved and reads as zero
            break;
        case lcr:
            lcr_ = v;
            break;
        case mcr:
            mcr_ = v & 0x1f;
            break;
        case scr:
            scr_ = v;
            break;
        default: // FCR and the read-only LSR/MSR: nothing to model
            break;
        }
    }

    std::uint8_t read(std::uint8_t offset) const {
        const bool dlab = (lcr_ & lcr_dlab) != 0;
        switch (offset & 7) {
        case thr:
            return dlab ? dll_ : 0; // RBR: nothing is ever received
        case ier:
            return dlab ? dlm_ : ier_;
        case iir:
            return iir_none;
        case lcr:
            return lcr_;
        case mcr:
            return mcr_;
        case lsr:
            return lsr_idle;
        case msr:
            return msr_lines;
        default:
            return scr_;
        }
    }

    // Bytes the guest sent and nobody has taken yet.
    std::string& output() { return output_; }
    const std::string& output() const { return output_; }

private:
    std::string output_;
    std::uint8_t ier_ = 0, lcr_ = 0x03, mcr_ = 0x08, scr_ = 0, dll_ = 0x0c, dlm_ = 0; // vm-superio's resets
};

// The legacy ports a toro guest (or Firecracker guest) uses.
class port_bus {
public:
    static constexpr std::uint16_t com1_base = 0x3f8;
    static constexpr std::uint16_t debug_exit_port = 0xf4; // QEMU's isa-debug-exit, iobase=0xf4
    static constexpr std::uint16_t i8042_data = 0x60;
    static constexpr std::uint16_t i8042_command = 0x64;
    static constexpr std::uint8_t i8042_reset = 0xfe; // pulse the CPU reset line
    static constexpr std::uint16_t reset_control = 0xcf9;
    static constexpr std::uint8_t reset_cpu = 0x04; // RCR bit 2 starts the reset (0x06: hard reset)

    serial_16550 com1;

    // A guest OUT of bytes.size() bytes (1, 2 or 4, little-endian) to `port`.
    io_action io_out(std::uint16_t port, std::span<const std::uint8_t> bytes) {
        if (bytes.empty()) return io_action::keep_running();
        if (port == debug_exit_port) {
            // isa-debug-exit: QEMU exits with (value << 1) | 1 for a write of any width, and exit()
            // keeps the low 8 bits. An odd status is always a guest status; launcher errors are even.
            std::uint32_t v = 0;
            for (std::size_t i = 0; i < bytes.size() && i < 4; ++i) v |= std::uint32_t{bytes[i]} << (8 * i);
            return io_action::exit_with(static_cast<int>(((v << 1) | 1) & 0xff), nullptr);
        }
        if (bytes.size() == 1 && port == i8042_command && bytes[0] == i8042_reset)
            return io_action::exit_with(0, "guest reset through the i8042 (port 0x64 <- 0xfe)");
        // 1-byte only: a 4-byte write to 0xcf8 is a PCI configuration address, not a reset.
        if (bytes.size() == 1 && port == reset_control && (bytes[0] & reset_cpu) != 0)
            return io_action::exit_with(0, "guest reset through port 0xcf9");
        // A wide access to 8-bit registers is split into byte accesses, as on an ISA bus.
        for (std::size_t i = 0; i < bytes.size(); ++i) {
            const auto p = static_cast<std::uint16_t>(port + i);
            if (is_com1(p)) com1.write(static_cast<std::uint8_t>(p - com1_base), bytes[i]);
        }
        return io_action::keep_running();
    }

    // A guest IN of bytes.size() bytes from `port`; fills `bytes`.
    void io_in(std::uint16_t port, std::span<std::uint8_t> bytes) const {
        for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = io_in(static_cast<std::uint16_t>(port + i));
    }

    std::uint8_t io_in(std::uint16_t port) const {
        if (is_com1(port)) return com1.read(static_cast<std::uint8_t>(port - com1_base));
        // The i8042 reads as an idle controller (no data, input buffer empty), as Firecracker's does,
        // so a guest that polls it before the reset command does not spin forever.
        if (port == i8042_command || port == i8042_data) return 0;
        return 0xff; // nothing there: an empty ISA bus floats high
    }

private:
    static bool is_com1(std::uint16_t port) { return port >= com1_base && port < com1_base + 8; }
};

// Firecracker's boot timer: a 1-byte write of 123 at its base says "the guest has booted".
inline constexpr std::uint64_t boot_timer_base = 0xc0000000;
inline constexpr std::uint8_t boot_timer_magic = 123;

enum class mmio_event { none, boot_complete };

// A guest MMIO write. Writes outside the boot timer are ignored; MMIO reads return zeros (the
// launcher fills them), so no device ever answers there.
inline mmio_event mmio_write(std::uint64_t addr, std::span<const std::uint8_t> bytes) {
    if (addr == boot_timer_base && bytes.size() == 1 && bytes[0] == boot_timer_magic)
        return mmio_event::boot_complete;
    return mmio_event::none;
}

} // namespace toro::tools::vmm
