// Host tests for toro::memory_map (normalisation), the boot_info names and the phys_reader models.
#include <catch2/catch.hpp>

#include "../xorshift.hpp"

#include "boot_test_support.hpp"

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <toro/boot/boot_info.hpp>
#include <toro/boot/parse.hpp>
#include <toro/boot/phys_reader.hpp>

namespace {

using namespace boot_test;

using toro::memory_map;
using toro::memory_type;

constexpr std::uint64_t KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;

// An e820 map shaped like QEMU's for a q35 guest with RAM above 4 GiB, in E820 numbering.
struct raw_entry {
    std::uint64_t base, size;
    std::uint32_t type;
};
const std::vector<raw_entry> qemu_map = {
    {0, 0x9fc00, 1},          {0x9fc00, 0x400, 2},
    {0xf0000, 0x10000, 2},    {MiB, 0x87fe0000 - MiB, 1},  // up to the PCI hole
    {0x87fe0000, 0x20000, 2}, {0xb0000000, 0x10000000, 2}, // PCIe ECAM
    {0xfed1c000, 0x4000, 2},  {0xfeffc000, 0x4000, 2},
    {0xfffc0000, 0x40000, 2}, {4 * GiB, 0x78020000, 1}, // RAM above 4 GiB
};
const char* const qemu_expected = "[0x0,0x9fc00) usable\n"
                                  "[0x9fc00,0xa0000) reserved\n"
                                  "[0xf0000,0x100000) reserved\n"
                                  "[0x100000,0x87fe0000) usable\n"
                                  "[0x87fe0000,0x88000000) reserved\n"
                                  "[0xb0000000,0xc0000000) reserved\n"
                                  "[0xfed1c000,0xfed20000) reserved\n"
                                  "[0xfeffc000,0xff000000) reserved\n"
                                  "[0xfffc0000,0x100000000) reserved\n"
                                  "[0x100000000,0x178020000) usable\n";

void add_all(memory_map& m, const std::vector<raw_entry>& entries) {
    for (const auto& e : entries) REQUIRE(m.add(e.base, e.size, e.type));
}

} // namespace

TEST_CASE("protocol and memory type names", "[boot][memory_map]") {
    using toro::boot_protocol;
    CHECK(str(toro::protocol_name(boot_protocol::multiboot)) == "Multiboot");
    CHECK(str(toro::protocol_name(boot_protocol::pvh)) == "PVH");
    CHECK(str(toro::protocol_name(boot_protocol::linux64)) == "Linux 64-bit boot protocol");
    CHECK(str(toro::protocol_name(boot_protocol::unknown)) == "unknown");
    CHECK(str(toro::protocol_name(static_cast<boot_protocol>(9))) == "unknown");
    // The assembly entry stubs hard-code these numbers.
    STATIC_REQUIRE(static_cast<int>(boot_protocol::unknown) == 0);
    STATIC_REQUIRE(static_cast<int>(boot_protocol::multiboot) == 1);
    STATIC_REQUIRE(static_cast<int>(boot_protocol::pvh) == 2);
    STATIC_REQUIRE(static_cast<int>(boot_protocol::linux64) == 3);

    CHECK(str(toro::memory_type_name(memory_type::usable)) == "usable");
    CHECK(str(toro::memory_type_name(memory_type::acpi_reclaimable)) == "ACPI reclaimable");
    CHECK(str(toro::memory_type_name(memory_type::reserved)) == "reserved");
    CHECK(str(toro::memory_type_name(memory_type::acpi_nvs)) == "ACPI NVS");
    CHECK(str(toro::memory_type_name(memory_type::bad)) == "bad");
}

TEST_CASE("e820 type numbers map to memory types, unknown ones to reserved", "[boot][memory_map]") {
    CHECK(toro::memory_type_from_e820(1) == memory_type::usable);
    CHECK(toro::memory_type_from_e820(2) == memory_type::reserved);
    CHECK(toro::memory_type_from_e820(3) == memory_type::acpi_reclaimable);
    CHECK(toro::memory_type_from_e820(4) == memory_type::acpi_nvs);
    CHECK(toro::memory_type_from_e820(5) == memory_type::bad);
    for (std::uint32_t raw : {0u, 6u, 7u, 12u, 20u, 0xf0000001u, 0xffffffffu})
        CHECK(toro::memory_type_from_e820(raw) == memory_type::reserved);
}

TEST_CASE("a QEMU-like map normalises to itself", "[boot][memory_map]") {
    memory_map m;
    add_all(m, qemu_map);
    REQUIRE(m.normalise());
    CHECK(show(m) == qemu_expected);
    CHECK(m.usable_bytes() == 0x9fc00 + (0x87fe0000 - MiB) + 0x78020000);
}

TEST_CASE("normalise sorts unsorted input", "[boot][memory_map]") {
    memory_map m;
    for (auto it = qemu_map.rbegin(); it != qemu_map.rend(); ++it)
        REQUIRE(m.add(it->base, it->size, it->type));
    REQUIRE(m.normalise());
    CHECK(show(m) == qemu_expected);
}

TEST_CASE("zero-length entries are dropped and take no capacity", "[boot][memory_map]") {
    memory_map m;
    for (int i = 0; i < 1000; ++i) REQUIRE(m.add(0x1000u * static_cast<unsigned>(i), 0, 1u));
    CHECK(m.empty());
    REQUIRE(m.add(0x5000, 0x1000, 1u));
    REQUIRE(m.normalise());
    CHECK(show(m) == "[0x5000,0x6000) usable\n");
    memory_map none;
    REQUIRE(none.normalise());
    CHECK(none.empty());
    CHECK(none.usable_bytes() == 0);
}

TEST_CASE("entries that wrap past 2^64 are refused", "[boot][memory_map]") {
    constexpr std::uint64_t top = std::numeric_limits<std::uint64_t>::max();
    memory_map m;
    auto r = m.add(0xfffffffffffff000, 0x2000, 1u);
    REQUIRE_FALSE(r);
    CHECK(str(r.error().what) == "memory map entry wraps past the end of the address space; base");
    CHECK(r.error().has_value);
    CHECK(r.error().value == 0xfffffffffffff000);
    // An end of exactly 2^64 is not representable either.
    CHECK_FALSE(m.add(top - 0xfff, 0x1000, 1u));
    // One byte short of that is fine.
    REQUIRE(m.add(top - 0xfff, 0xfff, 2u));
    REQUIRE(m.add(top - 0x1fff, 0x1000, 1u));
    REQUIRE(m.normalise());
    CHECK(show(m) == "[0xffffffffffffe000,0xfffffffffffff000) usable\n"
                     "[0xfffffffffffff000,0xffffffffffffffff) reserved\n");
}

TEST_CASE("capacity is 128 raw entries", "[boot][memory_map]") {
    memory_map m;
    for (std::uint64_t i = 0; i < memory_map::max_regions; ++i) REQUIRE(m.add(i * 0x2000, 0x1000, 1u));
    auto r = m.add(0x10000000, 0x1000, 1u);
    REQUIRE_FALSE(r);
    CHECK(str(r.error().what) == "memory map has more entries than fit (128)");
    CHECK(r.error().value == 128);
    REQUIRE(m.normalise());
    CHECK(m.size() == 128);
    m.clear();
    CHECK(m.empty());
    REQUIRE(m.add(0, 0x1000, 1u));
}

TEST_CASE("adjacent regions merge only when their types match", "[boot][memory_map]") {
    memory_map m;
    REQUIRE(m.add(0x3000, 0x1000, 1u));
    REQUIRE(m.add(0x1000, 0x1000, 1u));
    REQUIRE(m.add(0x2000, 0x1000, 1u));
    REQUIRE(m.add(0x4000, 0x1000, 2u));
    REQUIRE(m.add(0x5000, 0x1000, 99u)); // unknown: reserved, merges with the reserved before it
    REQUIRE(m.add(0x7000, 0x1000, 1u));  // a gap keeps it apart
    REQUIRE(m.normalise());
    CHECK(show(m) == "[0x1000,0x4000) usable\n"
                     "[0x4000,0x6000) reserved\n"
                     "[0x7000,0x8000) usable\n");
    CHECK(m.usable_bytes() == 0x4000);
}

TEST_CASE("usable overlapping reserved: reserved wins and usable is split around it", "[boot][memory_map]") {
    memory_map m;
    REQUIRE(m.add(0x0, 0x10000, 1u));
    REQUIRE(m.add(0x4000, 0x1000, 2u));
    REQUIRE(m.normalise());
    CHECK(show(m) == "[0x0,0x4000) usable\n"
                     "[0x4000,0x5000) reserved\n"
                     "[0x5000,0x10000) usable\n");
    CHECK(m.usable_bytes() == 0xf000);

    SECTION("partial overlaps at either end") {
        memory_map p;
        REQUIRE(p.add(0x1000, 0x3000, 2u)); // [0x1000,0x4000) reserved
        REQUIRE(p.add(0x0, 0x2000, 1u));    // usable, overlaps its start
        REQUIRE(p.add(0x3000, 0x3000, 1u)); // usable, overlaps its end
        REQUIRE(p.normalise());
        CHECK(show(p) == "[0x0,0x1000) usable\n"
                         "[0x1000,0x4000) reserved\n"
                         "[0x4000,0x6000) usable\n");
    }
    SECTION("reserved entirely covered by usable the other way round") {
        memory_map p;
        REQUIRE(p.add(0x2000, 0x1000, 1u));
        REQUIRE(p.add(0x0, 0x8000, 2u));
        REQUIRE(p.normalise());
        CHECK(show(p) == "[0x0,0x8000) reserved\n");
        CHECK(p.usable_bytes() == 0);
    }
    SECTION("duplicates and same-type overlaps collapse") {
        memory_map p;
        REQUIRE(p.add(0x0, 0x4000, 1u));
        REQUIRE(p.add(0x0, 0x4000, 1u));
        REQUIRE(p.add(0x2000, 0x4000, 1u));
        REQUIRE(p.normalise());
        CHECK(show(p) == "[0x0,0x6000) usable\n");
    }
}

TEST_CASE("overlaps resolve to the most restrictive type", "[boot][memory_map]") {
    // E820 numbers in order of restrictiveness: usable, ACPI reclaimable, reserved, ACPI NVS, bad.
    const std::uint32_t by_rank[] = {1, 3, 2, 4, 5};
    for (int a = 0; a < 5; ++a)
        for (int b = 0; b < 5; ++b) {
            memory_map m;
            REQUIRE(m.add(0x0, 0x3000, by_rank[a]));
            REQUIRE(m.add(0x1000, 0x1000, by_rank[b]));
            REQUIRE(m.normalise());
            const auto outer = toro::memory_type_from_e820(by_rank[a]);
            const auto inner = toro::memory_type_from_e820(by_rank[b]);
            INFO("outer " << str(toro::memory_type_name(outer)) << ", inner "
                          << str(toro::memory_type_name(inner)));
            if (b <= a) {
                CHECK(show(m) == "[0x0,0x3000) " + str(toro::memory_type_name(outer)) + "\n");
            } else {
                CHECK(show(m) == "[0x0,0x1000) " + str(toro::memory_type_name(outer)) + "\n[0x1000,0x2000) " +
                                     str(toro::memory_type_name(inner)) + "\n[0x2000,0x3000) " +
                                     str(toro::memory_type_name(outer)) + "\n");
            }
        }
}

TEST_CASE("a stack of nested types of increasing restrictiveness", "[boot][memory_map]") {
    memory_map m;
    REQUIRE(m.add(0x0, 0xa000, 1u));    // usable
    REQUIRE(m.add(0x1000, 0x8000, 3u)); // ACPI reclaimable
    REQUIRE(m.add(0x2000, 0x6000, 2u)); // reserved
    REQUIRE(m.add(0x3000, 0x4000, 4u)); // ACPI NVS
    REQUIRE(m.add(0x4000, 0x2000, 5u)); // bad
    REQUIRE(m.normalise());
    CHECK(show(m) == "[0x0,0x1000) usable\n"
                     "[0x1000,0x2000) ACPI reclaimable\n"
                     "[0x2000,0x3000) reserved\n"
                     "[0x3000,0x4000) ACPI NVS\n"
                     "[0x4000,0x6000) bad\n"
                     "[0x6000,0x7000) ACPI NVS\n"
                     "[0x7000,0x8000) reserved\n"
                     "[0x8000,0x9000) ACPI reclaimable\n"
                     "[0x9000,0xa000) usable\n");
}

TEST_CASE("splitting past capacity is an error, up to capacity is fine", "[boot][memory_map]") {
    // One usable region with k reserved holes normalises to 2k + 1 regions.
    auto holes = [](std::uint64_t k) {
        memory_map m;
        REQUIRE(m.add(0, 0x1000000, 1u));
        for (std::uint64_t i = 0; i < k; ++i) REQUIRE(m.add(0x1000 + i * 0x2000, 0x1000, 2u));
        return m;
    };
    memory_map fits = holes(63);
    REQUIRE(fits.normalise());
    CHECK(fits.size() == 127);
    memory_map too_many = holes(64);
    auto r = too_many.normalise();
    REQUIRE_FALSE(r);
    CHECK(str(r.error().what) ==
          "memory map needs more than 128 regions once overlapping entries are resolved");
    CHECK(r.error().value == 128);

    // Pieces that a more restrictive type later swallows must not count against capacity:
    // 63 bad holes inside a reserved region that covers a usable one of the same extent.
    memory_map swallowed;
    REQUIRE(swallowed.add(0, 0x1000000, 1u));
    REQUIRE(swallowed.add(0, 0x1000000, 2u));
    for (std::uint64_t i = 0; i < 63; ++i) REQUIRE(swallowed.add(0x1000 + i * 0x2000, 0x1000, 5u));
    REQUIRE(swallowed.normalise());
    CHECK(swallowed.size() == 127);
    CHECK(swallowed.usable_bytes() == 0);
}

TEST_CASE("normalise agrees with a page-by-page reference on random maps", "[boot][memory_map]") {
    xorshift rng{0x9e3779b97f4a7c15};
    constexpr std::uint64_t pages = 96, page = 0x1000;
    for (int iteration = 0; iteration < 3000; ++iteration) {
        memory_map m;
        int reference[pages];
        for (auto& t : reference) t = -1; // -1: no entry covers the page
        const auto n = 1 + rng.below(40);
        for (std::uint64_t i = 0; i < n; ++i) {
            const auto first = rng.below(pages), len = rng.below(pages - first + 1) / (1 + rng.below(4));
            const auto raw = static_cast<std::uint32_t>(rng.below(7)); // 0 and 6 are unknown: reserved
            REQUIRE(m.add(first * page, len * page, raw));
            const int type = static_cast<int>(toro::memory_type_from_e820(raw));
            for (auto p = first; p < first + len; ++p)
                if (type > reference[p]) reference[p] = type;
        }
        // The reference result: maximal runs of pages with the same type.
        std::string expected;
        for (std::uint64_t p = 0; p < pages;) {
            auto q = p;
            while (q < pages && reference[q] == reference[p]) ++q;
            if (reference[p] >= 0)
                expected += "[" + hex(p * page) + "," + hex(q * page) + ") " +
                            str(toro::memory_type_name(static_cast<memory_type>(reference[p]))) + "\n";
            p = q;
        }
        REQUIRE(m.normalise());
        INFO("iteration " << iteration);
        REQUIRE(show(m) == expected);
        // Normalising a normal map changes nothing.
        REQUIRE(m.normalise());
        REQUIRE(show(m) == expected);
    }
}

TEST_CASE("boot_info command line storage", "[boot][memory_map]") {
    auto info = std::make_unique<toro::boot_info>();
    CHECK(str(info->cmdline()).empty());
    REQUIRE(info->set_cmdline("console=ttyS0"));
    CHECK(str(info->cmdline()) == "console=ttyS0");
    CHECK(info->cmdline_buffer[13] == '\0');
    std::string longest(toro::boot_info::max_cmdline, 'x');
    REQUIRE(info->set_cmdline({longest.data(), longest.size()}));
    CHECK(info->cmdline().size() == 2047);
    std::string too_long(2048, 'x');
    auto r = info->set_cmdline({too_long.data(), too_long.size()});
    REQUIRE_FALSE(r);
    CHECK(str(r.error().what) == "kernel command line is longer than 2047 bytes");
    CHECK(r.error().value == 2048);
    info->rsdp = 1;
    info->tsc_at_entry = 2;
    REQUIRE(info->memory.add(0, 0x1000, 1u));
    info->reset();
    CHECK(info->cmdline().empty());
    CHECK(info->memory.empty());
    CHECK(info->rsdp == 0);
    CHECK(info->tsc_at_entry == 0);
    CHECK(info->protocol == toro::boot_protocol::unknown);
}

TEST_CASE("span_phys_reader reads only its bytes", "[boot][phys_reader]") {
    std::vector<std::byte> bytes(16);
    for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::byte>(0xa0 + i);
    toro::span_phys_reader mem{bytes, 0x1000};
    std::byte out[16]{};
    CHECK(mem.read(0x1000, out, 16));
    CHECK(out[15] == std::byte{0xaf});
    CHECK(mem.read(0x100f, out, 1));
    CHECK(mem.read(0x1010, out, 0));
    CHECK_FALSE(mem.read(0x0fff, out, 1));
    CHECK_FALSE(mem.read(0x1000, out, 17));
    CHECK_FALSE(mem.read(0x100f, out, 2));
    CHECK_FALSE(mem.read(0x1010, out, 1));
    CHECK_FALSE(mem.read(0x1008, out, std::numeric_limits<std::size_t>::max())); // addr + len wraps
    CHECK_FALSE(mem.read(std::numeric_limits<std::uint64_t>::max(), out, 2));

    auto v16 = toro::read_u16(mem, 0x1001);
    REQUIRE(v16);
    CHECK(*v16 == 0xa2a1);
    auto v32 = toro::read_u32(mem, 0x1000);
    REQUIRE(v32);
    CHECK(*v32 == 0xa3a2a1a0);
    auto v64 = toro::read_u64(mem, 0x1008);
    REQUIRE(v64);
    CHECK(*v64 == 0xafaeadacabaaa9a8);
    auto v8 = toro::read_u8(mem, 0x100f);
    REQUIRE(v8);
    CHECK(*v8 == 0xaf);
    auto bad = toro::read_u64(mem, 0x1009);
    REQUIRE_FALSE(bad);
    CHECK(bad.error().value == 0x1009);

    // A span that ends exactly at 2^64.
    toro::span_phys_reader top{bytes, 0xfffffffffffffff0};
    CHECK(top.read(0xfffffffffffffff0, out, 16));
    CHECK(top.read(0xffffffffffffffff, out, 1));
    CHECK_FALSE(top.read(0xffffffffffffffff, out, 2));
    CHECK_FALSE(top.read(0, out, 1));
}

TEST_CASE("identity_phys_reader refuses addresses outside [low, high)", "[boot][phys_reader]") {
    std::vector<std::byte> bytes(64, std::byte{0x5a});
    const auto low = reinterpret_cast<std::uintptr_t>(bytes.data());
    toro::identity_phys_reader mem{low, low + bytes.size()};
    std::byte out[64]{};
    CHECK(mem.read(low, out, 64));
    CHECK(out[63] == std::byte{0x5a});
    CHECK_FALSE(mem.read(low - 1, out, 1));
    CHECK_FALSE(mem.read(low + 1, out, 64));
    CHECK_FALSE(mem.read(low + 8, out, std::numeric_limits<std::size_t>::max()));
    toro::identity_phys_reader kernel{4096, 0x100000000};
    CHECK_FALSE(kernel.read(0, out, 8)); // page 0 is the NULL guard
    CHECK_FALSE(kernel.read(0xfff, out, 2));
    CHECK_FALSE(kernel.read(0xfffffffc, out, 8));
}

TEST_CASE("read_cstring stops at the NUL, the buffer end, or unreadable memory", "[boot][phys_reader]") {
    const char text[] = "abc\0def";
    std::vector<std::byte> bytes(reinterpret_cast<const std::byte*>(text),
                                 reinterpret_cast<const std::byte*>(text) + 7); // "def" has no NUL
    toro::span_phys_reader mem{bytes, 0x2000};
    char buf[8];
    auto n = toro::read_cstring(mem, 0x2000, buf);
    REQUIRE(n);
    CHECK(*n == 3);
    CHECK(std::string(buf) == "abc");

    auto unterminated = toro::read_cstring(mem, 0x2004, buf, "U", "L");
    REQUIRE_FALSE(unterminated);
    CHECK(str(unterminated.error().what) == "U");
    CHECK(unterminated.error().value == 0x2007); // the first byte that could not be read
    CHECK(buf[0] == '\0');

    char small[3];
    auto too_long = toro::read_cstring(mem, 0x2000, small, "U", "L");
    REQUIRE_FALSE(too_long);
    CHECK(str(too_long.error().what) == "L");
    CHECK(too_long.error().value == 0x2000);
    char exact[4];
    REQUIRE(toro::read_cstring(mem, 0x2000, exact));
    CHECK(std::string(exact) == "abc");

    // The string may not wrap round from the top of the address space.
    std::vector<std::byte> ff(4, std::byte{'x'});
    toro::span_phys_reader top{ff, 0xfffffffffffffffc};
    auto wrapped = toro::read_cstring(top, 0xfffffffffffffffc, buf, "U", "L");
    REQUIRE_FALSE(wrapped);
    CHECK(str(wrapped.error().what) == "U");
}

TEST_CASE("the parsers need nothing beyond the phys_reader concept", "[boot][phys_reader]") {
    toro::phys_reader_archetype mem;
    auto info = std::make_unique<toro::boot_info>();
    for (auto p : {toro::boot_protocol::multiboot, toro::boot_protocol::pvh, toro::boot_protocol::linux64}) {
        auto r = toro::parse_boot_info(p, 0x1000, 7, mem, *info);
        CHECK_FALSE(r);
        CHECK(info->protocol == p);
        CHECK(info->tsc_at_entry == 7);
    }
}
