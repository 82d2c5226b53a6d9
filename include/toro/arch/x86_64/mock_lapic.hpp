// HOST-ONLY. mock_lapic_bus: a scripted MMIO + MSR bus for local-APIC and clock tests.
//
// It models both mmio32_bus and msr_bus, over one transcript, so a test instantiates the real access
// providers on it (xapic_mmio<mock_lapic_bus::ref, mock_lapic_bus::ref>, x2apic_msr<mock_lapic_bus::ref>)
// and checks every register access the driver makes, in order:
//
//   mock_lapic_bus bus;
//   bus.expect_mmio_write(0xf0, 0x1ff)          // SVR: enable, vector 0xff
//      .expect_wrmsr(0x6e0, 12345);             // IA32_TSC_DEADLINE
//   ...driver runs...
//   INFO(bus.report()); CHECK(bus.done());
//
// Mismatches read like "access 3: expected MMIO write 0x000001ff to +0x0f0 (SVR), got MMIO read of +0x390
// (timer current count)". on_wrmsr() lets a test play the other side of an MSR (a hypervisor filling
// kvmclock's page). Uses <string>/<vector>/<functional>: never include it from kernel code.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include <toro/arch/x86_64/lapic.hpp>
#include <toro/base/transcript.hpp>

namespace toro::testing {

inline std::string lapic_register_name(std::uint32_t offset) {
    using r = toro::arch::lapic_reg;
    switch (static_cast<r>(offset)) {
    case r::id:
        return "ID";
    case r::version:
        return "version";
    case r::tpr:
        return "TPR";
    case r::eoi:
        return "EOI";
    case r::svr:
        return "SVR";
    case r::esr:
        return "ESR";
    case r::icr_low:
        return "ICR low";
    case r::icr_high:
        return "ICR high";
    case r::lvt_timer:
        return "LVT timer";
    case r::lvt_lint0:
        return "LVT LINT0";
    case r::lvt_lint1:
        return "LVT LINT1";
    case r::lvt_error:
        return "LVT error";
    case r::timer_initial:
        return "timer initial count";
    case r::timer_current:
        return "timer current count";
    case r::timer_divide:
        return "timer divide";
    }
    return "";
}

inline std::string msr_name(std::uint32_t msr) {
    if (msr == toro::arch::msr_apic_base) return "IA32_APIC_BASE";
    if (msr == toro::arch::msr_tsc_deadline) return "IA32_TSC_DEADLINE";
    if (msr == toro::arch::msr_kvm_system_time_new) return "MSR_KVM_SYSTEM_TIME_NEW";
    if (msr == toro::arch::msr_x2apic_icr) return "x2APIC ICR";
    if (msr >= 0x800 && msr < 0x840) {
        const std::string n = lapic_register_name((msr - 0x800) * 16);
        if (!n.empty()) return "x2APIC " + n;
    }
    return "";
}

namespace detail {
enum class lapic_access_kind { mmio_read, mmio_write, rdmsr, wrmsr };
struct lapic_step {
    lapic_access_kind k;
    std::uint32_t address;
    std::uint64_t value;
    std::size_t times;
};
} // namespace detail

class mock_lapic_bus : public transcript<detail::lapic_step, mock_lapic_bus> {
public:
    using kind = detail::lapic_access_kind;
    using step = detail::lapic_step;

    // MMIO register names in messages: the local APIC's by default (the I/O APIC's tests bring theirs).
    explicit mock_lapic_bus(std::string (*mmio_names)(std::uint32_t) = lapic_register_name)
        : mmio_names_{mmio_names} {}

    // A copyable handle: what the access providers hold.
    struct ref {
        mock_lapic_bus* bus;
        std::uint32_t read32(std::uint32_t offset) const { return bus->read32(offset); }
        void write32(std::uint32_t offset, std::uint32_t v) const { bus->write32(offset, v); }
        std::uint64_t rdmsr(std::uint32_t msr) const { return bus->rdmsr(msr); }
        void wrmsr(std::uint32_t msr, std::uint64_t v) const { bus->wrmsr(msr, v); }
    };
    ref handle() { return {this}; }

    mock_lapic_bus& expect_mmio_write(std::uint32_t offset, std::uint32_t value) {
        add({kind::mmio_write, offset, value, 1});
        return *this;
    }
    mock_lapic_bus& expect_mmio_read(std::uint32_t offset, std::uint32_t value, std::size_t times = 1) {
        add({kind::mmio_read, offset, value, times});
        return *this;
    }
    mock_lapic_bus& expect_wrmsr(std::uint32_t msr, std::uint64_t value) {
        add({kind::wrmsr, msr, value, 1});
        return *this;
    }
    mock_lapic_bus& expect_rdmsr(std::uint32_t msr, std::uint64_t value, std::size_t times = 1) {
        add({kind::rdmsr, msr, value, times});
        return *this;
    }
    // Called after every wrmsr the script accepted or not (the test's model of the MSR's side effect).
    void on_wrmsr(std::function<void(std::uint32_t, std::uint64_t)> f) { on_wrmsr_ = std::move(f); }

    std::uint32_t read32(std::uint32_t offset) {
        return static_cast<std::uint32_t>(access({kind::mmio_read, offset, 0, 1}, 0xffffffff));
    }
    void write32(std::uint32_t offset, std::uint32_t v) { access({kind::mmio_write, offset, v, 1}, 0); }
    std::uint64_t rdmsr(std::uint32_t msr) { return access({kind::rdmsr, msr, 0, 1}, 0); }
    void wrmsr(std::uint32_t msr, std::uint64_t v) {
        access({kind::wrmsr, msr, v, 1}, 0);
        if (on_wrmsr_) on_wrmsr_(msr, v);
    }

    std::string describe(const step& s) const {
        char buf[128];
        const bool mmio = s.k == kind::mmio_read || s.k == kind::mmio_write;
        const std::string name = mmio ? mmio_names_(s.address) : msr_name(s.address);
        const std::string times = s.times > 1 ? std::to_string(s.times) + " " : "";
        switch (s.k) {
        case kind::mmio_write:
            std::snprintf(buf, sizeof buf, "MMIO write 0x%08x to +0x%03x", static_cast<unsigned>(s.value),
                          s.address);
            break;
        case kind::mmio_read:
            std::snprintf(buf, sizeof buf, "%sMMIO read%s of +0x%03x", times.c_str(), s.times > 1 ? "s" : "",
                          s.address);
            break;
        case kind::wrmsr:
            std::snprintf(buf, sizeof buf, "wrmsr 0x%x <- 0x%016llx", s.address,
                          static_cast<unsigned long long>(s.value));
            break;
        case kind::rdmsr:
            std::snprintf(buf, sizeof buf, "%srdmsr%s 0x%x", times.c_str(), s.times > 1 ? "s" : "",
                          s.address);
            break;
        }
        std::string out = buf;
        if (!name.empty()) out += " (" + name + ")";
        return out;
    }

private:
    static bool is_write(kind k) { return k == kind::mmio_write || k == kind::wrmsr; }

    // Checks `got` against the next step; returns the scripted value for a read (`floating` if none).
    std::uint64_t access(step got, std::uint64_t floating) {
        const step* s = next();
        check(got, s != nullptr && s->k == got.k && s->address == got.address &&
                       (!is_write(got.k) || s->value == got.value));
        const std::uint64_t result = s != nullptr && s->k == got.k && !is_write(s->k) ? s->value : floating;
        consume();
        return result;
    }

    std::function<void(std::uint32_t, std::uint64_t)> on_wrmsr_;
    std::string (*mmio_names_)(std::uint32_t);
};

static_assert(toro::arch::mmio32_bus<mock_lapic_bus::ref>);
static_assert(toro::arch::msr_bus<mock_lapic_bus::ref>);

} // namespace toro::testing
