// Host tests for toro::parse_zero_page: Linux boot_params pages built byte by byte, Firecracker style.
#include <catch2/catch.hpp>

#include "boot_test_support.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <toro/boot/parse.hpp>
#include <toro/boot/zero_page.hpp>

namespace {

using namespace boot_test;

// Firecracker's layout: boot_params at 0x7000, command line at 0x20000.
struct zero_page_image : image {
    std::uint64_t zp;
    std::uint8_t entries = 0;

    explicit zero_page_image(std::uint64_t b = 0x7000, std::size_t size = 0x20000, std::uint64_t at = 0x7000)
        : image{b, size}, zp{at} {}
    void entry(std::uint64_t addr, std::uint64_t size, std::uint32_t type) {
        const std::uint64_t at = zp + 0x2d0 + 20ull * entries;
        put64(at, addr);
        put64(at + 8, size);
        put32(at + 16, type);
        put8(zp + 0x1e8, ++entries);
    }
    void cmdline(std::uint64_t at, const std::string& s) {
        put_string(at, s);
        put32(zp + 0x228, static_cast<std::uint32_t>(at));
        put32(zp + 0x0c8, static_cast<std::uint32_t>(at >> 32));
    }
    // What Firecracker writes for a 4 GiB guest: low RAM, RAM from 1 MiB to the MMIO gap, RAM above 4 GiB.
    void firecracker_map() {
        entry(0x0, 0x9fc00, 1);
        entry(0x100000, 0xc0000000 - 0x100000, 1);
        entry(0x100000000, 0x40000000, 1);
    }
};

const char* const firecracker_expected = "[0x0,0x9fc00) usable\n"
                                         "[0x100000,0xc0000000) usable\n"
                                         "[0x100000000,0x140000000) usable\n";

struct parsed {
    std::unique_ptr<toro::boot_info> info = std::make_unique<toro::boot_info>();
    toro::expected<void> result;
};

parsed parse(const zero_page_image& img) {
    parsed p;
    auto mem = img.reader();
    p.result = toro::parse_zero_page(mem, img.zp, *p.info);
    return p;
}

parsed parse_at(const image& img, std::uint64_t at) {
    parsed p;
    auto mem = img.reader();
    p.result = toro::parse_zero_page(mem, at, *p.info);
    return p;
}

void check_error(const parsed& p, const std::string& what, std::uint64_t value) {
    REQUIRE_FALSE(p.result);
    CHECK(str(p.result.error().what) == what);
    CHECK(p.result.error().has_value);
    CHECK(hex(p.result.error().value) == hex(value));
}

} // namespace

TEST_CASE("zero page: a Firecracker-like boot_params", "[boot][zero_page]") {
    zero_page_image img;
    img.firecracker_map();
    img.cmdline(0x20000, "console=ttyS0 reboot=k panic=1 pci=off");
    img.put64(img.zp + 0x070, 0x000e0000); // acpi_rsdp_addr
    auto p = parse(img);
    REQUIRE(p.result);
    CHECK(p.info->protocol == toro::boot_protocol::linux64);
    CHECK(show(p.info->memory) == firecracker_expected);
    CHECK(p.info->memory.usable_bytes() == 0x9fc00 + 0xc0000000 - 0x100000 + 0x40000000);
    CHECK(str(p.info->cmdline()) == "console=ttyS0 reboot=k panic=1 pci=off");
    CHECK(p.info->rsdp == 0xe0000);
}

TEST_CASE("zero page: boot_flag and HdrS are neither required nor harmful", "[boot][zero_page]") {
    zero_page_image img;
    img.firecracker_map();
    REQUIRE(parse(img).result); // both absent (zero)
    img.put16(img.zp + 0x1fe, 0xaa55);
    img.put32(img.zp + 0x202, 0x53726448); // "HdrS"
    auto p = parse(img);
    REQUIRE(p.result);
    CHECK(show(p.info->memory) == firecracker_expected);
    CHECK(p.info->rsdp == 0);
    CHECK(p.info->cmdline().empty());
}

TEST_CASE("zero page through parse_boot_info", "[boot][zero_page]") {
    zero_page_image img;
    img.firecracker_map();
    img.cmdline(0x20000, "a=b");
    auto info = std::make_unique<toro::boot_info>();
    info->rsdp = 5;
    REQUIRE(info->memory.add(0x5000, 0x1000, 2u));
    auto mem = img.reader();
    REQUIRE(toro::parse_boot_info(toro::boot_protocol::linux64, img.zp, 0xabc, mem, *info));
    CHECK(info->protocol == toro::boot_protocol::linux64);
    CHECK(info->tsc_at_entry == 0xabc);
    CHECK(info->rsdp == 0);
    CHECK(str(info->cmdline()) == "a=b");
    CHECK(show(info->memory) == firecracker_expected);
}

TEST_CASE("zero page: a command line above 4 GiB uses ext_cmd_line_ptr", "[boot][zero_page]") {
    zero_page_image img{0xffff0000, 0x20000, 0xffff1000};
    img.firecracker_map();
    img.cmdline(0x100008000, "high");
    CHECK(img.bytes[0x1000 + 0x0c8] == std::byte{1});
    auto p = parse(img);
    REQUIRE(p.result);
    CHECK(str(p.info->cmdline()) == "high");
    // Without the high half the pointer lands at 0x8000, outside this memory.
    img.put32(img.zp + 0x0c8, 0);
    check_error(parse(img), "kernel command line runs into unreadable memory before its terminating NUL",
                0x8000);
}

TEST_CASE("zero page: e820 entry counts", "[boot][zero_page]") {
    zero_page_image img;
    img.firecracker_map();

    SECTION("zero entries") {
        img.put8(img.zp + 0x1e8, 0);
        check_error(parse(img), "Linux boot_params has no e820 entries (e820_entries is 0)", 0);
    }
    SECTION("more than the table holds") {
        img.put8(img.zp + 0x1e8, 129);
        check_error(parse(img), "Linux boot_params claims more e820 entries than the zero page holds (128)",
                    129);
        img.put8(img.zp + 0x1e8, 255);
        check_error(parse(img), "Linux boot_params claims more e820 entries than the zero page holds (128)",
                    255);
    }
    SECTION("exactly 128") {
        zero_page_image full;
        for (std::uint64_t i = 0; i < 128; ++i) full.entry(i * 0x2000, 0x1000, i % 3 == 0 ? 2 : 1);
        auto p = parse(full);
        REQUIRE(p.result);
        CHECK(p.info->memory.size() == 128);
    }
}

TEST_CASE("zero page: boot_params outside or cut off by the end of memory", "[boot][zero_page]") {
    zero_page_image img;
    img.firecracker_map();
    check_error(parse_at(img, 0x1000), "Linux boot_params (zero page) is unreadable", 0x1000);
    check_error(parse_at(img, 0x27000), "Linux boot_params (zero page) is unreadable", 0x27000);
    // So close to 2^64 that the page would wrap round: refused before any offset is added.
    check_error(parse_at(img, 0xfffffffffffff800), "Linux boot_params (zero page) is unreadable",
                0xfffffffffffff800);

    // Offsets added to it would wrap round to low memory, which here is readable and looks valid.
    image low{0, 0x1000};
    const std::uint64_t wrapping = 0xffffffffffffffa0; // + 0x60 wraps to 0
    low.put8(0x1e8 - 0x60, 1);
    low.put64(0x2d0 - 0x60, 0x100000);
    low.put64(0x2d0 - 0x60 + 8, 0x100000);
    low.put32(0x2d0 - 0x60 + 16, 1);
    check_error(parse_at(low, wrapping), "Linux boot_params (zero page) is unreadable", wrapping);

    // Memory ending inside the setup header: cmd_line_ptr at 0x228 is missing.
    zero_page_image header_cut{0x7000, 0x200};
    header_cut.put8(0x7000 + 0x1e8, 1);
    check_error(parse(header_cut), "Linux boot_params (zero page) is unreadable", 0x7000);

    // Memory ending inside the e820 table: the third entry is cut off.
    zero_page_image table_cut{0x7000, 0x300};
    table_cut.entry(0x0, 0x9fc00, 1);
    table_cut.entry(0x100000, 0x100000, 1);
    table_cut.put8(0x7000 + 0x1e8, 3);
    check_error(parse(table_cut), "Linux boot_params e820 table is unreadable at", 0x7000 + 0x2d0 + 2 * 20);
}

TEST_CASE("zero page: overlapping, unsorted and odd e820 entries", "[boot][zero_page]") {
    zero_page_image img;
    img.entry(0x100000000, 0x40000000, 1);
    img.entry(0x100000, 0xbff00000, 1);
    img.entry(0x0, 0x9fc00, 1);
    img.entry(0x9f000, 0x1000, 2);       // reserved overlapping the end of low RAM
    img.entry(0xbfff0000, 0x20000, 4);   // ACPI NVS straddling the end of RAM below 4 GiB
    img.entry(0x120000000, 0x1000, 7);   // persistent memory (type 7): unknown, reserved
    img.entry(0x200000000, 0, 1);        // zero length: dropped
    img.entry(0x140000000, 0x100000, 1); // adjacent to the high RAM: merged
    auto p = parse(img);
    REQUIRE(p.result);
    CHECK(show(p.info->memory) == "[0x0,0x9f000) usable\n"
                                  "[0x9f000,0xa0000) reserved\n"
                                  "[0x100000,0xbfff0000) usable\n"
                                  "[0xbfff0000,0xc0010000) ACPI NVS\n"
                                  "[0x100000000,0x120000000) usable\n"
                                  "[0x120000000,0x120001000) reserved\n"
                                  "[0x120001000,0x140100000) usable\n");

    SECTION("a wrap-around entry is an error") {
        img.entry(0xffffffffffff0000, 0x20000, 2);
        check_error(parse(img), "memory map entry wraps past the end of the address space; base",
                    0xffffffffffff0000);
    }
    SECTION("only zero-length entries") {
        zero_page_image zeros;
        zeros.entry(0x100000, 0, 1);
        zeros.entry(0x0, 0, 2);
        auto q = parse(zeros);
        REQUIRE_FALSE(q.result);
        CHECK(str(q.result.error().what) ==
              "the loader's memory map is empty (no entry has a non-zero length)");
    }
}

TEST_CASE("zero page: command line variants", "[boot][zero_page]") {
    zero_page_image img;
    img.firecracker_map();

    SECTION("pointer 0: empty") {
        auto p = parse(img);
        REQUIRE(p.result);
        CHECK(p.info->cmdline().empty());
    }
    SECTION("exactly 2047 bytes") {
        const std::string s(2047, 'k');
        img.cmdline(0x20000, s);
        auto p = parse(img);
        REQUIRE(p.result);
        CHECK(str(p.info->cmdline()) == s);
    }
    SECTION("2048 bytes") {
        img.cmdline(0x20000, std::string(2048, 'k'));
        check_error(parse(img), "kernel command line is longer than 2047 bytes", 0x20000);
    }
    SECTION("outside memory") {
        img.put32(img.zp + 0x228, 0x30000);
        check_error(parse(img), "kernel command line runs into unreadable memory before its terminating NUL",
                    0x30000);
    }
    SECTION("not NUL-terminated before the end of memory") {
        img.put_string(0x27000 - 6, "abcdef", false);
        img.put32(img.zp + 0x228, 0x27000 - 6);
        check_error(parse(img), "kernel command line runs into unreadable memory before its terminating NUL",
                    0x27000);
    }
}

TEST_CASE("parse_boot_info: unknown protocols", "[boot][zero_page]") {
    zero_page_image img;
    img.firecracker_map();
    auto mem = img.reader();
    auto info = std::make_unique<toro::boot_info>();
    REQUIRE(info->set_cmdline("stale"));
    for (int raw : {0, 4, 200}) {
        auto r = toro::parse_boot_info(static_cast<toro::boot_protocol>(raw), img.zp, 11, mem, *info);
        REQUIRE_FALSE(r);
        CHECK(str(r.error().what) ==
              "unknown boot protocol: the kernel was entered neither through Multiboot "
              "(eax=0x2BADB002) nor PVH (start_info magic 0x336ec578) nor the Linux "
              "64-bit entry");
        CHECK(r.error().value == static_cast<std::uint64_t>(raw));
        CHECK(info->protocol == toro::boot_protocol::unknown);
        CHECK(info->tsc_at_entry == 11);
        CHECK(info->memory.empty());
        CHECK(info->cmdline().empty());
    }
    // The same image under the wrong protocol is rejected by that protocol's checks.
    auto as_pvh = toro::parse_boot_info(toro::boot_protocol::pvh, img.zp, 0, mem, *info);
    REQUIRE_FALSE(as_pvh);
    CHECK(str(as_pvh.error().what) == "PVH start info magic is wrong (expected 0x336ec578)");
}
