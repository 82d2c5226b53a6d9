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

class mock_io {
public:
    // A runaway driver loop must not bury the first, useful message under thousands of copies.
    static constexpr std::size_t max_failures = 20;

    explicit mock_io(register_namer names = nullptr) : names_{names} {}

    mock_io& expect_write(std::uint16_t offset, std::uint8_t value) {
        script_.push_back({true, offset, value, 1});
        return *this;
    }
    // The next `times` accesses must be reads of `offset`; each returns `value`.
    mock_io& expect_read(std::uint16_t offset, std::uint8_t value, std::size_t times = 1) {
        if (times != 0) script_.push_back({false, offset, value, times});
        return *this;
    }

    std::uint8_t read8(std::uint16_t offset) {
        const step got{false, offset, 0, 1};
        const step* s = next();
        if (s == nullptr)
            fail("unexpected " + describe(got) + " after the script ended");
        else if (s->write || s->offset != offset)
            fail("expected " + describe(remaining(*s)) + ", got " + describe(got));
        // A read at the wrong offset still returns the scripted value, keeping the rest of the run in
        // step; with no scripted read, the bus floats high as an empty ISA bus does.
        const std::uint8_t result = s != nullptr && !s->write ? s->value : 0xff;
        consume();
        return result;
    }

    void write8(std::uint16_t offset, std::uint8_t value) {
        const step got{true, offset, value, 1};
        if (const step* s = next(); s == nullptr)
            fail("unexpected " + describe(got) + " after the script ended");
        else if (!s->write || s->offset != offset || s->value != value)
            fail("expected " + describe(remaining(*s)) + ", got " + describe(got));
        consume();
    }

    // Every problem so far, plus one line for the rest of the script if it was not played out.
    std::vector<std::string> failures() const {
        std::vector<std::string> all = failures_;
        if (dropped_ != 0) all.push_back("... and " + std::to_string(dropped_) + " more failures");
        if (pos_ < script_.size()) {
            std::size_t missing = script_[pos_].times - used_;
            for (std::size_t i = pos_ + 1; i < script_.size(); ++i) missing += script_[i].times;
            all.push_back("access " + std::to_string(accesses_ + 1) + ": expected " +
                          describe(remaining(script_[pos_])) + ", never happened (" +
                          std::to_string(missing) + " expected accesses missing)");
        }
        return all;
    }
    bool done() const { return failures().empty(); }
    // failures() as one newline-separated string, for INFO() or printing.
    std::string report() const {
        std::string out;
        for (const std::string& f : failures()) out += f + "\n";
        return out;
    }
    std::size_t accesses() const { return accesses_; }

private:
    struct step {
        bool write;
        std::uint16_t offset;
        std::uint8_t value;
        std::size_t times;
    };

    const step* next() const { return pos_ < script_.size() ? &script_[pos_] : nullptr; }
    // The current step as it stands now: a repeated read partly played out has fewer reads left.
    step remaining(step s) const {
        s.times -= used_;
        return s;
    }
    void consume() {
        ++accesses_;
        if (pos_ < script_.size() && ++used_ == script_[pos_].times) {
            ++pos_;
            used_ = 0;
        }
    }
    void fail(const std::string& what) {
        if (failures_.size() < max_failures)
            failures_.push_back("access " + std::to_string(accesses_ + 1) + ": " + what);
        else
            ++dropped_;
    }
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

    register_namer names_;
    std::vector<step> script_;
    std::size_t pos_ = 0;  // current script step
    std::size_t used_ = 0; // accesses already matched against a repeated step
    std::size_t accesses_ = 0;
    std::vector<std::string> failures_;
    std::size_t dropped_ = 0;
};
static_assert(io_provider<mock_io>);

} // namespace toro::testing
