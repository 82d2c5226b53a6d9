// Host tests for the local APIC driver: scripted MMIO/MSR transcripts through the real xAPIC and x2APIC
// access providers (mock_lapic_bus underneath), register encodings checked bit-exactly against the SDM,
// and timer calibration arithmetic with a fake TSC and a scripted LAPIC count.
#include <catch2/catch.hpp>

#include <cstdint>
#include <string>

#include <toro/arch/x86_64/lapic.hpp>
#include <toro/arch/x86_64/mock_lapic.hpp>
#include <toro/console/mock_io.hpp>

namespace arch = toro::arch;
namespace regs = toro::arch::lapic_regs;
using toro::testing::mock_lapic_bus;
using ref = mock_lapic_bus::ref;
using xapic = arch::xapic_mmio<ref, ref>;
using x2apic = arch::x2apic_msr<ref>;

// The driver compiles against the bare concept: it asks its access for nothing more.
template class toro::arch::lapic<toro::arch::lapic_access_archetype>;
static_assert(arch::lapic_access<xapic>);
static_assert(arch::lapic_access<x2apic>);

namespace {

arch::lapic<xapic> make_xapic(mock_lapic_bus& bus) {
    return arch::lapic<xapic>{xapic{bus.handle(), bus.handle()}};
}
arch::lapic<x2apic> make_x2apic(mock_lapic_bus& bus) {
    return arch::lapic<x2apic>{x2apic{bus.handle()}};
}

#define CHECK_TRANSCRIPT(bus)                                                                                \
    do {                                                                                                     \
        INFO((bus).report());                                                                                \
        CHECK((bus).done());                                                                                 \
    } while (0)

// A TSC that advances `step` ticks per read.
struct fake_tsc {
    std::uint64_t now = 0;
    std::uint64_t step = 1000;
    std::uint64_t operator()() {
        const std::uint64_t t = now;
        now += step;
        return t;
    }
};

// enable(0xff) in xAPIC mode, as MMIO offsets.
void expect_xapic_enable(mock_lapic_bus& bus, std::uint32_t error_lvt = 0x10000) {
    bus.expect_mmio_write(0x080, 0)          // TPR: accept everything
        .expect_mmio_write(0x0f0, 0x1ff)     // SVR: software enable (bit 8) | vector 0xff
        .expect_mmio_write(0x350, 0x10000)   // LINT0 masked
        .expect_mmio_write(0x360, 0x10000)   // LINT1 masked
        .expect_mmio_write(0x3e0, 0xb)       // divide by 1
        .expect_mmio_write(0x320, 0x10000)   // LVT timer: masked, one-shot
        .expect_mmio_write(0x380, 0)         // timer stopped
        .expect_mmio_write(0x370, error_lvt) // LVT error
        .expect_mmio_write(0x280, 0);        // ESR cleared
}

} // namespace

TEST_CASE("register offsets and x2APIC MSR numbers follow the SDM", "[lapic]") {
    using r = arch::lapic_reg;
    CHECK(arch::x2apic_msr_of(r::id) == 0x802);
    CHECK(arch::x2apic_msr_of(r::version) == 0x803);
    CHECK(arch::x2apic_msr_of(r::tpr) == 0x808);
    CHECK(arch::x2apic_msr_of(r::eoi) == 0x80b);
    CHECK(arch::x2apic_msr_of(r::svr) == 0x80f);
    CHECK(arch::x2apic_msr_of(r::esr) == 0x828);
    CHECK(arch::x2apic_msr_of(r::icr_low) == 0x830);
    CHECK(arch::x2apic_msr_of(r::lvt_timer) == 0x832);
    CHECK(arch::x2apic_msr_of(r::lvt_lint0) == 0x835);
    CHECK(arch::x2apic_msr_of(r::lvt_lint1) == 0x836);
    CHECK(arch::x2apic_msr_of(r::lvt_error) == 0x837);
    CHECK(arch::x2apic_msr_of(r::timer_initial) == 0x838);
    CHECK(arch::x2apic_msr_of(r::timer_current) == 0x839);
    CHECK(arch::x2apic_msr_of(r::timer_divide) == 0x83e);
}

TEST_CASE("ICR encodings are bit-exact", "[lapic]") {
    using dm = regs::delivery_mode;
    // Fixed, physical, edge, assert: vector | bit 14.
    CHECK(regs::icr_low{}.set_vector(0x50).set_level_assert(true).value() == 0x00004050);
    // INIT assert and STARTUP with the SDM's MP-init example values (shorthand all-excluding-self).
    const auto init = regs::icr_low{}.set_delivery_mode(dm::init).set_level_assert(true);
    CHECK(init.value() == 0x00004500);
    CHECK(regs::icr_low{init}.set_shorthand(regs::shorthand::all_excluding_self).value() == 0x000c4500);
    const auto sipi = regs::icr_low{}.set_delivery_mode(dm::startup).set_level_assert(true).set_vector(0x08);
    CHECK(sipi.value() == 0x00004608);
    CHECK(regs::icr_low{sipi}.set_shorthand(regs::shorthand::all_excluding_self).value() == 0x000c4608);
    // INIT level de-assert (not sent by the driver): level triggered, level 0.
    CHECK(regs::icr_low{}.set_delivery_mode(dm::init).set_level_triggered(true).value() == 0x00008500);
    CHECK(regs::icr_low{}.set_delivery_mode(dm::nmi).set_level_assert(true).value() == 0x00004400);
    CHECK(regs::icr_low{}.set_logical_destination(true).value() == 0x800);
    CHECK(regs::icr_low::from_value(0x1000).delivery_pending());
    CHECK_FALSE(regs::icr_low::from_value(0x4fff & ~0x1000u).delivery_pending());
    CHECK(regs::icr_low::from_value(0x000c4608).delivery_mode() == dm::startup);
    CHECK(regs::icr_low::from_value(0x000c4608).vector() == 8);
}

TEST_CASE("LVT, SVR, divide and APIC base encodings", "[lapic]") {
    using tm = regs::timer_mode;
    CHECK(regs::lvt_timer{}.set_mode(tm::tsc_deadline).value() == 0x40000); // bits 18:17 = 10b
    CHECK(regs::lvt_timer{}.set_mode(tm::periodic).value() == 0x20000);
    CHECK(regs::lvt_timer{}.set_masked(true).set_vector(0x20).value() == 0x10020);
    CHECK(regs::lvt_timer::from_value(0x50041).mode() == tm::tsc_deadline);
    CHECK(regs::lvt_timer::from_value(0x50041).masked());
    CHECK(regs::svr{}.set_apic_enabled(true).set_vector(0xff).value() == 0x1ff);
    CHECK(regs::lvt{}.set_delivery_mode(regs::delivery_mode::ext_int).value() == 0x700);
    CHECK(regs::lvt{}.set_delivery_mode(regs::delivery_mode::nmi).value() == 0x400);
    CHECK(regs::timer_divide::by_1 == 0xb);

    const auto base = regs::apic_base::from_value(0x00000000fee00900);
    CHECK(base.base_address() == 0xfee00000);
    CHECK(base.bsp());
    CHECK(base.enabled());
    CHECK_FALSE(base.x2apic());
    // Bits above 51 and below 12 are not part of the address.
    CHECK(regs::apic_base::from_value(0xfff00001fee00d00).base_address() == 0x00000001fee00000);
}

TEST_CASE("mode selection from CPUID.1:ECX", "[lapic]") {
    CHECK(arch::choose_apic_mode(arch::cpuid_result{0, 0, 0x80000000, 0}) == arch::apic_mode::xapic);
    CHECK(arch::choose_apic_mode(arch::cpuid_result{0, 0, 1u << 21, 0}) == arch::apic_mode::x2apic);
    CHECK(arch::has_tsc_deadline(arch::cpuid_result{0, 0, 1u << 24, 0}));
    CHECK_FALSE(arch::has_tsc_deadline(arch::cpuid_result{0, 0, 1u << 21, 0}));
    // Through a CPUID callable: leaf 1 as TCG (no x2APIC) and KVM (-cpu host: x2APIC) report it.
    auto tcg = [](std::uint32_t leaf, std::uint32_t) {
        return leaf == 1 ? arch::cpuid_result{0x663, 0x800, 0x80002001, 0x078bfbfd} : arch::cpuid_result{};
    };
    CHECK(arch::choose_apic_mode(tcg) == arch::apic_mode::xapic);
    auto kvm = [](std::uint32_t leaf, std::uint32_t) {
        return leaf == 1 ? arch::cpuid_result{0x306c3, 0x800, 0xf7fa3203, 0x178bfbff} : arch::cpuid_result{};
    };
    CHECK(arch::choose_apic_mode(kvm) == arch::apic_mode::x2apic);
}

TEST_CASE("enable_x2apic sets EN | EXTD once; xapic_base_address reads bits 51:12", "[lapic]") {
    SECTION("from xAPIC mode") {
        mock_lapic_bus bus;
        bus.expect_rdmsr(0x1b, 0xfee00900).expect_wrmsr(0x1b, 0xfee00d00);
        ref r = bus.handle();
        arch::enable_x2apic(r);
        CHECK_TRANSCRIPT(bus);
    }
    SECTION("from disabled: both bits in one write") {
        mock_lapic_bus bus;
        bus.expect_rdmsr(0x1b, 0xfee00100).expect_wrmsr(0x1b, 0xfee00d00);
        ref r = bus.handle();
        arch::enable_x2apic(r);
        CHECK_TRANSCRIPT(bus);
    }
    SECTION("already in x2APIC mode: no write") {
        mock_lapic_bus bus;
        bus.expect_rdmsr(0x1b, 0xfee00d00);
        ref r = bus.handle();
        arch::enable_x2apic(r);
        CHECK_TRANSCRIPT(bus);
    }
    SECTION("base address") {
        mock_lapic_bus bus;
        bus.expect_rdmsr(0x1b, 0xfec00900);
        ref r = bus.handle();
        CHECK(arch::xapic_base_address(r) == 0xfec00000);
        CHECK_TRANSCRIPT(bus);
    }
}

TEST_CASE("enable: xAPIC transcript", "[lapic]") {
    mock_lapic_bus bus;
    auto apic = make_xapic(bus);
    expect_xapic_enable(bus);
    REQUIRE(apic.enable(0xff).has_value());
    CHECK_TRANSCRIPT(bus);
    CHECK(bus.accesses() == 9);
}

TEST_CASE("enable with an error vector unmasks the error LVT", "[lapic]") {
    mock_lapic_bus bus;
    auto apic = make_xapic(bus);
    expect_xapic_enable(bus, 0xfe);
    REQUIRE(apic.enable(0xff, 0xfe).has_value());
    CHECK_TRANSCRIPT(bus);
}

TEST_CASE("enable: x2APIC transcript", "[lapic]") {
    mock_lapic_bus bus;
    auto apic = make_x2apic(bus);
    bus.expect_wrmsr(0x808, 0)
        .expect_wrmsr(0x80f, 0x1ef)
        .expect_wrmsr(0x835, 0x10000)
        .expect_wrmsr(0x836, 0x10000)
        .expect_wrmsr(0x83e, 0xb)
        .expect_wrmsr(0x832, 0x10000)
        .expect_wrmsr(0x838, 0)
        .expect_wrmsr(0x837, 0x10000)
        .expect_wrmsr(0x828, 0);
    REQUIRE(apic.enable(0xef).has_value());
    CHECK_TRANSCRIPT(bus);
}

TEST_CASE("enable rejects exception vectors without touching the APIC", "[lapic]") {
    mock_lapic_bus bus;
    auto apic = make_xapic(bus);
    auto a = apic.enable(31);
    REQUIRE_FALSE(a.has_value());
    CHECK(a.error().what == toro::string_view{"lapic: spurious vector must be 32..255"});
    CHECK(a.error().value == 31);
    auto b = apic.enable(0xff, 7);
    REQUIRE_FALSE(b.has_value());
    CHECK(b.error().what == toro::string_view{"lapic: error vector must be 32..255 (or 0: masked)"});
    CHECK(bus.accesses() == 0);
    CHECK_TRANSCRIPT(bus);
}

TEST_CASE("eoi, id, version, errors", "[lapic]") {
    SECTION("xAPIC: ID is bits 31:24") {
        mock_lapic_bus bus;
        auto apic = make_xapic(bus);
        bus.expect_mmio_write(0xb0, 0)
            .expect_mmio_read(0x20, 0x03000000)
            .expect_mmio_read(0x30, 0x00050014)
            .expect_mmio_write(0x280, 0)
            .expect_mmio_read(0x280, 0x40);
        apic.eoi();
        CHECK(apic.id() == 3);
        CHECK(apic.version() == 0x00050014);
        CHECK(apic.read_errors() == 0x40);
        CHECK_TRANSCRIPT(bus);
    }
    SECTION("x2APIC: ID is the full 32 bits") {
        mock_lapic_bus bus;
        auto apic = make_x2apic(bus);
        bus.expect_wrmsr(0x80b, 0).expect_rdmsr(0x802, 0x00012345);
        apic.eoi();
        CHECK(apic.id() == 0x12345);
        CHECK_TRANSCRIPT(bus);
    }
}

TEST_CASE("one-shot timer: LVT written only when it changes", "[lapic]") {
    mock_lapic_bus bus;
    auto apic = make_xapic(bus);
    expect_xapic_enable(bus);
    bus.expect_mmio_write(0x320, 0x40)  // one-shot, vector 0x40, unmasked
        .expect_mmio_write(0x380, 1000) // initial count starts it
        .expect_mmio_write(0x380, 5)    // same vector and mode: count only
        .expect_mmio_read(0x390, 3)     // current count
        .expect_mmio_write(0x380, 0)    // stop
        .expect_mmio_write(0x320, 0x41) // another vector: LVT again
        .expect_mmio_write(0x380, 0xffffffff);
    REQUIRE(apic.enable(0xff).has_value());
    apic.arm_one_shot(0x40, 1000);
    apic.arm_one_shot(0x40, 5);
    CHECK(apic.current_count() == 3);
    apic.stop_timer();
    apic.arm_one_shot(0x41, 0xffffffff);
    CHECK_TRANSCRIPT(bus);
}

TEST_CASE("TSC-deadline timer: LVT mode 10b, then IA32_TSC_DEADLINE", "[lapic]") {
    SECTION("xAPIC") {
        mock_lapic_bus bus;
        auto apic = make_xapic(bus);
        expect_xapic_enable(bus);
        bus.expect_mmio_write(0x320, 0x40041)
            .expect_wrmsr(0x6e0, 123456789)
            .expect_wrmsr(0x6e0, 223456789) // re-arm: the MSR only
            .expect_wrmsr(0x6e0, 0)         // stop: disarm the deadline
            .expect_wrmsr(0x6e0, 1)         // a deadline of 0 would disarm: sent as 1
            .expect_mmio_write(0x320, 0x41) // back to one-shot
            .expect_mmio_write(0x380, 77)
            .expect_mmio_write(0x380, 0); // stop in one-shot mode
        REQUIRE(apic.enable(0xff).has_value());
        apic.arm_tsc_deadline(0x41, 123456789);
        apic.arm_tsc_deadline(0x41, 223456789);
        apic.stop_timer();
        apic.arm_tsc_deadline(0x41, 0);
        apic.arm_one_shot(0x41, 77);
        apic.stop_timer();
        CHECK_TRANSCRIPT(bus);
    }
    SECTION("x2APIC, through arm(plan)") {
        mock_lapic_bus bus;
        auto apic = make_x2apic(bus);
        bus.expect_wrmsr(0x832, 0x40030)
            .expect_wrmsr(0x6e0, 0x123456789abc)
            .expect_wrmsr(0x832, 0x30)
            .expect_wrmsr(0x838, 4242);
        apic.arm({arch::timer_arm::tsc_deadline, 0x123456789abc}, 0x30);
        apic.arm({arch::timer_arm::one_shot, 4242}, 0x30);
        CHECK_TRANSCRIPT(bus);
    }
}

TEST_CASE("xAPIC IPIs: ICR high, then low, then wait for delivery status", "[lapic]") {
    SECTION("fixed IPI, pending twice then accepted") {
        mock_lapic_bus bus;
        auto apic = make_xapic(bus);
        bus.expect_mmio_write(0x310, 0x03000000)
            .expect_mmio_write(0x300, 0x00004050)
            .expect_mmio_read(0x300, 0x00005050, 2) // bit 12: send pending
            .expect_mmio_read(0x300, 0x00004050);
        CHECK(apic.send_ipi(3, 0x50).has_value());
        CHECK_TRANSCRIPT(bus);
    }
    SECTION("INIT then SIPI for page 8 (trampoline at 0x8000)") {
        mock_lapic_bus bus;
        auto apic = make_xapic(bus);
        bus.expect_mmio_write(0x310, 0xfe000000)
            .expect_mmio_write(0x300, 0x00004500)
            .expect_mmio_read(0x300, 0x00004500)
            .expect_mmio_write(0x310, 0xfe000000)
            .expect_mmio_write(0x300, 0x00004608)
            .expect_mmio_read(0x300, 0x00004608)
            .expect_mmio_write(0x310, 0x01000000)
            .expect_mmio_write(0x300, 0x00004400)
            .expect_mmio_read(0x300, 0);
        CHECK(apic.send_init(0xfe).has_value());
        CHECK(apic.send_startup(0xfe, 0x08).has_value());
        CHECK(apic.send_nmi(1).has_value());
        CHECK_TRANSCRIPT(bus);
    }
    SECTION("delivery status that never clears: bounded, then an error") {
        mock_lapic_bus bus;
        auto apic = make_xapic(bus);
        bus.expect_mmio_write(0x310, 0x02000000)
            .expect_mmio_write(0x300, 0x00004060)
            .expect_mmio_read(0x300, 0x00005060, xapic::icr_idle_spins);
        auto r = apic.send_ipi(2, 0x60);
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().what ==
              toro::string_view{"lapic: IPI still pending: the destination did not accept it"});
        CHECK(r.error().value == 2);
        CHECK_TRANSCRIPT(bus);
    }
    SECTION("a destination above 0xff cannot be addressed") {
        mock_lapic_bus bus;
        auto apic = make_xapic(bus);
        auto r = apic.send_ipi(0x100, 0x60);
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().value == 0x100);
        CHECK(bus.accesses() == 0);
    }
}

TEST_CASE("x2APIC IPIs: one 64-bit ICR write, destination in bits 63:32", "[lapic]") {
    mock_lapic_bus bus;
    auto apic = make_x2apic(bus);
    bus.expect_wrmsr(0x830, 0x0000123400004050)
        .expect_wrmsr(0x830, 0x0000000700004500)
        .expect_wrmsr(0x830, 0x000000070000469f)
        .expect_wrmsr(0x830, 0x00000007000046c0)
        .expect_wrmsr(0x830, 0xffffffff00004400);
    CHECK(apic.send_ipi(0x1234, 0x50).has_value());
    CHECK(apic.send_init(7).has_value());
    CHECK(apic.send_startup(7, 0x9f).has_value());
    CHECK(apic.send_startup(7, 0xc0).has_value());
    CHECK(apic.send_nmi(0xffffffff).has_value());
    CHECK_TRANSCRIPT(bus);
}

TEST_CASE("IPI argument checks send nothing", "[lapic]") {
    mock_lapic_bus bus;
    auto apic = make_x2apic(bus);
    auto v = apic.send_ipi(1, 31);
    REQUIRE_FALSE(v.has_value());
    CHECK(v.error().what == toro::string_view{"lapic: IPI vector must be 32..255"});
    auto high = apic.send_startup(1, 0x100);
    REQUIRE_FALSE(high.has_value());
    CHECK(high.error().what == toro::string_view{"lapic: SIPI trampoline must be below 1 MiB (page)"});
    for (std::uint32_t page : {0xa0u, 0xb5u, 0xbfu}) {
        auto r = apic.send_startup(1, page);
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().what == toro::string_view{"lapic: SIPI vectors 0xa0..0xbf are reserved"});
        CHECK(r.error().value == page);
    }
    CHECK(bus.accesses() == 0);
}

TEST_CASE("xapic_mmio over real memory: 32-bit accesses at base + offset", "[lapic]") {
    alignas(16) static std::uint32_t page[1024] = {};
    arch::xapic_mmio<arch::mmio_window, ref> a{arch::mmio_window{page}, ref{nullptr}};
    page[0x20 / 4] = 0x05000000;
    CHECK(a.apic_id() == 5);
    a.write(arch::lapic_reg::timer_divide, 0xb);
    CHECK(page[0x3e0 / 4] == 0xb);
    CHECK(a.send_icr(9, 0x4050)); // delivery status reads back 0 from plain memory
    CHECK(page[0x310 / 4] == 0x09000000);
    CHECK(page[0x300 / 4] == 0x4050);
}

TEST_CASE("measure_lapic_timer_hz: midpoints of TSC brackets", "[lapic][calibration]") {
    // TSC at 2 GHz stepping 1000 per read; a 1 GHz LAPIC timer. Reads: t0a=0 [c0] t0b=1000, the wait ends at
    // 4'001'000, t1a=4'002'000 [c1] t1b=4'003'000: midpoints 500 and 4'002'500, 4'002'000 ticks = 2.001 ms.
    mock_lapic_bus bus;
    auto apic = make_xapic(bus);
    const std::uint32_t c0 = 0xffffffff - 500;
    bus.expect_mmio_write(0x3e0, 0xb)
        .expect_mmio_write(0x320, 0x10000)
        .expect_mmio_write(0x380, 0xffffffff)
        .expect_mmio_read(0x390, c0)
        .expect_mmio_read(0x390, c0 - 2'001'000)
        .expect_mmio_write(0x380, 0);
    fake_tsc tsc;
    auto hz = arch::measure_lapic_timer_hz(apic, tsc, 2'000'000'000, 4'000'000);
    REQUIRE(hz.has_value());
    CHECK(*hz == 1'000'000'000);
    CHECK_TRANSCRIPT(bus);
}

TEST_CASE("measure_lapic_timer_hz: odd rates come out exact", "[lapic][calibration]") {
    // 2.1 GHz TSC, LAPIC at 25 MHz (a real bus clock): 4'002'000 ticks -> 47'642.857 counts.
    mock_lapic_bus bus;
    auto apic = make_x2apic(bus);
    bus.expect_wrmsr(0x83e, 0xb)
        .expect_wrmsr(0x832, 0x10000)
        .expect_wrmsr(0x838, 0xffffffff)
        .expect_rdmsr(0x839, 1'000'000)
        .expect_rdmsr(0x839, 1'000'000 - 47'643)
        .expect_wrmsr(0x838, 0);
    fake_tsc tsc;
    auto hz = arch::measure_lapic_timer_hz(apic, tsc, 2'100'000'000, 4'000'000);
    REQUIRE(hz.has_value());
    CHECK(*hz == 25'000'074); // 47643 * 2.1e9 / 4'002'000, rounded down
    CHECK_TRANSCRIPT(bus);
}

TEST_CASE("measure_lapic_timer_hz: failures", "[lapic][calibration]") {
    SECTION("a count that does not move") {
        mock_lapic_bus bus;
        auto apic = make_xapic(bus);
        bus.expect_mmio_write(0x3e0, 0xb)
            .expect_mmio_write(0x320, 0x10000)
            .expect_mmio_write(0x380, 0xffffffff)
            .expect_mmio_read(0x390, 0xffffffff, 2)
            .expect_mmio_write(0x380, 0);
        fake_tsc tsc;
        auto hz = arch::measure_lapic_timer_hz(apic, tsc, 2'000'000'000, 4'000'000);
        REQUIRE_FALSE(hz.has_value());
        CHECK(hz.error().what == toro::string_view{"lapic: LAPIC timer does not count"});
        CHECK_TRANSCRIPT(bus);
    }
    SECTION("a count that ran out") {
        mock_lapic_bus bus;
        auto apic = make_xapic(bus);
        bus.expect_mmio_write(0x3e0, 0xb)
            .expect_mmio_write(0x320, 0x10000)
            .expect_mmio_write(0x380, 0xffffffff)
            .expect_mmio_read(0x390, 0xfffffff0)
            .expect_mmio_read(0x390, 0)
            .expect_mmio_write(0x380, 0);
        fake_tsc tsc;
        auto hz = arch::measure_lapic_timer_hz(apic, tsc, 2'000'000'000, 4'000'000);
        REQUIRE_FALSE(hz.has_value());
        CHECK(hz.error().what ==
              toro::string_view{"lapic: LAPIC timer ran out during the calibration window"});
        CHECK_TRANSCRIPT(bus);
    }
    SECTION("a TSC that stands still ends the wait") {
        mock_lapic_bus bus;
        auto apic = make_xapic(bus);
        bus.expect_mmio_write(0x3e0, 0xb)
            .expect_mmio_write(0x320, 0x10000)
            .expect_mmio_write(0x380, 0xffffffff)
            .expect_mmio_read(0x390, 0xfffffff0)
            .expect_mmio_write(0x380, 0);
        fake_tsc tsc{42, 0};
        auto hz = arch::measure_lapic_timer_hz(apic, tsc, 2'000'000'000, 4'000'000);
        REQUIRE_FALSE(hz.has_value());
        CHECK(hz.error().what == toro::string_view{"lapic: the TSC does not count"});
        CHECK_TRANSCRIPT(bus);
    }
    SECTION("zero frequency or window: no access") {
        mock_lapic_bus bus;
        auto apic = make_xapic(bus);
        fake_tsc tsc;
        CHECK_FALSE(arch::measure_lapic_timer_hz(apic, tsc, 0, 4'000'000).has_value());
        CHECK_FALSE(arch::measure_lapic_timer_hz(apic, tsc, 2'000'000'000, 0).has_value());
        CHECK(bus.accesses() == 0);
    }
}

TEST_CASE("PIT calibration measures the LAPIC timer in the same window", "[lapic][calibration][pit]") {
    // Same PIT script as test_time's: TSC stepping 1000/read, OUT2 high at poll 3998.
    toro::testing::mock_io io;
    io.expect_read(0x61, 0x00).expect_write(0x61, 0x01);
    io.expect_write(0x43, 0xb0).expect_write(0x42, 0xfe).expect_write(0x42, 0xff).expect_read(0x61, 0x01);
    io.expect_write(0x43, 0x80).expect_read(0x42, 0xfe).expect_read(0x42, 0xff);
    io.expect_write(0x43, 0x80).expect_read(0x42, 0xfc).expect_read(0x42, 0xff);
    io.expect_write(0x43, 0xb0).expect_write(0x42, 0x52).expect_write(0x42, 0x09);
    io.expect_read(0x61, 0x01, 3998).expect_read(0x61, 0x21);
    io.expect_write(0x61, 0x00);

    mock_lapic_bus bus;
    auto apic = make_xapic(bus);
    // TSC reads: s0=0, s1=1000, [p0] p0_t=2000, polls 3000.., last poll t=4'001'000, [p1] p1_t=4'002'000.
    // The probe's midpoints: 1500 and 4'001'500, 4'000'000 ticks; 2'000'000 counts -> half the TSC rate.
    bus.expect_mmio_write(0x3e0, 0xb)
        .expect_mmio_write(0x320, 0x10000)
        .expect_mmio_write(0x380, 0xffffffff)
        .expect_mmio_read(0x390, 0xffffffff - 100)
        .expect_mmio_read(0x390, 0xffffffff - 100 - 2'000'000);
    fake_tsc tsc;
    auto r = arch::calibrate_with_pit(io, tsc, arch::lapic_timer_probe<xapic>{&apic});
    REQUIRE(r.has_value());
    CHECK(r->tsc_hz == 2'000'055'075);
    CHECK(r->probe_hz == 1'000'027'537); // 2'000'000 * 2 * tsc_hz / 8'000'000
    {
        INFO(io.report());
        CHECK(io.done());
    }
    CHECK_TRANSCRIPT(bus);
}

TEST_CASE("mock_lapic_bus reports mismatches readably", "[mock_lapic]") {
    mock_lapic_bus bus;
    bus.expect_mmio_write(0xf0, 0x1ff).expect_wrmsr(0x6e0, 5).expect_rdmsr(0x802, 1);
    bus.read32(0x390);
    bus.wrmsr(0x6e0, 6);
    const auto f = bus.failures();
    REQUIRE(f.size() == 3);
    CHECK(f[0] ==
          "access 1: expected MMIO write 0x000001ff to +0x0f0 (SVR), got MMIO read of +0x390 (timer current "
          "count)");
    CHECK(f[1] ==
          "access 2: expected wrmsr 0x6e0 <- 0x0000000000000005 (IA32_TSC_DEADLINE), got wrmsr 0x6e0 <- "
          "0x0000000000000006 (IA32_TSC_DEADLINE)");
    CHECK(f[2] == "access 3: expected rdmsr 0x802 (x2APIC ID), never happened (1 expected accesses missing)");
    CHECK_FALSE(bus.done());
}
