// Host tests for toro's firmware platform discovery (platform.hpp): RSDP, RSDT/XSDT, MADT and MP tables
// built byte by byte, checksums fixed by the builders, in a fake first MiB of physical memory.
#include <catch2/catch.hpp>

#include "boot_test_support.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <toro/boot/platform.hpp>

namespace {

using namespace boot_test;

// The first MiB of a PC, empty: no EBDA pointer, no BIOS tables.
struct fw_image : image {
    fw_image() : image{0, 0x100000} {}

    // Sets the byte at addr + at so that [addr, addr + len) sums to 0 mod 256.
    void fix_checksum(std::uint64_t addr, std::size_t len, std::size_t at) {
        put8(addr + at, 0);
        std::uint8_t sum = 0;
        for (std::size_t i = 0; i < len; ++i) sum = static_cast<std::uint8_t>(sum + byte(addr + i));
        put8(addr + at, static_cast<std::uint8_t>(-sum));
    }
    std::uint8_t byte(std::uint64_t addr) const { return static_cast<std::uint8_t>(bytes.at(addr - base)); }

    // An RSDP: revision 0 is the 20-byte ACPI 1.0 form, 2 the 36-byte form with the XSDT.
    void rsdp(std::uint64_t at, std::uint8_t revision, std::uint32_t rsdt, std::uint64_t xsdt = 0) {
        put_string(at, "RSD PTR ", false);
        put_string(at + 9, "TOROFW", false);
        put8(at + 15, revision);
        put32(at + 16, rsdt);
        fix_checksum(at, 20, 8);
        if (revision >= 2) { // the extended checksum covers the first one: it comes second
            put32(at + 20, 36);
            put64(at + 24, xsdt);
            fix_checksum(at, 36, 32);
        }
    }

    // A system description table: the 36-byte header, then body. Returns the table's length.
    std::size_t table(std::uint64_t at, const std::string& sig, const std::vector<std::uint8_t>& body) {
        const std::size_t length = 36 + body.size();
        put_string(at, sig, false);
        put32(at + 4, static_cast<std::uint32_t>(length));
        put8(at + 8, 1);
        put_string(at + 10, "TOROFW", false);
        for (std::size_t i = 0; i < body.size(); ++i) put8(at + 36 + i, body[i]);
        fix_checksum(at, length, 9);
        return length;
    }

    // An RSDT (u32 entries) or XSDT (u64 entries).
    void root(std::uint64_t at, bool xsdt, const std::vector<std::uint64_t>& entries) {
        std::vector<std::uint8_t> body;
        for (auto e : entries)
            for (int i = 0; i < (xsdt ? 8 : 4); ++i) body.push_back(static_cast<std::uint8_t>(e >> (8 * i)));
        table(at, xsdt ? "XSDT" : "RSDT", body);
    }

    void ebda(std::uint16_t segment) { put16(0x40e, segment); }
};

// The MADT body: local APIC address and flags, then entries appended by the helpers.
struct madt_body {
    std::vector<std::uint8_t> bytes;

    explicit madt_body(std::uint32_t lapic = 0xfee00000, std::uint32_t flags = 1) {
        le(lapic, 4);
        le(flags, 4);
    }
    madt_body& le(std::uint64_t v, int width) {
        for (int i = 0; i < width; ++i) bytes.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
        return *this;
    }
    madt_body& lapic(std::uint8_t uid, std::uint8_t id, std::uint32_t flags) {
        return le(0, 1).le(8, 1).le(uid, 1).le(id, 1).le(flags, 4);
    }
    madt_body& x2apic(std::uint32_t id, std::uint32_t flags, std::uint32_t uid) {
        return le(9, 1).le(16, 1).le(0, 2).le(id, 4).le(flags, 4).le(uid, 4);
    }
    madt_body& ioapic(std::uint8_t id, std::uint32_t address, std::uint32_t gsi_base) {
        return le(1, 1).le(12, 1).le(id, 1).le(0, 1).le(address, 4).le(gsi_base, 4);
    }
    madt_body& iso(std::uint8_t irq, std::uint32_t gsi, std::uint16_t flags) {
        return le(2, 1).le(10, 1).le(0, 1).le(irq, 1).le(gsi, 4).le(flags, 2);
    }
    madt_body& lapic_address(std::uint64_t address) { return le(5, 1).le(12, 1).le(0, 2).le(address, 8); }
};

// A complete ACPI setup: RSDP at rsdp_at (revision 0, RSDT at 0x80000), MADT at 0x81000.
constexpr std::uint64_t rsdt_at = 0x80000, madt_at = 0x81000;
void acpi_with_madt(fw_image& img, std::uint64_t rsdp_at, const madt_body& madt) {
    img.table(madt_at, "APIC", madt.bytes);
    img.root(rsdt_at, false, {madt_at});
    img.rsdp(rsdp_at, 0, rsdt_at);
}

// An MP configuration table: entries appended by the helpers, header fixed by finish().
struct mp_builder {
    std::vector<std::uint8_t> entries;
    std::uint16_t count = 0;

    mp_builder& raw(std::initializer_list<std::uint8_t> e) {
        entries.insert(entries.end(), e);
        ++count;
        return *this;
    }
    mp_builder& processor(std::uint8_t id, std::uint8_t flags) {
        return raw({0, id, 0x14, flags, 0x71, 0x06, 0, 0, 0xfd, 0xfb, 0x8b, 0x17, 0, 0, 0, 0, 0, 0, 0, 0});
    }
    mp_builder& bus(std::uint8_t id, const char (&type)[7]) {
        return raw({1, id, std::uint8_t(type[0]), std::uint8_t(type[1]), std::uint8_t(type[2]),
                    std::uint8_t(type[3]), std::uint8_t(type[4]), std::uint8_t(type[5])});
    }
    mp_builder& ioapic(std::uint8_t id, std::uint8_t flags, std::uint32_t address) {
        return raw({2, id, 0x11, flags, std::uint8_t(address), std::uint8_t(address >> 8),
                    std::uint8_t(address >> 16), std::uint8_t(address >> 24)});
    }
    mp_builder& irq(std::uint8_t bus, std::uint8_t src, std::uint8_t apic, std::uint8_t pin,
                    std::uint16_t flags = 0) {
        return raw({3, 0, std::uint8_t(flags), std::uint8_t(flags >> 8), bus, src, apic, pin});
    }

    // Writes the floating pointer at fp and the table at table; count_field is what the header claims.
    void write(fw_image& img, std::uint64_t fp, std::uint64_t table, int count_field = -1,
               std::uint8_t feature1 = 0, std::uint8_t feature2 = 0x80) const {
        img.put_string(fp, "_MP_", false);
        img.put32(fp + 4, static_cast<std::uint32_t>(table));
        img.put8(fp + 8, 1);
        img.put8(fp + 9, 4);
        img.put8(fp + 11, feature1);
        img.put8(fp + 12, feature2);
        img.fix_checksum(fp, 16, 10);
        const std::size_t length = 44 + entries.size();
        img.put_string(table, "PCMP", false);
        img.put16(table + 4, static_cast<std::uint16_t>(length));
        img.put8(table + 6, 4);
        img.put_string(table + 8, "TORO    TESTBOARD   ", false);
        img.put16(table + 34, static_cast<std::uint16_t>(count_field < 0 ? count : count_field));
        img.put32(table + 36, 0xfee00000);
        for (std::size_t i = 0; i < entries.size(); ++i) img.put8(table + 44 + i, entries[i]);
        img.fix_checksum(table, length, 7);
    }
};

// A QEMU-like MP table: CPU 0 (BSP) and 1, CPU 2 disabled, ISA bus, one IOAPIC, IRQ 0 -> pin 2.
mp_builder qemu_mp() {
    mp_builder mp;
    mp.processor(0, 3).processor(1, 1).processor(2, 0);
    mp.bus(0, "PCI   ").bus(1, "ISA   ");
    mp.ioapic(5, 1, 0xfec00000);
    mp.irq(1, 0, 5, 2).irq(1, 1, 5, 1).irq(1, 9, 5, 9, 0xd).irq(0, 12, 5, 11);
    return mp;
}

void check_error(const toro::error& e, const std::string& what, std::uint64_t value) {
    CHECK(str(e.what) == what);
    CHECK(e.has_value);
    CHECK(hex(e.value) == hex(value));
}

std::string show_cpus(const toro::platform_info& p) {
    std::string out;
    for (const auto& c : p.cpu_list())
        out += "apic " + std::to_string(c.apic_id) + " uid " + std::to_string(c.acpi_uid) +
               (c.bsp ? " bsp" : "") + (c.enabled ? "" : " online-capable") + "\n";
    return out;
}

} // namespace

TEST_CASE("RSDP at the loader's hint", "[boot][platform]") {
    fw_image img;
    img.rsdp(0x9000, 0, rsdt_at);
    auto mem = img.reader();
    auto r = toro::find_rsdp(mem, 0x9000);
    REQUIRE(r);
    CHECK(hex(*r) == "0x9000");

    // A hint is trusted or refused, never a reason to scan.
    img.rsdp(0xe0000, 0, rsdt_at);
    auto wrong = toro::find_rsdp(mem, 0x9010);
    REQUIRE_FALSE(wrong);
    check_error(wrong.error(), "ACPI RSDP signature \"RSD PTR \" is missing at", 0x9010);
    img.put8(0x9000 + 12, 0x55); // breaks the checksum
    auto bad = toro::find_rsdp(mem, 0x9000);
    REQUIRE_FALSE(bad);
    check_error(bad.error(), "ACPI RSDP checksum (first 20 bytes) is wrong at", 0x9000);
    auto outside = toro::find_rsdp(mem, 0x7fff0000);
    REQUIRE_FALSE(outside);
    check_error(outside.error(), "ACPI RSDP is unreadable at", 0x7fff0000);
}

TEST_CASE("RSDP scan: the EBDA first, then 0xE0000-0xFFFFF", "[boot][platform]") {
    fw_image img;
    auto mem = img.reader();
    auto none = toro::find_rsdp(mem, 0);
    REQUIRE_FALSE(none);
    CHECK(str(none.error().what) == "no ACPI RSDP in the EBDA or in 0xE0000-0xFFFFF");

    img.rsdp(0xf5a40, 0, rsdt_at);
    auto bios = toro::find_rsdp(mem, 0);
    REQUIRE(bios);
    CHECK(hex(*bios) == "0xf5a40");

    // EBDA at 0x9fc00: an RSDP in its first KiB wins over the BIOS area; one past that KiB is not seen.
    img.ebda(0x9fc0);
    img.rsdp(0x9fc00 + 0x400, 0, rsdt_at);
    auto still_bios = toro::find_rsdp(mem, 0);
    REQUIRE(still_bios);
    CHECK(hex(*still_bios) == "0xf5a40");
    img.rsdp(0x9fc00 + 0x3f0, 0, rsdt_at);
    auto ebda = toro::find_rsdp(mem, 0);
    REQUIRE(ebda);
    CHECK(hex(*ebda) == "0x9fff0");
}

TEST_CASE("RSDP scan skips bad checksums and unaligned signatures", "[boot][platform]") {
    fw_image img;
    img.rsdp(0xe0008, 0, rsdt_at); // not on a 16-byte boundary
    img.rsdp(0xe0010, 0, rsdt_at);
    img.put8(0xe0010 + 8, static_cast<std::uint8_t>(img.byte(0xe0010 + 8) + 1));
    img.rsdp(0xe0100, 2, rsdt_at, 0x82000); // ACPI 1.0 checksum right, extended checksum wrong
    img.put8(0xe0100 + 32, static_cast<std::uint8_t>(img.byte(0xe0100 + 32) + 1));
    img.rsdp(0xfffe0, 0, rsdt_at);
    auto mem = img.reader();
    auto r = toro::find_rsdp(mem, 0);
    REQUIRE(r);
    CHECK(hex(*r) == "0xfffe0");
    auto ext = toro::find_rsdp(mem, 0xe0100);
    REQUIRE_FALSE(ext);
    check_error(ext.error(), "ACPI 2.0 RSDP extended checksum is wrong at", 0xe0100);
}

TEST_CASE("RSDP scan in a memory that covers only part of the BIOS area", "[boot][platform]") {
    fw_image img;
    img.rsdp(0xf0040, 0, rsdt_at);
    toro::span_phys_reader mem{std::span{img.bytes}.subspan(0xf0000, 0x100), 0xf0000};
    auto r = toro::find_rsdp(mem, 0);
    REQUIRE(r);
    CHECK(hex(*r) == "0xf0040");
}

TEST_CASE("ACPI 2.0: the XSDT is used, not the RSDT", "[boot][platform]") {
    fw_image img;
    img.table(0x81000, "APIC", madt_body{}.lapic(0, 0, 1).bytes);
    img.table(0x82000, "APIC", madt_body{}.lapic(0, 1, 1).bytes);
    img.root(0x80000, false, {0x81000});
    img.root(0x80100, true, {0x82000});
    img.rsdp(0xe0000, 2, 0x80000, 0x80100);
    auto mem = img.reader();
    auto root = toro::find_acpi_root(mem, 0xe0000);
    REQUIRE(root);
    CHECK(hex(root->address) == "0x80100");
    CHECK(root->is_xsdt);
    auto madt = toro::find_acpi_table(mem, 0xe0000, "APIC");
    REQUIRE(madt);
    CHECK(hex(*madt) == "0x82000");

    // Revision 2 with no XSDT address, and revision 0 whatever the XSDT field says: the RSDT.
    img.rsdp(0xe0000, 2, 0x80000, 0);
    auto rsdt = toro::find_acpi_table(mem, 0xe0000, "APIC");
    REQUIRE(rsdt);
    CHECK(hex(*rsdt) == "0x81000");
    img.rsdp(0xe0000, 0, 0x80000);
    img.put64(0xe0000 + 24, 0x80100);
    auto v1 = toro::find_acpi_table(mem, 0xe0000, "APIC");
    REQUIRE(v1);
    CHECK(hex(*v1) == "0x81000");
}

TEST_CASE("ACPI tables that fail their checks are skipped; instances count valid ones", "[boot][platform]") {
    fw_image img;
    img.table(0x81000, "MCFG", {1, 2, 3, 4});
    img.put8(0x81000 + 36, 9); // bad checksum
    img.table(0x82000, "SSDT", {});
    img.table(0x83000, "MCFG", {5, 6, 7, 8});
    img.table(0x84000, "MCFG", {});
    img.put32(0x84000 + 4, 20); // length below the header
    img.table(0x85000, "MCFG", {});
    img.root(0x80000, true, {0, 0x7fff0000, 0x81000, 0x82000, 0x83000, 0x84000, 0x85000});
    img.rsdp(0xe0000, 2, 0, 0x80000);
    auto mem = img.reader();
    auto first = toro::find_acpi_table(mem, 0xe0000, "MCFG");
    REQUIRE(first);
    CHECK(hex(*first) == "0x83000");
    auto second = toro::find_acpi_table(mem, 0xe0000, "MCFG", 1);
    REQUIRE(second);
    CHECK(hex(*second) == "0x85000");
    // Not found: the entry that could not be read may have been it, and the error says so.
    auto third = toro::find_acpi_table(mem, 0xe0000, "MCFG", 2);
    REQUIRE_FALSE(third);
    check_error(third.error(), "ACPI table not found, but the root table lists a table that is unreadable at",
                0x7fff0000);
    auto ssdt = toro::find_acpi_table(mem, 0xe0000, "SSDT");
    REQUIRE(ssdt);
    CHECK(hex(*ssdt) == "0x82000");

    img.root(0x80000, true, {0x81000, 0x82000, 0x83000, 0x84000, 0x85000});
    auto absent = toro::find_acpi_table(mem, 0xe0000, "MCFG", 2);
    REQUIRE_FALSE(absent);
    check_error(absent.error(), "ACPI table not found (or it fails its checks); signature (LE)", 0x4746434d);

    // A broken root table is an error, not an empty one.
    img.put8(0x80000 + 40, 0x99);
    auto broken = toro::find_acpi_table(mem, 0xe0000, "SSDT");
    REQUIRE_FALSE(broken);
    check_error(broken.error(), "ACPI XSDT checksum is wrong at", 0x80000);
}

TEST_CASE("MADT: local APIC, x2APIC, disabled and online-capable processors", "[boot][platform]") {
    fw_image img;
    madt_body madt{0xfee00000, 1};
    madt.lapic(0, 0, 1)    // enabled
        .lapic(1, 2, 0)    // disabled: not listed
        .lapic(2, 4, 2)    // online capable only
        .lapic(3, 0xff, 1) // broadcast id: no processor
        .le(4, 1)          // local APIC NMI (type 4, 6 bytes): skipped
        .le(6, 1)
        .le(0xff, 1)
        .le(5, 2)
        .le(1, 1)
        .x2apic(300, 1, 7) // x2APIC id beyond 255
        .x2apic(301, 0, 8) // disabled
        .x2apic(4, 1, 9)   // the same processor as uid 2: listed once
        .le(0x7f, 1)       // unknown type, skipped by its length
        .le(3, 1)
        .le(0, 1);
    acpi_with_madt(img, 0xe0000, madt);
    auto mem = img.reader();
    auto p = toro::parse_madt(mem, madt_at);
    REQUIRE(p);
    CHECK(p->source == toro::platform_source::acpi);
    CHECK(show_cpus(*p) == "apic 0 uid 0\n"
                           "apic 4 uid 2\n"
                           "apic 300 uid 7\n");
    CHECK(p->cpus_ignored == 0);
    CHECK(hex(p->table_address) == hex(madt_at));
    CHECK(hex(p->lapic_address) == "0xfee00000");
    CHECK(p->pcat_compat);
    CHECK(p->ioapic_count == 0);
    CHECK(p->override_count == 0);
    CHECK(p->rsdp_address == 0); // parse_madt alone does not know it
}

TEST_CASE("MADT: IOAPICs, interrupt source overrides, LAPIC address override", "[boot][platform]") {
    fw_image img;
    madt_body madt{0xfee00000, 0};
    madt.lapic(0, 0, 1)
        .ioapic(0, 0xfec00000, 0)
        .ioapic(1, 0xfec10000, 24)
        .iso(0, 2, 0)
        .iso(9, 9, 0xd)
        .lapic_address(0x1'2345'6000);
    acpi_with_madt(img, 0xe0000, madt);
    auto mem = img.reader();
    auto p = toro::parse_madt(mem, madt_at);
    REQUIRE(p);
    CHECK_FALSE(p->pcat_compat);
    CHECK(hex(p->lapic_address) == "0x123456000");
    REQUIRE(p->ioapic_count == 2);
    CHECK(p->ioapics[0].id == 0);
    CHECK(hex(p->ioapics[0].address) == "0xfec00000");
    CHECK(p->ioapics[0].gsi_base == 0);
    CHECK(p->ioapics[1].id == 1);
    CHECK(hex(p->ioapics[1].address) == "0xfec10000");
    CHECK(p->ioapics[1].gsi_base == 24);
    REQUIRE(p->override_count == 2);
    CHECK(p->overrides[0].bus_irq == 0);
    CHECK(p->overrides[0].gsi == 2);
    CHECK(p->overrides[0].flags == 0);
    CHECK(p->overrides[1].bus_irq == 9);
    CHECK(p->overrides[1].gsi == 9);
    CHECK(hex(p->overrides[1].flags) == "0xd");
}

TEST_CASE("MADT: what does not fit is counted, not stored", "[boot][platform]") {
    fw_image img;
    madt_body madt;
    for (int i = 0; i < 70; ++i) madt.lapic(static_cast<std::uint8_t>(i), static_cast<std::uint8_t>(i), 1);
    for (int i = 0; i < 10; ++i) madt.ioapic(static_cast<std::uint8_t>(i), 0xfec00000 + 0x1000u * i, 24u * i);
    for (int i = 0; i < 20; ++i) madt.iso(static_cast<std::uint8_t>(i), 30u + i, 0);
    acpi_with_madt(img, 0xe0000, madt);
    auto mem = img.reader();
    auto p = toro::parse_madt(mem, madt_at);
    REQUIRE(p);
    CHECK(p->cpu_count == 64);
    CHECK(p->cpus_ignored == 6);
    CHECK(p->cpus[63].apic_id == 63);
    CHECK(p->ioapic_count == 8);
    CHECK(p->ioapics_ignored == 2);
    CHECK(p->override_count == 16);
    CHECK(p->overrides_ignored == 4);
}

TEST_CASE("MADT: malformed entries are errors that name their offset", "[boot][platform]") {
    fw_image img;
    auto mem = img.reader();
    auto parse = [&](const madt_body& m) {
        img.table(madt_at, "APIC", m.bytes);
        return toro::parse_madt(mem, madt_at);
    };
    SECTION("zero length") {
        auto p = parse(madt_body{}.lapic(0, 0, 1).le(0x7f, 1).le(0, 1).le(0, 8));
        REQUIRE_FALSE(p);
        check_error(p.error(), "ACPI MADT entry length is below 2; entry offset", 52);
    }
    SECTION("length 1") {
        auto p = parse(madt_body{}.le(0x7f, 1).le(1, 1).le(0, 8));
        REQUIRE_FALSE(p);
        check_error(p.error(), "ACPI MADT entry length is below 2; entry offset", 44);
    }
    SECTION("an entry that runs past the end of the table") {
        madt_body m;
        m.lapic(0, 0, 1).ioapic(0, 0xfec00000, 0);
        m.bytes.resize(m.bytes.size() - 4); // the IOAPIC entry keeps its length 12 but loses 4 bytes
        auto p = parse(m);
        REQUIRE_FALSE(p);
        check_error(p.error(), "ACPI MADT entry runs past the end of the table; entry offset", 52);
    }
    SECTION("one byte left for an entry header") {
        auto p = parse(madt_body{}.lapic(0, 0, 1).le(0, 1));
        REQUIRE_FALSE(p);
        check_error(p.error(), "ACPI MADT entry header runs past the end of the table; entry offset", 52);
    }
    SECTION("a known type shorter than its layout") {
        auto p = parse(madt_body{}.le(9, 1).le(12, 1).le(0, 8).le(0, 2));
        REQUIRE_FALSE(p);
        check_error(p.error(), "ACPI MADT entry is shorter than its type requires; entry offset", 44);
    }
    SECTION("bad checksum") {
        img.table(madt_at, "APIC", madt_body{}.lapic(0, 0, 1).bytes);
        img.put8(madt_at + 47, 1);
        auto p = toro::parse_madt(mem, madt_at);
        REQUIRE_FALSE(p);
        check_error(p.error(), "ACPI MADT checksum is wrong at", madt_at);
    }
    SECTION("shorter than the fixed part") {
        img.table(madt_at, "APIC", {0, 0, 0xe0, 0xfe});
        auto p = toro::parse_madt(mem, madt_at);
        REQUIRE_FALSE(p);
        check_error(p.error(), "ACPI MADT is shorter than its 44-byte fixed part; length", 40);
    }
    SECTION("not a MADT") {
        img.table(madt_at, "FACP", madt_body{}.bytes);
        auto p = toro::parse_madt(mem, madt_at);
        REQUIRE_FALSE(p);
        check_error(p.error(), "ACPI MADT is unreadable or lacks its \"APIC\" signature at", madt_at);
    }
}

TEST_CASE("MP table: processors with the BSP flag, IOAPIC, ISA overrides", "[boot][platform]") {
    fw_image img;
    qemu_mp().write(img, 0xf5b00, 0xf5b10, 0); // entry count 0, as qboot writes it
    auto mem = img.reader();
    auto fp = toro::find_mp_floating_pointer(mem);
    REQUIRE(fp);
    CHECK(hex(*fp) == "0xf5b00");
    auto p = toro::parse_mp_table(mem, *fp);
    REQUIRE(p);
    CHECK(p->source == toro::platform_source::mp_table);
    CHECK(show_cpus(*p) == "apic 0 uid 0 bsp\n"
                           "apic 1 uid 0\n");
    CHECK(hex(p->lapic_address) == "0xfee00000");
    CHECK(hex(p->table_address) == "0xf5b10");
    CHECK(p->imcr_present);
    CHECK(p->pcat_compat);
    REQUIRE(p->ioapic_count == 1);
    CHECK(p->ioapics[0].id == 5);
    CHECK(hex(p->ioapics[0].address) == "0xfec00000");
    // IRQ 0 -> pin 2 and IRQ 9 level/active-low; IRQ 1 is identity, source 12 is on the PCI bus.
    REQUIRE(p->override_count == 2);
    CHECK(p->overrides[0].bus_irq == 0);
    CHECK(p->overrides[0].gsi == 2);
    CHECK(p->overrides[0].flags == 0);
    CHECK(p->overrides[1].bus_irq == 9);
    CHECK(p->overrides[1].gsi == 9);
    CHECK(hex(p->overrides[1].flags) == "0xd");
}

TEST_CASE("MP floating pointer search: EBDA, end of base memory, BIOS area", "[boot][platform]") {
    fw_image img;
    auto mem = img.reader();
    auto none = toro::find_mp_floating_pointer(mem);
    REQUIRE_FALSE(none);
    CHECK(str(none.error().what) ==
          "no MP floating pointer in the EBDA, the last KiB of base memory or 0xF0000-0xFFFFF");

    // 0xE0000 is not searched for the MP table (only for the RSDP).
    qemu_mp().write(img, 0xe0000, 0xe0010);
    CHECK_FALSE(toro::find_mp_floating_pointer(mem));
    qemu_mp().write(img, 0xffff0, 0xfe000);
    auto bios = toro::find_mp_floating_pointer(mem);
    REQUIRE(bios);
    CHECK(hex(*bios) == "0xffff0");

    // The BDA says 512 KiB of base memory: its last KiB is searched, and before the BIOS area.
    img.put16(0x413, 512);
    qemu_mp().write(img, 0x7fc00 + 0x3f0, 0x70000);
    auto base = toro::find_mp_floating_pointer(mem);
    REQUIRE(base);
    CHECK(hex(*base) == "0x7fff0");

    // With the BDA word unreadable, the last KiB below 640 KiB is.
    qemu_mp().write(img, 0x9fc00, 0x70000);
    toro::span_phys_reader high{std::span{img.bytes}.subspan(0x1000), 0x1000};
    auto fallback = toro::find_mp_floating_pointer(high);
    REQUIRE(fallback);
    CHECK(hex(*fallback) == "0x9fc00");

    // The EBDA comes first; a candidate with a wrong length field or checksum is skipped.
    img.ebda(0x9000);
    qemu_mp().write(img, 0x90000, 0x70000);
    img.put8(0x90000 + 8, 2);
    img.fix_checksum(0x90000, 16, 10);
    qemu_mp().write(img, 0x90010, 0x70000);
    img.put8(0x90010 + 15, 1);
    qemu_mp().write(img, 0x90020, 0x70000);
    auto ebda = toro::find_mp_floating_pointer(mem);
    REQUIRE(ebda);
    CHECK(hex(*ebda) == "0x90020");
}

TEST_CASE("MP table errors", "[boot][platform]") {
    fw_image img;
    auto mem = img.reader();
    SECTION("unknown entry type") {
        auto mp = qemu_mp();
        mp.raw({0x80, 0, 0, 0, 0, 0, 0, 0});
        mp.write(img, 0xf0000, 0xf0010);
        auto p = toro::parse_mp_table(mem, 0xf0000);
        REQUIRE_FALSE(p);
        check_error(p.error(), "MP configuration table entry has an unknown type; entry offset",
                    44 + 3 * 20 + 2 * 8 + 8 + 4 * 8);
    }
    SECTION("an entry cut off by the base table length") {
        mp_builder mp;
        mp.processor(0, 3).raw({0, 1, 0x14, 1, 0, 0, 0, 0}); // a processor entry with 8 of its 20 bytes
        mp.write(img, 0xf0000, 0xf0010);
        auto p = toro::parse_mp_table(mem, 0xf0000);
        REQUIRE_FALSE(p);
        check_error(p.error(), "MP configuration table entry runs past the end of the table; entry offset",
                    64);
    }
    SECTION("default configuration") {
        qemu_mp().write(img, 0xf0000, 0xf0010, -1, 5);
        auto p = toro::parse_mp_table(mem, 0xf0000);
        REQUIRE_FALSE(p);
        check_error(p.error(),
                    "MP default configurations are not supported (feature byte 1 names one); configuration",
                    5);
    }
    SECTION("bad configuration table checksum") {
        qemu_mp().write(img, 0xf0000, 0xf0010);
        img.put8(0xf0010 + 44 + 1, 9);
        auto p = toro::parse_mp_table(mem, 0xf0000);
        REQUIRE_FALSE(p);
        check_error(p.error(), "MP configuration table checksum is wrong at", 0xf0010);
    }
    SECTION("configuration table outside memory") {
        qemu_mp().write(img, 0xf0000, 0xf0010);
        img.put32(0xf0000 + 4, 0x7fff0000);
        img.fix_checksum(0xf0000, 16, 10);
        auto p = toro::parse_mp_table(mem, 0xf0000);
        REQUIRE_FALSE(p);
        check_error(p.error(), "MP configuration table is unreadable at", 0x7fff0000);
    }
}

TEST_CASE("discover_platform: ACPI over MP, MP without ACPI, nothing at all", "[boot][platform]") {
    fw_image img;
    qemu_mp().write(img, 0x9fc00, 0x9fc10);
    auto mem = img.reader();

    SECTION("both: the MADT wins") {
        acpi_with_madt(img, 0xf5a40, madt_body{}.lapic(0, 0, 1).lapic(1, 1, 1).lapic(2, 2, 1));
        auto p = toro::discover_platform(mem, 0);
        REQUIRE(p);
        CHECK(p->source == toro::platform_source::acpi);
        CHECK(show_cpus(*p) == "apic 0 uid 0\napic 1 uid 1\napic 2 uid 2\n");
        CHECK(hex(p->rsdp_address) == "0xf5a40");
        CHECK(hex(p->root_table.address) == hex(rsdt_at));
        CHECK_FALSE(p->root_table.is_xsdt);
        CHECK(hex(p->table_address) == hex(madt_at));
        // The same through the loader's hint.
        auto hinted = toro::discover_platform(mem, 0xf5a40);
        REQUIRE(hinted);
        CHECK(hinted->source == toro::platform_source::acpi);
    }
    SECTION("ACPI without a MADT: the MP table, and the RSDP is still reported") {
        img.table(0x81000, "FACP", {});
        img.root(rsdt_at, false, {0x81000});
        img.rsdp(0xf5a40, 0, rsdt_at);
        auto p = toro::discover_platform(mem, 0);
        REQUIRE(p);
        CHECK(p->source == toro::platform_source::mp_table);
        CHECK(show_cpus(*p) == "apic 0 uid 0 bsp\napic 1 uid 0\n");
        CHECK(hex(p->rsdp_address) == "0xf5a40");
        CHECK(hex(p->root_table.address) == hex(rsdt_at));
        auto facp = toro::find_acpi_table(mem, p->root_table, "FACP");
        REQUIRE(facp);
        CHECK(hex(*facp) == "0x81000");
    }
    SECTION("no ACPI: the MP table") {
        auto p = toro::discover_platform(mem, 0);
        REQUIRE(p);
        CHECK(p->source == toro::platform_source::mp_table);
        CHECK(p->cpu_count == 2);
        CHECK(p->rsdp_address == 0);
    }
    SECTION("nothing: source none, no CPUs, no error") {
        fw_image empty;
        auto none_mem = empty.reader();
        auto p = toro::discover_platform(none_mem, 0);
        REQUIRE(p);
        CHECK(p->source == toro::platform_source::none);
        CHECK(p->cpu_count == 0);
        CHECK(p->ioapic_count == 0);
        CHECK(p->rsdp_address == 0);
        CHECK(p->root_table.address == 0);
        CHECK(hex(p->lapic_address) == "0xfee00000");
    }
    SECTION("a corrupt MADT is an error, not a fall back to the MP table") {
        acpi_with_madt(img, 0xf5a40, madt_body{}.lapic(0, 0, 1));
        img.put8(madt_at + 44 + 3, 7);
        auto p = toro::discover_platform(mem, 0);
        REQUIRE_FALSE(p);
        check_error(p.error(), "ACPI MADT fails its length or checksum check at", madt_at);
    }
    SECTION("a root table entry that cannot be read is an error when no MADT is found") {
        img.table(0x81000, "FACP", {});
        img.root(rsdt_at, false, {0x81000, 0xbffe0000});
        img.rsdp(0xf5a40, 0, rsdt_at);
        auto p = toro::discover_platform(mem, 0);
        REQUIRE_FALSE(p);
        check_error(p.error(), "ACPI root table lists a table that is unreadable (not mapped?) at",
                    0xbffe0000);
    }
    SECTION("a MADT with a broken entry is an error") {
        acpi_with_madt(img, 0xf5a40, madt_body{}.lapic(0, 0, 1).le(0x7f, 1).le(0, 1));
        auto p = toro::discover_platform(mem, 0);
        REQUIRE_FALSE(p);
        check_error(p.error(), "ACPI MADT entry length is below 2; entry offset", 52);
    }
    SECTION("a corrupt MP table is an error") {
        img.put8(0x9fc10 + 44, 0x42);
        auto p = toro::discover_platform(mem, 0);
        REQUIRE_FALSE(p);
        check_error(p.error(), "MP configuration table checksum is wrong at", 0x9fc10);
    }
    SECTION("a hint that points at no RSDP is an error") {
        acpi_with_madt(img, 0xf5a40, madt_body{}.lapic(0, 0, 1));
        auto p = toro::discover_platform(mem, 0xf5a50);
        REQUIRE_FALSE(p);
        check_error(p.error(), "ACPI RSDP signature \"RSD PTR \" is missing at", 0xf5a50);
    }
}

TEST_CASE("platform parsers instantiate with the phys_reader archetype", "[boot][platform]") {
    toro::phys_reader_archetype mem;
    auto p = toro::discover_platform(mem, 0);
    REQUIRE(p);
    CHECK(p->source == toro::platform_source::none);
    CHECK_FALSE(toro::find_acpi_table(mem, 0x1000, "MCFG"));
    CHECK_FALSE(toro::parse_madt(mem, 0x1000));
    CHECK_FALSE(toro::parse_mp_table(mem, 0x1000));
}
