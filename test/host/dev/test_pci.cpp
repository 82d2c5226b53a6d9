// Host tests for PCI (dev/pci): the 0xCF8/0xCFC mechanism against scripted port accesses, ECAM address
// arithmetic over a memory buffer, ACPI MCFG parsing, and enumeration, BAR sizing, capability walks and
// MSI/MSI-X parsing against fake_pci_bus, which models configuration space the way hardware behaves.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <toro/dev/pci/config.hpp>
#include <toro/dev/pci/fake_pci.hpp>
#include <toro/dev/pci/pci.hpp>

using toro::bar_kind;
using toro::pci_address;
using toro::pci_function;
using toro::testing::fake_bar;
using toro::testing::fake_function_spec;
using toro::testing::fake_pci_bus;
using toro::testing::mock_port_io32;

// The PCI code compiles against the bare concept: it asks its config access for nothing beyond
// read32/write32.
template toro::pci_scan_result toro::for_each_function(toro::pci_config_access_archetype&,
                                                       void (*&&)(const toro::pci_function&),
                                                       toro::pci_scan_options);
template toro::expected<toro::pci_bar_list> toro::read_bars(toro::pci_config_access_archetype&,
                                                            const toro::pci_function&);
template toro::expected<toro::pci_bar> toro::read_bar(toro::pci_config_access_archetype&,
                                                      const toro::pci_function&, std::uint8_t);
template toro::expected<std::uint8_t> toro::find_capability(toro::pci_config_access_archetype&, pci_address,
                                                            std::uint8_t, std::size_t);
template toro::expected<toro::msix_info> toro::parse_msix(toro::pci_config_access_archetype&, pci_address,
                                                          std::uint8_t);
template toro::expected<toro::msi_info> toro::parse_msi(toro::pci_config_access_archetype&, pci_address,
                                                        std::uint8_t);
template toro::pci_regs::command toro::enable_bus_master(toro::pci_config_access_archetype&, pci_address);
template void toro::pci_write16(toro::pci_config_access_archetype&, pci_address, std::uint16_t,
                                std::uint16_t);
template toro::expected<toro::mcfg_info> toro::parse_mcfg(toro::phys_reader_archetype&, std::uint64_t);
template toro::expected<std::uint8_t> toro::intx_isa_irq(toro::pci_config_access_archetype&,
                                                         const toro::pci_function&);
template void toro::enable_msix(toro::pci_config_access_archetype&, pci_address, const toro::msix_info&);
template void toro::enable_msi(toro::pci_config_access_archetype&, pci_address, const toro::msi_info&,
                               toro::msi_message);

namespace {

std::string what(const toro::error& e) {
    return std::string{e.what.data(), e.what.size()};
}

// ---- 0xCF8 / 0xCFC ----

using port_access = toro::port_config_access<mock_port_io32>;
constexpr std::uint16_t cf8 = 0xcf8, cfc = 0xcfc;

TEST_CASE("port_config_access writes the exact CONFIG_ADDRESS word, then reads 0xCFC", "[pci]") {
    port_access a;
    a.io()
        .expect_out32(cf8, 0x80000000u | 1u << 16 | 2u << 11 | 3u << 8 | 0x10)
        .expect_in32(cfc, 0xfebf1000)
        .expect_out32(cf8, 0x80ffff00u | 0xfc) // bus 255, device 31, function 7, last dword
        .expect_in32(cfc, 0x12345678)
        .expect_out32(cf8, 0x80000000u | 0x3c) // offset 0x3e: the dword's offset, low bits dropped
        .expect_in32(cfc, 0x00000000);
    CHECK(a.read32({1, 2, 3}, 0x10) == 0xfebf1000);
    CHECK(a.read32({255, 31, 7}, 0xfc) == 0x12345678);
    CHECK(a.read32({0, 0, 0}, 0x3e) == 0);
    INFO(a.io().report());
    CHECK(a.io().done());
}

TEST_CASE("port_config_access writes address then data; beyond 256 bytes it touches no port", "[pci]") {
    port_access a;
    a.io().expect_out32(cf8, 0x80000000u | 3u << 11 | 0x04).expect_out32(cfc, 0x00000007);
    a.write32({0, 3, 0}, 0x04, 7);
    CHECK(a.read32({0, 3, 0}, 0x100) == 0xffffffff); // extended space: no mechanism #1 access at all
    a.write32({0, 3, 0}, 0x100, 1);
    INFO(a.io().report());
    CHECK(a.io().done());
}

TEST_CASE("port_config_access: 8- and 16-bit reads are one dword access, shifted", "[pci]") {
    port_access a;
    a.io()
        .expect_out32(cf8, 0x80000000u | 2u << 11 | 0x0c)
        .expect_in32(cfc, 0x00800000) // header type byte 0x80 at offset 0x0e
        .expect_out32(cf8, 0x80000000u | 2u << 11 | 0x00)
        .expect_in32(cfc, 0x10011af4);
    CHECK(toro::pci_read8(a, {0, 2, 0}, 0x0e) == 0x80);
    CHECK(toro::pci_read16(a, {0, 2, 0}, 0x02) == 0x1001);
    INFO(a.io().report());
    CHECK(a.io().done());
}

TEST_CASE("port_config_access::config_address matches the mechanism #1 layout", "[pci]") {
    STATIC_REQUIRE(port_access::config_address({0, 0, 0}, 0) == 0x80000000);
    STATIC_REQUIRE(port_access::config_address({0x12, 0x1f, 5}, 0x47) == 0x8012fd44);
}

// ---- ECAM ----

TEST_CASE("ecam_offset is bus << 20 | device << 15 | function << 12 | offset", "[pci]") {
    STATIC_REQUIRE(toro::ecam_offset({0, 0, 0}, 0) == 0);
    STATIC_REQUIRE(toro::ecam_offset({1, 0, 0}, 0) == 0x100000);
    STATIC_REQUIRE(toro::ecam_offset({0, 1, 0}, 0) == 0x8000);
    STATIC_REQUIRE(toro::ecam_offset({0, 0, 1}, 0) == 0x1000);
    STATIC_REQUIRE(toro::ecam_offset({255, 31, 7}, 0xffc) == 0xffffffc);
    STATIC_REQUIRE(toro::ecam_offset({3, 4, 5}, 0x104) == 0x325104);
}

TEST_CASE("kernel_config_access: ECAM for the buses MCFG covers, ports for the others and without MCFG",
          "[pci]") {
    std::vector<std::uint32_t> window((1u << 20) / 4, 0xffffffff); // bus 0 only
    window[(2u << 15 | 0x10) / 4] = 0xfebf0000;
    toro::kernel_config_access<mock_port_io32> a{mock_port_io32{},
                                                 toro::ecam_config_access{window.data(), 0, 0}};
    CHECK(a.uses_ecam());
    CHECK(a.read32({0, 2, 0}, 0x10) == 0xfebf0000); // ECAM: no port touched
    a.write32({0, 2, 0}, 0x14, 0x1234);
    CHECK(window[(2u << 15 | 0x14) / 4] == 0x1234);

    // Bus 1 is not in the region: the port mechanism (and only for it: the ECAM accesses above touched no
    // port, or the script would have seen them).
    a.ports()
        .io()
        .expect_out32(cf8, 0x80000000u | 1u << 16 | 0x00)
        .expect_in32(cfc, 0x10008086)
        .expect_out32(cf8, 0x80000000u | 1u << 16 | 0x04)
        .expect_out32(cfc, 0x7);
    CHECK(a.read32({1, 0, 0}, 0) == 0x10008086);
    a.write32({1, 0, 0}, 0x04, 0x7);
    INFO(a.ports().io().report());
    CHECK(a.ports().io().done());

    // Without MCFG everything goes through the ports.
    toro::kernel_config_access<mock_port_io32> no_mcfg;
    CHECK_FALSE(no_mcfg.uses_ecam());
    no_mcfg.ports().io().expect_out32(cf8, 0x80000000u | 2u << 11 | 0x10).expect_in32(cfc, 0xc001);
    CHECK(no_mcfg.read32({0, 2, 0}, 0x10) == 0xc001);
    CHECK(no_mcfg.ports().io().done());
}

TEST_CASE("ecam_config_access reaches bus start..end through a window that starts at start_bus", "[pci]") {
    // Two buses (4 and 5) of ECAM in host memory: the window maps bus 4.
    std::vector<std::uint32_t> window((2u << 20) / 4, 0xffffffff);
    toro::ecam_config_access a{window.data(), 4, 5};
    CHECK(a.window_size() == 2u << 20);

    a.write32({5, 3, 2}, 0x10, 0xfebf0000);
    CHECK(window[((1u << 20) | 3u << 15 | 2u << 12 | 0x10) / 4] == 0xfebf0000);
    CHECK(a.read32({5, 3, 2}, 0x10) == 0xfebf0000);

    window[(7u << 15 | 0x100) / 4] = 0x00010001; // extended configuration space: reachable through ECAM
    CHECK(a.read32({4, 7, 0}, 0x100) == 0x00010001);
    window[0] = 0x12378086;
    CHECK(toro::pci_read16(a, {4, 0, 0}, 0x02) == 0x1237);

    // Buses outside the MCFG range and offsets past 4 KiB have no configuration space: all ones, no write.
    CHECK(a.read32({3, 0, 0}, 0) == 0xffffffff);
    CHECK(a.read32({6, 0, 0}, 0) == 0xffffffff);
    CHECK(a.read32({4, 0, 0}, 0x1000) == 0xffffffff);
    const std::vector<std::uint32_t> before = window;
    a.write32({6, 0, 0}, 0, 0);
    a.write32({3, 31, 7}, 0xffc, 0);
    CHECK(window == before);
}

// ---- ACPI MCFG ----

// A fake physical memory with ACPI tables built byte by byte.
struct acpi_image {
    std::uint64_t base = 0x10000;
    std::vector<std::byte> bytes = std::vector<std::byte>(0x1000);

    void put(std::uint64_t at, std::uint64_t v, int n) {
        for (int i = 0; i < n; ++i) bytes.at(at - base + i) = static_cast<std::byte>(v >> (8 * i));
    }
    std::uint8_t get(std::uint64_t at) const { return static_cast<std::uint8_t>(bytes.at(at - base)); }
    void fix_checksum(std::uint64_t at, std::size_t len) {
        put(at + 9, 0, 1);
        std::uint8_t sum = 0;
        for (std::size_t i = 0; i < len; ++i) sum = static_cast<std::uint8_t>(sum + get(at + i));
        put(at + 9, static_cast<std::uint8_t>(-sum), 1);
    }
    // Header with signature and length, then body; checksum fixed.
    std::size_t table(std::uint64_t at, const char* sig, const std::vector<std::uint8_t>& body) {
        const std::size_t length = 36 + body.size();
        for (int i = 0; i < 4; ++i) put(at + i, static_cast<std::uint8_t>(sig[i]), 1);
        put(at + 4, length, 4);
        put(at + 8, 1, 1);
        for (std::size_t i = 0; i < body.size(); ++i) put(at + 36 + i, body[i], 1);
        fix_checksum(at, length);
        return length;
    }
    toro::span_phys_reader reader(std::size_t size = 0) const {
        return {std::span<const std::byte>{bytes.data(), size ? size : bytes.size()}, base};
    }
};

struct mcfg_body {
    std::vector<std::uint8_t> bytes = std::vector<std::uint8_t>(8, 0); // reserved
    mcfg_body& entry(std::uint64_t base, std::uint16_t segment, std::uint8_t start, std::uint8_t end) {
        for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<std::uint8_t>(base >> (8 * i)));
        bytes.push_back(static_cast<std::uint8_t>(segment));
        bytes.push_back(static_cast<std::uint8_t>(segment >> 8));
        bytes.push_back(start);
        bytes.push_back(end);
        for (int i = 0; i < 4; ++i) bytes.push_back(0);
        return *this;
    }
};

constexpr std::uint64_t mcfg_at = 0x10100;

TEST_CASE("parse_mcfg reads every allocation", "[pci]") {
    acpi_image img;
    img.table(mcfg_at, "MCFG",
              mcfg_body{}.entry(0xb0000000, 0, 0, 255).entry(0x4000000000, 1, 0x10, 0x1f).bytes);
    auto r = img.reader();
    auto m = toro::parse_mcfg(r, mcfg_at);
    REQUIRE(m);
    REQUIRE(m->count == 2);
    CHECK(m->entries[0].base_address == 0xb0000000);
    CHECK(m->entries[0].segment == 0);
    CHECK(m->entries[0].start_bus == 0);
    CHECK(m->entries[0].end_bus == 255);
    CHECK(m->entries[0].window_size() == 256u << 20);
    CHECK(m->entries[1].base_address == 0x4000000000);
    CHECK(m->entries[1].segment == 1);
    CHECK(m->entries[1].start_bus == 0x10);
    CHECK(m->entries[1].end_bus == 0x1f);
    CHECK(m->entries[1].window_address() == 0x4000000000 + (0x10ull << 20));
    CHECK(m->entries[1].window_size() == 16u << 20);
    CHECK(m->find(1, 0x15) == &m->entries[1]);
    CHECK(m->find(1, 0x20) == nullptr);
    CHECK(m->find(0) == &m->entries[0]);
}

TEST_CASE("parse_mcfg: an MCFG with no entries is valid and empty", "[pci]") {
    acpi_image img;
    img.table(mcfg_at, "MCFG", mcfg_body{}.bytes);
    auto r = img.reader();
    auto m = toro::parse_mcfg(r, mcfg_at);
    REQUIRE(m);
    CHECK(m->count == 0);
}

TEST_CASE("parse_mcfg rejects a bad checksum, a truncated table and broken fields", "[pci]") {
    acpi_image img;
    const auto length = img.table(mcfg_at, "MCFG", mcfg_body{}.entry(0xe0000000, 0, 0, 63).bytes);
    auto check_error = [&](toro::span_phys_reader r, const std::string& words) {
        auto m = toro::parse_mcfg(r, mcfg_at);
        REQUIRE_FALSE(m);
        CHECK_THAT(what(m.error()), Catch::Contains(words));
    };
    SECTION("bad checksum") {
        img.put(mcfg_at + 44, 0xf0000000, 4); // the base changes, the checksum does not
        check_error(img.reader(), "checksum");
    }
    SECTION("truncated: the length runs past readable memory") {
        check_error(img.reader(mcfg_at - img.base + length - 1), "truncated");
    }
    SECTION("header unreadable") {
        check_error(img.reader(mcfg_at - img.base + 20), "unreadable");
    }
    SECTION("length leaves a partial entry") {
        img.put(mcfg_at + 4, length - 4, 4);
        img.fix_checksum(mcfg_at, length - 4);
        check_error(img.reader(), "partial");
    }
    SECTION("length shorter than the 44-byte header") {
        img.put(mcfg_at + 4, 40, 4);
        img.fix_checksum(mcfg_at, 40);
        check_error(img.reader(), "44-byte");
    }
    SECTION("wrong signature") {
        img.put(mcfg_at, 'X', 1);
        check_error(img.reader(), "signature");
    }
    SECTION("start bus above end bus") {
        img.table(mcfg_at, "MCFG", mcfg_body{}.entry(0xe0000000, 0, 9, 8).bytes);
        check_error(img.reader(), "start bus");
    }
}

TEST_CASE("find_mcfg goes through the RSDT, and its entry gives the ECAM window", "[pci]") {
    acpi_image img;
    constexpr std::uint64_t rsdt = 0x10000, other = 0x10040;
    img.table(other, "FACP", std::vector<std::uint8_t>(8, 0));
    img.table(mcfg_at, "MCFG", mcfg_body{}.entry(0xb0000000, 0, 0, 255).bytes);
    img.table(rsdt, "RSDT", {0x40, 0x00, 0x01, 0x00, 0x00, 0x01, 0x01, 0x00}); // other, mcfg_at
    auto r = img.reader();
    auto m = toro::find_mcfg(r, toro::acpi_root{rsdt, false});
    REQUIRE(m);
    REQUIRE(m->count == 1);
    CHECK(m->entries[0].window_address() == 0xb0000000);

    img.table(rsdt, "RSDT", {0x40, 0x00, 0x01, 0x00});
    auto r2 = img.reader();
    auto none = toro::find_mcfg(r2, toro::acpi_root{rsdt, false});
    REQUIRE_FALSE(none);
    CHECK_THAT(what(none.error()), Catch::Contains("not found"));
}

// ---- the fake machine: QEMU's pc, plus bridges ----

constexpr fake_function_spec host_bridge{.vendor = 0x8086,
                                         .device = 0x1237,
                                         .class_code = 0x06,
                                         .subclass = 0x00,
                                         .interrupt_pin = 0,
                                         .interrupt_line = 0,
                                         .command = 0x0106};
fake_function_spec pci_bridge(std::uint16_t device = 0x0001) {
    return {.vendor = 0x1b36,
            .device = device,
            .class_code = 0x06,
            .subclass = 0x04,
            .header_layout = toro::pci::header_bridge};
}

// 00:00.0 host bridge; 00:01.0/1/3 PIIX3 ISA, IDE, ACPI (multi-function, .2 absent); 00:02.0 virtio-blk;
// 00:05.0 bridge to bus 1; 01:00.0 bridge to bus 2; 01:04.0 and 02:03.0 devices behind them; 00:06.0 a
// single-function device that answers on function 2 as well; 07:00.0 on a bus no bridge leads to.
fake_pci_bus make_machine() {
    fake_pci_bus bus;
    bus.add({0, 0, 0}, host_bridge);
    bus.add(
        {0, 1, 0},
        {.vendor = 0x8086, .device = 0x7000, .class_code = 0x06, .subclass = 0x01, .multi_function = true});
    bus.add({0, 1, 1},
            {.vendor = 0x8086, .device = 0x7010, .class_code = 0x01, .subclass = 0x01, .prog_if = 0x80});
    bus.add({0, 1, 3},
            {.vendor = 0x8086, .device = 0x7113, .class_code = 0x06, .subclass = 0x80, .revision = 3});
    bus.add({0, 2, 0}, {.vendor = 0x1af4, .device = 0x1001, .class_code = 0x01, .subclass = 0x00});
    bus.add({0, 5, 0}, pci_bridge()).bridge_buses(0, 1, 2);
    bus.add({1, 0, 0}, pci_bridge()).bridge_buses(1, 2, 2);
    bus.add({1, 4, 0}, {.vendor = 0x1af4, .device = 0x1000});
    bus.add({2, 3, 0}, {.vendor = 0x8086, .device = 0x100e, .interrupt_pin = 2, .interrupt_line = 10});
    bus.add({0, 6, 0}, {.vendor = 0x1234, .device = 0x1111, .class_code = 0x03});
    bus.add({0, 6, 2}, {.vendor = 0x1234, .device = 0x1111, .class_code = 0x03});
    bus.add({7, 0, 0}, {.vendor = 0x1af4, .device = 0x1042});
    return bus;
}

std::vector<std::uint16_t> scan(fake_pci_bus& bus, toro::pci_scan_options opt = {},
                                toro::pci_scan_result* result = nullptr) {
    std::vector<std::uint16_t> seen;
    auto r = toro::for_each_function(
        bus, [&](const pci_function& f) { seen.push_back(f.address.bdf()); }, opt);
    if (result != nullptr) *result = r;
    return seen;
}

constexpr std::uint16_t bdf(unsigned b, unsigned d, unsigned f) {
    return static_cast<std::uint16_t>(b << 8 | d << 3 | f);
}

TEST_CASE("read_function decodes the header; an absent function is an error naming its BDF", "[pci]") {
    auto bus = make_machine();
    auto f = toro::read_function(bus, {0, 1, 1});
    REQUIRE(f);
    CHECK(f->vendor_id == 0x8086);
    CHECK(f->device_id == 0x7010);
    CHECK(f->class_code == 0x01);
    CHECK(f->subclass == 0x01);
    CHECK(f->prog_if == 0x80);
    CHECK(f->header_layout == toro::pci::header_general);
    CHECK_FALSE(f->multi_function);
    auto acpi = toro::read_function(bus, {0, 1, 3});
    REQUIRE(acpi);
    CHECK(acpi->revision == 3);
    auto isa = toro::read_function(bus, {0, 1, 0});
    REQUIRE(isa);
    CHECK(isa->multi_function);
    auto nic = toro::read_function(bus, {2, 3, 0});
    REQUIRE(nic);
    CHECK(nic->interrupt_pin == 2);
    CHECK(nic->interrupt_line == 10);
    auto bridge = toro::read_function(bus, {0, 5, 0});
    REQUIRE(bridge);
    CHECK(bridge->is_bridge());
    CHECK(toro::read_function(bus, {0, 0, 0})->is_host_bridge());

    auto absent = toro::read_function(bus, {0, 1, 2});
    REQUIRE_FALSE(absent);
    CHECK(absent.error().value == bdf(0, 1, 2));
}

TEST_CASE("for_each_function follows bridges and multi-function devices", "[pci]") {
    auto bus = make_machine();
    toro::pci_scan_result r;
    const auto seen = scan(bus, {}, &r);
    // Bus 0 in device order (00:01.2 absent; 00:06.2 ignored: function 0 is single-function), then bus 1
    // behind 00:05.0, then bus 2 behind 01:00.0. Bus 7 has no bridge leading to it.
    const std::vector<std::uint16_t> expected{bdf(0, 0, 0), bdf(0, 1, 0), bdf(0, 1, 1), bdf(0, 1, 3),
                                              bdf(0, 2, 0), bdf(0, 5, 0), bdf(0, 6, 0), bdf(1, 0, 0),
                                              bdf(1, 4, 0), bdf(2, 3, 0)};
    CHECK(seen == expected);
    CHECK(r.functions == expected.size());
    CHECK(r.buses == 3);
    CHECK(r.bridges_skipped == 0);
    CHECK_FALSE(r.stopped);
}

TEST_CASE("for_each_function brute force finds buses no bridge leads to, up to last_bus", "[pci]") {
    auto bus = make_machine();
    toro::pci_scan_result r;
    auto seen = scan(bus, {.how = toro::pci_scan_options::mode::brute_force}, &r);
    CHECK(r.buses == 256);
    CHECK(seen.size() == 11);
    CHECK(seen.back() == bdf(7, 0, 0));

    seen = scan(bus, {.how = toro::pci_scan_options::mode::brute_force, .last_bus = 6}, &r);
    CHECK(r.buses == 7);
    CHECK(seen.size() == 10);
    // In bridges mode the bound stops bus 2 from being queued.
    seen = scan(bus, {.last_bus = 1}, &r);
    CHECK(r.buses == 2);
    CHECK(r.bridges_skipped == 1);
    CHECK(seen.back() == bdf(1, 4, 0));
}

TEST_CASE("for_each_function stops when the callback returns false", "[pci]") {
    auto bus = make_machine();
    std::vector<std::uint16_t> seen;
    auto r = toro::for_each_function(bus, [&](const pci_function& f) {
        seen.push_back(f.address.bdf());
        return f.vendor_id != 0x1af4; // stop at the first virtio device
    });
    CHECK(r.stopped);
    CHECK(seen.back() == bdf(0, 2, 0));
    CHECK(r.functions == 5);
}

TEST_CASE("for_each_function survives bridges that point back, nowhere or at the same bus twice", "[pci]") {
    auto bus = make_machine();
    bus.at({1, 0, 0}).bridge_buses(1, 0, 0);                // unconfigured: secondary 0
    bus.add({1, 5, 0}, pci_bridge()).bridge_buses(1, 1, 1); // loops to its own bus
    bus.add({0, 7, 0}, pci_bridge()).bridge_buses(0, 1, 1); // a second bridge to bus 1
    toro::pci_scan_result r;
    const auto seen = scan(bus, {}, &r);
    CHECK(r.buses == 2);
    CHECK(r.bridges_skipped == 3);
    CHECK(std::count(seen.begin(), seen.end(), bdf(1, 4, 0)) == 1);
}

TEST_CASE("for_each_function: a multi-function host bridge roots one bus per function", "[pci]") {
    fake_pci_bus bus;
    auto mf_host = host_bridge;
    mf_host.multi_function = true;
    bus.add({0, 0, 0}, mf_host);
    bus.add({0, 0, 1}, host_bridge);
    bus.add({1, 2, 0}, {.vendor = 0x1af4, .device = 0x1001});
    const auto seen = scan(bus);
    CHECK(seen == std::vector<std::uint16_t>{bdf(0, 0, 0), bdf(0, 0, 1), bdf(1, 2, 0)});
}

// ---- BARs ----

// A device with one BAR of each kind, as firmware left it: decoding on.
fake_pci_bus make_bar_device() {
    fake_pci_bus bus;
    bus.add({0, 3, 0}, {.vendor = 0x1af4, .device = 0x1001, .command = 0x0007})
        .bar(0, fake_bar::io(0x40, 0xc040))
        .bar(1, fake_bar::mem32(0x1000, 0xfebf1000))
        .bar(2, fake_bar::mem64(0x4000, 0x8'0000'0000, true)) // above 4 GiB, prefetchable; BAR 3 is its top
        .bar(4, fake_bar::mem32(0x100000, 0xfd000000, true));
    return bus; // BAR 5 unimplemented
}

TEST_CASE("read_bars decodes and sizes I/O, 32-bit and 64-bit memory BARs", "[pci]") {
    auto bus = make_bar_device();
    auto fn = toro::read_function(bus, {0, 3, 0});
    REQUIRE(fn);
    auto bars = toro::read_bars(bus, *fn);
    REQUIRE(bars);
    REQUIRE(bars->count == 6);
    const auto& b = *bars;
    CHECK(b[0].kind == bar_kind::io);
    CHECK(b[0].address == 0xc040);
    CHECK(b[0].size == 0x40);
    CHECK(b[1].kind == bar_kind::mem32);
    CHECK(b[1].address == 0xfebf1000);
    CHECK(b[1].size == 0x1000);
    CHECK_FALSE(b[1].prefetchable);
    CHECK(b[2].kind == bar_kind::mem64);
    CHECK(b[2].address == 0x8'0000'0000);
    CHECK(b[2].size == 0x4000);
    CHECK(b[2].prefetchable);
    CHECK(b[3].kind == bar_kind::upper_half);
    CHECK(b[3].index == 3);
    CHECK(b[4].kind == bar_kind::mem32);
    CHECK(b[4].size == 0x100000);
    CHECK(b[4].prefetchable);
    CHECK(b[5].kind == bar_kind::none);
    CHECK_FALSE(b[5].present());
    CHECK(b[5].size == 0);
}

TEST_CASE("BAR sizing turns decoding off, restores the BARs and the command register", "[pci]") {
    auto bus = make_bar_device();
    auto& dev = bus.at({0, 3, 0});
    dev.set16(toro::pci::status, 0x2010); // a pending received-master-abort (RW1C) must survive
    std::vector<std::uint32_t> before;
    for (std::uint16_t off = 0x10; off < 0x28; off += 4) before.push_back(dev.get32(off));
    auto fn = toro::read_function(bus, {0, 3, 0});
    REQUIRE(fn);
    REQUIRE(toro::read_bars(bus, *fn));
    CHECK(dev.bar_writes_while_decoding == 0);
    CHECK(dev.command_writes == 2); // off once for all BARs, then back
    CHECK(dev.get16(toro::pci::command) == 0x0007);
    CHECK(dev.get16(toro::pci::status) == 0x2010);
    std::vector<std::uint32_t> after;
    for (std::uint16_t off = 0x10; off < 0x28; off += 4) after.push_back(dev.get32(off));
    CHECK(after == before);

    // One BAR at a time does the same.
    auto one = toro::read_bar(bus, *fn, 1);
    REQUIRE(one);
    CHECK(one->size == 0x1000);
    CHECK(dev.bar_writes_while_decoding == 0);
    CHECK(dev.get16(toro::pci::command) == 0x0007);

    // With decoding already off, the command register is not touched at all.
    dev.set16(toro::pci::command, 0x0004);
    const auto writes = dev.command_writes;
    REQUIRE(toro::read_bars(bus, *fn));
    CHECK(dev.command_writes == writes);
}

TEST_CASE("BAR sizing: 64-bit BARs of 4 GiB and more, 16-bit I/O decoders", "[pci]") {
    fake_pci_bus bus;
    bus.add({0, 4, 0})
        .bar(0, fake_bar::mem64(0x2'0000'0000, 0x40'0000'0000, true)) // 8 GiB: no writable low address bits
        .bar(2, fake_bar::io(0x100, 0xd000, true))
        .bar(3, fake_bar::mem64(0x10, 0xfe000000)); // tiny, below 4 GiB
    auto fn = toro::read_function(bus, {0, 4, 0});
    REQUIRE(fn);
    auto b = toro::read_bars(bus, *fn);
    REQUIRE(b);
    CHECK((*b)[0].kind == bar_kind::mem64);
    CHECK((*b)[0].size == 0x2'0000'0000);
    CHECK((*b)[0].address == 0x40'0000'0000);
    CHECK((*b)[2].kind == bar_kind::io);
    CHECK((*b)[2].size == 0x100);
    CHECK((*b)[2].address == 0xd000);
    CHECK((*b)[3].kind == bar_kind::mem64);
    CHECK((*b)[3].size == 0x10);
    CHECK((*b)[3].address == 0xfe000000);
    CHECK((*b)[4].kind == bar_kind::upper_half);
}

TEST_CASE("BAR sizing reports nonsense and still restores everything", "[pci]") {
    fake_pci_bus bus;
    auto& dev = bus.add({0, 4, 0});
    std::string words;
    SECTION("a size that is not a power of two") {
        dev.bar(1, fake_bar::mem32(0x3000, 0xfe000000)); // mask 0xffffd000 has a hole at bit 13
        words = "not a power of two";
    }
    SECTION("an I/O size that is not a power of two") {
        dev.bar(0, fake_bar::io(0x30, 0xc000));
        words = "not a power of two";
    }
    SECTION("the reserved memory type") {
        dev.bar(1, fake_bar::mem32(0x1000, 0xfe000000));
        dev.set32(0x14, 0xfe000006);
        words = "reserved memory type";
    }
    SECTION("a 64-bit BAR in the last slot") {
        dev.bar(5, fake_bar::mem64(0x1000, 0xfe000000));
        words = "upper half";
    }
    const std::uint32_t bar1 = dev.get32(0x14);
    auto fn = toro::read_function(bus, {0, 4, 0});
    REQUIRE(fn);
    auto b = toro::read_bars(bus, *fn);
    REQUIRE_FALSE(b);
    CHECK_THAT(what(b.error()), Catch::Contains(words));
    CHECK(dev.get16(toro::pci::command) == 0x0007);
    CHECK(dev.get32(0x14) == bar1);
    CHECK(dev.bar_writes_while_decoding == 0);
}

TEST_CASE("read_bars: a bridge has two BARs; a host bridge's decoding is never turned off", "[pci]") {
    fake_pci_bus bus;
    bus.add({0, 5, 0}, pci_bridge()).bar(0, fake_bar::mem32(0x1000, 0xfe800000)).bridge_buses(0, 1, 1);
    bus.add({0, 0, 0}, host_bridge).bar(0, fake_bar::mem32(0x10000, 0xfe000000));
    auto bridge = toro::read_function(bus, {0, 5, 0});
    REQUIRE(bridge);
    auto b = toro::read_bars(bus, *bridge);
    REQUIRE(b);
    CHECK(b->count == 2);
    CHECK((*b)[0].size == 0x1000);
    CHECK(bus.at({0, 5, 0}).get8(toro::pci::secondary_bus) == 1); // 0x18.. are not BARs: untouched
    auto bad = toro::read_bar(bus, *bridge, 2);
    REQUIRE_FALSE(bad);
    CHECK(bad.error().value == 2);

    auto host = toro::read_function(bus, {0, 0, 0});
    REQUIRE(host);
    auto hb = toro::read_bars(bus, *host);
    REQUIRE(hb);
    CHECK((*hb)[0].size == 0x10000);
    CHECK(bus.at({0, 0, 0}).command_writes == 0);
}

// ---- command register ----

TEST_CASE("enable_memory, enable_io and enable_bus_master set one bit and return the old register", "[pci]") {
    fake_pci_bus bus;
    auto& dev = bus.add({0, 3, 0}, {.command = 0});
    dev.set16(toro::pci::status, 0xf910); // every RW1C error bit pending: none may be cleared by a helper
    const pci_address a{0, 3, 0};
    auto old = toro::enable_memory(bus, a);
    CHECK(old.value() == 0);
    CHECK(toro::read_command(bus, a).memory_space());
    CHECK_FALSE(toro::read_command(bus, a).io_space());
    old = toro::enable_io(bus, a);
    CHECK(old.memory_space());
    CHECK(toro::read_command(bus, a).io_space());
    old = toro::enable_bus_master(bus, a);
    CHECK_FALSE(old.bus_master());
    CHECK(toro::read_command(bus, a).value() == 0x0007);
    CHECK(dev.command_writes == 3);
    toro::enable_bus_master(bus, a); // already on: no write
    CHECK(dev.command_writes == 3);
    CHECK(toro::read_status(bus, a).value() == 0xf910);
    CHECK(toro::read_status(bus, a).received_master_abort());
}

TEST_CASE("pci_write16/8 merge into the dword but never write ones into RW1C status bits", "[pci]") {
    fake_pci_bus bus;
    auto& dev = bus.add({0, 3, 0}, {.interrupt_pin = 1, .interrupt_line = 11});
    dev.set16(toro::pci::status, 0x2000);
    toro::pci_write16(bus, {0, 3, 0}, toro::pci::command, 0x0406);
    CHECK(dev.get16(toro::pci::command) == 0x0406);
    CHECK(dev.get16(toro::pci::status) == 0x2000);
    toro::pci_write8(bus, {0, 3, 0}, toro::pci::interrupt_line, 5);
    CHECK(dev.get8(toro::pci::interrupt_line) == 5);
    CHECK(dev.get8(toro::pci::interrupt_pin) == 1);
    // The fake does model RW1C: writing the bit back clears it.
    toro::pci_write32(bus, {0, 3, 0}, toro::pci::command, 0x20000406);
    CHECK(dev.get16(toro::pci::status) == 0x0000);
}

// ---- capabilities ----

// A modern virtio-net as QEMU shows it: MSI-X, then five virtio vendor capabilities.
fake_pci_bus make_virtio_device(std::uint8_t* msix_at = nullptr) {
    fake_pci_bus bus;
    auto& d = bus.add({0, 3, 0}, {.vendor = 0x1af4, .device = 0x1041});
    d.bar(1, fake_bar::mem32(0x1000, 0xfebf1000)).bar(4, fake_bar::mem64(0x4000, 0xfe000000, true));
    const auto m = d.add_msix(3, 1, 0x000, 1, 0x800);
    if (msix_at != nullptr) *msix_at = m;
    d.add_virtio_cap(5, 0, 0, 0);           // PCI configuration access
    d.add_virtio_cap(2, 4, 0x3000, 0x1000); // notify (the real one has an extra multiplier dword)
    d.add_virtio_cap(4, 4, 0x2000, 0x1000); // device
    d.add_virtio_cap(3, 4, 0x1000, 0x1000); // ISR
    d.add_virtio_cap(1, 4, 0x0000, 0x1000); // common
    return bus;
}

TEST_CASE("for_each_capability walks the list in order", "[pci]") {
    std::uint8_t msix_at = 0;
    auto bus = make_virtio_device(&msix_at);
    std::vector<toro::pci_capability> caps;
    auto n = toro::for_each_capability(bus, {0, 3, 0}, [&](toro::pci_capability c) { caps.push_back(c); });
    REQUIRE(n);
    CHECK(*n == 6);
    REQUIRE(caps.size() == 6);
    CHECK(caps[0].id == toro::pci::cap_msix);
    CHECK(caps[0].offset == 0x40);
    CHECK(caps[0].offset == msix_at);
    for (std::size_t i = 1; i < caps.size(); ++i) {
        CHECK(caps[i].id == toro::pci::cap_vendor);
        CHECK(caps[i].offset > caps[i - 1].offset);
        CHECK(caps[i].offset % 4 == 0);
    }
    // The 4th vendor capability is the ISR one (cfg_type 3, at cap + 3).
    auto isr = toro::find_capability(bus, {0, 3, 0}, toro::pci::cap_vendor, 3);
    REQUIRE(isr);
    CHECK(toro::pci_read8(bus, {0, 3, 0}, static_cast<std::uint16_t>(*isr + 3)) == 3);
    auto msi = toro::find_capability(bus, {0, 3, 0}, toro::pci::cap_msi);
    REQUIRE(msi);
    CHECK(*msi == 0);
}

TEST_CASE("for_each_capability: no list when status bit 4 is clear", "[pci]") {
    fake_pci_bus bus;
    auto& d = bus.add({0, 3, 0});
    d.set8(toro::pci::capability_pointer, 0x40); // garbage pointer, but the status bit says no list
    auto n = toro::for_each_capability(bus, {0, 3, 0}, [](toro::pci_capability) {});
    REQUIRE(n);
    CHECK(*n == 0);
}

TEST_CASE("for_each_capability rejects loops and bad pointers", "[pci]") {
    auto bus = make_virtio_device();
    auto& d = bus.at({0, 3, 0});
    std::uint8_t last = 0;
    REQUIRE(toro::for_each_capability(bus, {0, 3, 0}, [&](toro::pci_capability c) { last = c.offset; }));
    std::string words;
    std::uint64_t value = 0;
    SECTION("the last entry points back to the first") {
        d.set8(static_cast<std::uint16_t>(last + 1), 0x40);
        words = "loops";
        value = 0x40;
    }
    SECTION("an entry points to itself") {
        d.set8(0x41, 0x40);
        words = "loops";
        value = 0x40;
    }
    SECTION("a pointer into the header") {
        d.set8(static_cast<std::uint16_t>(last + 1), 0x20);
        words = "header";
        value = 0x20;
    }
    SECTION("a misaligned pointer") {
        d.set8(toro::pci::capability_pointer, 0x41);
        words = "aligned";
        value = 0x41;
    }
    std::size_t visits = 0;
    auto n = toro::for_each_capability(bus, {0, 3, 0}, [&](toro::pci_capability) { ++visits; });
    REQUIRE_FALSE(n);
    CHECK_THAT(what(n.error()), Catch::Contains(words));
    CHECK(n.error().value == value);
    CHECK(visits <= toro::pci::max_capabilities);
    auto f = toro::find_capability(bus, {0, 3, 0}, toro::pci::cap_msi);
    CHECK_FALSE(f);
}

TEST_CASE("for_each_capability: 48 entries fill the space; each is visited once", "[pci]") {
    fake_pci_bus bus;
    auto& d = bus.add({0, 3, 0});
    for (int i = 0; i < 48; ++i) d.add_capability(static_cast<std::uint8_t>(0x80 + i), {0, 0});
    auto n = toro::for_each_capability(bus, {0, 3, 0}, [](toro::pci_capability) {});
    REQUIRE(n);
    CHECK(*n == 48);
    auto last = toro::find_capability(bus, {0, 3, 0}, 0x80 + 47);
    REQUIRE(last);
    CHECK(*last == 0xfc);
}

// ---- MSI-X and MSI ----

TEST_CASE("parse_msix reads table size, table and PBA location", "[pci]") {
    std::uint8_t at = 0;
    auto bus = make_virtio_device(&at);
    auto m = toro::parse_msix(bus, {0, 3, 0}, at);
    REQUIRE(m);
    CHECK(m->cap_offset == at);
    CHECK(m->table_size == 3);
    CHECK(m->table_bir == 1);
    CHECK(m->table_offset == 0);
    CHECK(m->pba_bir == 1);
    CHECK(m->pba_offset == 0x800);
    CHECK_FALSE(m->enabled);
    CHECK_FALSE(m->function_masked);

    auto fn = toro::read_function(bus, {0, 3, 0});
    REQUIRE(fn);
    auto bars = toro::read_bars(bus, *fn);
    REQUIRE(bars);
    CHECK(toro::check_msix_bars(*m, *bars));

    // Enable and function mask are writable, and parsed.
    toro::pci_write16(bus, {0, 3, 0}, static_cast<std::uint16_t>(at + 2), 0xc000 | 2);
    auto on = toro::parse_msix(bus, {0, 3, 0}, at);
    REQUIRE(on);
    CHECK(on->enabled);
    CHECK(on->function_masked);
    CHECK(on->table_size == 3); // read-only
}

TEST_CASE("parse_msix: large tables, bad BIRs, tables outside their BAR", "[pci]") {
    fake_pci_bus bus;
    auto& d = bus.add({0, 3, 0});
    d.bar(0, fake_bar::mem32(0x10000, 0xfe000000)).bar(2, fake_bar::io(0x20, 0xc000));
    const auto big = d.add_msix(2048, 0, 0x0, 0, 0x8000); // 32 KiB table, 256-byte PBA
    const auto bad_table = d.add_msix(1, 6, 0x0, 0, 0x800);
    const auto bad_pba = d.add_msix(1, 0, 0x0, 7, 0x800);
    const auto io_bar = d.add_msix(1, 2, 0x0, 0, 0x800);
    const auto past_end = d.add_msix(64, 0, 0xfc08, 0, 0x100); // 1 KiB from 0xfc08: past 64 KiB
    auto fn = toro::read_function(bus, {0, 3, 0});
    REQUIRE(fn);
    auto bars = toro::read_bars(bus, *fn);
    REQUIRE(bars);

    auto m = toro::parse_msix(bus, {0, 3, 0}, big);
    REQUIRE(m);
    CHECK(m->table_size == 2048);
    CHECK(m->pba_offset == 0x8000);
    CHECK(toro::check_msix_bars(*m, *bars));
    auto t = toro::parse_msix(bus, {0, 3, 0}, bad_table);
    REQUIRE_FALSE(t);
    CHECK_THAT(what(t.error()), Catch::Contains("table BIR"));
    auto p = toro::parse_msix(bus, {0, 3, 0}, bad_pba);
    REQUIRE_FALSE(p);
    CHECK_THAT(what(p.error()), Catch::Contains("PBA BIR"));
    auto io = toro::parse_msix(bus, {0, 3, 0}, io_bar);
    REQUIRE(io);
    CHECK_FALSE(toro::check_msix_bars(*io, *bars));
    auto end = toro::parse_msix(bus, {0, 3, 0}, past_end);
    REQUIRE(end);
    auto fits = toro::check_msix_bars(*end, *bars);
    REQUIRE_FALSE(fits);
    CHECK_THAT(what(fits.error()), Catch::Contains("table does not fit"));
    auto not_msix = toro::parse_msi(bus, {0, 3, 0}, big);
    REQUIRE_FALSE(not_msix);
}

TEST_CASE("parse_msi: register layout follows the 64-bit and per-vector masking flags", "[pci]") {
    fake_pci_bus bus;
    auto& d = bus.add({0, 3, 0});
    const auto plain = d.add_msi(0, false, false);
    const auto wide = d.add_msi(5, true, true);
    const auto masked32 = d.add_msi(2, false, true);
    const auto reserved = d.add_msi(6, true, false);

    auto m = toro::parse_msi(bus, {0, 3, 0}, plain);
    REQUIRE(m);
    CHECK_FALSE(m->address_64bit);
    CHECK_FALSE(m->per_vector_masking);
    CHECK(m->vectors == 1);
    CHECK(m->data_offset == 0x08);
    CHECK(m->mask_offset == 0);

    auto w = toro::parse_msi(bus, {0, 3, 0}, wide);
    REQUIRE(w);
    CHECK(w->address_64bit);
    CHECK(w->per_vector_masking);
    CHECK(w->vectors == 32);
    CHECK(w->data_offset == 0x0c);
    CHECK(w->mask_offset == 0x10);
    CHECK(w->pending_offset == 0x14);

    auto m32 = toro::parse_msi(bus, {0, 3, 0}, masked32);
    REQUIRE(m32);
    CHECK(m32->vectors == 4);
    CHECK(m32->data_offset == 0x08);
    CHECK(m32->mask_offset == 0x0c);
    CHECK(m32->pending_offset == 0x10);

    auto r = toro::parse_msi(bus, {0, 3, 0}, reserved);
    REQUIRE_FALSE(r);
    CHECK_THAT(what(r.error()), Catch::Contains("reserved"));
    CHECK_FALSE(toro::parse_msix(bus, {0, 3, 0}, plain));

    // The walk sees them in order and find_capability picks instances.
    auto second = toro::find_capability(bus, {0, 3, 0}, toro::pci::cap_msi, 1);
    REQUIRE(second);
    CHECK(*second == wide);
}

// ---- INTx ----

constexpr fake_function_spec piix3_isa{
    .vendor = 0x8086, .device = 0x7000, .class_code = 0x06, .subclass = 0x01, .multi_function = true};

// QEMU's pc: host bridge, PIIX3 at 00:01.0 whose PIRQA..D route bytes (register 0x60) are `routes`.
fake_pci_bus make_piix3_machine(std::uint32_t routes) {
    fake_pci_bus bus;
    bus.add({0, 0, 0}, host_bridge);
    bus.add({0, 1, 0}, piix3_isa).set32(toro::piix3_pirq_route, routes);
    return bus;
}

// The ISA IRQ of a function added at `at` with this pin and interrupt line register.
toro::expected<std::uint8_t> intx_of(fake_pci_bus& bus, pci_address at, std::uint8_t pin, std::uint8_t line) {
    bus.add(at, {.interrupt_pin = pin, .interrupt_line = line});
    auto fn = toro::read_function(bus, at);
    REQUIRE(fn);
    return toro::intx_isa_irq(bus, *fn);
}

TEST_CASE("intx_isa_irq on PIIX3: slot d pin p reaches PIRQ (d - 1 + p - 1) mod 4, whatever the line says",
          "[pci]") {
    // As SeaBIOS and qboot leave it: PIRQA, PIRQB -> IRQ 10; PIRQC, PIRQD -> IRQ 11.
    auto bus = make_piix3_machine(0x0b0b0a0a);
    struct want {
        std::uint8_t slot, pin, line, irq;
    };
    // The lines are what qboot writes (it forgets the "- 1": one PIRQ off), or plain garbage.
    for (const want w : {want{2, 1, 11, 10}, want{3, 1, 10, 11}, want{4, 1, 11, 11}, want{5, 1, 11, 10},
                         want{2, 2, 10, 11}, want{6, 1, 0xff, 10}, want{7, 4, 0, 10}}) {
        INFO("slot " << int{w.slot} << " pin " << int{w.pin});
        auto irq = intx_of(bus, {0, w.slot, 0}, w.pin, w.line);
        REQUIRE(irq);
        CHECK(int{*irq} == int{w.irq});
    }

    // Four distinct routes tell the PIRQs apart: PIRQA 5, PIRQB 9, PIRQC 10, PIRQD 11.
    auto distinct = make_piix3_machine(0x0b0a0905);
    for (const want w : {want{2, 1, 0, 9}, want{2, 4, 0, 5}, want{5, 1, 0, 5}, want{6, 3, 0, 11},
                         want{8, 2, 0, 5}, want{31, 1, 0, 10}, want{4, 2, 0, 5}}) {
        INFO("slot " << int{w.slot} << " pin " << int{w.pin});
        auto irq = intx_of(distinct, {0, w.slot, 0}, w.pin, w.line);
        REQUIRE(irq);
        CHECK(int{*irq} == int{w.irq});
    }
    // Function number plays no part; the chipset routes by slot and pin.
    auto f3 = intx_of(distinct, {0, 3, 5}, 1, 0);
    REQUIRE(f3);
    CHECK(int{*f3} == 10);
}

TEST_CASE("intx_isa_irq on PIIX3: an unrouted PIRQ or a missing pin is an error", "[pci]") {
    // PIRQC disabled by bit 7, its IRQ bits still saying 11: disabled wins.
    auto bus = make_piix3_machine(0x0b8b0a0a);
    auto off = intx_of(bus, {0, 3, 0}, 1, 11); // PIRQC
    REQUIRE_FALSE(off);
    CHECK_THAT(what(off.error()), Catch::Contains("not routed"));
    CHECK(off.error().value == 2);
    auto still = intx_of(bus, {0, 4, 0}, 1, 11); // PIRQD is fine
    REQUIRE(still);
    CHECK(int{*still} == 11);

    // PIIX3's reset value: every PIRQ disabled (0x80).
    auto reset = make_piix3_machine(0x80808080);
    for (std::uint8_t slot : {2, 3, 4, 5}) {
        INFO("slot " << int{slot});
        auto r = intx_of(reset, {0, slot, 0}, 1, 11);
        REQUIRE_FALSE(r);
        CHECK(r.error().value == (slot - 1u) % 4);
    }

    auto low = make_piix3_machine(0x0b0b020a); // PIRQB -> IRQ 2: the cascade, never a PCI line
    auto cascade = intx_of(low, {0, 2, 0}, 1, 11);
    REQUIRE_FALSE(cascade);
    CHECK(cascade.error().value == 1);

    for (std::uint8_t pin : {0, 5}) {
        INFO("pin " << int{pin});
        auto none = intx_of(bus, {0, 2, 0}, pin, 11);
        REQUIRE_FALSE(none);
        CHECK_THAT(what(none.error()), Catch::Contains("no interrupt pin"));
        CHECK(none.error().value == bdf(0, 2, 0));
    }
}

TEST_CASE("intx_isa_irq without PIIX3 (or off bus 0) trusts the interrupt line; 0 and 0xff are errors",
          "[pci]") {
    SECTION("no function at 00:01.0") {
        fake_pci_bus bus;
        bus.add({0, 0, 0}, host_bridge);
        auto irq = intx_of(bus, {0, 2, 0}, 1, 11);
        REQUIRE(irq);
        CHECK(int{*irq} == 11);
        auto zero = intx_of(bus, {0, 3, 0}, 1, 0);
        REQUIRE_FALSE(zero);
        CHECK_THAT(what(zero.error()), Catch::Contains("no IRQ"));
        CHECK(zero.error().value == 0);
        auto unknown = intx_of(bus, {0, 4, 0}, 2, 0xff);
        REQUIRE_FALSE(unknown);
        CHECK(unknown.error().value == 0xff);
    }
    SECTION("another chipset's bridge at 00:01.0 (register 0x60 means nothing there)") {
        fake_pci_bus bus;
        bus.add({0, 0, 0}, host_bridge);
        bus.add({0, 1, 0}, {.vendor = 0x8086, .device = 0x7110, .class_code = 0x06, .subclass = 0x01})
            .set32(toro::piix3_pirq_route, 0x0b0b0a0a);
        auto irq = intx_of(bus, {0, 2, 0}, 1, 5);
        REQUIRE(irq);
        CHECK(int{*irq} == 5);
        CHECK_FALSE(intx_of(bus, {0, 3, 0}, 1, 0));
    }
    SECTION("behind a bridge on a PIIX3 machine") {
        auto bus = make_piix3_machine(0x0b0b0a0a);
        auto irq = intx_of(bus, {1, 2, 0}, 1, 5);
        REQUIRE(irq);
        CHECK(int{*irq} == 5);
        CHECK_FALSE(intx_of(bus, {1, 3, 0}, 1, 0xff));
    }
}

// ---- programming MSI-X and MSI ----

TEST_CASE("x86_msi_message: the address names the APIC ID, the data is the vector", "[pci]") {
    struct want {
        std::uint32_t id;
        std::uint64_t address;
    };
    for (const want w : {want{0, 0xfee00000}, want{1, 0xfee01000}, want{255, 0xfeeff000}}) {
        INFO("APIC ID " << w.id);
        auto m = toro::x86_msi_message(w.id, 0x31);
        REQUIRE(m);
        CHECK(m->address == w.address);
        CHECK(m->data == 0x31);
    }
    auto lowest = toro::x86_msi_message(3, 16);
    REQUIRE(lowest);
    CHECK(lowest->data == 16);
    CHECK(lowest->address == 0xfee03000);
    auto highest = toro::x86_msi_message(3, 255);
    REQUIRE(highest);
    CHECK(highest->data == 255);

    auto x2apic = toro::x86_msi_message(256, 0x31);
    REQUIRE_FALSE(x2apic);
    CHECK_THAT(what(x2apic.error()), Catch::Contains("APIC ID"));
    CHECK(x2apic.error().value == 256);
    CHECK_FALSE(toro::x86_msi_message(0xffffffff, 0x31));
    for (std::uint8_t v : {0, 2, 15}) {
        INFO("vector " << int{v});
        auto r = toro::x86_msi_message(0, v);
        REQUIRE_FALSE(r);
        CHECK_THAT(what(r.error()), Catch::Contains("vector"));
        CHECK(r.error().value == v);
    }
}

struct mmio_write {
    std::uint32_t offset;
    std::uint32_t value;
    bool operator==(const mmio_write&) const = default;
};

std::string show(const std::vector<mmio_write>& log) {
    std::string s;
    for (const auto& w : log) s += "[" + std::to_string(w.offset) + "]=" + std::to_string(w.value) + " ";
    return s;
}

// An MSI-X table window (arch::mmio32_bus-shaped): 32-bit accesses at byte offsets, every write recorded
// in order, reads answered from what was written.
struct table_mmio {
    std::vector<mmio_write> writes;
    std::map<std::uint32_t, std::uint32_t> cells;
    std::size_t reads = 0;
    std::uint32_t read32(std::uint32_t offset) {
        ++reads;
        auto it = cells.find(offset);
        return it == cells.end() ? 0 : it->second;
    }
    void write32(std::uint32_t offset, std::uint32_t v) {
        writes.push_back({offset, v});
        cells[offset] = v;
    }
};

TEST_CASE("msix_table::set masks the entry, writes address low, high, data, then unmasks", "[pci]") {
    toro::msix_table<table_mmio> t{table_mmio{}, 3};
    CHECK(t.entries() == 3);
    // A 64-bit address with distinct halves, so a swapped or dropped half shows.
    REQUIRE(t.set(1, {0x0000'00ab'fee0'1000, 0x31}));
    const std::vector<mmio_write> one{
        {16 + 12, 1}, {16 + 0, 0xfee01000}, {16 + 4, 0xab}, {16 + 8, 0x31}, {16 + 12, 0}};
    CHECK(show(t.mmio().writes) == show(one));

    t.mmio().writes.clear();
    auto msg = toro::x86_msi_message(255, 0x40);
    REQUIRE(msg);
    REQUIRE(t.set(0, *msg));
    const std::vector<mmio_write> zero{{12, 1}, {0, 0xfeeff000}, {4, 0}, {8, 0x40}, {12, 0}};
    CHECK(show(t.mmio().writes) == show(zero));
    CHECK(t.mmio().cells[16 + 4] == 0xab); // entry 1 untouched

    t.mmio().writes.clear();
    auto beyond = t.set(3, *msg);
    REQUIRE_FALSE(beyond);
    CHECK_THAT(what(beyond.error()), Catch::Contains("no such table entry"));
    CHECK(beyond.error().value == 3);
    CHECK_FALSE(t.set(0xffff, *msg));
    CHECK(t.mmio().writes.empty());

    // The largest table: entry 2047 is the last 16 bytes of 32 KiB.
    toro::msix_table<table_mmio> big{table_mmio{}, 2048};
    REQUIRE(big.set(2047, *msg));
    REQUIRE(big.mmio().writes.size() == 5);
    CHECK(big.mmio().writes.front() == mmio_write{2047 * 16 + 12, 1});
    CHECK(big.mmio().writes[3] == mmio_write{2047 * 16 + 8, 0x40});
    CHECK(big.mmio().writes.back() == mmio_write{2047 * 16 + 12, 0});
    CHECK_FALSE(big.set(2048, *msg));
}

TEST_CASE("msix_table::mask writes the entry's vector control bit and ignores entries past the end",
          "[pci]") {
    toro::msix_table<table_mmio> t{table_mmio{}, 3};
    t.mask(2, true);
    t.mask(0, false);
    t.mask(3, true);
    t.mask(0xffff, true);
    const std::vector<mmio_write> want{{2 * 16 + 12, 1}, {12, 0}};
    CHECK(show(t.mmio().writes) == show(want));
}

// fake_pci_bus with every configuration write logged, and some dwords made fully writable: the fake keeps
// an MSI capability's address, data and mask registers read-only, where hardware takes any value.
struct logged_config {
    fake_pci_bus* bus;
    std::vector<std::uint16_t> raw; // dword offsets stored as written
    std::vector<mmio_write> writes;
    std::uint32_t read32(pci_address a, std::uint16_t offset) { return bus->read32(a, offset); }
    void write32(pci_address a, std::uint16_t offset, std::uint32_t v) {
        writes.push_back({offset, v});
        if (std::find(raw.begin(), raw.end(), offset) != raw.end())
            bus->at(a).set32(offset, v);
        else
            bus->write32(a, offset, v);
    }
};
static_assert(toro::pci_config_access<logged_config>);

TEST_CASE("enable_msix: enable on, function mask off, INTx off; the rest of both registers kept", "[pci]") {
    fake_pci_bus bus;
    const pci_address a{0, 3, 0};
    auto& d = bus.add(a, {.command = 0x0006});
    d.bar(1, fake_bar::mem32(0x1000, 0xfebf1000));
    const auto at = d.add_msix(3, 1, 0, 1, 0x800);
    const auto next = d.add_virtio_cap(1, 1, 0, 0);          // so the MSI-X head has a next pointer
    d.set16(static_cast<std::uint16_t>(at + 2), 0x4000 | 2); // firmware left the function masked
    d.set_status(0xf900);                                    // RW1C errors pending: must survive
    auto m = toro::parse_msix(bus, a, at);
    REQUIRE(m);
    CHECK(m->function_masked);

    logged_config c{&bus, {}, {}};
    toro::enable_msix(c, a, *m);
    const std::uint32_t head = toro::pci::cap_msix | std::uint32_t{next} << 8;
    const std::vector<mmio_write> want{{toro::pci::command, 0x0406}, {at, head | (0x8000u | 2) << 16}};
    CHECK(show(c.writes) == show(want));
    CHECK(d.get16(toro::pci::command) == 0x0406); // decoding and mastering kept, INTx disable added
    CHECK(d.get16(toro::pci::status) == (0xf900 | 0x10));
    CHECK(d.get32(at) == (head | (0x8000u | 2) << 16));
    auto on = toro::parse_msix(bus, a, at);
    REQUIRE(on);
    CHECK(on->enabled);
    CHECK_FALSE(on->function_masked);
    CHECK(on->table_size == 3);
    auto list = toro::find_capability(bus, a, toro::pci::cap_vendor);
    REQUIRE(list);
    CHECK(*list == next); // the list still links through
}

TEST_CASE("enable_msi programs address and data at the layout's offsets, then one vector, INTx off",
          "[pci]") {
    fake_pci_bus bus;
    const pci_address a{0, 3, 0};
    auto& d = bus.add(a, {.command = 0x0007});
    std::uint8_t log2 = 0;
    bool wide = false, masking = false;
    SECTION("32-bit address, no per-vector masking") {
        log2 = 0;
    }
    SECTION("64-bit address, no per-vector masking") {
        log2 = 2;
        wide = true;
    }
    SECTION("32-bit address, per-vector masking") {
        log2 = 3;
        masking = true;
    }
    SECTION("64-bit address, per-vector masking") {
        log2 = 5;
        wide = true;
        masking = true;
    }
    INFO("64-bit " << wide << ", per-vector masking " << masking);
    d.add_capability(0x09, {0, 0}); // MSI is not the first capability
    const auto cap = d.add_msi(log2, wide, masking);
    const auto u16 = [&](unsigned off) { return static_cast<std::uint16_t>(cap + off); };
    // Firmware's leftovers: several vectors enabled, the upper half of the data dword in use (extended
    // message data or reserved: not ours), every vector masked, one pending.
    d.set16(u16(2), static_cast<std::uint16_t>(d.get16(u16(2)) | log2 << 4));
    const std::uint16_t data_at = u16(wide ? 0x0c : 0x08);
    d.set32(data_at, 0xabcd'1234);
    if (masking) {
        d.set32(u16(wide ? 0x10 : 0x0c), 0xffffffff);
        d.set32(u16(wide ? 0x14 : 0x10), 0x00000001);
    }
    const std::uint32_t head = d.get32(cap);
    auto m = toro::parse_msi(bus, a, cap);
    REQUIRE(m);

    // A 64-bit layout gets an address with a high half, to show it lands in the upper address register.
    const toro::msi_message msg =
        wide ? toro::msi_message{0x0000'0012'fee0'2000, 0x41} : toro::msi_message{0xfee02000, 0x41};
    logged_config c{&bus, {u16(4), u16(8), u16(0x0c), u16(0x10)}, {}};
    toro::enable_msi(c, a, *m, msg);

    std::vector<mmio_write> want{{u16(4), 0xfee02000}};
    if (wide) want.push_back({u16(8), 0x12});
    want.push_back({data_at, 0xabcd'0041});
    if (masking) want.push_back({u16(wide ? 0x10 : 0x0c), 0});
    want.push_back({toro::pci::command, 0x0407});
    const std::uint32_t ctl = ((head >> 16) & ~0x70u) | 1; // multiple message enable 0, enable
    want.push_back({cap, (head & 0xffff) | ctl << 16});
    CHECK(show(c.writes) == show(want));

    CHECK(d.get32(u16(4)) == 0xfee02000);
    if (wide) CHECK(d.get32(u16(8)) == 0x12);
    CHECK(d.get32(data_at) == 0xabcd'0041);
    if (masking) {
        CHECK(d.get32(u16(wide ? 0x10 : 0x0c)) == 0);
        CHECK(d.get32(u16(wide ? 0x14 : 0x10)) == 1); // pending bits are the device's
    }
    CHECK(d.get16(toro::pci::command) == 0x0407);
    auto on = toro::parse_msi(bus, a, cap);
    REQUIRE(on);
    CHECK(on->enabled);
    CHECK(on->vectors == (1u << log2)); // what it asks for is unchanged...
    const auto ctl_now = toro::pci_regs::msi_control::from_value(d.get16(u16(2)));
    CHECK(ctl_now.multiple_message_enable() == 0); // ...what it gets is one
    CHECK(ctl_now.address_64bit() == wide);
    CHECK(ctl_now.per_vector_masking() == masking);
}

} // namespace
