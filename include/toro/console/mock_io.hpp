// HOST-ONLY. mock_io: a scripted io_provider for driver tests.
//
// The test writes the transcript it expects, register access by register access, then runs the driver:
//
//   mock_io io{uart_16550_register_name};
//   io.expect_write(1, 0x00);         // IER: interrupts off
//   io.expect_read(5, 0x00, 1000);    // LSR reads 0x00 for the next 1000 reads
//   ...driver runs...
//   INFO(io.report()); CHECK(io.done());
//
// Every access is checked against the next expected one, in order. Mismatches, accesses past the end of the
// script, and expected accesses that never happened become readable lines such as
//   "access 3: expected write 0x03 to +3 (LCR), got read of +5 (LSR)".
// Uses <vector>/<string>/<cstdio>, so it must never be included by kernel code.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <toro/base/transcript.hpp>
#include <toro/console/io_provider.hpp>

namespace toro::testing {

// Names a register for messages; `write` tells apart registers that share an offset (THR/RBR, FCR/IIR).
using register_namer = std::string (*)(std::uint16_t offset, bool write);

// The 16550's register names (DLAB-dependent aliases shown together).
inline std::string uart_16550_register_name(std::uint16_t offset, bool write) {
    switch (offset) {
    case 0:
        return write ? "THR/DLL" : "RBR/DLL";
    case 1:
        return "IER/DLM";
    case 2:
        return write ? "FCR" : "IIR";
    case 3:
        return "LCR";
    case 4:
        return "MCR";
    case 5:
        return "LSR";
    case 6:
        return "MSR";
    case 7:
        return "SCR";
    default:
        return "";
    }
}

namespace detail {
struct io_step {
    bool write;
    std::uint16_t offset;
    std::uint8_t value;
    std::size_t times;
};
} // namespace detail

class mock_io : public transcript<detail::io_step, mock_io> {
public:
    explicit mock_io(register_namer names = nullptr) : names_{names} {}

    mock_io& expect_write(std::uint16_t offset, std::uint8_t value) {
        add({true, offset, value, 1});
        return *this;
    }
    // The next `times` accesses must be reads of `offset`; each returns `value`.
    mock_io& expect_read(std::uint16_t offset, std::uint8_t value, std::size_t times = 1) {
        add({false, offset, value, times});
        return *this;
    }

    std::uint8_t read8(std::uint16_t offset) {
        const step* s = next();
        check({false, offset, 0, 1}, s != nullptr && !s->write && s->offset == offset);
        // A read at the wrong offset still returns the scripted value, keeping the rest of the run in
        // step; with no scripted read, the bus floats high as an empty ISA bus does.
        const std::uint8_t result = s != nullptr && !s->write ? s->value : 0xff;
        consume();
        return result;
    }

    void write8(std::uint16_t offset, std::uint8_t value) {
        const step* s = next();
        check({true, offset, value, 1}, s != nullptr && s->write && s->offset == offset && s->value == value);
        consume();
    }

    using step = detail::io_step;
    std::string describe(const step& s) const {
        char buf[64];
        if (s.write)
            std::snprintf(buf, sizeof buf, "write 0x%02x to +%u", unsigned{s.value}, unsigned{s.offset});
        else if (s.times > 1)
            std::snprintf(buf, sizeof buf, "%zu reads of +%u", s.times, unsigned{s.offset});
        else
            std::snprintf(buf, sizeof buf, "read of +%u", unsigned{s.offset});
        std::string out = buf;
        if (names_ != nullptr) {
            std::string name = names_(s.offset, s.write);
            if (!name.empty()) out += " (" + name + ")";
        }
        return out;
    }

private:
    register_namer names_;
};
static_assert(io_provider<mock_io>);

} // namespace toro::testing
