// Host tests for timekeeping: 128-bit helpers and tick_scale against exact integer references, timebase
// round trips and overflow limits, each TSC frequency source with injected CPUID/MSR values (TCG and KVM
// as measured on the development machine), kvmclock's formula, PIT calibration over a scripted port
// transcript with a fake TSC, PIT channel 0 calibration against a simulated counter, detect_tsc_hz's order,
// fallbacks and errors, and plan_timer's clamping.
#include <catch2/catch.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <toro/arch/x86_64/mock_lapic.hpp>
#include <toro/arch/x86_64/time.hpp>
#include <toro/console/mock_io.hpp>

#include "../xorshift.hpp"

namespace arch = toro::arch;
using arch::u128;
using toro::testing::mock_io;
using toro::testing::mock_lapic_bus;

namespace {

constexpr std::uint64_t max64 = ~std::uint64_t{0};

// Exact references (the host links __udivti3).
std::uint64_t exact_floor(std::uint64_t x, std::uint64_t num, std::uint64_t den) {
    const u128 q = static_cast<u128>(x) * num / den;
    return q > max64 ? max64 : static_cast<std::uint64_t>(q);
}
std::uint64_t exact_ceil(std::uint64_t x, std::uint64_t num, std::uint64_t den) {
    const u128 q = (static_cast<u128>(x) * num + den - 1) / den;
    return q > max64 ? max64 : static_cast<std::uint64_t>(q);
}

// A CPUID table; leaves not in it read as zeros.
struct fake_cpuid {
    std::map<std::pair<std::uint32_t, std::uint32_t>, arch::cpuid_result> leaves;
    fake_cpuid& set(std::uint32_t leaf, arch::cpuid_result r) {
        leaves[{leaf, 0}] = r;
        return *this;
    }
    arch::cpuid_result operator()(std::uint32_t leaf, std::uint32_t sub) {
        auto it = leaves.find({leaf, sub});
        return it == leaves.end() ? arch::cpuid_result{0, 0, 0, 0} : it->second;
    }
};

constexpr std::uint32_t hypervisor_bit = 1u << 31;

// QEMU 7.2 TCG, -cpu max: max leaf 0xd, hypervisor "TCGTCGTCGTCG" with max leaf 0x40000001.
fake_cpuid tcg_cpuid() {
    fake_cpuid c;
    c.set(0, {0xd, 0x68747541, 0x444d4163, 0x69746e65})
        .set(1, {0x00000663, 0x00000800, 0x80802001 | hypervisor_bit, 0x078bfbfd})
        .set(0x40000000, {0x40000001, 0x54474354, 0x43544743, 0x47435447});
    return c;
}

// QEMU 7.2 + KVM, -cpu host: max leaf 0x1c, 0x15/0x16 zero, KVM signature, features 0x100fafb (bit 3).
fake_cpuid kvm_cpuid() {
    fake_cpuid c;
    c.set(0, {0x1c, 0x756e6547, 0x6c65746e, 0x49656e69})
        .set(1, {0x000306c3, 0x00000800, 0x01200001 | hypervisor_bit, 0x078bfbff})
        .set(0x15, {0, 0, 0, 0})
        .set(0x16, {0, 0, 0, 0})
        .set(0x40000000, {0x40000001, 0x4b4d564b, 0x564b4d56, 0x0000004d})
        .set(0x40000001, {0x0100fafb, 0, 0, 0});
    return c;
}

// KVM's kvm_get_time_scale(NSEC_PER_SEC, tsc_hz): the scale KVM writes into kvmclock for a TSC rate.
std::pair<std::uint32_t, std::int8_t> kvm_time_scale(std::uint64_t scaled_hz, std::uint64_t base_hz) {
    std::uint64_t tps64 = base_hz, scaled64 = scaled_hz;
    int shift = 0;
    while (tps64 > scaled64 * 2 || (tps64 & 0xffffffff00000000ull) != 0) {
        tps64 >>= 1;
        --shift;
    }
    std::uint32_t tps32 = static_cast<std::uint32_t>(tps64);
    while (tps32 <= scaled64 || (scaled64 & 0xffffffff00000000ull) != 0) {
        if ((scaled64 & 0xffffffff00000000ull) != 0 || (tps32 & 0x80000000) != 0)
            scaled64 >>= 1;
        else
            tps32 <<= 1;
        ++shift;
    }
    return {static_cast<std::uint32_t>((scaled64 << 32) / tps32), static_cast<std::int8_t>(shift)};
}

// A TSC that advances `step` ticks per read.
struct fake_tsc {
    std::uint64_t now = 0;
    std::uint64_t step = 1000;
    int reads = 0;
    std::uint64_t operator()() {
        ++reads;
        const std::uint64_t t = now;
        now += step;
        return t;
    }
};

std::string port_name(std::uint16_t port, bool) {
    switch (port) {
    case 0x40:
        return "PIT channel 0";
    case 0x42:
        return "PIT channel 2";
    case 0x43:
        return "PIT command";
    case 0x61:
        return "port 0x61 (gate/OUT2)";
    default:
        return "";
    }
}

#define CHECK_TRANSCRIPT(m)                                                                                  \
    do {                                                                                                     \
        INFO((m).report());                                                                                  \
        CHECK((m).done());                                                                                   \
    } while (0)

// The PIT's side of one calibration of 2 ms (count 2386 = 0x0952) up to the start of the measured window.
void expect_pit_setup(mock_io& io, std::uint8_t saved61 = 0x00) {
    io.expect_read(0x61, saved61).expect_write(0x61, static_cast<std::uint8_t>((saved61 & 0x0c) | 1));
    io.expect_write(0x43, 0xb0).expect_write(0x42, 0xfe).expect_write(0x42, 0xff); // presence count 0xfffe
    io.expect_read(0x61, 0x01);                                                    // OUT2 low
    io.expect_write(0x43, 0x80).expect_read(0x42, 0xfe).expect_read(0x42, 0xff);   // latch: 0xfffe
    io.expect_write(0x43, 0x80).expect_read(0x42, 0xfb).expect_read(0x42, 0xff);   // latch: 0xfffb, moving
}
// One measured window: program `count` (2386 by default), then OUT2 low for `low_polls` polls, then high.
void expect_pit_window(mock_io& io, std::size_t low_polls, std::uint16_t count = 2386) {
    io.expect_write(0x43, 0xb0)
        .expect_write(0x42, static_cast<std::uint8_t>(count))
        .expect_write(0x42, static_cast<std::uint8_t>(count >> 8));
    io.expect_read(0x61, 0x01, low_polls).expect_read(0x61, 0x21);
}

} // namespace

// ---- 128-bit helpers and tick_scale ---------------------------------------------------------------------

TEST_CASE("div128_by_64 and muldiv64 match 128-bit division", "[time]") {
    xorshift rng{0x9e3779b97f4a7c15};
    for (int i = 0; i < 20000; ++i) {
        const std::uint64_t d = rng.next() >> rng.below(64) | 1;
        const u128 n = (static_cast<u128>(rng.next() % d) << 64) | rng.next(); // quotient fits
        std::uint64_t rem = 0;
        const std::uint64_t q = arch::div128_by_64(n, d, &rem);
        REQUIRE(q == static_cast<std::uint64_t>(n / d));
        REQUIRE(rem == static_cast<std::uint64_t>(n % d));
    }
    CHECK(arch::div128_by_64((static_cast<u128>(max64 - 1) << 64) | max64, max64) == max64);
    CHECK(arch::muldiv64(max64, max64, max64) == max64);
    CHECK(arch::muldiv64(3'999'999'000, 1'193'182, 2386) == 2'000'304'613'083);
    CHECK(arch::muldiv64(1, 1, 0) == max64);     // no division by zero
    CHECK(arch::muldiv64(max64, 2, 1) == max64); // quotient too big: saturates
    CHECK(arch::muldiv64(1ull << 40, 1ull << 40, 1ull << 20) == 1ull << 60);
}

TEST_CASE("tick_scale gives the exact floor and ceiling for every 64-bit input", "[time]") {
    const std::pair<std::uint64_t, std::uint64_t> ratios[] = {{1'000'000'000, 1'000'000'000},
                                                              {1'000'000'000, 2'100'000'000},
                                                              {2'100'000'000, 1'000'000'000},
                                                              {1'000'000'000, 3'999'999'000},
                                                              {1, 100'000'000'000},
                                                              {1'000'000'000, 1'000'000},
                                                              {25'000'000, 2'112'000'000},
                                                              {1'193'182, 3},
                                                              {7, 1},
                                                              {1'000'000'000, 100'000'000'000},
                                                              {(1ull << 62) - 1, 3},
                                                              {3, max64}};
    xorshift rng{12345};
    for (const auto& ratio : ratios) {
        const std::uint64_t num = ratio.first, den = ratio.second;
        CAPTURE(num, den);
        auto down = arch::tick_scale::from_ratio(num, den, arch::tick_scale::rounding::down);
        auto up = arch::tick_scale::from_ratio(num, den, arch::tick_scale::rounding::up);
        REQUIRE(down.has_value());
        REQUIRE(up.has_value());
        CHECK(down->mult_hi() >= (1ull << 62));
        CHECK(up->mult_hi() <= (1ull << 63));
        auto check = [&](std::uint64_t x) {
            CAPTURE(x);
            REQUIRE((*down)(x) == exact_floor(x, num, den));
            REQUIRE((*up)(x) == exact_ceil(x, num, den));
        };
        for (std::uint64_t x : {std::uint64_t{0}, std::uint64_t{1}, den, den - 1, den + 1, max64, max64 - 1})
            check(x);
        // Multiples of den (exact results) and their neighbours are where a rounded multiplier slips.
        for (int i = 0; i < 2000; ++i) {
            const std::uint64_t k = rng.next() >> rng.below(64);
            const u128 m = static_cast<u128>(k) * den;
            if (m > max64 - 1) continue;
            check(static_cast<std::uint64_t>(m));
            check(static_cast<std::uint64_t>(m) + 1);
            if (m != 0) check(static_cast<std::uint64_t>(m) - 1);
        }
        for (int i = 0; i < 5000; ++i) check(rng.next() >> rng.below(64));
    }
    CHECK_FALSE(arch::tick_scale::from_ratio(0, 1, arch::tick_scale::rounding::down).has_value());
    CHECK_FALSE(arch::tick_scale::from_ratio(1, 0, arch::tick_scale::rounding::down).has_value());
    CHECK_FALSE(arch::tick_scale::from_ratio(1ull << 62, 1, arch::tick_scale::rounding::down).has_value());
}

// ---- timebase -------------------------------------------------------------------------------------------

TEST_CASE("timebase rejects 0 Hz and absurd frequencies", "[time]") {
    auto zero = arch::timebase::from_hz(0, 0);
    REQUIRE_FALSE(zero.has_value());
    CHECK(zero.error().what == toro::string_view{"timebase: TSC frequency is 0 Hz"});
    auto low = arch::timebase::from_hz(999'999, 0);
    REQUIRE_FALSE(low.has_value());
    CHECK(low.error().what == toro::string_view{"timebase: TSC frequency below 1 MHz"});
    CHECK(low.error().value == 999'999);
    auto high = arch::timebase::from_hz(100'000'000'001, 0);
    REQUIRE_FALSE(high.has_value());
    CHECK(high.error().what == toro::string_view{"timebase: TSC frequency above 100 GHz"});
    CHECK(arch::timebase::from_hz(1'000'000, 0).has_value());
    CHECK(arch::timebase::from_hz(100'000'000'000, 0).has_value());
}

TEST_CASE("timebase: exact at 1 GHz", "[time]") {
    auto tb = arch::timebase::from_hz(1'000'000'000, 5000);
    REQUIRE(tb.has_value());
    CHECK(tb->ns(5000) == 0);
    CHECK(tb->ns(4000) == 0); // before the origin
    CHECK(tb->ns(5001) == 1);
    CHECK(tb->ns(5000 + 123'456'789'012) == 123'456'789'012);
    CHECK(tb->ticks_for_ns(987'654'321) == 987'654'321);
    CHECK(tb->tsc_at(1000) == 6000);
    CHECK(tb->tsc_at(max64) == max64); // saturates instead of wrapping
}

TEST_CASE("timebase round trips against long double and exact references", "[time]") {
    const std::uint64_t freqs[] = {1'000'000'000,   2'100'000'000, 3'999'999'000, 2'112'000'000, 1'000'000,
                                   100'000'000'000, 2'999'999'999, 1'193'182'001, 4'294'967'296, 14'318'180};
    xorshift rng{777};
    for (std::uint64_t hz : freqs) {
        CAPTURE(hz);
        const std::uint64_t origin = rng.next() >> 8;
        auto tb = arch::timebase::from_hz(hz, origin);
        REQUIRE(tb.has_value());
        CHECK(tb->hz() == hz);
        CHECK(tb->origin() == origin);
        // One second of ticks is exactly 1e9 ns.
        CHECK(tb->ns(origin + hz) == 1'000'000'000);
        CHECK(tb->ticks_for_ns(1'000'000'000) == hz);
        for (int i = 0; i < 3000; ++i) {
            // Up to ~20 years of ticks at this rate (below 2^62 so origin + ticks does not wrap).
            const std::uint64_t years20 = hz * 631'152'000ull;
            const std::uint64_t ticks = rng.below(years20 < (1ull << 62) ? years20 : (1ull << 62));
            const std::uint64_t ns = tb->ns(origin + ticks);
            CAPTURE(ticks, ns);
            // Within 1 ppm of the long double answer (in fact within 1 ns plus long double's own rounding,
            // ~2^-63 relative)...
            const long double ref = static_cast<long double>(ticks) * 1e9L / static_cast<long double>(hz);
            const long double slack = 1.0L + ref * 1e-17L;
            REQUIRE(static_cast<long double>(ns) <= ref + slack);
            REQUIRE(static_cast<long double>(ns) + slack >= ref);
            REQUIRE(static_cast<long double>(ns) <= ref * (1 + 1e-6L) + 1);
            // ...and exactly the integer floor.
            REQUIRE(ns == exact_floor(ticks, 1'000'000'000, hz));
            // Deadlines: ticks_for_ns is the exact ceiling, so a timer armed at it never fires early...
            const std::uint64_t back = tb->ticks_for_ns(ns);
            REQUIRE(back == exact_ceil(ns, hz, 1'000'000'000));
            REQUIRE(back <= ticks);
            // ...and the clock reads the deadline's ns when it fires.
            REQUIRE(tb->ns(origin + back) == ns);
            REQUIRE(tb->tsc_at(ns) == origin + back);
        }
    }
}

TEST_CASE("timebase: 10 years at 5 GHz without overflow; saturation beyond 64 bits", "[time]") {
    const std::uint64_t ten_years_s = 10ull * 36525 * 864; // 10 * 365.25 days, in seconds
    auto tb = arch::timebase::from_hz(5'000'000'000, 0);
    REQUIRE(tb.has_value());
    const std::uint64_t ticks = ten_years_s * 5'000'000'000ull; // 1.57788e18
    const std::uint64_t ns = ten_years_s * 1'000'000'000ull;
    CHECK(tb->ns(ticks) == ns);
    CHECK(tb->ticks_for_ns(ns) == ticks);
    CHECK(tb->ns(max64) == max64 / 5); // 3.7e18 ns: 117 years of TSC, still no overflow
    // At 1 MHz a full 64-bit TSC is 1.8e22 ns: saturates.
    auto slow = arch::timebase::from_hz(1'000'000, 0);
    CHECK(slow->ns(max64) == max64);
    CHECK(slow->ns(max64 / 1000) == (max64 / 1000) * 1000);
    CHECK(tb->ticks_for_ns(max64) == max64);
    // 1 ppm: 2.1 GHz +- 2.1 kHz must give different answers over one second.
    auto a = arch::timebase::from_hz(2'100'000'000, 0);
    auto b = arch::timebase::from_hz(2'100'002'100, 0);
    CHECK(a->ns(2'100'000'000) == 1'000'000'000);
    CHECK(b->ns(2'100'002'100) == 1'000'000'000);
    CHECK(b->ns(2'100'000'000) == 999'999'000);
}

// ---- frequency sources ----------------------------------------------------------------------------------

TEST_CASE("CPUID 0x15: only with ratio and crystal all enumerated", "[time][cpuid]") {
    fake_cpuid c;
    c.set(0, {0x16, 0, 0, 0}).set(0x15, {2, 176, 24'000'000, 0});
    auto r = arch::tsc_hz_from_cpuid_15h(c);
    REQUIRE(r.has_value());
    CHECK(*r == 2'112'000'000);
    c.set(0x15, {2, 176, 0, 0}); // crystal not enumerated (many client parts)
    CHECK_FALSE(arch::tsc_hz_from_cpuid_15h(c).has_value());
    c.set(0x15, {0, 176, 24'000'000, 0});
    CHECK_FALSE(arch::tsc_hz_from_cpuid_15h(c).has_value());
    c.set(0, {0x14, 0, 0, 0}).set(0x15, {2, 176, 24'000'000, 0});
    auto absent = arch::tsc_hz_from_cpuid_15h(c);
    REQUIRE_FALSE(absent.has_value());
    CHECK(absent.error().what == toro::string_view{"CPUID leaf 0x15 is not implemented"});
    CHECK_FALSE(arch::tsc_hz_from_cpuid_15h(kvm_cpuid()).has_value());
    CHECK_FALSE(arch::tsc_hz_from_cpuid_15h(tcg_cpuid()).has_value());
}

TEST_CASE("CPUID 0x16: base MHz", "[time][cpuid]") {
    fake_cpuid c;
    c.set(0, {0x16, 0, 0, 0}).set(0x16, {2100, 4600, 100, 0});
    auto r = arch::tsc_hz_from_cpuid_16h(c);
    REQUIRE(r.has_value());
    CHECK(*r == 2'100'000'000);
    c.set(0, {0x15, 0, 0, 0});
    CHECK_FALSE(arch::tsc_hz_from_cpuid_16h(c).has_value());
    CHECK_FALSE(arch::tsc_hz_from_cpuid_16h(kvm_cpuid()).has_value()); // leaf there, eax 0
}

TEST_CASE("hypervisor leaf 0x40000010: TSC kHz, only when the hypervisor has it", "[time][cpuid]") {
    fake_cpuid c = kvm_cpuid();
    c.set(0x40000000, {0x40000010, 0x4b4d564b, 0x564b4d56, 0x4d})
        .set(0x40000010, {2'500'000, 1'000'000, 0, 0});
    auto r = arch::tsc_hz_from_hypervisor_leaf(c);
    REQUIRE(r.has_value());
    CHECK(*r == 2'500'000'000);
    CHECK_FALSE(arch::tsc_hz_from_hypervisor_leaf(kvm_cpuid()).has_value()); // max 0x40000001
    CHECK_FALSE(arch::tsc_hz_from_hypervisor_leaf(tcg_cpuid()).has_value());
    c.set(1, {0, 0, 0, 0}); // bare metal: 0x4000_00xx are not hypervisor leaves
    CHECK_FALSE(arch::tsc_hz_from_hypervisor_leaf(c).has_value());
}

TEST_CASE("kvmclock formula: (1e9 << 32) / mul, shifted by -tsc_shift", "[time][kvmclock]") {
    SECTION("scales KVM computes (kvm_get_time_scale), both shift signs") {
        const std::uint64_t rates[] = {3'000'000'000, 2'112'000'000, 1'000'000'000, 999'999'000,
                                       500'000'000,   100'000'000,   5'000'000'000, 2'099'998'000};
        bool saw_negative = false, saw_positive = false;
        for (std::uint64_t hz : rates) {
            CAPTURE(hz);
            auto [mul, shift] = kvm_time_scale(1'000'000'000, hz);
            saw_negative |= shift < 0;
            saw_positive |= shift > 0;
            auto r = arch::kvmclock_tsc_hz(mul, shift);
            REQUIRE(r.has_value());
            // mul has 31-32 significant bits: a few Hz at most, < 0.01 ppm.
            CHECK(*r <= hz + 8);
            CHECK(*r + 8 >= hz);
        }
        CHECK(saw_negative);
        CHECK(saw_positive);
    }
    SECTION("measured: KVM on the development host (AMD EPYC, host tsc 2596.136 MHz)") {
        // The guest's kvmclock page read back by a scratch appliance under QEMU 7.2 + KVM.
        CHECK(kvm_time_scale(1'000'000'000, 2'596'136'000) ==
              std::pair<std::uint32_t, std::int8_t>{0xc53756f3, -1});
        CHECK(*arch::kvmclock_tsc_hz(0xc53756f3, -1) == 2'596'136'000);
    }
    SECTION("exact values") {
        // 3 GHz: shift -1, mul 0xaaaaaaaa.
        CHECK(kvm_time_scale(1'000'000'000, 3'000'000'000) ==
              std::pair<std::uint32_t, std::int8_t>{0xaaaaaaaa, -1});
        CHECK(*arch::kvmclock_tsc_hz(0xaaaaaaaa, -1) == 3'000'000'000);
        // 100 MHz: shift +4, mul 0xa0000000 (10 ns per tick = 0.625 * 16).
        CHECK(kvm_time_scale(1'000'000'000, 100'000'000) ==
              std::pair<std::uint32_t, std::int8_t>{0xa0000000, 4});
        CHECK(*arch::kvmclock_tsc_hz(0xa0000000, 4) == 100'000'000);
        // 1 GHz: 2 GHz at shift -1? No: 1 GHz is mul 2^31 with shift +1.
        CHECK(kvm_time_scale(1'000'000'000, 1'000'000'000) ==
              std::pair<std::uint32_t, std::int8_t>{0x80000000, 1});
        CHECK(*arch::kvmclock_tsc_hz(0x80000000, 1) == 1'000'000'000);
    }
    SECTION("bad scales") {
        CHECK_FALSE(arch::kvmclock_tsc_hz(0, 0).has_value());
        CHECK_FALSE(arch::kvmclock_tsc_hz(1, -40).has_value());
        CHECK_FALSE(arch::kvmclock_tsc_hz(1, -31).has_value()); // 1e9 * 2^32 * 2^31: overflows
    }
}

namespace {
// Plays KVM: on enable, publishes (version 2, mul, shift) into the page.
struct fake_kvm {
    alignas(32) arch::pvclock_vcpu_time_info info{};
    std::uint32_t mul = 0;
    std::int8_t shift = 0;
    std::uint32_t version = 2;
    std::uint64_t phys() const { return reinterpret_cast<std::uintptr_t>(&info); }
    void attach(mock_lapic_bus& bus) {
        bus.on_wrmsr([this](std::uint32_t msr, std::uint64_t v) {
            if (msr == arch::msr_kvm_system_time_new && (v & 1) != 0) {
                info.version = version;
                info.tsc_to_system_mul = mul;
                info.tsc_shift = shift;
            }
        });
    }
};
} // namespace

TEST_CASE("kvmclock: enable, read under the version protocol, disable", "[time][kvmclock]") {
    SECTION("KVM as on the development machine") {
        mock_lapic_bus bus;
        fake_kvm kvm;
        std::tie(kvm.mul, kvm.shift) = kvm_time_scale(1'000'000'000, 2'099'998'000);
        kvm.attach(bus);
        bus.expect_wrmsr(0x4b564d01, kvm.phys() | 1).expect_wrmsr(0x4b564d01, 0);
        auto msr = bus.handle();
        auto r = arch::tsc_hz_from_kvmclock(kvm_cpuid(), msr, kvm.info, kvm.phys());
        REQUIRE(r.has_value());
        CHECK(*r <= 2'099'998'000 + 4);
        CHECK(*r + 4 >= 2'099'998'000);
        CHECK_TRANSCRIPT(bus);
    }
    SECTION("KVM's leaves behind Hyper-V's at 0x40000100") {
        fake_cpuid c = kvm_cpuid();
        c.set(0x40000000, {0x4000000b, 0x7263694d, 0x666f736f, 0x76482074}) // "Microsoft Hv"
            .set(0x40000001, {0x31237648, 0, 0, 0})
            .set(0x40000100, {0x40000101, 0x4b4d564b, 0x564b4d56, 0x4d})
            .set(0x40000101, {1u << 3, 0, 0, 0});
        mock_lapic_bus bus;
        fake_kvm kvm;
        kvm.mul = 0xaaaaaaaa;
        kvm.shift = -1;
        kvm.attach(bus);
        bus.expect_wrmsr(0x4b564d01, kvm.phys() | 1).expect_wrmsr(0x4b564d01, 0);
        auto msr = bus.handle();
        auto r = arch::tsc_hz_from_kvmclock(c, msr, kvm.info, kvm.phys());
        REQUIRE(r.has_value());
        CHECK(*r == 3'000'000'000);
        CHECK_TRANSCRIPT(bus);
    }
    SECTION("a version that stays odd: bounded, disabled again, error") {
        mock_lapic_bus bus;
        fake_kvm kvm;
        kvm.mul = 0xaaaaaaaa;
        kvm.version = 3;
        kvm.attach(bus);
        bus.expect_wrmsr(0x4b564d01, kvm.phys() | 1).expect_wrmsr(0x4b564d01, 0);
        auto msr = bus.handle();
        auto r = arch::tsc_hz_from_kvmclock(kvm_cpuid(), msr, kvm.info, kvm.phys());
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().what == toro::string_view{"kvmclock: the hypervisor never published its time info"});
        CHECK_TRANSCRIPT(bus);
    }
    SECTION("a hypervisor that never writes the page") {
        mock_lapic_bus bus;
        alignas(32) arch::pvclock_vcpu_time_info info{};
        info.version = 6; // stale content from before: must be ignored
        const std::uint64_t phys = reinterpret_cast<std::uintptr_t>(&info);
        bus.expect_wrmsr(0x4b564d01, phys | 1).expect_wrmsr(0x4b564d01, 0);
        auto msr = bus.handle();
        CHECK_FALSE(arch::tsc_hz_from_kvmclock(kvm_cpuid(), msr, info, phys).has_value());
        CHECK_TRANSCRIPT(bus);
    }
    SECTION("not offered: no MSR access") {
        mock_lapic_bus bus;
        auto msr = bus.handle();
        alignas(32) arch::pvclock_vcpu_time_info info{};
        auto tcg = arch::tsc_hz_from_kvmclock(tcg_cpuid(), msr, info, 0x1000);
        REQUIRE_FALSE(tcg.has_value());
        CHECK(tcg.error().what == toro::string_view{"kvmclock: not running under KVM"});
        fake_cpuid old = kvm_cpuid();
        old.set(0x40000001, {0x1, 0, 0, 0}); // only the old clocksource (MSR 0x12)
        auto r = arch::tsc_hz_from_kvmclock(old, msr, info, 0x1000);
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().what == toro::string_view{"kvmclock: KVM does not offer KVM_FEATURE_CLOCKSOURCE2"});
        CHECK_FALSE(arch::tsc_hz_from_kvmclock(kvm_cpuid(), msr, info, 0x1002).has_value()); // misaligned
        CHECK_FALSE(arch::tsc_hz_from_kvmclock(kvm_cpuid(), msr, info, 0x1fec).has_value()); // crosses a page
        CHECK(bus.accesses() == 0);
    }
}

// ---- PIT ------------------------------------------------------------------------------------------------

TEST_CASE("PIT calibration: transcript and arithmetic", "[time][pit]") {
    // TSC reads: s0=0, (high byte written), s1=1000, p0_t=2000, then one per poll. OUT2 high at poll 3998
    // (t=4'001'000) after a low poll that began at 4'000'000 - 1000: the rise is between 3'999'000 and
    // 4'001'000, the start between 0 and 1000. Twice the elapsed ticks: 7'999'000 over 2386 PIT clocks.
    mock_io io{port_name};
    expect_pit_setup(io);
    expect_pit_window(io, 3998);
    io.expect_write(0x61, 0x00); // restored
    fake_tsc tsc;
    auto r = arch::calibrate_with_pit(io, tsc);
    REQUIRE(r.has_value());
    CHECK(r->tsc_hz == 2'000'055'075); // 7'999'000 * 1'193'182 / (2 * 2386)
    CHECK(r->probe_hz == 0);
    CHECK(r->uncertainty_ppm == 375); // (2000 + 1000) / 7'999'000
    CHECK_TRANSCRIPT(io);
}

TEST_CASE("PIT calibration keeps port 0x61's NMI bits and restores it", "[time][pit]") {
    mock_io io{port_name};
    expect_pit_setup(io, 0xae); // speaker on, gate off, NMI enables 0x0c; high nibble is status
    expect_pit_window(io, 3998);
    io.expect_write(0x61, 0x0e);
    fake_tsc tsc;
    CHECK(arch::calibrate_with_pit(io, tsc).has_value());
    CHECK_TRANSCRIPT(io);
}

TEST_CASE("PIT calibration: a disturbed window is retried 4x longer", "[time][pit]") {
    mock_io io{port_name};
    expect_pit_setup(io);
    expect_pit_window(io, 0);          // high on the first poll: the bracket is as wide as the window
    expect_pit_window(io, 3998, 9545); // 8 ms: 9545 PIT clocks
    io.expect_write(0x61, 0x00);
    fake_tsc tsc;
    auto r = arch::calibrate_with_pit(io, tsc);
    REQUIRE(r.has_value());
    CHECK(r->tsc_hz == 499'961'383); // 7'999'000 * 1'193'182 / (2 * 9545)
    CHECK_TRANSCRIPT(io);

    mock_io bad{port_name};
    expect_pit_setup(bad);
    expect_pit_window(bad, 10, 2386);
    expect_pit_window(bad, 10, 9545);
    for (int i = 0; i < 4; ++i) expect_pit_window(bad, 10, 38181); // 32 ms, then 32 ms again: the longest
    bad.expect_write(0x61, 0x00);
    fake_tsc tsc2;
    auto e = arch::calibrate_with_pit(bad, tsc2);
    REQUIRE_FALSE(e.has_value());
    CHECK(e.error().what ==
          toro::string_view{"PIT: every calibration window was disturbed (preemption or SMIs)"});
    CHECK_TRANSCRIPT(bad);
}

TEST_CASE("PIT absent: errors, in a bounded number of accesses", "[time][pit]") {
    SECTION("floating bus reads 0xff") {
        mock_io io{port_name};
        io.expect_read(0x61, 0xef).expect_write(0x61, 0x0d); // a speaker port whose OUT2 reads low...
        io.expect_write(0x43, 0xb0).expect_write(0x42, 0xfe).expect_write(0x42, 0xff);
        io.expect_read(0x61, 0x0d);
        io.expect_write(0x43, 0x80).expect_read(0x42, 0xff).expect_read(0x42, 0xff); // ...but no PIT
        io.expect_write(0x61, 0x0f);
        fake_tsc tsc;
        auto r = arch::calibrate_with_pit(io, tsc);
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().what ==
              toro::string_view{"PIT: no PIT (channel 2 reads back above the count just written)"});
        CHECK(r.error().value == 0xffff);
        CHECK_TRANSCRIPT(io);
        CHECK(tsc.reads == 0);
    }
    SECTION("a PIT without port 0x61 (microvm under KVM): OUT2 floats high") {
        mock_io io{port_name};
        io.expect_read(0x61, 0xff).expect_write(0x61, 0x0d);
        io.expect_write(0x43, 0xb0).expect_write(0x42, 0xfe).expect_write(0x42, 0xff);
        io.expect_read(0x61, 0xff);
        io.expect_write(0x61, 0x0f);
        fake_tsc tsc;
        auto r = arch::calibrate_with_pit(io, tsc);
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().what ==
              toro::string_view{
                  "PIT: port 0x61 does not show channel 2's output (OUT2 high right after programming)"});
        CHECK_TRANSCRIPT(io);
        CHECK(tsc.reads == 0);
    }
    SECTION("a bus that reads 0: the count never moves") {
        mock_io io{port_name};
        io.expect_read(0x61, 0x00).expect_write(0x61, 0x01);
        io.expect_write(0x43, 0xb0).expect_write(0x42, 0xfe).expect_write(0x42, 0xff);
        io.expect_read(0x61, 0x00);
        for (std::uint32_t i = 0; i < 1 + arch::pit::presence_reads; ++i)
            io.expect_write(0x43, 0x80).expect_read(0x42, 0x00).expect_read(0x42, 0x00);
        io.expect_write(0x61, 0x00);
        fake_tsc tsc;
        auto r = arch::calibrate_with_pit(io, tsc);
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().what == toro::string_view{"PIT: no PIT (channel 2's count does not move)"});
        CHECK_TRANSCRIPT(io);
    }
    SECTION("OUT2 never rises: ends after 4x the window at 100 GHz") {
        mock_io io{port_name};
        expect_pit_setup(io);
        io.expect_write(0x43, 0xb0).expect_write(0x42, 0x52).expect_write(0x42, 0x09);
        // max ticks 2000 us * 100'000 ticks/us * 4 = 8e8; polls end once t - s1 > 8e8: t = 2000 + 1000 (k+1).
        io.expect_read(0x61, 0x01, 800'000);
        io.expect_write(0x61, 0x00);
        fake_tsc tsc;
        auto r = arch::calibrate_with_pit(io, tsc);
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().what == toro::string_view{"PIT: channel 2's OUT2 never went high"});
        CHECK_TRANSCRIPT(io);
    }
    SECTION("window out of the 16-bit count's range: nothing touched") {
        mock_io io{port_name};
        fake_tsc tsc;
        CHECK_FALSE(arch::calibrate_with_pit(io, tsc, arch::no_probe{}, 60'000).has_value());
        CHECK_FALSE(arch::calibrate_with_pit(io, tsc, arch::no_probe{}, 1).has_value());
        CHECK(io.accesses() == 0);
    }
}

// ---- PIT channel 0 --------------------------------------------------------------------------------------

namespace {
// A PIT without port 0x61 (QEMU's microvm): channel 0 counts down in mode 0, wrapping modulo 2^16, from a
// fake clock in TSC ticks that every port access (io_step) and TSC read (tsc_step) advances. The defaults
// give 2000 TSC ticks per PIT clock and one latch-and-read plus a TSC read every 1000 ticks, so every edge
// is seen at the same phase and the result is exact. Port 0x61 and unknown ports float (0xff).
struct fake_pit0 {
    std::uint64_t now = 0;
    std::uint64_t tsc_hz = 2000 * arch::pit_hz; // 2'386'364'000
    std::uint64_t io_step = 250, tsc_step = 250;
    bool present = true;
    std::uint64_t freeze_at = max64; // the count stops from this time on
    std::uint64_t stall_at = max64,
                  stall = 0; // one stall of `stall` ticks, at the first access from stall_at

    std::uint64_t load_time = 0;
    std::uint16_t initial = 0;
    bool loaded = false, low_written = false, high_next = false;
    std::uint8_t low = 0;
    std::uint16_t latched = 0;
    std::vector<std::uint8_t> commands; // channel 0 mode commands written to 0x43
    int tsc_reads = 0;
    std::uint64_t accesses = 0;

    std::uint16_t count() const {
        const std::uint64_t t = now < freeze_at ? now : freeze_at;
        const std::uint64_t d = t > load_time ? arch::muldiv64(t - load_time, arch::pit_hz, tsc_hz) : 0;
        return static_cast<std::uint16_t>(initial - d);
    }
    void advance(std::uint64_t step) {
        ++accesses;
        if (now >= stall_at) {
            now += stall;
            stall_at = max64;
        }
        now += step;
    }
    std::uint8_t read8(std::uint16_t port) {
        std::uint8_t v = 0xff;
        if (present && loaded && port == 0x40) {
            v = static_cast<std::uint8_t>(high_next ? latched >> 8 : latched);
            high_next = !high_next;
        }
        advance(io_step);
        return v;
    }
    void write8(std::uint16_t port, std::uint8_t v) {
        if (present && port == 0x43 && v >> 6 == 0) { // channel 0 only
            if ((v >> 4 & 3) == 0) {
                latched = count();
                high_next = false;
            } else {
                commands.push_back(v);
                low_written = false;
            }
        } else if (present && port == 0x40) {
            if (!low_written) {
                low = v;
                low_written = true;
            } else {
                initial = static_cast<std::uint16_t>(low | v << 8);
                load_time = now;
                loaded = true;
                low_written = false;
            }
        }
        advance(io_step);
    }
    std::uint64_t tsc() {
        ++tsc_reads;
        const std::uint64_t t = now;
        now += tsc_step;
        return t;
    }
    auto tsc_fn() {
        return [this] { return tsc(); };
    }
};

// A second counter at half the TSC rate; sampling costs an access.
struct half_rate_probe {
    fake_pit0* pit;
    bool started = false;
    void start() { started = true; }
    std::uint64_t sample() {
        const std::uint64_t v = pit->now / 2;
        pit->advance(pit->io_step);
        return v;
    }
};
} // namespace

TEST_CASE("PIT channel 0: exact over a 2 ms window, programmed once in mode 0", "[time][pit0]") {
    fake_pit0 pit;
    auto r = arch::calibrate_with_pit_channel0(pit, pit.tsc_fn());
    REQUIRE(r.has_value());
    CHECK(r->tsc_hz == 2'386'364'000);
    CHECK(r->probe_hz == 0);
    // Each edge's bracket spans two reads (2000 ticks): 4000 over twice 2386 * 2000 ticks.
    CHECK(r->uncertainty_ppm == 419);
    CHECK(pit.commands == std::vector<std::uint8_t>{0x30}); // mode 0, lobyte/hibyte, once
    CHECK(pit.initial == 0xfffe);
}

TEST_CASE("PIT channel 0: a pause at the start edge is passed over for a clean edge", "[time][pit0]") {
    // A 50'000-tick pause (25 PIT clocks; TCG pauses 10..500 us) inside the first reads that look for the
    // start. Taken as the start, its edge would be bracketed by 52'000 ticks: ~5600 ppm, within the 1%
    // rule, and ~0.1% wrong. The next clean edge keeps the result exact.
    fake_pit0 pit;
    pit.stall_at = 6000;
    pit.stall = 50'000;
    auto r = arch::calibrate_with_pit_channel0(pit, pit.tsc_fn());
    REQUIRE(r.has_value());
    CHECK(pit.stall_at == max64);
    CHECK(r->tsc_hz == 2'386'364'000);
    CHECK(r->uncertainty_ppm == 419);
}

TEST_CASE("PIT channel 0: a window longer than a wrap counts across it", "[time][pit0]") {
    fake_pit0 pit;
    auto r = arch::calibrate_with_pit_channel0(pit, pit.tsc_fn(), arch::no_probe{}, 100'000);
    REQUIRE(r.has_value());
    CHECK(r->tsc_hz == 2'386'364'000);
    // 119'318 PIT clocks from 0xfffe: the count passed 0 and wrapped through 0xffff.
    CHECK(pit.now > 119'318 * 2000);
    CHECK(pit.commands.size() == 1);
}

TEST_CASE("PIT channel 0: reads slower than the PIT clock (TCG-like)", "[time][pit0]") {
    fake_pit0 pit;
    pit.tsc_hz = 2'596'136'000;
    pit.io_step = 700; // one latch-and-read 2100 ticks, ~0.97 PIT clocks; with the TSC read 2400
    pit.tsc_step = 300;
    for (std::uint32_t window : {2000u, 8000u, 60'000u}) {
        CAPTURE(window);
        auto r = arch::calibrate_with_pit_channel0(pit, pit.tsc_fn(), arch::no_probe{}, window);
        REQUIRE(r.has_value());
        CHECK(r->uncertainty_ppm < 1000);
        const std::uint64_t err = r->tsc_hz > pit.tsc_hz ? r->tsc_hz - pit.tsc_hz : pit.tsc_hz - r->tsc_hz;
        CHECK(err <= arch::muldiv64(pit.tsc_hz, r->uncertainty_ppm + 1, 1'000'000));
    }
}

TEST_CASE("PIT channel 0: with a probe in the same window", "[time][pit0]") {
    fake_pit0 pit;
    half_rate_probe probe{&pit};
    auto r = arch::calibrate_with_pit_channel0(pit, pit.tsc_fn(), probe);
    REQUIRE(r.has_value());
    CHECK(probe.started);
    const std::uint64_t err = r->tsc_hz > pit.tsc_hz ? r->tsc_hz - pit.tsc_hz : pit.tsc_hz - r->tsc_hz;
    CHECK(err <= arch::muldiv64(pit.tsc_hz, r->uncertainty_ppm, 1'000'000));
    // The probe's samples sit at the midpoints of their brackets: half the measured TSC rate, to rounding.
    const std::uint64_t half = r->tsc_hz / 2;
    CHECK(r->probe_hz + 2 >= half);
    CHECK(r->probe_hz <= half + 2);
}

TEST_CASE("PIT channel 0: a stall that hides a wrap is a disturbed window", "[time][pit0]") {
    fake_pit0 pit;
    // 250 ms window; 100 ms in, the vCPU stops for one wrap and 100 clocks. Counted naively, the window
    // would take 55 ms longer than its counted clocks: 22% too fast a TSC. The stall is under a quarter of
    // the window but measures ~54000 PIT clocks at the window's rate, so the attempt is retried (250 ms
    // again: windows grow only up to 32 ms).
    pit.stall_at = 100 * 2'386'364;
    pit.stall = (65'536 + 100) * 2000;
    auto r = arch::calibrate_with_pit_channel0(pit, pit.tsc_fn(), arch::no_probe{}, 250'000);
    REQUIRE(r.has_value());
    CHECK(pit.stall_at == max64); // the stall happened
    CHECK(r->tsc_hz == 2'386'364'000);
    CHECK(pit.now > (298'295ull + 65'536 + 298'295) * 2000); // the retry ran its 250 ms
}

TEST_CASE("PIT channel 0: no PIT, a frozen count, bad windows: errors in bounded time", "[time][pit0]") {
    SECTION("floating bus reads 0xff") {
        fake_pit0 pit;
        pit.present = false;
        auto r = arch::calibrate_with_pit_channel0(pit, pit.tsc_fn());
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().what ==
              toro::string_view{"PIT channel 0: no PIT (the count reads back above the count just written)"});
        CHECK(r.error().value == 0xffff);
        CHECK(pit.accesses == 3 + 2 * 3); // program, then two latch-and-reads
        CHECK(pit.tsc_reads == 0);
    }
    SECTION("a count that never moves") {
        fake_pit0 pit;
        pit.freeze_at = 0;
        auto r = arch::calibrate_with_pit_channel0(pit, pit.tsc_fn());
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().what == toro::string_view{"PIT channel 0: no PIT (the count does not move)"});
        CHECK(r.error().value == 0xfffe);
        CHECK(pit.accesses == 3 + 3 * (1 + arch::pit::presence_reads));
        CHECK(pit.tsc_reads == 0);
    }
    SECTION("a count that stops after the presence check: ends after 4x the window at 100 GHz") {
        fake_pit0 pit;
        pit.freeze_at = 100'000;
        auto r = arch::calibrate_with_pit_channel0(pit, pit.tsc_fn());
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().what == toro::string_view{"PIT channel 0: the count stopped moving"});
        CHECK(pit.now > 800'000'000); // 2000 us * 100'000 ticks/us * 4
        CHECK(pit.now < 802'000'000);
    }
    SECTION("window out of range: nothing touched") {
        fake_pit0 pit;
        CHECK_FALSE(arch::calibrate_with_pit_channel0(pit, pit.tsc_fn(), arch::no_probe{}, 1).has_value());
        CHECK_FALSE(
            arch::calibrate_with_pit_channel0(pit, pit.tsc_fn(), arch::no_probe{}, 250'001).has_value());
        CHECK(pit.accesses == 0);
    }
}

TEST_CASE("detect_tsc_hz: a PIT without port 0x61 (microvm, TCG) falls back to channel 0", "[time][detect]") {
    mock_lapic_bus bus;
    auto msr = bus.handle();
    alignas(32) arch::pvclock_vcpu_time_info info{};
    fake_pit0 pit;
    auto r = arch::detect_tsc_hz(tcg_cpuid(), msr, info, reinterpret_cast<std::uintptr_t>(&info), pit,
                                 pit.tsc_fn());
    REQUIRE(r.has_value());
    CHECK(r->hz == 2'386'364'000);
    CHECK(r->source == toro::string_view{"PIT channel 0"});
    CHECK(pit.commands == std::vector<std::uint8_t>{0x30});
    CHECK(bus.accesses() == 0);
}

// ---- detect_tsc_hz --------------------------------------------------------------------------------------

TEST_CASE("detect_tsc_hz: TCG falls through to the PIT", "[time][detect]") {
    mock_lapic_bus bus;
    auto msr = bus.handle();
    alignas(32) arch::pvclock_vcpu_time_info info{};
    mock_io io{port_name};
    expect_pit_setup(io);
    expect_pit_window(io, 3998);
    io.expect_write(0x61, 0x00);
    fake_tsc tsc;
    auto r = arch::detect_tsc_hz(tcg_cpuid(), msr, info, reinterpret_cast<std::uintptr_t>(&info), io, tsc);
    REQUIRE(r.has_value());
    CHECK(r->hz == 2'000'055'075);
    CHECK(r->source == toro::string_view{"PIT channel 2"});
    CHECK(bus.accesses() == 0); // no kvmclock MSR on TCG
    CHECK_TRANSCRIPT(io);
}

TEST_CASE("detect_tsc_hz: KVM answers through kvmclock without touching the PIT", "[time][detect]") {
    mock_lapic_bus bus;
    fake_kvm kvm;
    kvm.mul = 0xaaaaaaaa;
    kvm.shift = -1;
    kvm.attach(bus);
    bus.expect_wrmsr(0x4b564d01, kvm.phys() | 1).expect_wrmsr(0x4b564d01, 0);
    auto msr = bus.handle();
    mock_io io{port_name};
    fake_tsc tsc;
    auto r = arch::detect_tsc_hz(kvm_cpuid(), msr, kvm.info, kvm.phys(), io, tsc);
    REQUIRE(r.has_value());
    CHECK(r->hz == 3'000'000'000);
    CHECK(r->source == toro::string_view{"kvmclock"});
    CHECK(io.accesses() == 0);
    CHECK_TRANSCRIPT(bus);
}

TEST_CASE("detect_tsc_hz: order and plausibility", "[time][detect]") {
    mock_lapic_bus bus;
    auto msr = bus.handle();
    alignas(32) arch::pvclock_vcpu_time_info info{};
    const std::uint64_t phys = reinterpret_cast<std::uintptr_t>(&info);
    mock_io io{port_name};
    fake_tsc tsc;
    SECTION("leaf 0x40000010 before kvmclock") {
        fake_cpuid c = kvm_cpuid();
        c.set(0x40000000, {0x40000010, 0x4b4d564b, 0x564b4d56, 0x4d}).set(0x40000010, {2'100'000, 0, 0, 0});
        auto r = arch::detect_tsc_hz(c, msr, info, phys, io, tsc);
        REQUIRE(r.has_value());
        CHECK(r->hz == 2'100'000'000);
        CHECK(r->source == toro::string_view{"hypervisor leaf 0x40000010"});
    }
    SECTION("bare metal: CPUID 0x15, then 0x16") {
        fake_cpuid c;
        c.set(0, {0x16, 0, 0, 0}).set(0x15, {2, 176, 24'000'000, 0}).set(0x16, {2100, 0, 0, 0});
        auto r = arch::detect_tsc_hz(c, msr, info, phys, io, tsc);
        REQUIRE(r.has_value());
        CHECK(r->hz == 2'112'000'000);
        CHECK(r->source == toro::string_view{"CPUID 0x15"});
        c.set(0x15, {2, 176, 0, 0});
        auto s = arch::detect_tsc_hz(c, msr, info, phys, io, tsc);
        REQUIRE(s.has_value());
        CHECK(s->source == toro::string_view{"CPUID 0x16"});
        CHECK(s->hz == 2'100'000'000);
    }
    SECTION("an implausible answer is skipped") {
        fake_cpuid c;
        c.set(0, {0x16, 0, 0, 0}).set(0x15, {1000, 1, 24'000'000, 0}).set(0x16, {2100, 0, 0, 0}); // 24 kHz
        auto r = arch::detect_tsc_hz(c, msr, info, phys, io, tsc);
        REQUIRE(r.has_value());
        CHECK(r->source == toro::string_view{"CPUID 0x16"});
    }
    SECTION("nothing works: the error says what was tried") {
        io.expect_read(0x61, 0xff).expect_write(0x61, 0x0d);
        io.expect_write(0x43, 0xb0).expect_write(0x42, 0xfe).expect_write(0x42, 0xff);
        io.expect_read(0x61, 0xff); // floating: OUT2 "high" right after programming
        io.expect_write(0x61, 0x0f);
        io.expect_write(0x43, 0x30).expect_write(0x40, 0xfe).expect_write(0x40, 0xff); // channel 0
        for (int i = 0; i < 2; ++i)
            io.expect_write(0x43, 0x00).expect_read(0x40, 0xff).expect_read(0x40, 0xff);
        auto r = arch::detect_tsc_hz(tcg_cpuid(), msr, info, phys, io, tsc);
        REQUIRE_FALSE(r.has_value());
        CHECK(
            r.error().what ==
            toro::string_view{"TSC frequency unknown: no hypervisor leaf 0x40000010, kvmclock, CPUID 0x15 or "
                              "0x16, and no usable PIT (tried channel 2 through port 0x61, then channel 0 "
                              "alone: no PIT, a count that stopped, or every window disturbed)"});
        CHECK_TRANSCRIPT(io);
    }
    CHECK(bus.accesses() == 0);
}

// ---- plan_timer -----------------------------------------------------------------------------------------

TEST_CASE("plan_timer: TSC-deadline mode arms the deadline", "[time][plan]") {
    auto scale = arch::lapic_counts_per_tsc_tick(1'000'000'000, 2'000'000'000);
    REQUIRE(scale.has_value());
    using arch::timer_arm;
    CHECK(arch::plan_timer(100, 5000, true, *scale) == arch::timer_plan{timer_arm::tsc_deadline, 5000});
    CHECK(arch::plan_timer(9000, 5000, true, *scale) == arch::timer_plan{timer_arm::tsc_deadline, 5000});
    CHECK(arch::plan_timer(0, 0, true, *scale) == arch::timer_plan{timer_arm::tsc_deadline, 1});
    CHECK(arch::plan_timer(0, max64, true, *scale) == arch::timer_plan{timer_arm::tsc_deadline, max64});
}

TEST_CASE("plan_timer: one-shot counts are rounded up and clamped to [1, 0xffffffff]", "[time][plan]") {
    using arch::timer_arm;
    auto half = arch::lapic_counts_per_tsc_tick(1'000'000'000, 2'000'000'000);
    REQUIRE(half.has_value());
    CHECK(arch::plan_timer(1000, 3000, false, *half) == arch::timer_plan{timer_arm::one_shot, 1000});
    CHECK(arch::plan_timer(1000, 1001, false, *half) == arch::timer_plan{timer_arm::one_shot, 1}); // 0.5 -> 1
    CHECK(arch::plan_timer(1000, 1003, false, *half) == arch::timer_plan{timer_arm::one_shot, 2}); // 1.5 -> 2
    CHECK(arch::plan_timer(1000, 1000, false, *half) == arch::timer_plan{timer_arm::one_shot, 1}); // now
    CHECK(arch::plan_timer(5000, 1000, false, *half) == arch::timer_plan{timer_arm::one_shot, 1}); // passed
    CHECK(arch::plan_timer(0, 2 * 0xffffffffull, false, *half) ==
          arch::timer_plan{timer_arm::one_shot, 0xffffffff});
    CHECK(arch::plan_timer(0, 2 * 0xffffffffull + 2, false, *half) ==
          arch::timer_plan{timer_arm::one_shot, 0xffffffff});
    CHECK(arch::plan_timer(0, max64, false, *half) == arch::timer_plan{timer_arm::one_shot, 0xffffffff});
    CHECK(arch::plan_timer(max64 - 10, max64, false, *half) == arch::timer_plan{timer_arm::one_shot, 5});

    auto odd = arch::lapic_counts_per_tsc_tick(1'000'000'000, 2'100'000'000);
    REQUIRE(odd.has_value());
    CHECK(arch::plan_timer(0, 2100, false, *odd) == arch::timer_plan{timer_arm::one_shot, 1000});
    CHECK(arch::plan_timer(0, 2101, false, *odd) == arch::timer_plan{timer_arm::one_shot, 1001});
    // A 25 MHz bus clock against a 3 GHz TSC: 120 TSC ticks per count.
    auto slow = arch::lapic_counts_per_tsc_tick(25'000'000, 3'000'000'000);
    REQUIRE(slow.has_value());
    CHECK(arch::plan_timer(0, 1200, false, *slow) == arch::timer_plan{timer_arm::one_shot, 10});
    CHECK(arch::plan_timer(0, 1201, false, *slow) == arch::timer_plan{timer_arm::one_shot, 11});
    CHECK(arch::plan_timer(0, 3'000'000'000ull * 1000, false, *slow) ==
          arch::timer_plan{timer_arm::one_shot, 0xffffffff});
    CHECK_FALSE(arch::lapic_counts_per_tsc_tick(0, 1).has_value());
}
