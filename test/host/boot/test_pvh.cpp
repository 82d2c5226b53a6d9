// Host tests for toro::parse_pvh: hvm_start_info structures built byte by byte in a fake memory.
#include <catch2/catch.hpp>

#include "boot_test_support.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <toro/boot/parse.hpp>
#include <toro/boot/pvh.hpp>

namespace {

using namespace boot_test;

// A PVH image: start info at base + 0x1000, memmap at + 0x1100, command line at + 0x2000.
struct pvh_image : image {
    std::uint64_t start, memmap, cmdline_at;
    std::uint32_t entries = 0;

    explicit pvh_image(std::uint64_t b = 0x1000, std::size_t size = 0x10000)
        : image{b, size}, start{b + 0x1000}, memmap{b + 0x1100}, cmdline_at{b + 0x2000} {
        put32(start + 0, 0x336ec578);
        put32(start + 4, 1); // version
        put64(start + 40, memmap);
    }
    void entry(std::uint64_t addr, std::uint64_t size, std::uint32_t type) {
        const std::uint64_t at = memmap + 24ull * entries;
        put64(at, addr);
        put64(at + 8, size);
        put32(at + 16, type);
        put32(at + 20, 0xffffffff); // reserved: must be ignored
        put32(start + 48, ++entries);
    }
    void cmdline(const std::string& s) {
        put_string(cmdline_at, s);
        put64(start + 24, cmdline_at);
    }
    void qemu_map() {
        entry(0x0, 0x9fc00, 1);
        entry(0x9fc00, 0x400, 2);
        entry(0xf0000, 0x10000, 2);
        entry(0x100000, 0xbfee0000, 1);
        entry(0xbffe0000, 0x20000, 2);
        entry(0xfeffc000, 0x4000, 2);
        entry(0xfffc0000, 0x40000, 2);
        entry(0x100000000, 0x40000000, 1);
    }
};

const char* const qemu_expected = "[0x0,0x9fc00) usable\n"
                                  "[0x9fc00,0xa0000) reserved\n"
                                  "[0xf0000,0x100000) reserved\n"
                                  "[0x100000,0xbffe0000) usable\n"
                                  "[0xbffe0000,0xc0000000) reserved\n"
                                  "[0xfeffc000,0xff000000) reserved\n"
                                  "[0xfffc0000,0x100000000) reserved\n"
                                  "[0x100000000,0x140000000) usable\n";

struct parsed {
    std::unique_ptr<toro::boot_info> info = std::make_unique<toro::boot_info>();
    toro::expected<void> result;
};

parsed parse(const pvh_image& img) {
    parsed p;
    auto mem = img.reader();
    p.result = toro::parse_pvh(mem, img.start, *p.info);
    return p;
}

parsed parse_at(const image& img, std::uint64_t at) {
    parsed p;
    auto mem = img.reader();
    p.result = toro::parse_pvh(mem, at, *p.info);
    return p;
}

void check_error(const parsed& p, const std::string& what, std::uint64_t value) {
    REQUIRE_FALSE(p.result);
    CHECK(str(p.result.error().what) == what);
    CHECK(p.result.error().has_value);
    CHECK(hex(p.result.error().value) == hex(value));
}

} // namespace

TEST_CASE("PVH: a QEMU-like memory map, RSDP and command line", "[boot][pvh]") {
    pvh_image img;
    img.qemu_map();
    img.cmdline("console=ttyS0 quiet");
    img.put64(img.start + 32, 0xf5a40); // rsdp_paddr
    auto p = parse(img);
    REQUIRE(p.result);
    CHECK(p.info->protocol == toro::boot_protocol::pvh);
    CHECK(show(p.info->memory) == qemu_expected);
    CHECK(str(p.info->cmdline()) == "console=ttyS0 quiet");
    CHECK(p.info->rsdp == 0xf5a40);
}

TEST_CASE("PVH through parse_boot_info", "[boot][pvh]") {
    pvh_image img;
    img.qemu_map();
    auto info = std::make_unique<toro::boot_info>();
    REQUIRE(info->set_cmdline("left over"));
    info->rsdp = 77;
    auto mem = img.reader();
    REQUIRE(toro::parse_boot_info(toro::boot_protocol::pvh, img.start, 42, mem, *info));
    CHECK(info->protocol == toro::boot_protocol::pvh);
    CHECK(info->tsc_at_entry == 42);
    CHECK(info->cmdline().empty());
    CHECK(info->rsdp == 0);
    CHECK(show(info->memory) == qemu_expected);

    // A failure after the memory map was read leaves nothing half-filled behind.
    img.put64(img.start + 32, 0xe0000);
    img.put64(img.start + 24, 0x7fff0000); // command line outside memory
    auto r = toro::parse_boot_info(toro::boot_protocol::pvh, img.start, 43, mem, *info);
    REQUIRE_FALSE(r);
    CHECK(info->protocol == toro::boot_protocol::pvh);
    CHECK(info->tsc_at_entry == 43);
    CHECK(info->memory.empty());
    CHECK(info->rsdp == 0);
    CHECK(info->cmdline().empty());
}

TEST_CASE("PVH via the kernel's identity reader over real host memory", "[boot][pvh]") {
    // PVH pointers are 64-bit, so the structures can sit in a host buffer at their host addresses,
    // which is exactly what the kernel's identity-mapped reader sees.
    std::vector<std::byte> storage(0x3000);
    const auto host = reinterpret_cast<std::uintptr_t>(storage.data());
    pvh_image img{host, storage.size()};
    img.qemu_map();
    img.cmdline("from the host");
    img.put64(img.start + 32, 0xe0000);
    for (std::size_t i = 0; i < storage.size(); ++i) storage[i] = img.bytes[i];
    toro::identity_phys_reader mem{host, host + storage.size()};
    auto info = std::make_unique<toro::boot_info>();
    REQUIRE(toro::parse_boot_info(toro::boot_protocol::pvh, img.start, 9, mem, *info));
    CHECK(show(info->memory) == qemu_expected);
    CHECK(str(info->cmdline()) == "from the host");
    CHECK(info->rsdp == 0xe0000);

    // A command line pointer just outside [low, high) is refused.
    const auto end = host + storage.size();
    for (std::size_t i = 0; i < 3; ++i) storage[storage.size() - 3 + i] = std::byte{'z'};
    for (std::size_t i = 0; i < 8; ++i)
        storage[img.start + 24 - host + i] = static_cast<std::byte>((end - 3) >> (8 * i));
    auto r = toro::parse_boot_info(toro::boot_protocol::pvh, img.start, 9, mem, *info);
    REQUIRE_FALSE(r);
    CHECK(str(r.error().what) ==
          "kernel command line runs into unreadable memory before its terminating NUL");
    CHECK(r.error().value == end);
}

TEST_CASE("PVH: wrong magic and version 0", "[boot][pvh]") {
    pvh_image img;
    img.qemu_map();
    img.put32(img.start, 0x2badb002);
    check_error(parse(img), "PVH start info magic is wrong (expected 0x336ec578)", 0x2badb002);
    img.put32(img.start, 0x336ec578);
    img.put32(img.start + 4, 0);
    check_error(parse(img), "PVH start info version 0 carries no memory map", 0);
    img.put32(img.start + 4, 2); // a later version still starts with the same fields
    REQUIRE(parse(img).result);
}

TEST_CASE("PVH: start info outside memory", "[boot][pvh]") {
    pvh_image img;
    img.qemu_map();
    check_error(parse_at(img, 0x0), "PVH start info is unreadable", 0x0);
    check_error(parse_at(img, 0x11000), "PVH start info is unreadable", 0x11000);
    check_error(parse_at(img, 0x11000 - 55), "PVH start info is unreadable", 0x11000 - 55); // one byte short
    check_error(parse_at(img, 0xffffffffffffffe0), "PVH start info is unreadable", 0xffffffffffffffe0);
}

TEST_CASE("PVH: malformed memory maps", "[boot][pvh]") {
    pvh_image img;
    img.qemu_map();

    SECTION("zero entries") {
        img.put32(img.start + 48, 0);
        check_error(parse(img), "PVH memory map has no entries (memmap_entries is 0)", 0);
    }
    SECTION("more entries than capacity") {
        img.put32(img.start + 48, 129);
        check_error(parse(img), "PVH memory map has more than 128 entries; memmap_entries", 129);
        img.put32(img.start + 48, 0xffffffff);
        check_error(parse(img), "PVH memory map has more than 128 entries; memmap_entries", 0xffffffff);
    }
    SECTION("memmap outside memory") {
        img.put64(img.start + 40, 0x40000000);
        check_error(parse(img), "PVH memory map is unreadable at", 0x40000000);
        img.put64(img.start + 40, 0);
        check_error(parse(img), "PVH memory map is unreadable at", 0);
    }
    SECTION("memmap running off the end of memory") {
        img.put64(img.start + 40, 0x11000 - 3 * 24); // three entries fit
        check_error(parse(img), "PVH memory map is unreadable at", 0x11000);
    }
    SECTION("memmap wrapping round the top of the address space") {
        img.put64(img.start + 40, 0xfffffffffffffff0);
        check_error(parse(img), "PVH memory map wraps past the end of the address space; memmap_paddr",
                    0xfffffffffffffff0);
    }
    SECTION("wrap-around entry") {
        img.entry(0xffffffffffff0000, 0x10000, 2); // ends exactly at 2^64: not representable
        check_error(parse(img), "memory map entry wraps past the end of the address space; base",
                    0xffffffffffff0000);
    }
    SECTION("overlapping entries: reserved wins") {
        img.entry(0x80000, 0x80000, 1); // usable over the reserved 0x9fc00 and 0xf0000 areas
        auto p = parse(img);
        REQUIRE(p.result);
        CHECK(show(p.info->memory) == "[0x0,0x9fc00) usable\n"
                                      "[0x9fc00,0xa0000) reserved\n"
                                      "[0xa0000,0xf0000) usable\n"
                                      "[0xf0000,0x100000) reserved\n"
                                      "[0x100000,0xbffe0000) usable\n"
                                      "[0xbffe0000,0xc0000000) reserved\n"
                                      "[0xfeffc000,0xff000000) reserved\n"
                                      "[0xfffc0000,0x100000000) reserved\n"
                                      "[0x100000000,0x140000000) usable\n");
    }
    SECTION("only zero-length entries") {
        pvh_image zeros;
        zeros.entry(0x100000, 0, 1);
        auto p = parse(zeros);
        REQUIRE_FALSE(p.result);
        CHECK(str(p.result.error().what) ==
              "the loader's memory map is empty (no entry has a non-zero length)");
    }
}

TEST_CASE("PVH: exactly 128 entries", "[boot][pvh]") {
    pvh_image img;
    for (std::uint64_t i = 0; i < 128; ++i) img.entry(i * 0x2000, 0x1000, i % 2 ? 1 : 2);
    auto p = parse(img);
    REQUIRE(p.result);
    CHECK(p.info->memory.size() == 128);
}

TEST_CASE("PVH: command line variants", "[boot][pvh]") {
    pvh_image img;
    img.qemu_map();

    SECTION("pointer 0: empty") {
        auto p = parse(img);
        REQUIRE(p.result);
        CHECK(p.info->cmdline().empty());
    }
    SECTION("too long") {
        img.cmdline(std::string(3000, 'y'));
        check_error(parse(img), "kernel command line is longer than 2047 bytes", img.cmdline_at);
    }
    SECTION("outside memory") {
        img.put64(img.start + 24, 0xffffffff00000000);
        check_error(parse(img), "kernel command line runs into unreadable memory before its terminating NUL",
                    0xffffffff00000000);
    }
    SECTION("not NUL-terminated before the end of memory") {
        img.put_string(0x11000 - 4, "abcd", false);
        img.put64(img.start + 24, 0x11000 - 4);
        check_error(parse(img), "kernel command line runs into unreadable memory before its terminating NUL",
                    0x11000);
    }
}

TEST_CASE("PVH: everything at the very top of the address space", "[boot][pvh]") {
    // Memory ends exactly at 2^64: reads up to the last byte work, nothing wraps to address 0.
    pvh_image img{0xffffffffffff0000, 0x10000};
    img.qemu_map();
    img.put_string(0xffffffffffffffff - 2, "abc", false); // the last three bytes, no NUL
    img.put64(img.start + 24, 0xffffffffffffffff - 2);
    check_error(parse(img), "kernel command line runs into unreadable memory before its terminating NUL",
                0xffffffffffffffff - 2);
    img.put_string(0xffffffffffffffff - 2, "ab", true);
    auto p = parse(img);
    REQUIRE(p.result);
    CHECK(str(p.info->cmdline()) == "ab");
    CHECK(show(p.info->memory) == qemu_expected);
}
