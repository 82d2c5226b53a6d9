// The local APIC: lapic<Access>, a driver over its register access (Fuchsia lib/uart style), for EOIs, the
// per-CPU timer (one-shot or TSC-deadline) and inter-processor interrupts (fixed, NMI, INIT, SIPI).
//
// Two accesses model lapic_access:
//   xapic_mmio<Mmio, Msr>  the registers as 32-bit MMIO at IA32_APIC_BASE (0xfee00000 by default);
//                          the ICR is two writes (high, then low which sends) and a wait for delivery
//   x2apic_msr<Msr>        the registers as MSRs 0x800 + offset / 16; the ICR is one 64-bit wrmsr
// Both take their bus as a template parameter so host tests can script every MMIO and MSR access
// (toro/arch/x86_64/mock_lapic.hpp). Which one a CPU gets: choose_apic_mode(CPUID.1). QEMU's TCG has no
// x2APIC (its MSRs fault), so x2APIC is never assumed; KVM has it.
#pragma once

#include <concepts>
#include <cstdint>
#include <utility>

#include <toro/arch/x86_64/cpu.hpp>
#include <toro/arch/x86_64/time.hpp>
#include <toro/base/bitfield.hpp>
#include <toro/base/expected.hpp>

namespace toro::arch {

// Register offsets in the xAPIC MMIO page (Intel SDM vol. 3, table 11-1).
enum class lapic_reg : std::uint16_t {
    id = 0x20,
    version = 0x30,
    tpr = 0x80,
    eoi = 0xb0,
    svr = 0xf0,
    esr = 0x280,
    icr_low = 0x300,
    icr_high = 0x310,
    lvt_timer = 0x320,
    lvt_lint0 = 0x350,
    lvt_lint1 = 0x360,
    lvt_error = 0x370,
    timer_initial = 0x380,
    timer_current = 0x390,
    timer_divide = 0x3e0,
};

// The x2APIC MSR of a register: 0x800 + offset / 16 (SDM table 11-6).
constexpr std::uint32_t x2apic_msr_of(lapic_reg r) {
    return 0x800 + static_cast<std::uint32_t>(r) / 16;
}

inline constexpr std::uint32_t msr_apic_base = 0x1b;
inline constexpr std::uint32_t msr_tsc_deadline = 0x6e0;
inline constexpr std::uint32_t msr_x2apic_icr = 0x830;

namespace lapic_regs {

// Spurious-interrupt vector register.
struct svr : reg_value<svr, std::uint32_t> {
    constexpr std::uint8_t vector() const { return static_cast<std::uint8_t>(get_field<7, 0>()); }
    constexpr svr& set_vector(std::uint8_t v) { return set_field<7, 0>(v); }
    // Software enable: while clear, every LVT stays masked whatever is written to it.
    constexpr bool apic_enabled() const { return get_bit<8>(); }
    constexpr svr& set_apic_enabled(bool on) { return set_bit<8>(on); }
    constexpr bool focus_check_disabled() const { return get_bit<9>(); }
    constexpr bool eoi_broadcast_suppression() const { return get_bit<12>(); }
};

enum class timer_mode : std::uint8_t { one_shot = 0, periodic = 1, tsc_deadline = 2 };

// LVT timer register.
struct lvt_timer : reg_value<lvt_timer, std::uint32_t> {
    constexpr std::uint8_t vector() const { return static_cast<std::uint8_t>(get_field<7, 0>()); }
    constexpr lvt_timer& set_vector(std::uint8_t v) { return set_field<7, 0>(v); }
    constexpr bool delivery_pending() const { return get_bit<12>(); }
    constexpr bool masked() const { return get_bit<16>(); }
    constexpr lvt_timer& set_masked(bool on) { return set_bit<16>(on); }
    constexpr timer_mode mode() const { return static_cast<timer_mode>(get_field<18, 17>()); }
    constexpr lvt_timer& set_mode(timer_mode m) { return set_field<18, 17>(static_cast<std::uint32_t>(m)); }
};

enum class delivery_mode : std::uint8_t {
    fixed = 0,
    lowest_priority = 1,
    smi = 2,
    nmi = 4,
    init = 5,
    startup = 6,
    ext_int = 7,
};

// The other LVT entries (LINT0, LINT1, error).
struct lvt : reg_value<lvt, std::uint32_t> {
    constexpr std::uint8_t vector() const { return static_cast<std::uint8_t>(get_field<7, 0>()); }
    constexpr lvt& set_vector(std::uint8_t v) { return set_field<7, 0>(v); }
    constexpr lapic_regs::delivery_mode delivery_mode() const {
        return static_cast<lapic_regs::delivery_mode>(get_field<10, 8>());
    }
    constexpr lvt& set_delivery_mode(lapic_regs::delivery_mode m) {
        return set_field<10, 8>(static_cast<std::uint32_t>(m));
    }
    constexpr bool delivery_pending() const { return get_bit<12>(); }
    constexpr bool active_low() const { return get_bit<13>(); }
    constexpr lvt& set_active_low(bool on) { return set_bit<13>(on); }
    constexpr bool remote_irr() const { return get_bit<14>(); }
    constexpr bool level_triggered() const { return get_bit<15>(); }
    constexpr lvt& set_level_triggered(bool on) { return set_bit<15>(on); }
    constexpr bool masked() const { return get_bit<16>(); }
    constexpr lvt& set_masked(bool on) { return set_bit<16>(on); }
};

enum class shorthand : std::uint8_t { none = 0, self = 1, all_including_self = 2, all_excluding_self = 3 };

// Interrupt command register, low half (the x2APIC ICR's bits 31:0 are the same).
struct icr_low : reg_value<icr_low, std::uint32_t> {
    constexpr std::uint8_t vector() const { return static_cast<std::uint8_t>(get_field<7, 0>()); }
    constexpr icr_low& set_vector(std::uint8_t v) { return set_field<7, 0>(v); }
    constexpr lapic_regs::delivery_mode delivery_mode() const {
        return static_cast<lapic_regs::delivery_mode>(get_field<10, 8>());
    }
    constexpr icr_low& set_delivery_mode(lapic_regs::delivery_mode m) {
        return set_field<10, 8>(static_cast<std::uint32_t>(m));
    }
    constexpr bool logical_destination() const { return get_bit<11>(); }
    constexpr icr_low& set_logical_destination(bool on) { return set_bit<11>(on); }
    // xAPIC only: the previous IPI has not been accepted yet. Reserved (0) in x2APIC mode.
    constexpr bool delivery_pending() const { return get_bit<12>(); }
    constexpr bool level_assert() const { return get_bit<14>(); }
    constexpr icr_low& set_level_assert(bool on) { return set_bit<14>(on); }
    constexpr bool level_triggered() const { return get_bit<15>(); }
    constexpr icr_low& set_level_triggered(bool on) { return set_bit<15>(on); }
    constexpr lapic_regs::shorthand shorthand() const {
        return static_cast<lapic_regs::shorthand>(get_field<19, 18>());
    }
    constexpr icr_low& set_shorthand(lapic_regs::shorthand s) {
        return set_field<19, 18>(static_cast<std::uint32_t>(s));
    }
};

// Timer divide configuration: bits 3 and 1:0 encode the divider.
struct timer_divide : reg_value<timer_divide, std::uint32_t> {
    static constexpr std::uint32_t by_1 = 0b1011;
};

// IA32_APIC_BASE (MSR 0x1b).
struct apic_base : reg_value<apic_base, std::uint64_t> {
    constexpr bool bsp() const { return get_bit<8>(); }
    // EXTD: x2APIC mode (with EN). EN=0, EXTD=1 is invalid and faults.
    constexpr bool x2apic() const { return get_bit<10>(); }
    constexpr apic_base& set_x2apic(bool on) { return set_bit<10>(on); }
    constexpr bool enabled() const { return get_bit<11>(); }
    constexpr apic_base& set_enabled(bool on) { return set_bit<11>(on); }
    // The xAPIC page's physical address, bits 51:12.
    constexpr std::uint64_t base_address() const { return value() & field<std::uint64_t, 51, 12>::mask; }
};

} // namespace lapic_regs

// ---- mode selection -------------------------------------------------------------------------------------

enum class apic_mode : std::uint8_t { xapic, x2apic };

// CPUID.1:ECX bit 21: x2APIC. Use it when there, the xAPIC's MMIO otherwise.
constexpr apic_mode choose_apic_mode(const cpuid_result& leaf1) {
    return (leaf1.ecx >> 21 & 1) != 0 ? apic_mode::x2apic : apic_mode::xapic;
}
template <cpuid_source C>
apic_mode choose_apic_mode(C&& cpuid) {
    return choose_apic_mode(cpuid(1, 0));
}
// CPUID.1:ECX bit 24: the LVT timer's TSC-deadline mode.
constexpr bool has_tsc_deadline(const cpuid_result& leaf1) {
    return (leaf1.ecx >> 24 & 1) != 0;
}

// The xAPIC page's physical address from IA32_APIC_BASE. Map it uncached before using xapic_mmio.
template <msr_bus M>
std::uint64_t xapic_base_address(M& msr) {
    return lapic_regs::apic_base::from_value(msr.rdmsr(msr_apic_base)).base_address();
}

// Switches this CPU's APIC to x2APIC mode: IA32_APIC_BASE |= EN | EXTD in one write, which is legal from
// both disabled and xAPIC-enabled. Only after choose_apic_mode said x2apic; leaving x2APIC needs a reset.
template <msr_bus M>
void enable_x2apic(M& msr) {
    auto v = lapic_regs::apic_base::from_value(msr.rdmsr(msr_apic_base));
    if (v.enabled() && v.x2apic()) return;
    msr.wrmsr(msr_apic_base, v.set_enabled(true).set_x2apic(true).value());
}

// ---- register access ------------------------------------------------------------------------------------

// How the driver reaches its registers. send_icr(dest, low) sends an IPI and says whether the APIC accepted
// it; write_tsc_deadline(tsc) writes IA32_TSC_DEADLINE (an MSR in both modes, but part of the access so
// tests can script it). max_apic_id is the largest destination the ICR can address.
template <class A>
concept lapic_access = requires(A& a, lapic_reg r, std::uint32_t v, std::uint64_t tsc) {
    { a.read(r) } -> std::same_as<std::uint32_t>;
    { a.write(r, v) } -> std::same_as<void>;
    { a.send_icr(v, v) } -> std::same_as<bool>;
    { a.apic_id() } -> std::same_as<std::uint32_t>;
    { a.write_tsc_deadline(tsc) } -> std::same_as<void>;
    { A::max_apic_id } -> std::convertible_to<std::uint32_t>;
};

// Models lapic_access and nothing more.
struct lapic_access_archetype {
    static constexpr std::uint32_t max_apic_id = 0xff;
    std::uint32_t read(lapic_reg) { return 0; }
    void write(lapic_reg, std::uint32_t) {}
    bool send_icr(std::uint32_t, std::uint32_t) { return true; }
    std::uint32_t apic_id() { return 0; }
    void write_tsc_deadline(std::uint64_t) {}
};
static_assert(lapic_access<lapic_access_archetype>);

// 32-bit MMIO at offsets from a base.
template <class B>
concept mmio32_bus = requires(B& b, std::uint32_t offset, std::uint32_t v) {
    { b.read32(offset) } -> std::same_as<std::uint32_t>;
    { b.write32(offset, v) } -> std::same_as<void>;
};
struct mmio_window {
    volatile std::uint32_t* base;
    std::uint32_t read32(std::uint32_t offset) const { return base[offset / 4]; }
    void write32(std::uint32_t offset, std::uint32_t v) const { base[offset / 4] = v; }
};
static_assert(mmio32_bus<mmio_window>);

// WRMSR to IA32_TSC_DEADLINE and to x2APIC registers is not serializing: without this, an earlier store
// (the xAPIC's LVT write, or data an IPI announces) may not be visible when the timer or IPI lands.
// Linux's weak_wrmsr_fence.
inline void wrmsr_fence() {
    asm volatile("mfence; lfence" ::: "memory");
}

template <mmio32_bus Mmio = mmio_window, msr_bus Msr = cpu_msr>
class xapic_mmio {
public:
    static constexpr std::uint32_t max_apic_id = 0xff; // 8-bit physical destinations
    // ICR reads before giving up on delivery status. An IPI is accepted in well under a microsecond; QEMU
    // and KVM report it at once.
    static constexpr std::uint32_t icr_idle_spins = 1u << 16;

    constexpr explicit xapic_mmio(Mmio mmio, Msr msr = Msr{})
        : mmio_{std::move(mmio)}, msr_{std::move(msr)} {}

    std::uint32_t read(lapic_reg r) { return mmio_.read32(static_cast<std::uint32_t>(r)); }
    void write(lapic_reg r, std::uint32_t v) { mmio_.write32(static_cast<std::uint32_t>(r), v); }

    // High half (destination in bits 31:24) first: the write of the low half is what sends. Then wait for
    // delivery status to clear, so the next IPI does not overwrite one still pending. Not reentrant: the
    // caller keeps interrupts off so no handler sends an IPI between the two writes.
    bool send_icr(std::uint32_t destination, std::uint32_t low) {
        write(lapic_reg::icr_high, destination << 24);
        write(lapic_reg::icr_low, low);
        for (std::uint32_t i = 0; i < icr_idle_spins; ++i) {
            if (!lapic_regs::icr_low::from_value(read(lapic_reg::icr_low)).delivery_pending()) return true;
            asm volatile("pause");
        }
        return false;
    }

    std::uint32_t apic_id() { return read(lapic_reg::id) >> 24; }

    void write_tsc_deadline(std::uint64_t tsc) {
        wrmsr_fence();
        msr_.wrmsr(msr_tsc_deadline, tsc);
    }

    Mmio& mmio() { return mmio_; }
    Msr& msr() { return msr_; }

private:
    Mmio mmio_;
    Msr msr_;
};

template <msr_bus Msr = cpu_msr>
class x2apic_msr {
public:
    static constexpr std::uint32_t max_apic_id = 0xffffffff;

    constexpr explicit x2apic_msr(Msr msr = Msr{}) : msr_{std::move(msr)} {}

    std::uint32_t read(lapic_reg r) { return static_cast<std::uint32_t>(msr_.rdmsr(x2apic_msr_of(r))); }
    void write(lapic_reg r, std::uint32_t v) { msr_.wrmsr(x2apic_msr_of(r), v); }

    // One write of the whole ICR, destination in bits 63:32. x2APIC has no delivery status to wait for.
    bool send_icr(std::uint32_t destination, std::uint32_t low) {
        wrmsr_fence();
        msr_.wrmsr(msr_x2apic_icr, std::uint64_t{destination} << 32 | low);
        return true;
    }

    // The full 32-bit x2APIC ID.
    std::uint32_t apic_id() { return read(lapic_reg::id); }

    void write_tsc_deadline(std::uint64_t tsc) {
        wrmsr_fence();
        msr_.wrmsr(msr_tsc_deadline, tsc);
    }

    Msr& msr() { return msr_; }

private:
    Msr msr_;
};

static_assert(lapic_access<xapic_mmio<>>);
static_assert(lapic_access<x2apic_msr<>>);

// ---- the driver -----------------------------------------------------------------------------------------

template <lapic_access A>
class lapic {
public:
    // The timer counts the bus (KVM, QEMU: 1 GHz) clock divided by this. 1 for the finest resolution; a
    // one-shot of 0xffffffff counts then lasts ~4.3 s at 1 GHz, and longer waits re-arm (plan_timer).
    static constexpr std::uint32_t timer_divider = 1;
    static constexpr std::uint8_t first_usable_vector = 32; // 0-31 are the CPU's exceptions

    constexpr explicit lapic(A access) : a_{std::move(access)} {}

    A& access() { return a_; }

    // Software-enables the APIC: TPR 0 (accept every priority), SVR enable + spurious vector (0xff is
    // customary), LINT0 masked (it carries the 8259's ExtINT, which we do not use), LINT1 masked (the
    // legacy NMI pin: nothing in a VM drives it; NMI IPIs still arrive), timer divide-by-1 and stopped,
    // masked, one-shot; the error LVT at `error_vector`, or masked when it is 0; ESR cleared.
    // The APIC must already be globally enabled (IA32_APIC_BASE.EN, set at reset; enable_x2apic for x2APIC).
    expected<void> enable(std::uint8_t spurious_vector, std::uint8_t error_vector = 0) {
        if (spurious_vector < first_usable_vector)
            return unexpected{"lapic: spurious vector must be 32..255", spurious_vector};
        if (error_vector != 0 && error_vector < first_usable_vector)
            return unexpected{"lapic: error vector must be 32..255 (or 0: masked)", error_vector};
        namespace r = lapic_regs;
        a_.write(lapic_reg::tpr, 0);
        // SVR first: while the APIC is software-disabled, LVT mask bits cannot be cleared.
        a_.write(lapic_reg::svr, r::svr{}.set_vector(spurious_vector).set_apic_enabled(true).value());
        a_.write(lapic_reg::lvt_lint0, r::lvt{}.set_masked(true).value());
        a_.write(lapic_reg::lvt_lint1, r::lvt{}.set_masked(true).value());
        a_.write(lapic_reg::timer_divide, r::timer_divide::by_1);
        write_timer_lvt(r::lvt_timer{}.set_masked(true).set_mode(r::timer_mode::one_shot));
        a_.write(lapic_reg::timer_initial, 0);
        a_.write(lapic_reg::lvt_error, error_vector != 0 ? r::lvt{}.set_vector(error_vector).value()
                                                         : r::lvt{}.set_masked(true).value());
        a_.write(lapic_reg::esr, 0); // xAPIC latches errors into ESR on a write; x2APIC allows only 0
        return {};
    }

    // End of interrupt for the in-service vector (not for the spurious vector, which needs none).
    void eoi() { a_.write(lapic_reg::eoi, 0); }

    // This CPU's APIC ID (8 bits in xAPIC mode, 32 in x2APIC mode).
    std::uint32_t id() { return a_.apic_id(); }
    std::uint32_t version() { return a_.read(lapic_reg::version); }

    // Errors latched since the last call (ESR bits: 5 send illegal vector, 6 received illegal vector, ...).
    std::uint32_t read_errors() {
        a_.write(lapic_reg::esr, 0);
        return a_.read(lapic_reg::esr);
    }

    // ---- timer. The LVT is written only when it changes (each access is a VM exit); every arm replaces
    // the previous one. Vectors must be 32..255.

    // Interrupt `vector` after `count` timer counts (bus clock / timer_divider). 0 stops the timer.
    void arm_one_shot(std::uint8_t vector, std::uint32_t count) {
        write_timer_lvt(
            lapic_regs::lvt_timer{}.set_vector(vector).set_mode(lapic_regs::timer_mode::one_shot));
        a_.write(lapic_reg::timer_initial, count); // writing the initial count starts the countdown
    }

    // Interrupt `vector` once the TSC reaches `tsc` (now if it has passed). Needs has_tsc_deadline().
    // 0 would disarm, so it is sent as 1.
    void arm_tsc_deadline(std::uint8_t vector, std::uint64_t tsc) {
        write_timer_lvt(
            lapic_regs::lvt_timer{}.set_vector(vector).set_mode(lapic_regs::timer_mode::tsc_deadline));
        a_.write_tsc_deadline(tsc == 0 ? 1 : tsc);
    }

    // Arms what plan_timer decided.
    void arm(const timer_plan& plan, std::uint8_t vector) {
        if (plan.how == timer_arm::tsc_deadline)
            arm_tsc_deadline(vector, plan.value);
        else
            arm_one_shot(vector, static_cast<std::uint32_t>(plan.value));
    }

    // Disarms the timer in whichever mode it is in.
    void stop_timer() {
        if (timer_lvt_.mode() == lapic_regs::timer_mode::tsc_deadline)
            a_.write_tsc_deadline(0);
        else
            a_.write(lapic_reg::timer_initial, 0);
    }

    // Counts left in a one-shot countdown (0 once it has expired or in TSC-deadline mode).
    std::uint32_t current_count() { return a_.read(lapic_reg::timer_current); }

    // For calibration: divide-by-1, masked one-shot, counting down from 0xffffffff without interrupting.
    void start_free_running() {
        a_.write(lapic_reg::timer_divide, lapic_regs::timer_divide::by_1);
        write_timer_lvt(lapic_regs::lvt_timer{}.set_masked(true).set_mode(lapic_regs::timer_mode::one_shot));
        a_.write(lapic_reg::timer_initial, 0xffffffff);
    }

    // ---- IPIs: physical destination, no shorthand, edge triggered, level assert. Interrupts must be off
    // on this CPU while sending (xAPIC: the ICR is two writes).

    // A fixed interrupt at `vector` on the CPU whose APIC ID is `dest`.
    expected<void> send_ipi(std::uint32_t dest, std::uint8_t vector) {
        if (vector < first_usable_vector) return unexpected{"lapic: IPI vector must be 32..255", vector};
        return send(dest, lapic_regs::icr_low{}.set_vector(vector));
    }

    expected<void> send_nmi(std::uint32_t dest) {
        return send(dest, lapic_regs::icr_low{}.set_delivery_mode(lapic_regs::delivery_mode::nmi));
    }

    // INIT (assert, edge): resets the target into wait-for-SIPI. The SDM's old INIT de-assert (level
    // trigger, level 0) is not sent: P4 and later ignore it, and x2APIC does not support it.
    expected<void> send_init(std::uint32_t dest) {
        return send(dest, lapic_regs::icr_low{}.set_delivery_mode(lapic_regs::delivery_mode::init));
    }

    // STARTUP: the target starts in real mode at page_number * 4096 (CS = page_number << 8, IP = 0), so the
    // trampoline must be page aligned below 1 MiB. Pages 0xa0..0xbf are reserved by the SDM (VGA memory).
    // The usual sequence is INIT, 10 ms, SIPI, 200 us, SIPI; the waits are the caller's.
    expected<void> send_startup(std::uint32_t dest, std::uint32_t page_number) {
        if (page_number > 0xff)
            return unexpected{"lapic: SIPI trampoline must be below 1 MiB (page)", page_number};
        if (page_number >= 0xa0 && page_number <= 0xbf)
            return unexpected{"lapic: SIPI vectors 0xa0..0xbf are reserved", page_number};
        return send(dest, lapic_regs::icr_low{}
                              .set_delivery_mode(lapic_regs::delivery_mode::startup)
                              .set_vector(static_cast<std::uint8_t>(page_number)));
    }

private:
    expected<void> send(std::uint32_t dest, lapic_regs::icr_low icr) {
        if (dest > A::max_apic_id)
            return unexpected{"lapic: destination APIC ID does not fit this mode", dest};
        if (!a_.send_icr(dest, icr.set_level_assert(true).value()))
            return unexpected{"lapic: IPI still pending: the destination did not accept it", dest};
        return {};
    }

    void write_timer_lvt(lapic_regs::lvt_timer v) {
        if (timer_lvt_known_ && v == timer_lvt_) return;
        a_.write(lapic_reg::lvt_timer, v.value());
        timer_lvt_ = v;
        timer_lvt_known_ = true;
    }

    A a_;
    lapic_regs::lvt_timer timer_lvt_{}; // what the LVT timer holds, once known
    bool timer_lvt_known_ = false;
};

// The LAPIC timer as a frequency_probe for calibrate_with_pit: it counts down, the probe counts up.
template <lapic_access A>
struct lapic_timer_probe {
    lapic<A>* apic;
    void start() { apic->start_free_running(); }
    std::uint64_t sample() { return 0xffffffff - std::uint64_t{apic->current_count()}; }
};

// The LAPIC timer's rate (divide-by-1) in counts per second, measured against the TSC over `window_ticks`
// TSC ticks: free-running masked countdown, the count read at both ends with a TSC read on either side
// (midpoints, so a slow register read costs no accuracy). Stops the timer afterwards.
template <lapic_access A, class TscNow>
expected<std::uint64_t> measure_lapic_timer_hz(lapic<A>& apic, TscNow&& tsc_now, std::uint64_t tsc_hz,
                                               std::uint64_t window_ticks) {
    if (tsc_hz == 0) return unexpected{"lapic: TSC frequency is 0"};
    if (window_ticks == 0) return unexpected{"lapic: calibration window is empty"};
    apic.start_free_running();
    const std::uint64_t t0a = tsc_now();
    const std::uint32_t c0 = apic.current_count();
    const std::uint64_t t0b = tsc_now();
    // Bounded even if the TSC stands still (a broken clock must not hang the boot).
    std::uint64_t t = t0b;
    for (std::uint32_t stuck = 0; t - t0b < window_ticks;) {
        const std::uint64_t n = tsc_now();
        if (n == t && ++stuck > (1u << 20)) {
            apic.stop_timer();
            return unexpected{"lapic: the TSC does not count"};
        }
        t = n;
    }
    const std::uint64_t t1a = tsc_now();
    const std::uint32_t c1 = apic.current_count();
    const std::uint64_t t1b = tsc_now();
    apic.stop_timer();
    if (c1 >= c0) return unexpected{"lapic: LAPIC timer does not count", c0};
    if (c1 == 0) return unexpected{"lapic: LAPIC timer ran out during the calibration window", window_ticks};
    const std::uint64_t twice_ticks = (t1a + t1b) - (t0a + t0b);
    return muldiv64(2 * std::uint64_t{c0 - c1}, tsc_hz, twice_ticks);
}

} // namespace toro::arch
