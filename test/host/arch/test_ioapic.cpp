// The I/O APIC driver against scripted MMIO (IOREGSEL/IOWIN pairs), the redirection entry's bit layout, and
// the pure ISA IRQ -> GSI -> IOAPIC pin resolution from firmware overrides.
#include <catch2/catch.hpp>

#include <toro/arch/x86_64/ioapic.hpp>
#include <toro/arch/x86_64/mock_lapic.hpp>

using namespace toro;
using arch::polarity;
using arch::trigger_mode;
using testing::mock_lapic_bus;

namespace {

std::string ioapic_register_name(std::uint32_t offset) {
    return offset == 0x00 ? "IOREGSEL" : offset == 0x10 ? "IOWIN" : "";
}

// One indirect register read: select, then read the window.
void expect_read(mock_lapic_bus& bus, std::uint32_t reg, std::uint32_t value) {
    bus.expect_mmio_write(0x00, reg).expect_mmio_read(0x10, value);
}
void expect_write(mock_lapic_bus& bus, std::uint32_t reg, std::uint32_t value) {
    bus.expect_mmio_write(0x00, reg).expect_mmio_write(0x10, value);
}

#define CHECK_TRANSCRIPT(bus)                                                                                \
    do {                                                                                                     \
        INFO((bus).report());                                                                                \
        CHECK((bus).done());                                                                                 \
    } while (0)

} // namespace

TEST_CASE("redirection entries have the datasheet's layout", "[ioapic]") {
    auto e = arch::redirection_entry{}
                 .set_vector(0x31)
                 .set_active_low(true)
                 .set_level_triggered(true)
                 .set_destination(3);
    CHECK(e.value() == 0x0300'0000'0000'a031);
    CHECK(e.set_masked(true).value() == 0x0300'0000'0001'a031);
    const auto r = arch::redirection_entry::from_value(0x0000'0000'0000'5000);
    CHECK(r.delivery_pending());
    CHECK(r.remote_irr());
    CHECK_FALSE(r.masked());
}

TEST_CASE("id, pin count and routing go through IOREGSEL/IOWIN; an entry is unmasked last", "[ioapic]") {
    mock_lapic_bus bus{ioapic_register_name};
    expect_read(bus, 0x00, 0x0500'0000);          // ID 5
    expect_read(bus, 0x01, 0x0017'0020);          // version 0x20, 24 pins
    expect_read(bus, 0x01, 0x0017'0020);          // route checks the pin
    expect_write(bus, 0x10 + 2 * 9, 0x0001'a041); // masked, level, active low, vector 0x41
    expect_write(bus, 0x11 + 2 * 9, 0x0200'0000); // destination APIC id 2
    expect_write(bus, 0x10 + 2 * 9, 0x0000'a041); // unmasked
    arch::ioapic<mock_lapic_bus::ref> io{bus.handle(), 0};
    CHECK(io.id() == 5);
    CHECK(io.max_pin() == 23);
    CHECK(io.route(9, 0x41, 2, trigger_mode::level, polarity::active_low).has_value());
    CHECK_TRANSCRIPT(bus);
}

TEST_CASE("bad routes change nothing", "[ioapic]") {
    mock_lapic_bus bus{ioapic_register_name};
    expect_read(bus, 0x01, 0x0017'0020);
    expect_read(bus, 0x01, 0x0017'0020);
    expect_read(bus, 0x01, 0x0017'0020);
    arch::ioapic<mock_lapic_bus::ref> io{bus.handle()};
    CHECK(io.route(24, 0x40, 0, trigger_mode::edge, polarity::active_high).error().what ==
          string_view{"IOAPIC: no such pin"});
    CHECK(io.route(2, 0x0e, 0, trigger_mode::edge, polarity::active_high).error().what ==
          string_view{"IOAPIC: vectors below 0x20 are CPU exceptions"});
    CHECK(io.route(2, 0x40, 300, trigger_mode::edge, polarity::active_high).error().what ==
          string_view{"IOAPIC: destination APIC id does not fit 8 bits"});
    CHECK_TRANSCRIPT(bus);
}

TEST_CASE("mask_all masks every pin; set_masked keeps the rest of the entry", "[ioapic]") {
    mock_lapic_bus bus{ioapic_register_name};
    expect_read(bus, 0x01, 0x0002'0011); // 3 pins
    expect_write(bus, 0x10, 0x0001'0000);
    expect_write(bus, 0x12, 0x0001'0000);
    expect_write(bus, 0x14, 0x0001'0000);
    expect_read(bus, 0x12, 0x0001'0030);
    expect_write(bus, 0x12, 0x0000'0030);
    arch::ioapic<mock_lapic_bus::ref> io{bus.handle()};
    io.mask_all();
    io.set_masked(1, false);
    CHECK_TRANSCRIPT(bus);
}

TEST_CASE("ISA IRQs map to GSIs through the firmware's overrides", "[ioapic]") {
    // QEMU pc's MADT: IRQ 0 -> GSI 2; 5, 9, 10, 11 level, active high (flags 0x000d).
    const irq_override overrides[] = {{0, 2, 0}, {5, 5, 0x000d}, {9, 9, 0x000d}, {11, 11, 0x000f}};
    CHECK(arch::isa_route(0, overrides) == arch::gsi_route{2, trigger_mode::edge, polarity::active_high});
    CHECK(arch::isa_route(4, overrides) == arch::gsi_route{4, trigger_mode::edge, polarity::active_high});
    CHECK(arch::isa_route(9, overrides) == arch::gsi_route{9, trigger_mode::level, polarity::active_high});
    CHECK(arch::isa_route(11, overrides) == arch::gsi_route{11, trigger_mode::level, polarity::active_low});
}

TEST_CASE("a GSI is served by the IOAPIC whose range covers it", "[ioapic]") {
    // microvm: two IOAPICs, GSI bases 0 and 24, 24 pins each.
    const ioapic_entry ioapics[] = {{0, 0xfec00000, 0}, {1, 0xfec10000, 24}};
    const std::uint16_t pins[] = {24, 24};
    auto a = arch::find_ioapic_pin(ioapics, pins, 5);
    REQUIRE(a.has_value());
    CHECK(a->ioapic == 0);
    CHECK(a->pin == 5);
    auto b = arch::find_ioapic_pin(ioapics, pins, 30);
    REQUIRE(b.has_value());
    CHECK(b->ioapic == 1);
    CHECK(b->pin == 6);
    CHECK_FALSE(arch::find_ioapic_pin(ioapics, pins, 48).has_value());
}
