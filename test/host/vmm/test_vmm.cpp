// Host tests for toro-vmm's pure parts: the Firecracker boot layout (kernel loading, boot mode choice,
// zero page, e820, PVH start info and memory map, command line, ACPI tables, page tables, GDTs, initial
// registers) and the device models (COM1, isa-debug-exit, reset ports, boot timer). The zero page, the PVH
// start info and the ACPI tables are also read back by toro's own kernel parsers.
#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <toro/boot/phys_reader.hpp>
#include <toro/boot/platform.hpp>
#include <toro/boot/pvh.hpp>
#include <toro/boot/zero_page.hpp>

#include "../elf/elf_image_builder.hpp"
#include "vmm/boot_layout.hpp"
#include "vmm/serial.hpp"

using namespace toro::tools;
using namespace toro::tools::vmm;
using namespace elf_test;

namespace {

constexpr std::uint64_t mib = 1ull << 20;

struct load_spec {
    std::uint64_t paddr;
    bytes data;
    std::uint64_t memsz = 0; // 0: data.size()
    std::uint32_t type = pt_load;
};

// ELF64 header | program headers | segment data, through the shared builder: identity-mapped segments.
bytes make_elf(std::uint64_t entry, const std::vector<load_spec>& segs, std::uint16_t machine = em_x86_64) {
    elf64_builder k;
    k.entry = entry;
    k.machine = machine;
    for (const auto& s : segs)
        k.segs.push_back({s.type, pf_r | pf_x, s.paddr, s.paddr, s.memsz, 0x1000, s.data});
    return k.build();
}

// A note entry with a `descsz`-byte little-endian descriptor (zero beyond 8 bytes).
bytes make_note(const std::string& name, std::uint32_t type, std::uint64_t desc, std::uint32_t descsz) {
    bytes d;
    for (std::uint32_t i = 0; i < descsz; ++i)
        d.push_back(i < 8 ? static_cast<std::uint8_t>(desc >> (8 * i)) : 0);
    return elf_test::make_note(name, type, d);
}

// The PT_NOTE toro's kernels carry: XEN_ELFNOTE_PHYS32_ENTRY (18) with a 4-byte entry address.
load_spec pvh_note(std::uint64_t entry, std::uint32_t descsz = 4) {
    return {0, make_note("Xen", 18, entry, descsz), 0, pt_note};
}

bytes pattern(std::size_t n, std::uint8_t seed) {
    bytes b(n);
    for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<std::uint8_t>(seed + i * 7);
    return b;
}

bool all_zero(const bytes& b, std::size_t from, std::size_t to) {
    for (std::size_t i = from; i < to; ++i)
        if (b.at(i) != 0) return false;
    return true;
}

std::string str(toro::string_view s) {
    return {s.data(), s.size()};
}

} // namespace

// ---------------------------------------------------------------- memory size

TEST_CASE("vmm: --mem is validated and split around the 32-bit MMIO gap", "[vmm][layout]") {
    CHECK_FALSE(plan_memory(0));
    CHECK_FALSE(plan_memory(1));
    CHECK_FALSE(plan_memory((255ull << 10) + 1));
    CHECK_THAT(plan_memory(0).error().message, Catch::Contains("at least 2 MiB"));

    auto small = plan_memory(128);
    REQUIRE(small);
    CHECK(small->total == 128 * mib);
    CHECK(small->low_size == 128 * mib);
    CHECK(small->high_size == 0);

    auto big = plan_memory(5 << 10); // 5 GiB: 3 GiB below the gap, 2 GiB from 4 GiB on
    REQUIRE(big);
    CHECK(big->low_size == 3ull << 30);
    CHECK(big->high_size == 2ull << 30);
    REQUIRE(plan_memory(255ull << 10));
}

// ---------------------------------------------------------------- kernel loading

TEST_CASE("vmm: PT_LOAD segments land at p_paddr, the rest stays zero", "[vmm][elf]") {
    bytes mem(4 * mib, 0);
    const bytes text = pattern(300, 1), data = pattern(64, 99);
    const bytes file = make_elf(0x100010, {{0x100000, text}, {0x102000, data, 0x3000}});
    auto entry = load_kernel(file, mem);
    REQUIRE(entry);
    CHECK(*entry == boot_entry{boot_mode::linux64, 0x100010}); // no PVH note
    REQUIRE(load_kernel(file, mem, boot_request::linux64));
    CHECK(bytes(mem.begin() + 0x100000, mem.begin() + 0x100000 + 300) == text);
    CHECK(bytes(mem.begin() + 0x102000, mem.begin() + 0x102000 + 64) == data);
    CHECK(all_zero(mem, 0, 0x100000));
    CHECK(all_zero(mem, 0x100000 + 300, 0x102000));
    CHECK(all_zero(mem, 0x102000 + 64, mem.size())); // BSS: left as the zero it already is
}

TEST_CASE("vmm: a segment outside guest memory is refused", "[vmm][elf]") {
    bytes mem(2 * mib, 0);
    SECTION("file bytes past the end") {
        auto r = load_kernel(make_elf(0x100000, {{0x100000, pattern(16, 0)}, {0x1ff000, pattern(0x2000, 0)}}),
                             mem);
        REQUIRE_FALSE(r);
        CHECK_THAT(r.error().message, Catch::Contains("outside guest memory"));
    }
    SECTION("BSS past the end") {
        auto r = load_kernel(make_elf(0x100000, {{0x100000, pattern(16, 0), 0x100001}}), mem);
        REQUIRE_FALSE(r);
        CHECK_THAT(r.error().message, Catch::Contains("outside guest memory"));
    }
    CHECK(all_zero(mem, 0, mem.size())); // nothing written on failure
}

TEST_CASE("vmm: a segment over a boot structure is refused", "[vmm][elf]") {
    bytes mem(2 * mib, 0);
    struct {
        std::uint64_t paddr;
        const char* what;
    } cases[] = {{0x500, "GDT"},          {0x7800, "zero page"},     {0x8f00, "boot stack"},
                 {0xa000, "page tables"}, {0x20100, "command line"}, {0xe0000, "ACPI tables"},
                 {0xe00b8, "ACPI tables"}};
    for (const auto& c : cases) {
        CAPTURE(c.paddr);
        auto r = load_kernel(make_elf(0x100000, {{0x100000, pattern(16, 0)}, {c.paddr, pattern(8, 0)}}), mem);
        REQUIRE_FALSE(r);
        CHECK_THAT(r.error().message, Catch::Contains(c.what));
    }
    // Low memory that holds no boot structure is fine.
    REQUIRE(load_kernel(make_elf(0x100000, {{0x100000, pattern(16, 0)}, {0x30000, pattern(8, 0)}}), mem));
}

TEST_CASE("vmm: the entry point must be at or above 1 MiB and inside a loaded segment", "[vmm][elf]") {
    bytes mem(4 * mib, 0);
    auto low = load_kernel(make_elf(0x30000, {{0x30000, pattern(16, 0)}}), mem);
    REQUIRE_FALSE(low);
    CHECK_THAT(low.error().message, Catch::Contains("below 1 MiB"));
    auto outside = load_kernel(make_elf(0x200000, {{0x100000, pattern(16, 0)}}), mem);
    REQUIRE_FALSE(outside);
    CHECK_THAT(outside.error().message, Catch::Contains("not inside"));
}

TEST_CASE("vmm: files that are not x86-64 ELF64 executables are refused", "[vmm][elf]") {
    bytes mem(2 * mib, 0);
    const bytes text = {'#', '!', '/', 'b', 'i', 'n', '/', 's', 'h', '\n'};
    auto not_elf = load_kernel(text, mem);
    REQUIRE_FALSE(not_elf);
    CHECK_THAT(not_elf.error().message, Catch::Contains("not an ELF"));

    bytes elf32 = make_elf(0x100000, {{0x100000, pattern(16, 0)}});
    elf32[4] = 1;
    auto r32 = load_kernel(elf32, mem);
    REQUIRE_FALSE(r32);
    CHECK_THAT(r32.error().message, Catch::Contains("ELFCLASS32"));

    auto arm = load_kernel(make_elf(0x100000, {{0x100000, pattern(16, 0)}}, 183), mem);
    REQUIRE_FALSE(arm);
    CHECK_THAT(arm.error().message, Catch::Contains("wrong machine"));
    CHECK(all_zero(mem, 0, mem.size()));
}

// ---------------------------------------------------------------- boot mode (--boot)

TEST_CASE("vmm: --boot takes auto, pvh or linux64", "[vmm][mode]") {
    REQUIRE(parse_boot_request("auto"));
    CHECK(*parse_boot_request("auto") == boot_request::automatic);
    CHECK(*parse_boot_request("pvh") == boot_request::pvh);
    CHECK(*parse_boot_request("linux64") == boot_request::linux64);
    for (const char* bad : {"", "PVH", "linux", "multiboot", "auto "}) {
        CAPTURE(bad);
        auto r = parse_boot_request(bad);
        REQUIRE_FALSE(r);
        CHECK_THAT(r.error().message, Catch::Contains("expected auto, pvh or linux64"));
    }
}

TEST_CASE("vmm: the PVH note decides the mode unless --boot forces one", "[vmm][mode]") {
    const load_spec text{0x100000, pattern(0x200, 3)};
    auto select = [](const bytes& file, boot_request req) {
        auto image = parse_elf64(file);
        REQUIRE(image);
        return select_boot_entry(*image, req);
    };

    SECTION("note present: PVH at the note's entry unless linux64 is asked for") {
        const bytes file = make_elf(0x100100, {text, pvh_note(0x100040)});
        CHECK(*select(file, boot_request::automatic) == boot_entry{boot_mode::pvh, 0x100040});
        CHECK(*select(file, boot_request::pvh) == boot_entry{boot_mode::pvh, 0x100040});
        CHECK(*select(file, boot_request::linux64) == boot_entry{boot_mode::linux64, 0x100100});
    }
    SECTION("an 8-byte descriptor (Linux's _ASM_PTR) is read whole") {
        const bytes file = make_elf(0x100100, {text, pvh_note(0x100080, 8)});
        CHECK(*select(file, boot_request::automatic) == boot_entry{boot_mode::pvh, 0x100080});
    }
    SECTION("no note: Linux 64-bit, and --boot pvh is a clear error") {
        const bytes file = make_elf(0x100100, {text});
        CHECK(*select(file, boot_request::automatic) == boot_entry{boot_mode::linux64, 0x100100});
        CHECK(*select(file, boot_request::linux64) == boot_entry{boot_mode::linux64, 0x100100});
        auto r = select(file, boot_request::pvh);
        REQUIRE_FALSE(r);
        CHECK_THAT(r.error().message, Catch::Contains("--boot pvh: the kernel has no PVH entry"));
        CHECK_THAT(r.error().message, Catch::Contains("XEN_ELFNOTE_PHYS32_ENTRY"));
        CHECK_THAT(r.error().message, Catch::Contains("--boot linux64"));
    }
    SECTION("other notes are not the PVH note") {
        const bytes file = make_elf(0x100100, {text,
                                               {0, make_note("Xen", 17, 0x100040, 4), 0, pt_note},
                                               {0, make_note("GNU", 18, 0x100040, 4), 0, pt_note},
                                               {0, make_note("XenX", 18, 0x100040, 4), 0, pt_note}});
        CHECK(*select(file, boot_request::automatic) == boot_entry{boot_mode::linux64, 0x100100});
    }
    SECTION("the first PHYS32_ENTRY note wins, after other notes in the same segment") {
        bytes notes = make_note("GNU", 5, 0, 4);
        const bytes a = make_note("Xen", 18, 0x100040, 4), b = make_note("Xen", 18, 0x100080, 4);
        notes.insert(notes.end(), a.begin(), a.end());
        notes.insert(notes.end(), b.begin(), b.end());
        const bytes file = make_elf(0x100100, {text, {0, notes, 0, pt_note}});
        CHECK(*select(file, boot_request::automatic) == boot_entry{boot_mode::pvh, 0x100040});
    }
    SECTION("a malformed note is refused unless linux64 is asked for") {
        const bytes short_desc = make_elf(0x100100, {text, pvh_note(0x100040, 2)});
        auto r = select(short_desc, boot_request::automatic);
        REQUIRE_FALSE(r);
        CHECK_THAT(r.error().message, Catch::Contains("2-byte descriptor"));
        CHECK(*select(short_desc, boot_request::linux64) == boot_entry{boot_mode::linux64, 0x100100});

        const bytes high = make_elf(0x100100, {text, pvh_note(0x100000000ull, 8)});
        auto h = select(high, boot_request::pvh);
        REQUIRE_FALSE(h);
        CHECK_THAT(h.error().message, Catch::Contains("above 4 GiB"));
    }
}

TEST_CASE("vmm: PVH loading guards the PVH structures and the PVH entry", "[vmm][mode][elf]") {
    bytes mem(2 * mib, 0);
    const load_spec text{0x100000, pattern(0x100, 0)};
    SECTION("segments over the start info, memory map, GDT or command line are refused") {
        struct {
            std::uint64_t paddr;
            const char* what;
        } cases[] = {{0x6000, "PVH start info"},
                     {0x6030, "PVH start info"},
                     {0x7000, "PVH memory map"},
                     {0x7070, "PVH memory map"},
                     {0x508, "GDT"},
                     {0x520, "IDT"},
                     {0x20700, "command line"},
                     {0xe0080, "ACPI tables"}};
        for (const auto& c : cases) {
            CAPTURE(c.paddr);
            auto r =
                load_kernel(make_elf(0x100000, {text, {c.paddr, pattern(8, 0)}, pvh_note(0x100000)}), mem);
            REQUIRE_FALSE(r);
            CHECK_THAT(r.error().message, Catch::Contains(c.what));
            CHECK_THAT(r.error().message, Catch::Contains("of the PVH boot"));
        }
        CHECK(all_zero(mem, 0, mem.size()));
    }
    SECTION("what only the Linux 64-bit boot writes is free under PVH, and the other way round") {
        for (std::uint64_t paddr : {0x8f00ull, 0x9000ull, 0xb000ull}) { // boot stack, page tables
            CAPTURE(paddr);
            const bytes file = make_elf(0x100000, {text, {paddr, pattern(8, 0)}, pvh_note(0x100000)});
            REQUIRE(load_kernel(file, mem));
            auto linux = load_kernel(file, mem, boot_request::linux64);
            REQUIRE_FALSE(linux);
            CHECK_THAT(linux.error().message, Catch::Contains("of the Linux 64-bit boot"));
        }
        const bytes at_start_info = make_elf(0x100000, {text, {0x6000, pattern(8, 0)}, pvh_note(0x100000)});
        REQUIRE(load_kernel(at_start_info, mem, boot_request::linux64));
        REQUIRE_FALSE(load_kernel(at_start_info, mem));
    }
    SECTION("the PVH entry must be inside a segment's file bytes") {
        auto r = load_kernel(make_elf(0x100000, {text, pvh_note(0x100100)}), mem); // text ends at 0x100100
        REQUIRE_FALSE(r);
        CHECK_THAT(r.error().message, Catch::Contains("PVH entry point 0x100100"));
        REQUIRE(load_kernel(make_elf(0x100000, {text, pvh_note(0x1000ff)}), mem));
    }
    SECTION("e_entry below 1 MiB is refused in PVH mode too, as linux-loader does") {
        auto r = load_kernel(make_elf(0x30000, {{0x30000, pattern(16, 0)}, text, pvh_note(0x100000)}), mem);
        REQUIRE_FALSE(r);
        CHECK_THAT(r.error().message, Catch::Contains("below 1 MiB"));
    }
}

// ---------------------------------------------------------------- zero page

TEST_CASE("vmm: zero page fields sit where Firecracker puts them", "[vmm][zero_page]") {
    bytes mem(2 * mib, 0);
    REQUIRE(write_zero_page(mem, 128 * mib, "console=ttyS0 x=1"));
    const std::size_t zp = 0x7000;
    CHECK(peek(mem, zp + 0x1fe, 2) == 0xaa55);
    CHECK(peek(mem, zp + 0x202, 4) == 0x53726448);
    CHECK(std::string(reinterpret_cast<const char*>(&mem[zp + 0x202]), 4) == "HdrS");
    CHECK(peek(mem, zp + 0x210, 1) == 0xff);
    CHECK(peek(mem, zp + 0x228, 4) == 0x20000);
    CHECK(peek(mem, zp + 0x230, 4) == 0x01000000);
    CHECK(peek(mem, zp + 0x238, 4) == 18);      // the text and its NUL
    CHECK(peek(mem, zp + 0x070, 8) == 0xe0000); // acpi_rsdp_addr: Firecracker's RSDP_ADDR
    // Nothing else in the page, and nothing outside it but the command line.
    bytes expected_page(0x1000, 0);
    for (std::size_t off : {0x072, 0x1e8, 0x1fe, 0x1ff, 0x202, 0x203, 0x204, 0x205, 0x210, 0x22a, 0x233})
        expected_page[off] = mem[zp + off];
    for (std::size_t off = 0x228; off < 0x22c; ++off) expected_page[off] = mem[zp + off];
    for (std::size_t off = 0x238; off < 0x23c; ++off) expected_page[off] = mem[zp + off];
    for (std::size_t off = 0x2d0; off < 0x2d0 + 2 * 20; ++off) expected_page[off] = mem[zp + off];
    CHECK(bytes(mem.begin() + zp, mem.begin() + zp + 0x1000) == expected_page);
    CHECK(all_zero(mem, 0, zp));
    CHECK(all_zero(mem, zp + 0x1000, 0x20000));
    CHECK(all_zero(mem, 0x20000 + 18, mem.size()));
}

TEST_CASE("vmm: e820 table, packed 20-byte entries", "[vmm][zero_page]") {
    bytes mem(2 * mib, 0);
    const std::size_t table = 0x7000 + 0x2d0;
    SECTION("128 MiB: RAM below the EBDA and from 1 MiB to the end") {
        REQUIRE(write_zero_page(mem, 128 * mib, ""));
        CHECK(peek(mem, 0x7000 + 0x1e8, 1) == 2);
        CHECK(peek(mem, table + 0, 8) == 0);
        CHECK(peek(mem, table + 8, 8) == 0x9fc00);
        CHECK(peek(mem, table + 16, 4) == 1);
        CHECK(peek(mem, table + 20, 8) == 0x100000);
        CHECK(peek(mem, table + 28, 8) == 128 * mib - 0x100000);
        CHECK(peek(mem, table + 36, 4) == 1);
        CHECK(all_zero(mem, table + 40, 0x8000));
    }
    SECTION("5 GiB: the 32-bit MMIO gap [3 GiB, 4 GiB) is left out") {
        REQUIRE(write_zero_page(mem, 5ull << 30, ""));
        CHECK(peek(mem, 0x7000 + 0x1e8, 1) == 3);
        CHECK(peek(mem, table + 28, 8) == (3ull << 30) - 0x100000);
        CHECK(peek(mem, table + 40, 8) == 4ull << 30);
        CHECK(peek(mem, table + 48, 8) == 2ull << 30);
        CHECK(peek(mem, table + 56, 4) == 1);
    }
    SECTION("exactly 3 GiB: no entry above the gap") {
        REQUIRE(write_zero_page(mem, 3ull << 30, ""));
        CHECK(peek(mem, 0x7000 + 0x1e8, 1) == 2);
        CHECK(peek(mem, table + 28, 8) == (3ull << 30) - 0x100000);
    }
}

TEST_CASE("vmm: the command line goes to 0x20000, NUL-terminated, at most 2047 bytes", "[vmm][zero_page]") {
    bytes mem(2 * mib, 0);
    SECTION("placement") {
        REQUIRE(write_zero_page(mem, 128 * mib, "a=b c"));
        CHECK(std::string(reinterpret_cast<const char*>(&mem[0x20000])) == "a=b c");
        CHECK(mem[0x20005] == 0);
    }
    SECTION("the longest that fits") {
        const std::string s(2047, 'x');
        REQUIRE(write_zero_page(mem, 128 * mib, s));
        CHECK(std::string(reinterpret_cast<const char*>(&mem[0x20000])) == s);
        CHECK(peek(mem, 0x7000 + 0x238, 4) == 2048);
    }
    SECTION("one byte too long") {
        auto r = write_zero_page(mem, 128 * mib, std::string(2048, 'x'));
        REQUIRE_FALSE(r);
        CHECK_THAT(r.error().message, Catch::Contains("at most 2047"));
        CHECK(all_zero(mem, 0, mem.size()));
    }
    SECTION("an embedded NUL") {
        using namespace std::string_literals;
        REQUIRE_FALSE(write_zero_page(mem, 128 * mib, "a\0b"s));
    }
    SECTION("guest memory too small for the boot structures") {
        bytes tiny(0x20000, 0);
        REQUIRE_FALSE(write_zero_page(tiny, 128 * mib, ""));
    }
}

TEST_CASE("vmm: toro's kernel parser reads back what write_zero_page wrote", "[vmm][zero_page]") {
    bytes mem(0x21000, 0); // up to the end of the command line area is all the parser may read
    auto info = std::make_unique<toro::boot_info>();
    const auto reader = [&] { return toro::span_phys_reader{std::as_bytes(std::span{mem}), 0}; };

    SECTION("128 MiB") {
        REQUIRE(write_zero_page(mem, 128 * mib, "console=ttyS0 toro.test=fault"));
        auto r = reader();
        REQUIRE(toro::parse_zero_page(r, 0x7000, *info));
        CHECK(info->protocol == toro::boot_protocol::linux64);
        CHECK(str(info->cmdline()) == "console=ttyS0 toro.test=fault");
        const auto regions = info->memory.regions();
        REQUIRE(regions.size() == 2);
        CHECK(regions[0] == toro::memory_region{0, 0x9fc00, toro::memory_type::usable});
        CHECK(regions[1] == toro::memory_region{0x100000, 127 * mib, toro::memory_type::usable});
        CHECK(info->memory.usable_bytes() == 0x9fc00 + 127 * mib);
        CHECK(info->rsdp == 0xe0000);
    }
    SECTION("6 GiB, empty command line") {
        REQUIRE(write_zero_page(mem, 6ull << 30, ""));
        auto r = reader();
        REQUIRE(toro::parse_zero_page(r, 0x7000, *info));
        CHECK(info->cmdline().empty());
        const auto regions = info->memory.regions();
        REQUIRE(regions.size() == 3);
        CHECK(regions[1] == toro::memory_region{0x100000, (3ull << 30) - mib, toro::memory_type::usable});
        CHECK(regions[2] == toro::memory_region{4ull << 30, 3ull << 30, toro::memory_type::usable});
    }
}

// ---------------------------------------------------------------- PVH start info

TEST_CASE("vmm: hvm_start_info fields sit where Firecracker puts them", "[vmm][pvh]") {
    bytes mem(2 * mib, 0);
    REQUIRE(write_pvh_start_info(mem, 128 * mib, "console=ttyS0 x=1"));
    const std::size_t si = 0x6000;
    CHECK(peek(mem, si + 0, 4) == 0x336ec578); // magic
    CHECK(peek(mem, si + 4, 4) == 1);          // version
    CHECK(peek(mem, si + 8, 4) == 0);          // flags
    CHECK(peek(mem, si + 12, 4) == 0);         // nr_modules
    CHECK(peek(mem, si + 16, 8) == 0);         // modlist_paddr
    CHECK(peek(mem, si + 24, 8) == 0x20000);   // cmdline_paddr
    CHECK(peek(mem, si + 32, 8) == 0xe0000);   // rsdp_paddr: the RSDP at Firecracker's RSDP_ADDR
    CHECK(peek(mem, si + 40, 8) == 0x7000);    // memmap_paddr: Firecracker's MEMMAP_START
    CHECK(peek(mem, si + 48, 4) == 4);         // memmap_entries
    CHECK(peek(mem, si + 52, 4) == 0);         // reserved
    // Nothing else anywhere but the memory map and the command line: no zero page, no page tables.
    CHECK(all_zero(mem, 0, si));
    CHECK(all_zero(mem, si + 56, 0x7000));
    CHECK(all_zero(mem, 0x7000 + 4 * 24, 0x20000));
    CHECK(std::string(reinterpret_cast<const char*>(&mem[0x20000])) == "console=ttyS0 x=1");
    CHECK(all_zero(mem, 0x20000 + 17, mem.size()));
}

TEST_CASE("vmm: the PVH memory map, 24-byte entries in Firecracker's order", "[vmm][pvh]") {
    bytes mem(2 * mib, 0);
    auto entry = [&](std::size_t i) {
        const std::size_t e = 0x7000 + i * 24;
        CHECK(peek(mem, e + 20, 4) == 0); // reserved
        return e820_entry{peek(mem, e, 8), peek(mem, e + 8, 8),
                          static_cast<std::uint32_t>(peek(mem, e + 16, 4))};
    };
    const e820_entry low{0, 0x9fc00, 1}, system{0x9fc00, 0x40400, 2}, mmconfig{0xeec00000, 0x10000000, 2};
    SECTION("128 MiB") {
        REQUIRE(write_pvh_start_info(mem, 128 * mib, ""));
        CHECK(peek(mem, 0x6000 + 48, 4) == 4);
        CHECK(entry(0) == low);
        CHECK(entry(1) == system);
        CHECK(entry(2) == mmconfig);
        CHECK(entry(3) == e820_entry{0x100000, 127 * mib, 1});
        CHECK(all_zero(mem, 0x7000 + 4 * 24, 0x20000));
        CHECK(pvh_memmap(128 * mib).size() == 4);
    }
    SECTION("5 GiB: RAM resumes at 4 GiB") {
        REQUIRE(write_pvh_start_info(mem, 5ull << 30, ""));
        CHECK(peek(mem, 0x6000 + 48, 4) == 5);
        CHECK(entry(3) == e820_entry{0x100000, (3ull << 30) - mib, 1});
        CHECK(entry(4) == e820_entry{4ull << 30, 2ull << 30, 1});
    }
    SECTION("exactly 3 GiB: no entry above the gap") {
        REQUIRE(write_pvh_start_info(mem, 3ull << 30, ""));
        CHECK(peek(mem, 0x6000 + 48, 4) == 4);
        CHECK(entry(3) == e820_entry{0x100000, (3ull << 30) - mib, 1});
    }
    SECTION("the RAM is the e820 map's RAM") {
        for (std::uint64_t total :
             std::vector<std::uint64_t>{2 * mib, 128 * mib, 3ull << 30, 5ull << 30, 255ull << 30}) {
            CAPTURE(total);
            std::vector<e820_entry> ram;
            for (const auto& e : pvh_memmap(total))
                if (e.type == 1) ram.push_back(e);
            CHECK(ram == e820_map(total));
            CHECK(pvh_memmap(total).size() <= pvh_memmap_max_entries);
        }
    }
}

TEST_CASE("vmm: PVH command line: pointer, text and limits", "[vmm][pvh]") {
    bytes mem(2 * mib, 0);
    SECTION("empty: the pointer still points at an empty string, as Firecracker's does") {
        REQUIRE(write_pvh_start_info(mem, 128 * mib, ""));
        CHECK(peek(mem, 0x6000 + 24, 8) == 0x20000);
        CHECK(mem[0x20000] == 0);
    }
    SECTION("the longest that fits") {
        const std::string s(2047, 'p');
        REQUIRE(write_pvh_start_info(mem, 128 * mib, s));
        CHECK(std::string(reinterpret_cast<const char*>(&mem[0x20000])) == s);
    }
    SECTION("too long or with a NUL: refused, nothing written") {
        using namespace std::string_literals;
        auto r = write_pvh_start_info(mem, 128 * mib, std::string(2048, 'p'));
        REQUIRE_FALSE(r);
        CHECK_THAT(r.error().message, Catch::Contains("at most 2047"));
        REQUIRE_FALSE(write_pvh_start_info(mem, 128 * mib, "a\0b"s));
        CHECK(all_zero(mem, 0, mem.size()));
    }
    SECTION("guest memory too small for the boot structures") {
        bytes tiny(0x20000, 0);
        REQUIRE_FALSE(write_pvh_start_info(tiny, 128 * mib, ""));
        CHECK(all_zero(tiny, 0, tiny.size()));
    }
}

TEST_CASE("vmm: toro's kernel parser reads back what write_pvh_start_info wrote", "[vmm][pvh]") {
    bytes mem(0x21000, 0); // up to the end of the command line area is all the parser may read
    auto info = std::make_unique<toro::boot_info>();
    const auto reader = [&] { return toro::span_phys_reader{std::as_bytes(std::span{mem}), 0}; };
    using toro::memory_region, toro::memory_type;

    SECTION("128 MiB") {
        REQUIRE(write_pvh_start_info(mem, 128 * mib, "console=ttyS0 toro.test=fault"));
        auto r = reader();
        REQUIRE(toro::parse_pvh(r, 0x6000, *info));
        CHECK(info->protocol == toro::boot_protocol::pvh);
        CHECK(str(info->cmdline()) == "console=ttyS0 toro.test=fault");
        const auto regions = info->memory.regions();
        REQUIRE(regions.size() == 4);
        CHECK(regions[0] == memory_region{0, 0x9fc00, memory_type::usable});
        CHECK(regions[1] == memory_region{0x9fc00, 0xe0000 - 0x9fc00, memory_type::reserved});
        CHECK(regions[2] == memory_region{0x100000, 127 * mib, memory_type::usable});
        CHECK(regions[3] == memory_region{0xeec00000, 256 * mib, memory_type::reserved});
        CHECK(info->memory.usable_bytes() == 0x9fc00 + 127 * mib); // the same RAM as the zero page says
        CHECK(info->rsdp == 0xe0000);
    }
    SECTION("6 GiB, empty command line") {
        REQUIRE(write_pvh_start_info(mem, 6ull << 30, ""));
        auto r = reader();
        REQUIRE(toro::parse_pvh(r, 0x6000, *info));
        CHECK(info->cmdline().empty());
        const auto regions = info->memory.regions();
        REQUIRE(regions.size() == 5);
        CHECK(regions[2] == memory_region{0x100000, (3ull << 30) - mib, memory_type::usable});
        CHECK(regions[3] == memory_region{0xeec00000, 256 * mib, memory_type::reserved});
        CHECK(regions[4] == memory_region{4ull << 30, 3ull << 30, memory_type::usable});
        CHECK(info->memory.usable_bytes() == 0x9fc00 + (6ull << 30) - mib); // all RAM but [0x9fc00, 1 MiB)
    }
    SECTION("the longest command line") {
        const std::string s(2047, 'c');
        REQUIRE(write_pvh_start_info(mem, 128 * mib, s));
        auto r = reader();
        REQUIRE(toro::parse_pvh(r, 0x6000, *info));
        CHECK(str(info->cmdline()) == s);
    }
}

// ---------------------------------------------------------------- ACPI tables

namespace {

// The byte sum of [at, at + len) mod 256: 0 for a valid ACPI checksum.
std::uint8_t byte_sum(const bytes& mem, std::size_t at, std::size_t len) {
    std::uint8_t sum = 0;
    for (std::size_t i = at; i < at + len; ++i) sum = static_cast<std::uint8_t>(sum + mem.at(i));
    return sum;
}

std::string text(const bytes& mem, std::size_t at, std::size_t len) {
    return {reinterpret_cast<const char*>(&mem.at(at)), len};
}

// Does any RAM entry of `map` overlap the ACPI block?
bool ram_over_acpi(const std::vector<e820_entry>& map) {
    for (const auto& e : map)
        if (e.type == e820_ram && e.addr < layout::acpi_end && layout::rsdp_addr < e.addr + e.size)
            return true;
    return false;
}

} // namespace

TEST_CASE("vmm: ACPI tables: RSDP, XSDT and MADT bytes", "[vmm][acpi]") {
    bytes mem(2 * mib, 0);
    const bool ioapic = GENERATE(true, false);
    CAPTURE(ioapic);
    REQUIRE(write_acpi_tables(mem, ioapic ? ioapic_presence::present : ioapic_presence::absent));

    // RSDP at 0xe0000: revision 2, both checksums, no RSDT, the XSDT's address.
    const std::size_t rsdp = 0xe0000;
    CHECK(text(mem, rsdp, 8) == "RSD PTR ");
    CHECK(byte_sum(mem, rsdp, 20) == 0);
    CHECK(text(mem, rsdp + 9, 6) == "TORO  ");
    CHECK(peek(mem, rsdp + 15, 1) == 2);
    CHECK(peek(mem, rsdp + 16, 4) == 0);
    CHECK(peek(mem, rsdp + 20, 4) == 36);
    CHECK(peek(mem, rsdp + 24, 8) == 0xe0040);
    CHECK(byte_sum(mem, rsdp, 36) == 0);
    CHECK(all_zero(mem, rsdp + 33, 0xe0040)); // reserved bytes and padding

    // XSDT: the header and one 8-byte entry, the MADT.
    const std::size_t xsdt = 0xe0040;
    CHECK(text(mem, xsdt, 4) == "XSDT");
    CHECK(peek(mem, xsdt + 4, 4) == 44);
    CHECK(peek(mem, xsdt + 8, 1) == 1);
    CHECK(byte_sum(mem, xsdt, 44) == 0);
    CHECK(text(mem, xsdt + 10, 6) == "TORO  ");
    CHECK(text(mem, xsdt + 16, 8) == "TOROXSDT");
    CHECK(text(mem, xsdt + 28, 4) == "TORO");
    CHECK(peek(mem, xsdt + 36, 8) == 0xe0080);
    CHECK(all_zero(mem, xsdt + 44, 0xe0080));

    // MADT: local APIC address, flags 0 (no PCAT_COMPAT), [the IOAPIC,] the vCPU's local APIC.
    const std::size_t madt = 0xe0080, length = ioapic ? 64 : 52;
    CHECK(text(mem, madt, 4) == "APIC");
    CHECK(peek(mem, madt + 4, 4) == length);
    CHECK(peek(mem, madt + 8, 1) >= 3);
    CHECK(byte_sum(mem, madt, length) == 0);
    CHECK(text(mem, madt + 16, 8) == "TOROMADT");
    CHECK(peek(mem, madt + 36, 4) == 0xfee00000);
    CHECK(peek(mem, madt + 40, 4) == 0);
    std::size_t e = madt + 44;
    if (ioapic) {
        CHECK(peek(mem, e, 1) == 1);      // I/O APIC
        CHECK(peek(mem, e + 1, 1) == 12); // length
        CHECK(peek(mem, e + 2, 2) == 0);  // id 0, reserved
        CHECK(peek(mem, e + 4, 4) == 0xfec00000);
        CHECK(peek(mem, e + 8, 4) == 0); // GSI base
        e += 12;
    }
    CHECK(peek(mem, e, 1) == 0);     // Processor Local APIC
    CHECK(peek(mem, e + 1, 1) == 8); // length
    CHECK(peek(mem, e + 2, 1) == 0); // ACPI processor UID
    CHECK(peek(mem, e + 3, 1) == 0); // APIC id
    CHECK(peek(mem, e + 4, 4) == 1); // enabled
    CHECK(e + 8 == madt + length);

    // Nothing else is written, and the block is what acpi_tables() builds.
    CHECK(all_zero(mem, 0, rsdp));
    CHECK(all_zero(mem, madt + length, mem.size()));
    const bytes built = acpi_tables(ioapic ? ioapic_presence::present : ioapic_presence::absent);
    CHECK(built.size() == layout::acpi_end - layout::rsdp_addr);
    CHECK(bytes(mem.begin() + rsdp, mem.begin() + rsdp + built.size()) == built);

    bytes tiny(0xe0000, 0);
    REQUIRE_FALSE(write_acpi_tables(tiny, ioapic_presence::present));
    CHECK(all_zero(tiny, 0, tiny.size()));
}

TEST_CASE("vmm: toro's platform parser reads back the ACPI tables", "[vmm][acpi]") {
    bytes mem(mib, 0); // the BIOS area up to 1 MiB: what the RSDP scan reads
    const auto reader = [&] { return toro::span_phys_reader{std::as_bytes(std::span{mem}), 0}; };

    SECTION("with the IOAPIC, as the launcher writes them") {
        REQUIRE(write_acpi_tables(mem, ioapic_presence::present));
        auto r = reader();
        auto p = toro::discover_platform(r, 0xe0000);
        REQUIRE(p);
        CHECK(p->source == toro::platform_source::acpi);
        CHECK(p->rsdp_address == 0xe0000);
        CHECK(p->root_table.address == 0xe0040);
        CHECK(p->root_table.is_xsdt);
        CHECK(p->table_address == 0xe0080);
        CHECK(p->lapic_address == 0xfee00000);
        CHECK_FALSE(p->pcat_compat);
        REQUIRE(p->cpu_count == 1);
        CHECK(p->cpus[0].apic_id == 0);
        CHECK(p->cpus[0].acpi_uid == 0);
        CHECK(p->cpus[0].enabled);
        CHECK(p->cpus_ignored == 0);
        REQUIRE(p->ioapic_count == 1);
        CHECK(p->ioapics[0].id == 0);
        CHECK(p->ioapics[0].address == 0xfec00000);
        CHECK(p->ioapics[0].gsi_base == 0);
        CHECK(p->override_count == 0);
        auto madt = toro::find_acpi_table(r, 0xe0000, "APIC");
        REQUIRE(madt);
        CHECK(*madt == 0xe0080);
    }
    SECTION("without an IOAPIC") {
        REQUIRE(write_acpi_tables(mem, ioapic_presence::absent));
        auto r = reader();
        auto p = toro::discover_platform(r, 0xe0000);
        REQUIRE(p);
        CHECK(p->source == toro::platform_source::acpi);
        REQUIRE(p->cpu_count == 1);
        CHECK(p->cpus[0].apic_id == 0);
        CHECK(p->ioapic_count == 0);
    }
    SECTION("without the hint, the scan finds the RSDP first thing, at 0xe0000") {
        REQUIRE(write_acpi_tables(mem, ioapic_presence::present));
        auto r = reader();
        auto at = toro::find_rsdp(r, 0);
        REQUIRE(at);
        CHECK(*at == 0xe0000);
        auto p = toro::discover_platform(r, 0);
        REQUIRE(p);
        CHECK(p->source == toro::platform_source::acpi);
        CHECK(p->rsdp_address == 0xe0000);
        CHECK(p->cpu_count == 1);
        CHECK(p->ioapic_count == 1);
    }
    SECTION("a corrupted byte is caught by the checksums") {
        REQUIRE(write_acpi_tables(mem, ioapic_presence::present));
        mem[0xe0080 + 44 + 12 + 3] = 1; // the local APIC's id
        auto r = reader();
        REQUIRE_FALSE(toro::discover_platform(r, 0xe0000));
    }
}

TEST_CASE("vmm: the ACPI tables are not RAM in either memory map", "[vmm][acpi]") {
    for (std::uint64_t total : std::vector<std::uint64_t>{2 * mib, 128 * mib, 3ull << 30, 5ull << 30}) {
        CAPTURE(total);
        CHECK_FALSE(ram_over_acpi(e820_map(total)));
        CHECK_FALSE(ram_over_acpi(pvh_memmap(total)));
    }
    // As the kernel reads each map: no usable region covers [0xe0000, 0xe00c0).
    bytes mem(0x21000, 0);
    auto info = std::make_unique<toro::boot_info>();
    auto usable_over_acpi = [&] {
        for (const auto& m : info->memory.regions())
            if (m.type == toro::memory_type::usable && m.base < layout::acpi_end &&
                layout::rsdp_addr < m.end())
                return true;
        return false;
    };
    auto r = toro::span_phys_reader{std::as_bytes(std::span{mem}), 0};
    REQUIRE(write_zero_page(mem, 128 * mib, ""));
    REQUIRE(toro::parse_zero_page(r, 0x7000, *info));
    CHECK_FALSE(usable_over_acpi());
    std::fill(mem.begin(), mem.end(), 0);
    info = std::make_unique<toro::boot_info>();
    REQUIRE(write_pvh_start_info(mem, 128 * mib, ""));
    REQUIRE(toro::parse_pvh(r, 0x6000, *info));
    CHECK_FALSE(usable_over_acpi());
}

TEST_CASE("vmm: setup_boot writes the ACPI tables and points both protocols at them", "[vmm][acpi][layout]") {
    bytes mem(4 * mib, 0);
    const bytes file = make_elf(0x100010, {{0x100000, pattern(32, 5)}, pvh_note(0x100004)});
    auto info = std::make_unique<toro::boot_info>();
    auto r = toro::span_phys_reader{std::as_bytes(std::span{mem}), 0};
    SECTION("PVH: hvm_start_info.rsdp_paddr") {
        REQUIRE(setup_boot(file, mem, 64 * mib, "hello"));
        REQUIRE(toro::parse_pvh(r, 0x6000, *info));
    }
    SECTION("Linux 64-bit: boot_params.acpi_rsdp_addr") {
        REQUIRE(setup_boot(file, mem, 64 * mib, "hello", boot_request::linux64));
        REQUIRE(toro::parse_zero_page(r, 0x7000, *info));
    }
    CHECK(info->rsdp == 0xe0000);
    auto p = toro::discover_platform(r, info->rsdp);
    REQUIRE(p);
    CHECK(p->source == toro::platform_source::acpi);
    REQUIRE(p->cpu_count == 1);
    CHECK(p->cpus[0].apic_id == 0);
    REQUIRE(p->ioapic_count == 1); // the launcher always has KVM's in-kernel IOAPIC
    CHECK(p->ioapics[0].address == 0xfec00000);
}

// ---------------------------------------------------------------- page tables, GDT, registers

namespace {

// Walks the 4-level tables in `mem` the way the MMU does; returns ~0 for an unmapped address.
std::uint64_t translate(const bytes& mem, std::uint64_t cr3, std::uint64_t va) {
    std::uint64_t table = cr3;
    for (int level = 3; level >= 0; --level) {
        const std::uint64_t index = (va >> (12 + 9 * level)) & 511;
        const std::uint64_t e = peek(mem, table + index * 8, 8);
        if (!(e & 1)) return ~0ull;
        const std::uint64_t frame = e & 0x000ffffffffff000ull;
        if (level == 1 && (e & 0x80)) return (frame & ~((1ull << 21) - 1)) | (va & ((1ull << 21) - 1));
        REQUIRE(level != 0);
        table = frame;
    }
    return ~0ull;
}

} // namespace

TEST_CASE("vmm: the page tables identity-map the first GiB with 2 MiB pages", "[vmm][paging]") {
    bytes mem(2 * mib, 0);
    REQUIRE(write_page_tables(mem));
    CHECK(peek(mem, 0x9000, 8) == 0xa003);
    CHECK(peek(mem, 0xa000, 8) == 0xb003);
    for (std::uint64_t i = 0; i < 512; ++i) {
        CAPTURE(i);
        CHECK(peek(mem, 0xb000 + i * 8, 8) == ((i << 21) | 0x83));
    }
    CHECK(all_zero(mem, 0x9008, 0xa000)); // one PML4 entry
    CHECK(all_zero(mem, 0xa008, 0xb000)); // one PDPT entry: exactly 1 GiB
    CHECK(all_zero(mem, 0, 0x9000));
    CHECK(all_zero(mem, 0xc000, mem.size()));
    for (std::uint64_t va :
         {0x0ull, 0x7000ull, 0x100000ull, 0x1fffffull, 0x200000ull, 0x12345678ull, 0x3fffffffull})
        CHECK(translate(mem, 0x9000, va) == va);
    CHECK(translate(mem, 0x9000, 1ull << 30) == ~0ull);
    CHECK(translate(mem, 0x9000, 0xc0000000) == ~0ull);
}

TEST_CASE("vmm: GDT bytes and the segments KVM gets", "[vmm][gdt]") {
    bytes mem(2 * mib, 0);
    REQUIRE(write_gdt(mem));
    CHECK(peek(mem, 0x500, 8) == 0);
    CHECK(peek(mem, 0x508, 8) == 0x00af9b000000ffffull);
    CHECK(peek(mem, 0x510, 8) == 0x00cf93000000ffffull);
    CHECK(peek(mem, 0x518, 8) == 0x008f8b000000ffffull);
    CHECK(peek(mem, 0x520, 8) == 0); // the IDT
    CHECK(all_zero(mem, 0, 0x500));
    CHECK(all_zero(mem, 0x520, mem.size()));

    const boot_cpu_state st = initial_cpu_state(0x100123);
    CHECK(st.code.selector == 0x08);
    CHECK(st.code.l == 1);
    CHECK(st.code.db == 0);
    CHECK(st.code.type == 0xb);
    CHECK(st.code.s == 1);
    CHECK(st.code.present == 1);
    CHECK(st.code.g == 1);
    CHECK(st.code.limit == 0xffffffff);
    CHECK(st.code.base == 0);
    CHECK(st.data.selector == 0x10);
    CHECK(st.data.type == 0x3);
    CHECK(st.data.db == 1);
    CHECK(st.data.l == 0);
    CHECK(st.tss.selector == 0x18);
    CHECK(st.tss.type == 0xb);
    CHECK(st.tss.s == 0);
    CHECK(st.tss.unusable == 0);
    CHECK(segment_from_gdt(0, 0).unusable == 1);
    // A base spread over the descriptor's three base fields comes back whole.
    CHECK(segment_from_gdt(gdt_entry(0x93, 0x12345678, 0xabcde), 2).base == 0x12345678);
    CHECK(segment_from_gdt(gdt_entry(0x93, 0x12345678, 0xabcde), 2).limit == 0xabcde);
}

TEST_CASE("vmm: initial registers follow the Linux 64-bit boot protocol", "[vmm][regs]") {
    const boot_cpu_state st = initial_cpu_state(0x100123);
    CHECK(st.rip == 0x100123);
    CHECK(st.rsp == 0x8ff0);
    CHECK(st.rbp == 0x8ff0);
    CHECK(st.rsi == 0x7000);
    CHECK(st.rflags == 0x2);
    CHECK(st.cr3 == 0x9000);
    CHECK(st.cr0_set == 0x80000001);
    CHECK(st.cr4_set == 0x20);
    CHECK(st.efer_set == 0x500);
    CHECK(st.gdt_base == 0x500);
    CHECK(st.gdt_limit == 31);
    CHECK(st.idt_base == 0x520);
    CHECK(st.idt_limit == 7);
}

TEST_CASE("vmm: PVH GDT bytes and the segments KVM gets", "[vmm][gdt][pvh]") {
    bytes mem(2 * mib, 0);
    REQUIRE(write_gdt(mem, boot_mode::pvh));
    CHECK(peek(mem, 0x500, 8) == 0);
    CHECK(peek(mem, 0x508, 8) == 0x00cf9b000000ffffull); // Firecracker's regs.rs test values
    CHECK(peek(mem, 0x510, 8) == 0x00cf93000000ffffull);
    CHECK(peek(mem, 0x518, 8) == 0x00008b0000000067ull);
    CHECK(all_zero(mem, 0, 0x500));
    CHECK(all_zero(mem, 0x520, mem.size()));

    const boot_cpu_state st = initial_cpu_state(0x100000, boot_mode::pvh);
    const segment code{0, 0xffffffff, 0x08, 0xb, 1, 0, 1, 1, 0, 1, 0, 0};
    const segment data{0, 0xffffffff, 0x10, 0x3, 1, 0, 1, 1, 0, 1, 0, 0};
    const segment tss{0, 0x67, 0x18, 0xb, 1, 0, 0, 0, 0, 0, 0, 0};
    CHECK(st.code == code); // 32-bit (D), not 64-bit (L), flat 4 GiB
    CHECK(st.data == data);
    CHECK(st.tss == tss); // a busy 32-bit TSS of 104 bytes, as pvh.pandoc asks
    CHECK(st.gdt_base == 0x500);
    CHECK(st.gdt_limit == 31);
    CHECK(st.idt_base == 0x520);
    CHECK(st.idt_limit == 7);
}

TEST_CASE("vmm: initial registers follow the PVH boot ABI", "[vmm][regs][pvh]") {
    const boot_cpu_state st = initial_cpu_state(boot_entry{boot_mode::pvh, 0x100000});
    CHECK(st.mode == boot_mode::pvh);
    CHECK(st.rip == 0x100000);
    CHECK(st.rbx == 0x6000); // hvm_start_info
    CHECK(st.rflags == 0x2);
    CHECK(st.rsp == 0);
    CHECK(st.rbp == 0);
    CHECK(st.rsi == 0);
    CHECK(st.cr3 == 0);
    // What KVM ends up with from any reset state: CR0 = PE|ET, CR4 = 0, EFER = 0.
    const auto apply = [](std::uint64_t reset, std::uint64_t clear, std::uint64_t set) {
        return (reset & ~clear) | set;
    };
    for (std::uint64_t reset : {0ull, 0x60000010ull, ~0ull}) {
        CAPTURE(reset);
        CHECK(apply(reset, st.cr0_clear, st.cr0_set) == 0x11);
        CHECK(apply(reset, st.cr4_clear, st.cr4_set) == 0);
        CHECK(apply(reset, st.efer_clear, st.efer_set) == 0);
    }
    // The Linux 64-bit state keeps ORing into KVM's reset values: 0x60000010 -> 0xe0000011.
    const boot_cpu_state lx = initial_cpu_state(boot_entry{boot_mode::linux64, 0x100123});
    CHECK(lx.rbx == 0);
    CHECK(apply(0x60000010, lx.cr0_clear, lx.cr0_set) == 0xe0000011);
    CHECK(apply(0, lx.efer_clear, lx.efer_set) == 0x500);
}

TEST_CASE("vmm: setup_boot writes every structure and returns the entry state", "[vmm][layout]") {
    bytes mem(4 * mib, 0);
    const bytes file = make_elf(0x100000, {{0x100000, pattern(32, 5)}});
    auto st = setup_boot(file, mem, 64 * mib, "hello");
    REQUIRE(st);
    CHECK(st->rip == 0x100000);
    CHECK(st->mode == boot_mode::linux64);
    CHECK(peek(mem, 0x508, 8) == 0x00af9b000000ffffull);
    CHECK(peek(mem, 0x9000, 8) == 0xa003);
    CHECK(peek(mem, 0x7000 + 0x1e8, 1) == 2);
    CHECK(std::string(reinterpret_cast<const char*>(&mem[0x20000])) == "hello");
    CHECK(mem[0x100000] == 5);
    auto bad = setup_boot(file, mem, 64 * mib, std::string(5000, 'y'));
    REQUIRE_FALSE(bad);
    CHECK_THAT(bad.error().message, Catch::Contains("command line"));
}

TEST_CASE("vmm: setup_boot boots a kernel with the PVH note through PVH", "[vmm][layout][pvh]") {
    bytes mem(4 * mib, 0);
    const bytes file = make_elf(0x100010, {{0x100000, pattern(32, 5)}, pvh_note(0x100004)});
    SECTION("auto") {
        auto st = setup_boot(file, mem, 64 * mib, "hello");
        REQUIRE(st);
        CHECK(st->mode == boot_mode::pvh);
        CHECK(st->rip == 0x100004);
        CHECK(st->rbx == 0x6000);
        CHECK(peek(mem, 0x6000, 4) == 0x336ec578);
        CHECK(peek(mem, 0x508, 8) == 0x00cf9b000000ffffull);
        CHECK(std::string(reinterpret_cast<const char*>(&mem[0x20000])) == "hello");
        CHECK(all_zero(mem, 0x7000 + 4 * 24, 0x20000)); // no zero page fields, stack or page tables
        CHECK(mem[0x100000] == 5);
    }
    SECTION("--boot linux64") {
        auto st = setup_boot(file, mem, 64 * mib, "hello", boot_request::linux64);
        REQUIRE(st);
        CHECK(st->mode == boot_mode::linux64);
        CHECK(st->rip == 0x100010);
        CHECK(all_zero(mem, 0x6000, 0x7000)); // no start info
        CHECK(peek(mem, 0x7000 + 0x202, 4) == 0x53726448);
        CHECK(peek(mem, 0x9000, 8) == 0xa003);
    }
    SECTION("failures write nothing") {
        REQUIRE_FALSE(setup_boot(file, mem, 64 * mib, std::string(3000, 'y')));
        REQUIRE_FALSE(setup_boot(make_elf(0x100010, {{0x100000, pattern(32, 5)}}), mem, 64 * mib, "",
                                 boot_request::pvh));
        CHECK(all_zero(mem, 0, mem.size()));
    }
}

// ---------------------------------------------------------------- devices

namespace {

io_action out8(port_bus& bus, std::uint16_t port, std::uint8_t v) {
    const std::uint8_t b[] = {v};
    return bus.io_out(port, b);
}

void out_text(port_bus& bus, const std::string& s) {
    for (char c : s) REQUIRE(out8(bus, 0x3f8, static_cast<std::uint8_t>(c)).kind == io_action::run);
}

} // namespace

TEST_CASE("vmm: COM1 sends THR bytes to the output", "[vmm][serial]") {
    port_bus bus;
    out_text(bus, "Hello\n");
    CHECK(bus.com1.output() == "Hello\n");
    CHECK(bus.io_in(0x3fd) == 0x60); // LSR: THR empty, transmitter empty, always
    CHECK(bus.io_in(0x3fa) == 0x01); // IIR: no interrupt pending, no FIFO (as Firecracker's UART)
    CHECK(bus.io_in(0x3f8) == 0);    // RBR: nothing received
}

TEST_CASE("vmm: COM1 scratch register round trip", "[vmm][serial]") {
    port_bus bus;
    for (std::uint8_t v : {0x5a, 0xa5, 0x00, 0xff}) {
        REQUIRE(out8(bus, 0x3ff, v).kind == io_action::run);
        CHECK(bus.io_in(0x3ff) == v);
    }
    CHECK(bus.com1.output().empty());
}

TEST_CASE("vmm: COM1 divisor latch writes are not output", "[vmm][serial]") {
    port_bus bus;
    // What toro's uart_16550::init does: IER off, DLAB on, divisor 1, 8N1 (DLAB off), FIFO, MCR.
    out8(bus, 0x3f9, 0x00);
    out8(bus, 0x3fb, 0x80);
    out8(bus, 0x3f8, 0x01);
    out8(bus, 0x3f9, 0x00);
    CHECK(bus.io_in(0x3f8) == 0x01); // DLL reads back while DLAB is set
    CHECK(bus.io_in(0x3fb) == 0x80);
    out8(bus, 0x3fb, 0x03);
    out8(bus, 0x3fa, 0x07);
    out8(bus, 0x3fc, 0x0b);
    CHECK(bus.com1.output().empty());
    CHECK(bus.io_in(0x3fb) == 0x03);
    CHECK(bus.io_in(0x3fc) == 0x0b);
    CHECK(bus.io_in(0x3f9) == 0x00); // IER again, not DLM
    out_text(bus, "ok");
    CHECK(bus.com1.output() == "ok");
}

TEST_CASE("vmm: a wide write to COM1 is split into byte writes", "[vmm][serial]") {
    port_bus bus;
    const std::uint8_t w[] = {'h', 0x00}; // THR <- 'h', IER <- 0
    REQUIRE(bus.io_out(0x3f8, w).kind == io_action::run);
    CHECK(bus.com1.output() == "h");
    std::uint8_t r[2] = {};
    bus.io_in(0x3fc, r); // MCR, LSR
    CHECK(r[1] == 0x60);
}

TEST_CASE("vmm: isa-debug-exit maps v to (v << 1) | 1", "[vmm][exit]") {
    struct {
        std::uint8_t v;
        int status;
    } cases[] = {{0, 1}, {1, 3}, {101, 203}, {127, 255}, {128, 1}, {255, 255}};
    for (const auto& c : cases) {
        CAPTURE(c.v);
        port_bus bus;
        const io_action a = out8(bus, 0xf4, c.v);
        REQUIRE(a.kind == io_action::exit);
        CHECK(a.status == c.status);
        CHECK(a.status % 2 == 1); // never a launcher status
    }
    port_bus bus;
    const std::uint8_t wide[] = {0x05, 0x00, 0x00, 0x00}; // outl 5: QEMU takes any width
    CHECK(bus.io_out(0xf4, wide).status == 11);
    CHECK(out8(bus, 0xf5, 1).kind == io_action::run);
}

TEST_CASE("vmm: reset ports end the VM with status 0", "[vmm][exit]") {
    port_bus bus;
    const io_action kbd = out8(bus, 0x64, 0xfe);
    CHECK(kbd.kind == io_action::exit);
    CHECK(kbd.status == 0);
    CHECK(out8(bus, 0x64, 0xd1).kind == io_action::run); // other 8042 commands do nothing
    CHECK(bus.io_in(0x64) == 0);                         // idle controller: nothing to wait for

    const io_action rcr = out8(bus, 0xcf9, 0x06);
    CHECK(rcr.kind == io_action::exit);
    CHECK(rcr.status == 0);
    CHECK(out8(bus, 0xcf9, 0x02).kind == io_action::run);        // selects the reset type only
    const std::uint8_t pci_address[] = {0x00, 0x06, 0x00, 0x80}; // outl to 0xcf8 spans 0xcf9
    CHECK(bus.io_out(0xcf8, pci_address).kind == io_action::run);
}

TEST_CASE("vmm: other ports ignore writes and read all-ones", "[vmm][exit]") {
    port_bus bus;
    CHECK(out8(bus, 0x80, 0x12).kind == io_action::run);
    CHECK(out8(bus, 0x2f8, 'x').kind == io_action::run); // COM2 is not there
    CHECK(bus.io_in(0x2f8) == 0xff);
    CHECK(bus.io_in(0x80) == 0xff);
    CHECK(bus.io_in(0x3f7) == 0xff); // just below COM1
    CHECK(bus.io_in(0x400) == 0xff); // just above it
    CHECK(bus.com1.output().empty());
}

TEST_CASE("vmm: the boot timer fires on one byte of 123 at 0xc0000000", "[vmm][mmio]") {
    const std::uint8_t magic[] = {123};
    const std::uint8_t other[] = {122};
    const std::uint8_t wide[] = {123, 0};
    CHECK(mmio_write(0xc0000000, magic) == mmio_event::boot_complete);
    CHECK(mmio_write(0xc0000000, other) == mmio_event::none);
    CHECK(mmio_write(0xc0000000, wide) == mmio_event::none);
    CHECK(mmio_write(0xc0000001, magic) == mmio_event::none);
    CHECK(mmio_write(0xd0000000, magic) == mmio_event::none); // the pre-1.13 address is not ours
}
