// Timekeeping: the TSC's frequency, TSC <-> nanosecond conversion, and planning the next timer interrupt.
//
//   timebase            ticks <-> ns as one 64x64->128 multiply and a shift (no division after from_hz)
//   tsc_hz_from_*       one function per frequency source, each over injected CPUID / MSR / port access
//   calibrate_with_pit  measures the TSC (and optionally a second counter) against PIT channel 2
//   calibrate_with_pit_channel0  the same against channel 0, for a PIT without port 0x61 (microvm)
//   detect_tsc_hz       tries the sources in order and says which one answered
//   plan_timer          what to arm for a deadline: a TSC-deadline value or a LAPIC one-shot count
//
// Kernel code is built without SSE, so everything is 64-bit integer arithmetic. unsigned __int128 is used
// for multiplies and shifts only: a 128-bit division would call __udivti3, which the kernel does not link,
// so the few divisions of 128-bit values (all at init) go through div128_by_64 below.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include <toro/arch/x86_64/cpu.hpp>
#include <toro/arch/x86_64/port_io.hpp>
#include <toro/base/expected.hpp>
#include <toro/base/string_view.hpp>
#include <toro/console/io_provider.hpp>

namespace toro::arch {

using u128 = unsigned __int128;

// ---- 128-bit helpers -----------------------------------------------------------------------------------

// floor(n / d) when the quotient fits in 64 bits (n >> 64 < d; otherwise the result is meaningless).
// One `div` instruction (rdx:rax / d) at run time, never a call to __udivti3; bit-serial long division in
// constant evaluation (and for the meaningless case, where `div` would fault). The instruction matters
// where a hypervisor emulates every guest instruction: the loop is ~700 of them.
constexpr std::uint64_t div128_by_64(u128 n, std::uint64_t d, std::uint64_t* remainder = nullptr) {
    std::uint64_t hi = static_cast<std::uint64_t>(n >> 64);
    std::uint64_t lo = static_cast<std::uint64_t>(n);
    if (!std::is_constant_evaluated() && hi < d) {
        std::uint64_t q, r;
        asm("divq %4" : "=a"(q), "=d"(r) : "a"(lo), "d"(hi), "rm"(d) : "cc");
        if (remainder != nullptr) *remainder = r;
        return q;
    }
    std::uint64_t q = 0;
    for (int i = 0; i < 64; ++i) {
        const bool carry = (hi >> 63) != 0; // the partial remainder would need bit 64: it exceeds d
        hi = (hi << 1) | (lo >> 63);
        lo <<= 1;
        q <<= 1;
        if (carry || hi >= d) {
            hi -= d; // modulo 2^64 this is right even with the carry: the true difference is below d
            q |= 1;
        }
    }
    if (remainder != nullptr) *remainder = hi;
    return q;
}

// floor(a * b / c) without overflow in the product; UINT64_MAX when the quotient does not fit or c is 0.
constexpr std::uint64_t muldiv64(std::uint64_t a, std::uint64_t b, std::uint64_t c) {
    const u128 p = static_cast<u128>(a) * b;
    if (c == 0 || static_cast<std::uint64_t>(p >> 64) >= c) return ~std::uint64_t{0};
    return div128_by_64(p, c);
}

// x -> x * num / den, precomputed as a 128-bit fixed-point multiplier M ~ num/den * 2^(shift + 64), so a
// conversion is two 64x64->128 multiplies, an add and a shift: no division.
//
// The result is the exact floor (rounding::down) or ceiling (rounding::up) of x * num / den for every
// 64-bit x. Why: x * num / den is a multiple of 1/den, so its fractional part is 0 or in [1/den, 1 - 1/den].
// With shift >= bit_width(den) the multiplier's error contributes less than x / 2^(shift + 64) < 1/den, and
// M is rounded the opposite way to the result (up for floors, down for ceilings) so that the error can
// never cross an integer. Results that do not fit in 64 bits saturate.
class tick_scale {
public:
    enum class rounding : std::uint8_t { down, up };

    constexpr tick_scale() = default;

    // Needs 0 < num < 2^62 and den > 0 (and so num / den < 2^62); otherwise an error.
    static expected<tick_scale> from_ratio(std::uint64_t num, std::uint64_t den, rounding r) {
        if (num == 0 || den == 0) return unexpected{"tick_scale: zero in the ratio"};
        if (num >> 62 != 0) return unexpected{"tick_scale: numerator too large", num};
        const int a = bit_width(num), b = bit_width(den);
        // num << s < 2^(62+b) and den >= 2^(b-1): the quotient fits in 64 bits, in (2^61, 2^63).
        int s = 62 + b - a;
        std::uint64_t rem = 0;
        std::uint64_t hi = div128_by_64(static_cast<u128>(num) << s, den, &rem);
        if (hi < (std::uint64_t{1} << 62)) {
            ++s; // (num << s) < 2^(63+b) <= 2^127: still exact
            hi = div128_by_64(static_cast<u128>(num) << s, den, &rem);
        }
        // 64 more fraction bits: rem < den, so (rem << 64) / den fits in 64 bits.
        std::uint64_t rem2 = 0;
        std::uint64_t lo = div128_by_64(static_cast<u128>(rem) << 64, den, &rem2);
        if (r == rounding::down && rem2 != 0 && ++lo == 0) ++hi; // M rounded up; hi stays <= 2^63
        tick_scale t;
        t.hi_ = hi;
        t.lo_ = lo;
        t.shift_ = static_cast<unsigned>(s); // 1..126, and >= b since a <= 62
        t.round_up_ = r == rounding::up;
        return t;
    }

    constexpr std::uint64_t operator()(std::uint64_t x) const {
        const u128 p_lo = static_cast<u128>(x) * lo_;
        const u128 top = static_cast<u128>(x) * hi_ + (p_lo >> 64); // < 2^127 + 2^64: no overflow
        const u128 y = top >> shift_;
        if ((y >> 64) != 0) return ~std::uint64_t{0};
        std::uint64_t v = static_cast<std::uint64_t>(y);
        if (round_up_) {
            const bool inexact =
                (top & ((u128{1} << shift_) - 1)) != 0 || static_cast<std::uint64_t>(p_lo) != 0;
            if (inexact) {
                if (v == ~std::uint64_t{0}) return v;
                ++v;
            }
        }
        return v;
    }

    // M = mult_hi * 2^64 + mult_lo, result = (x * M) >> (shift + 64).
    constexpr std::uint64_t mult_hi() const { return hi_; }
    constexpr std::uint64_t mult_lo() const { return lo_; }
    constexpr unsigned shift() const { return shift_; }

private:
    static constexpr int bit_width(std::uint64_t v) {
        int n = 0;
        for (; v != 0; v >>= 1) ++n;
        return n;
    }

    std::uint64_t hi_ = 0, lo_ = 0;
    unsigned shift_ = 0;
    bool round_up_ = false;
};

// ---- timebase -------------------------------------------------------------------------------------------

inline constexpr std::uint64_t ns_per_s = 1'000'000'000;
// Frequencies outside this range are a measurement gone wrong, not a CPU.
inline constexpr std::uint64_t min_tsc_hz = 1'000'000;
inline constexpr std::uint64_t max_tsc_hz = 100'000'000'000;

// TSC ticks <-> nanoseconds since an origin TSC value, exact (floor for ns, ceiling for ticks) with no
// division after from_hz. Nothing overflows before 2^64 ticks (117 years at 5 GHz); beyond that, results
// that do not fit saturate.
class timebase {
public:
    static expected<timebase> from_hz(std::uint64_t tsc_hz, std::uint64_t tsc_origin) {
        if (tsc_hz == 0) return unexpected{"timebase: TSC frequency is 0 Hz"};
        if (tsc_hz < min_tsc_hz) return unexpected{"timebase: TSC frequency below 1 MHz", tsc_hz};
        if (tsc_hz > max_tsc_hz) return unexpected{"timebase: TSC frequency above 100 GHz", tsc_hz};
        timebase t;
        t.hz_ = tsc_hz;
        t.origin_ = tsc_origin;
        // Both numerators are below 2^62, so from_ratio cannot fail.
        t.to_ns_ = tick_scale::from_ratio(ns_per_s, tsc_hz, tick_scale::rounding::down).value();
        t.to_ticks_ = tick_scale::from_ratio(tsc_hz, ns_per_s, tick_scale::rounding::up).value();
        return t;
    }

    std::uint64_t hz() const { return hz_; }
    std::uint64_t origin() const { return origin_; }

    // Nanoseconds from the origin to `tsc`, rounded down; 0 for a TSC value before the origin (another
    // CPU's TSC may trail the one the origin was read on by a few ticks).
    std::uint64_t ns(std::uint64_t tsc) const { return tsc <= origin_ ? 0 : to_ns_(tsc - origin_); }

    // TSC ticks in `ns` nanoseconds, rounded up so a deadline built from it never fires early.
    std::uint64_t ticks_for_ns(std::uint64_t ns) const { return to_ticks_(ns); }

    // The TSC value `ns` nanoseconds after the origin (saturating): the deadline for an absolute time.
    std::uint64_t tsc_at(std::uint64_t ns) const {
        const std::uint64_t t = ticks_for_ns(ns);
        return t > ~std::uint64_t{0} - origin_ ? ~std::uint64_t{0} : origin_ + t;
    }

    // A placeholder until from_hz: every conversion gives 0.
    constexpr timebase() = default;

private:
    std::uint64_t hz_ = 0, origin_ = 0;
    tick_scale to_ns_, to_ticks_;
};

// ---- injected hardware access ---------------------------------------------------------------------------

// CPUID as a callable: cpuid(leaf, subleaf). Tests pass a table.
template <class F>
concept cpuid_source = requires(F& f, std::uint32_t leaf) {
    { f(leaf, leaf) } -> std::same_as<cpuid_result>;
};
struct cpu_cpuid {
    cpuid_result operator()(std::uint32_t leaf, std::uint32_t subleaf) const { return cpuid(leaf, subleaf); }
};

// MSR access. In the kernel it is rdmsr/wrmsr; tests script it.
template <class M>
concept msr_bus = requires(M& m, std::uint32_t msr, std::uint64_t value) {
    { m.rdmsr(msr) } -> std::same_as<std::uint64_t>;
    { m.wrmsr(msr, value) } -> std::same_as<void>;
};
struct cpu_msr {
    std::uint64_t rdmsr(std::uint32_t msr) const { return arch::rdmsr(msr); }
    void wrmsr(std::uint32_t msr, std::uint64_t value) const { arch::wrmsr(msr, value); }
};

// The TSC as a callable returning ticks.
struct cpu_tsc {
    std::uint64_t operator()() const { return rdtsc(); }
};

static_assert(cpuid_source<cpu_cpuid>);
static_assert(msr_bus<cpu_msr>);

// ---- TSC frequency sources ------------------------------------------------------------------------------

namespace detail {
// CPUID.1:ECX bit 31: a hypervisor is present. Without it leaves 0x4000_00xx are not hypervisor leaves (a
// bare-metal Intel CPU answers them with its highest basic leaf), so nothing there may be trusted.
template <cpuid_source C>
bool has_hypervisor(C& cpuid) {
    return (cpuid(1, 0).ecx >> 31 & 1) != 0;
}
} // namespace detail

// (1) CPUID 0x15: TSC = crystal Hz (ECX) * EBX / EAX; only when all three are enumerated.
template <cpuid_source C>
expected<std::uint64_t> tsc_hz_from_cpuid_15h(C&& cpuid) {
    if (cpuid(0, 0).eax < 0x15) return unexpected{"CPUID leaf 0x15 is not implemented"};
    const cpuid_result r = cpuid(0x15, 0);
    if (r.eax == 0 || r.ebx == 0 || r.ecx == 0)
        return unexpected{"CPUID 0x15 does not enumerate the TSC/crystal ratio and crystal frequency"};
    return muldiv64(r.ecx, r.ebx, r.eax);
}

// (2) CPUID 0x16: EAX = processor base frequency in MHz (the TSC's rate on the CPUs that report it).
template <cpuid_source C>
expected<std::uint64_t> tsc_hz_from_cpuid_16h(C&& cpuid) {
    if (cpuid(0, 0).eax < 0x16) return unexpected{"CPUID leaf 0x16 is not implemented"};
    const std::uint32_t mhz = cpuid(0x16, 0).eax & 0xffff;
    if (mhz == 0) return unexpected{"CPUID 0x16 reports no base frequency"};
    return std::uint64_t{mhz} * 1'000'000;
}

// (3) The hypervisor timing leaf 0x40000010 (VMware's, also offered by QEMU/KVM): EAX = TSC kHz.
template <cpuid_source C>
expected<std::uint64_t> tsc_hz_from_hypervisor_leaf(C&& cpuid) {
    if (!detail::has_hypervisor(cpuid)) return unexpected{"no hypervisor, so no leaf 0x40000010"};
    const std::uint32_t max = cpuid(0x40000000, 0).eax;
    if (max < 0x40000010 || max > 0x400000ff)
        return unexpected{"hypervisor has no timing leaf 0x40000010", max};
    const std::uint32_t khz = cpuid(0x40000010, 0).eax;
    if (khz == 0) return unexpected{"hypervisor leaf 0x40000010 reports 0 kHz"};
    return std::uint64_t{khz} * 1000;
}

// (4) kvmclock. KVM publishes, per vCPU, how it converts TSC ticks to ns:
//   ns = ((ticks << tsc_shift) * tsc_to_system_mul) >> 32   (a negative shift shifts right)
// so ticks per second = (1e9 << 32) / mul, shifted by -tsc_shift (Linux: pvclock_tsc_khz, in kHz).
struct pvclock_vcpu_time_info {
    std::uint32_t version; // odd while the hypervisor updates the rest
    std::uint32_t pad0;
    std::uint64_t tsc_timestamp;
    std::uint64_t system_time;
    std::uint32_t tsc_to_system_mul;
    std::int8_t tsc_shift;
    std::uint8_t flags;
    std::uint8_t pad[2];
};
static_assert(sizeof(pvclock_vcpu_time_info) == 32);
static_assert(offsetof(pvclock_vcpu_time_info, tsc_to_system_mul) == 24);
static_assert(offsetof(pvclock_vcpu_time_info, tsc_shift) == 28);

inline constexpr std::uint32_t msr_kvm_system_time_new = 0x4b564d01;
inline constexpr std::uint32_t kvm_feature_clocksource2 = 1u << 3; // CPUID 0x40000001.EAX bit 3

// The TSC frequency kvmclock's scale stands for.
inline expected<std::uint64_t> kvmclock_tsc_hz(std::uint32_t mul, std::int8_t shift) {
    if (mul == 0) return unexpected{"kvmclock: tsc_to_system_mul is 0"};
    if (shift <= -32 || shift >= 32)
        return unexpected{"kvmclock: tsc_shift out of range", std::uint64_t(shift)};
    std::uint64_t hz = (ns_per_s << 32) / mul; // 1e9 << 32 < 2^62: fits
    if (shift < 0) {
        if (hz > (~std::uint64_t{0} >> -shift)) return unexpected{"kvmclock: TSC frequency overflows"};
        hz <<= -shift;
    } else {
        hz >>= shift;
    }
    return hz;
}

// The CPUID base of KVM's leaves: 0x40000000, or 0x40000100 when QEMU puts Hyper-V's leaves first
// (hv-* enlightenments). 0 when not under KVM. Linux scans further; nothing we run on needs that.
template <cpuid_source C>
std::uint32_t kvm_cpuid_base(C& cpuid) {
    if (!detail::has_hypervisor(cpuid)) return 0;
    constexpr std::uint32_t bases[] = {0x40000000u, 0x40000100u};
    for (std::uint32_t base : bases) {
        const cpuid_result r = cpuid(base, 0);
        // "KVMKVMKVM\0\0\0" in EBX, ECX, EDX.
        if (r.ebx == 0x4b4d564b && r.ecx == 0x564b4d56 && r.edx == 0x4d) return base;
    }
    return 0;
}

// Reads kvmclock's scale once: enable the vCPU's time info at `info` (its physical address is `info_phys`;
// 4-byte aligned as KVM requires, and inside one page), read mul/shift under the version protocol, and
// disable it again so the hypervisor stops writing our memory.
template <cpuid_source C, msr_bus M>
expected<std::uint64_t> tsc_hz_from_kvmclock(C&& cpuid, M& msr, volatile pvclock_vcpu_time_info& info,
                                             std::uint64_t info_phys) {
    const std::uint32_t base = kvm_cpuid_base(cpuid);
    if (base == 0) return unexpected{"kvmclock: not running under KVM"};
    if ((cpuid(base + 1, 0).eax & kvm_feature_clocksource2) == 0)
        return unexpected{"kvmclock: KVM does not offer KVM_FEATURE_CLOCKSOURCE2"};
    if ((info_phys & 3) != 0 || (info_phys & 0xfff) + sizeof(pvclock_vcpu_time_info) > 0x1000)
        return unexpected{"kvmclock: time info must be 4-byte aligned and within one page", info_phys};

    // Version 0 means "not written yet": KVM's first update leaves an even, nonzero version.
    info.version = 0;
    info.tsc_to_system_mul = 0;
    msr.wrmsr(msr_kvm_system_time_new, info_phys | 1);
    std::uint32_t mul = 0;
    std::int8_t shift = 0;
    bool stable = false;
    // KVM fills the page before it resumes the vCPU, so this settles at once; the bound is for a
    // hypervisor that says it has kvmclock and never writes.
    for (std::uint32_t tries = 0; tries < (1u << 20) && !stable; ++tries) {
        const std::uint32_t v0 = info.version;
        if (v0 == 0 || (v0 & 1) != 0) continue;
        mul = info.tsc_to_system_mul;
        shift = info.tsc_shift;
        stable = info.version == v0; // volatile accesses stay in program order; x86 keeps loads ordered
    }
    msr.wrmsr(msr_kvm_system_time_new, 0);
    if (!stable) return unexpected{"kvmclock: the hypervisor never published its time info"};
    return kvmclock_tsc_hz(mul, shift);
}

// ---- (5) PIT channel 2 ----------------------------------------------------------------------------------

inline constexpr std::uint64_t pit_hz = 1'193'182; // the 8254's input clock (14.31818 MHz / 12)

// A second counter to measure in the same window (the LAPIC timer). start() starts it; sample() returns a
// count that grows at the counter's rate.
template <class P>
concept frequency_probe = requires(P& p) {
    { p.start() } -> std::same_as<void>;
    { p.sample() } -> std::same_as<std::uint64_t>;
};
struct no_probe {
    void start() {}
    std::uint64_t sample() { return 0; }
};

struct pit_calibration {
    std::uint64_t tsc_hz = 0;
    std::uint64_t probe_hz = 0;        // 0 without a probe
    std::uint64_t uncertainty_ppm = 0; // the timing brackets' half-widths over the window
};

namespace pit {
inline constexpr std::uint16_t channel2 = 0x42;
inline constexpr std::uint16_t command = 0x43;
inline constexpr std::uint16_t control = 0x61; // NMI status/control: bit 0 gate 2, bit 1 speaker
inline constexpr std::uint8_t control_gate2 = 0x01;
inline constexpr std::uint8_t control_out2 = 0x20;     // read-only: channel 2's output
inline constexpr std::uint8_t control_writable = 0x0c; // keep the NMI source enables; bits 7:4 are read-only
inline constexpr std::uint8_t mode0_ch2_lohi = 0xb0;   // channel 2, lobyte/hibyte, mode 0, binary
inline constexpr std::uint8_t latch_ch2 = 0x80;        // channel 2, counter latch
inline constexpr std::uint16_t channel0 = 0x40;
inline constexpr std::uint8_t mode0_ch0_lohi = 0x30; // channel 0, lobyte/hibyte, mode 0, binary
inline constexpr std::uint8_t latch_ch0 = 0x00;      // channel 0, counter latch
inline constexpr std::uint32_t channel0_max_window_us = 250'000;
inline constexpr std::uint32_t presence_reads = 1000; // latch reads to see the count move
// Windows of 2, 8, 32, 32, 32, 32 ms: a loaded host (several vCPUs on few cores) disturbs some windows; more
// tries at the longest window cost boot time only when they are needed.
inline constexpr int attempts = 6;
inline constexpr std::uint64_t longest_window_us = 32'000;
constexpr std::uint64_t next_window(std::uint64_t us) {
    return us * 4 > longest_window_us && us >= longest_window_us ? us : us * 4;
}
} // namespace pit

// Measures the TSC against PIT channel 2 (mode 0, `window_us` long, ~2 ms by default), and the probe's
// counter in the same window. `io` reaches I/O ports by number (arch::port_io{0} in the kernel).
//
// The count starts at the write of its high byte and OUT2 (port 0x61 bit 5) rises exactly `count` PIT
// clocks later (QEMU and KVM model it so; real 8254s add one clock). Both instants are bracketed by TSC
// reads and the midpoints taken, so the result does not depend on how slow a port access is, only on how
// much it varies. An attempt whose brackets exceed 1% of the window (a vCPU preempted, an SMI, or a
// hypervisor that emulates every instruction: ~8000 ppm at 2 ms on the CI's KVM) is retried with a window
// 4x longer (2, 8, 32 ms by default; at most 54.9 ms, the 16-bit count's limit).
//
// Never spins forever: a PIT whose count reads back above what was written (a floating bus: 0xffff) or does
// not move, or whose OUT2 is high right after programming, is reported absent before any window; OUT2 that
// never rises ends after 2^24 polls or 4x the window at 100 GHz, whichever comes first.
template <io_provider Io, class TscNow, frequency_probe P = no_probe>
expected<pit_calibration> calibrate_with_pit(Io& io, TscNow&& tsc_now, P&& probe = P{},
                                             std::uint32_t window_us = 2000) {
    const std::uint64_t first_count = muldiv64(window_us, pit_hz, 1'000'000);
    if (first_count < 2 || first_count > 0xffff)
        return unexpected{"PIT: window must be 2..54924 microseconds", window_us};
    const std::uint64_t max_polls = std::uint64_t{1} << 24;
    constexpr std::uint64_t presence_count = 0xfffe;

    const std::uint8_t saved = io.read8(pit::control);
    const std::uint8_t gate_on =
        static_cast<std::uint8_t>((saved & pit::control_writable) | pit::control_gate2); // speaker off
    io.write8(pit::control, gate_on);
    auto restore = [&] { io.write8(pit::control, static_cast<std::uint8_t>(saved & 0x0f)); };
    auto program = [&](std::uint64_t count) { // mode 0; restarts the count, OUT2 goes low
        io.write8(pit::command, pit::mode0_ch2_lohi);
        io.write8(pit::channel2, static_cast<std::uint8_t>(count));
        io.write8(pit::channel2, static_cast<std::uint8_t>(count >> 8));
    };
    auto read_count = [&]() -> std::uint16_t {
        io.write8(pit::command, pit::latch_ch2);
        const std::uint8_t l = io.read8(pit::channel2);
        return static_cast<std::uint16_t>(l | io.read8(pit::channel2) << 8);
    };

    // Presence, with a 55 ms count so nothing below can legitimately see it expire: OUT2 must read low
    // right after programming mode 0 (microvm under KVM has a PIT but no port 0x61: it floats high), and
    // the count must read back at most what was written (no PIT floats to 0xffff) and then move.
    program(presence_count);
    if ((io.read8(pit::control) & pit::control_out2) != 0) {
        restore();
        return unexpected{
            "PIT: port 0x61 does not show channel 2's output (OUT2 high right after programming)"};
    }
    const std::uint16_t first = read_count();
    if (first > presence_count) {
        restore();
        return unexpected{"PIT: no PIT (channel 2 reads back above the count just written)", first};
    }
    bool moves = false;
    for (std::uint32_t i = 0; i < pit::presence_reads && !moves; ++i) moves = read_count() != first;
    if (!moves) {
        restore();
        return unexpected{"PIT: no PIT (channel 2's count does not move)", first};
    }

    probe.start();
    std::uint64_t us = window_us;
    for (int attempt = 0; attempt < pit::attempts; ++attempt, us = pit::next_window(us)) {
        std::uint64_t count = muldiv64(us, pit_hz, 1'000'000);
        if (count > 0xffff) count = 0xffff;
        const std::uint64_t max_ticks = us * (max_tsc_hz / 1'000'000) * 4;
        io.write8(pit::command, pit::mode0_ch2_lohi);
        io.write8(pit::channel2, static_cast<std::uint8_t>(count));
        const std::uint64_t s0 = tsc_now();
        io.write8(pit::channel2, static_cast<std::uint8_t>(count >> 8)); // counting starts here
        const std::uint64_t s1 = tsc_now();
        const std::uint64_t p0 = probe.sample();
        const std::uint64_t p0_t = tsc_now();

        // Sample k of OUT2 happens between the TSC reads around it. The rise lies after the last low
        // sample began (`low`) and before the first high sample ended (`t`).
        std::uint64_t low = s0, before = p0_t, t = p0_t;
        bool high = false;
        for (std::uint64_t polls = 0; polls < max_polls; ++polls) {
            const std::uint8_t v = io.read8(pit::control);
            t = tsc_now();
            if ((v & pit::control_out2) != 0) {
                high = true;
                break;
            }
            low = before;
            before = t;
            if (t - s1 > max_ticks) break;
        }
        if (!high) {
            restore();
            return unexpected{"PIT: channel 2's OUT2 never went high", count};
        }
        const std::uint64_t p1 = probe.sample();
        const std::uint64_t p1_t = tsc_now();

        const std::uint64_t twice_elapsed = (low + t) - (s0 + s1);
        const std::uint64_t twice_error = (t - low) + (s1 - s0);
        if (twice_elapsed == 0 || twice_error > twice_elapsed / 100) continue; // disturbed: longer window

        pit_calibration c;
        c.tsc_hz = muldiv64(twice_elapsed, pit_hz, 2 * count);
        c.uncertainty_ppm = muldiv64(twice_error, 1'000'000, twice_elapsed);
        if constexpr (!std::same_as<std::remove_cvref_t<P>, no_probe>) {
            // The probe against the TSC: its samples sit between s1..p0_t and t..p1_t.
            const std::uint64_t twice_probe_ticks = (t + p1_t) - (s1 + p0_t);
            c.probe_hz = p1 > p0 ? muldiv64(2 * (p1 - p0), c.tsc_hz, twice_probe_ticks) : 0;
        }
        restore();
        return c;
    }
    restore();
    return unexpected{"PIT: every calibration window was disturbed (preemption or SMIs)", pit::attempts};
}

// ---- (6) PIT channel 0 ----------------------------------------------------------------------------------

// Measures the TSC (and the probe) against PIT channel 0 through ports 0x40 and 0x43 only: for PITs without
// port 0x61, such as QEMU's microvm (pit=on), where calibrate_with_pit cannot see OUT2.
//
// Channel 0 is programmed once (mode 0, count 0xfffe) and then only read, with the latch command. It counts
// down at pit_hz and, past 0, wraps around modulo 2^16, so the PIT clocks elapsed are the sum of the
// decrements between consecutive reads, modulo 2^16 each. The window runs from one change of the count to
// another: a change seen at read k happened after read k-1 began and before read k ended, so each edge is
// bracketed by TSC reads and the midpoints are taken, as in calibrate_with_pit (reading the count without
// waiting for an edge would cost up to a PIT clock, 838 ns, at each end). Attempts and their 1% rule are
// calibrate_with_pit's: 2, 8, 32 ms by default; longer windows (up to 250 ms) simply span wraps.
//
// A wrap goes unseen only if one read (with its predecessor) spans a whole wrap, 55 ms: a preempted vCPU.
// So a window also counts as disturbed when one read spans more than a quarter of it, or more than a
// quarter wrap at the rate the window measured, or the count fell by half a wrap or more in one read (or
// rose). One stall that hid m wraps would have to be over a quarter wrap: it is over 65536m PIT clocks, at
// most a quarter of the window, so the window counted at least 3/4 of its true clocks and the stall measures
// at least 49152. (Two or more such stalls in one window could hide wraps; TCG's own stalls, up to ~200 us
// on the development host, are far from that.)
//
// Leaves channel 0 in mode 0 past its terminal count: OUT0 rose once, about 55 ms after programming (one
// IRQ0 edge; microvm has no PIC and masks the IOAPIC pin), and stays high, so no periodic interrupt
// remains. Never spins forever: a count that reads back above 0xfffe twice (a floating bus) or does not move
// is "no PIT" after at most 1002 reads, and a count that stops later ends a window after 2^24 reads or 4x
// the window at 100 GHz, whichever comes first.
template <io_provider Io, class TscNow, frequency_probe P = no_probe>
expected<pit_calibration> calibrate_with_pit_channel0(Io& io, TscNow&& tsc_now, P&& probe = P{},
                                                      std::uint32_t window_us = 2000) {
    if (window_us < 2 || window_us > pit::channel0_max_window_us)
        return unexpected{"PIT channel 0: window must be 2..250000 microseconds", window_us};
    constexpr bool with_probe = !std::same_as<std::remove_cvref_t<P>, no_probe>;
    const std::uint64_t max_polls = std::uint64_t{1} << 24;
    constexpr std::uint16_t presence_count = 0xfffe;
    auto read_count = [&]() -> std::uint16_t {
        io.write8(pit::command, pit::latch_ch0);
        const std::uint8_t l = io.read8(pit::channel0);
        return static_cast<std::uint16_t>(l | io.read8(pit::channel0) << 8);
    };

    io.write8(pit::command, pit::mode0_ch0_lohi);
    io.write8(pit::channel0, static_cast<std::uint8_t>(presence_count));
    io.write8(pit::channel0, static_cast<std::uint8_t>(presence_count >> 8));
    std::uint16_t first = read_count();
    if (first > presence_count) first = read_count(); // a real 8254 loads the count on its next clock
    if (first > presence_count)
        return unexpected{"PIT channel 0: no PIT (the count reads back above the count just written)", first};
    bool moves = false;
    for (std::uint32_t i = 0; i < pit::presence_reads && !moves; ++i) moves = read_count() != first;
    if (!moves) return unexpected{"PIT channel 0: no PIT (the count does not move)", first};

    probe.start();
    std::uint64_t us = window_us;
    for (int attempt = 0; attempt < pit::attempts; ++attempt, us = pit::next_window(us)) {
        const std::uint64_t target = muldiv64(us, pit_hz, 1'000'000);
        const std::uint64_t max_ticks = us * (max_tsc_hz / 1'000'000) * 4;
        // Read k lies between TSC values `before` and `after`; `before_prev` is where read k-1 began.
        std::uint64_t before_prev = 0, before = tsc_now();
        std::uint16_t last = read_count();
        std::uint64_t after = tsc_now();
        const std::uint64_t begin = before;
        auto poll = [&] {
            before_prev = before;
            before = after;
            const std::uint16_t c = read_count();
            after = tsc_now();
            const std::uint16_t step = static_cast<std::uint16_t>(last - c); // down-counter, modulo 2^16
            last = c;
            return step;
        };

        // Each edge is taken only when its bracket is within twice the narrowest seen: a PIT clock is only
        // 838 ns, so waiting for a clean edge costs little, and under TCG a few reads in each window take
        // 10..500 us (the first ones through new code, and the emulator's own pauses).
        std::uint64_t narrowest = ~std::uint64_t{0};
        auto clean = [&] {
            const std::uint64_t w = after - before_prev;
            if (w < narrowest) narrowest = w;
            return w <= 2 * narrowest;
        };

        // The start: a clean change of the count after the first two reads (any change after a quarter
        // window: under KVM every read is a slow exit, and one unusually quick pair could set the bar).
        bool started = false;
        std::uint64_t waited = 0;
        for (std::uint64_t polls = 0; polls < max_polls && !started; ++polls) {
            const std::uint16_t step = poll();
            waited += step;
            const bool is_clean = clean();
            started = step != 0 && polls >= 2 && (is_clean || waited >= target / 4);
            if (after - begin > max_ticks) break;
        }
        if (!started) return unexpected{"PIT channel 0: the count stopped moving", last};
        const std::uint64_t s0 = before_prev, s1 = after;
        std::uint64_t p0 = 0, p0_t = s1;
        if constexpr (with_probe) {
            p0 = probe.sample();
            p0_t = after = tsc_now(); // the next read begins here
        }

        // The end: a clean change once `target` PIT clocks have passed (any change after 5/4 of them).
        std::uint64_t ticks = 0, max_gap = 0;
        bool done = false, jumped = false;
        for (std::uint64_t polls = 0; polls < max_polls && !done; ++polls) {
            const std::uint16_t step = poll();
            jumped |= step >= 0x8000;
            ticks += step;
            if (after - before_prev > max_gap) max_gap = after - before_prev;
            const bool is_clean = clean();
            done = step != 0 && ticks >= target && (is_clean || ticks >= target + target / 4);
            if (!done && after - s1 > max_ticks) break;
        }
        if (!done) return unexpected{"PIT channel 0: the count stopped moving", last};
        std::uint64_t p1 = 0, p1_t = after;
        if constexpr (with_probe) {
            p1 = probe.sample();
            p1_t = tsc_now();
        }

        const std::uint64_t twice_elapsed = (before_prev + after) - (s0 + s1);
        const std::uint64_t twice_error = (after - before_prev) + (s1 - s0);
        const bool stalled =
            max_gap > twice_elapsed / 8 || muldiv64(max_gap, 2 * ticks, twice_elapsed) >= 0x4000 || jumped;
        if (twice_elapsed == 0 || twice_error > twice_elapsed / 100 || stalled) continue; // longer window

        pit_calibration c;
        c.tsc_hz = muldiv64(twice_elapsed, pit_hz, 2 * ticks);
        c.uncertainty_ppm = muldiv64(twice_error, 1'000'000, twice_elapsed);
        if constexpr (with_probe) {
            const std::uint64_t twice_probe_ticks = (after + p1_t) - (s1 + p0_t);
            c.probe_hz = p1 > p0 ? muldiv64(2 * (p1 - p0), c.tsc_hz, twice_probe_ticks) : 0;
        }
        return c;
    }
    return unexpected{"PIT channel 0: every calibration window was disturbed (preemption or SMIs)",
                      pit::attempts};
}

// ---- detection ------------------------------------------------------------------------------------------

struct tsc_frequency {
    std::uint64_t hz = 0;
    string_view source;
};

// Tries, in order: the hypervisor timing leaf 0x40000010, kvmclock, CPUID 0x15, CPUID 0x16, then measures
// against the PIT: channel 2 (calibrate_with_pit), then channel 0 (calibrate_with_pit_channel0).
// Hypervisor-reported values come first because they describe the guest's TSC: with TSC scaling (live
// migration) it differs from the host CPU's nominal rates that 0x15/0x16 may pass through. A source's answer
// outside [1 MHz, 100 GHz] counts as no answer.
template <cpuid_source C, msr_bus M, io_provider Io, class TscNow>
expected<tsc_frequency> detect_tsc_hz(C&& cpuid, M& msr, volatile pvclock_vcpu_time_info& kvmclock_info,
                                      std::uint64_t kvmclock_info_phys, Io& io, TscNow&& tsc_now) {
    auto plausible = [](const expected<std::uint64_t>& r) {
        return r.has_value() && *r >= min_tsc_hz && *r <= max_tsc_hz;
    };
    if (auto r = tsc_hz_from_hypervisor_leaf(cpuid); plausible(r))
        return tsc_frequency{*r, "hypervisor leaf 0x40000010"};
    if (auto r = tsc_hz_from_kvmclock(cpuid, msr, kvmclock_info, kvmclock_info_phys); plausible(r))
        return tsc_frequency{*r, "kvmclock"};
    if (auto r = tsc_hz_from_cpuid_15h(cpuid); plausible(r)) return tsc_frequency{*r, "CPUID 0x15"};
    if (auto r = tsc_hz_from_cpuid_16h(cpuid); plausible(r)) return tsc_frequency{*r, "CPUID 0x16"};
    // Channel 2 first: its OUT2 edge needs no counter reads. A PIT without port 0x61 (microvm) falls back
    // to reading channel 0's count.
    auto in_range = [](const expected<pit_calibration>& p) {
        return p.has_value() && p->tsc_hz >= min_tsc_hz && p->tsc_hz <= max_tsc_hz;
    };
    auto p2 = calibrate_with_pit(io, tsc_now);
    if (in_range(p2)) return tsc_frequency{p2->tsc_hz, "PIT channel 2"};
    auto p0 = calibrate_with_pit_channel0(io, tsc_now);
    if (in_range(p0)) return tsc_frequency{p0->tsc_hz, "PIT channel 0"};
    if (p2 || p0)
        return unexpected{"TSC frequency unknown: no hypervisor leaf 0x40000010, kvmclock, CPUID 0x15 or "
                          "0x16, and the PIT measured an implausible frequency (Hz)",
                          p0 ? p0->tsc_hz : p2->tsc_hz};
    return unexpected{"TSC frequency unknown: no hypervisor leaf 0x40000010, kvmclock, CPUID 0x15 or 0x16, "
                      "and no usable PIT (tried channel 2 through port 0x61, then channel 0 alone: no PIT, a "
                      "count that stopped, or every window disturbed)"};
}

// The kernel's own: real CPUID, MSRs, ports and TSC. kvmclock's time info lives in the kernel's BSS, whose
// physical address is its virtual one (the identity map).
alignas(32) inline pvclock_vcpu_time_info kvmclock_scratch{};
inline expected<tsc_frequency> detect_tsc_hz() {
    cpu_msr msr;
    port_io ports{0};
    return detect_tsc_hz(cpu_cpuid{}, msr, kvmclock_scratch,
                         reinterpret_cast<std::uintptr_t>(&kvmclock_scratch), ports, cpu_tsc{});
}

// ---- timer planning -------------------------------------------------------------------------------------

enum class timer_arm : std::uint8_t { tsc_deadline, one_shot };

// What to arm: a value for IA32_TSC_DEADLINE, or a LAPIC timer initial count.
struct timer_plan {
    timer_arm how;
    std::uint64_t value;
    friend constexpr bool operator==(const timer_plan&, const timer_plan&) = default;
};

// LAPIC timer counts per TSC tick, rounded up (a one-shot never fires before its deadline).
inline expected<tick_scale> lapic_counts_per_tsc_tick(std::uint64_t lapic_hz, std::uint64_t tsc_hz) {
    if (lapic_hz == 0 || tsc_hz == 0) return unexpected{"timer: LAPIC or TSC frequency is 0"};
    return tick_scale::from_ratio(lapic_hz, tsc_hz, tick_scale::rounding::up);
}

inline constexpr std::uint64_t max_one_shot_count = 0xffffffff;

// The idle loop's arithmetic. TSC-deadline mode arms the deadline itself (0 would disarm, so it becomes 1:
// fire now). One-shot mode arms ceil((deadline - now) * lapic_hz / tsc_hz) counts, at least 1 (a deadline
// that has passed fires at once) and at most 0xffffffff (a far deadline wakes early and is re-planned).
constexpr timer_plan plan_timer(std::uint64_t now_tsc, std::uint64_t deadline_tsc, bool tsc_deadline_mode,
                                const tick_scale& lapic_per_tsc) {
    if (tsc_deadline_mode) return {timer_arm::tsc_deadline, deadline_tsc == 0 ? 1 : deadline_tsc};
    const std::uint64_t delta = deadline_tsc > now_tsc ? deadline_tsc - now_tsc : 0;
    std::uint64_t n = lapic_per_tsc(delta);
    if (n < 1) n = 1;
    if (n > max_one_shot_count) n = max_one_shot_count;
    return {timer_arm::one_shot, n};
}

} // namespace toro::arch
