// Host tests for toro::parse_multiboot: Multiboot 1 info structures built byte by byte in a fake memory.
#include <catch2/catch.hpp>

#include "boot_test_support.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <toro/boot/multiboot.hpp>
#include <toro/boot/parse.hpp>

namespace {

using namespace boot_test;

constexpr std::uint64_t mem_base = 0x8000, info_addr = 0x9000, mmap_addr = 0x9100, cmdline_addr = 0xa000,
                        loader_name_addr = 0x9f00;
constexpr std::uint32_t flag_mem = 1, flag_cmdline = 4, flag_mmap = 64;

// A Multiboot image with the info structure at info_addr; entries go to mmap_addr.
struct multiboot_image : image {
    std::uint32_t flags = 0;
    std::uint32_t mmap_length = 0;

    multiboot_image() : image{mem_base, 0x10000} {}
    void entry(std::uint64_t addr, std::uint64_t len, std::uint32_t type, std::uint32_t size = 20) {
        const std::uint64_t at = mmap_addr + mmap_length;
        put32(at, size);
        put64(at + 4, addr);
        put64(at + 12, len);
        put32(at + 20, type);
        mmap_length += 4 + size;
        flags |= flag_mmap;
        write_header();
    }
    void cmdline(const std::string& s) {
        put_string(cmdline_addr, s);
        put32(info_addr + 16, static_cast<std::uint32_t>(cmdline_addr));
        flags |= flag_cmdline;
        write_header();
    }
    // boot_loader_name (flags bit 9); QEMU's is "qemu", and only QEMU puts the kernel path first.
    void loader_name(const std::string& s) {
        put_string(loader_name_addr, s);
        put32(info_addr + 64, static_cast<std::uint32_t>(loader_name_addr));
        flags |= 0x200;
        write_header();
    }
    void write_header() {
        put32(info_addr, flags);
        put32(info_addr + 44, mmap_length);
        put32(info_addr + 48, static_cast<std::uint32_t>(mmap_addr));
    }
    void qemu_map() {
        entry(0x0, 0x9fc00, 1);
        entry(0x9fc00, 0x400, 2);
        entry(0xf0000, 0x10000, 2);
        entry(0x100000, 0xbfee0000, 1); // to 0xbffe0000, then the PCI hole
        entry(0xbffe0000, 0x20000, 2);
        entry(0xfeffc000, 0x4000, 2);
        entry(0xfffc0000, 0x40000, 2);
        entry(0x100000000, 0x40000000, 1); // 1 GiB above 4 GiB
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

parsed parse(const image& img, std::uint64_t at = info_addr) {
    parsed p;
    auto mem = img.reader();
    p.result = toro::parse_multiboot(mem, at, *p.info);
    return p;
}

// Expects failure with exactly this message and value.
void check_error(const parsed& p, const std::string& what, std::uint64_t value) {
    REQUIRE_FALSE(p.result);
    CHECK(str(p.result.error().what) == what);
    CHECK(p.result.error().has_value);
    CHECK(hex(p.result.error().value) == hex(value));
}

} // namespace

TEST_CASE("Multiboot: a QEMU-like memory map and a command line", "[boot][multiboot]") {
    multiboot_image img;
    img.qemu_map();
    img.loader_name("qemu");
    img.cmdline("/boot/kernel32.elf console=ttyS0 toro.test=1");
    auto p = parse(img);
    REQUIRE(p.result);
    CHECK(p.info->protocol == toro::boot_protocol::multiboot);
    CHECK(show(p.info->memory) == qemu_expected);
    CHECK(p.info->memory.usable_bytes() == 0x9fc00 + 0xbfee0000 + 0x40000000);
    CHECK(str(p.info->cmdline()) == "console=ttyS0 toro.test=1");
    CHECK(p.info->rsdp == 0); // Multiboot 1 does not pass one
}

TEST_CASE("Multiboot through parse_boot_info re-initialises a dirty boot_info", "[boot][multiboot]") {
    multiboot_image img;
    img.qemu_map();
    auto info = std::make_unique<toro::boot_info>();
    REQUIRE(info->set_cmdline("stale"));
    info->rsdp = 0xdead;
    REQUIRE(info->memory.add(0x12345000, 0x1000, 5u));
    auto mem = img.reader();
    auto r = toro::parse_boot_info(toro::boot_protocol::multiboot, info_addr, 0x1122334455, mem, *info);
    REQUIRE(r);
    CHECK(info->protocol == toro::boot_protocol::multiboot);
    CHECK(info->tsc_at_entry == 0x1122334455);
    CHECK(info->rsdp == 0);
    CHECK(info->cmdline().empty());
    CHECK(show(info->memory) == qemu_expected);
}

TEST_CASE("Multiboot via the kernel's identity reader over host memory", "[boot][multiboot]") {
    // The kernel's reader on host memory: the info structure is readable at its host address, but its
    // 32-bit mmap_addr (a fake physical address) lies outside [low, high) and must be refused.
    multiboot_image img;
    img.qemu_map();
    const auto low = reinterpret_cast<std::uintptr_t>(img.bytes.data());
    toro::identity_phys_reader mem{low, low + img.bytes.size()};
    auto info = std::make_unique<toro::boot_info>();
    auto r = toro::parse_multiboot(mem, low + (info_addr - mem_base), *info);
    REQUIRE_FALSE(r);
    CHECK(str(r.error().what) == "Multiboot memory map is unreadable at");
    CHECK(r.error().value == mmap_addr);
    auto outside = toro::parse_multiboot(mem, low + img.bytes.size() - 8, *info);
    REQUIRE_FALSE(outside);
    CHECK(str(outside.error().what) == "Multiboot info structure is unreadable");
}

TEST_CASE("Multiboot: padded entries (size > 20) are stepped over correctly", "[boot][multiboot]") {
    multiboot_image img;
    img.entry(0x0, 0x9fc00, 1, 24);
    img.entry(0x100000, 0x700000, 1, 28);
    img.entry(0x9fc00, 0x400, 2, 20);
    auto p = parse(img);
    REQUIRE(p.result);
    CHECK(show(p.info->memory) == "[0x0,0x9fc00) usable\n"
                                  "[0x9fc00,0xa0000) reserved\n"
                                  "[0x100000,0x800000) usable\n");
}

TEST_CASE("Multiboot: overlapping, unsorted and unknown-type entries", "[boot][multiboot]") {
    multiboot_image img;
    img.entry(0x100000, 0x1000000, 1);
    img.entry(0x0, 0x9fc00, 1);
    img.entry(0x200000, 0x1000, 2);  // reserved inside usable: splits it
    img.entry(0x300000, 0x1000, 12); // unknown type: reserved
    img.entry(0x0, 0x1000, 5);       // bad page 0
    auto p = parse(img);
    REQUIRE(p.result);
    CHECK(show(p.info->memory) == "[0x0,0x1000) bad\n"
                                  "[0x1000,0x9fc00) usable\n"
                                  "[0x100000,0x200000) usable\n"
                                  "[0x200000,0x201000) reserved\n"
                                  "[0x201000,0x300000) usable\n"
                                  "[0x300000,0x301000) reserved\n"
                                  "[0x301000,0x1100000) usable\n");
}

TEST_CASE("Multiboot: mem_lower / mem_upper when there is no mmap", "[boot][multiboot]") {
    multiboot_image img;
    img.flags = flag_mem;
    img.write_header();
    img.put32(info_addr + 4, 639);        // KiB from 0
    img.put32(info_addr + 8, 130048);     // KiB from 1 MiB: 127 MiB
    img.put32(info_addr + 44, 0x7777777); // ignored: bit 6 clear
    auto p = parse(img);
    REQUIRE(p.result);
    CHECK(show(p.info->memory) == "[0x0,0x9fc00) usable\n"
                                  "[0x100000,0x8000000) usable\n");

    SECTION("the mmap wins when both are present") {
        img.entry(0x100000, 0x1000, 1);
        auto q = parse(img);
        REQUIRE(q.result);
        CHECK(show(q.info->memory) == "[0x100000,0x101000) usable\n");
    }
    SECTION("both sizes zero leaves nothing") {
        img.put32(info_addr + 4, 0);
        img.put32(info_addr + 8, 0);
        auto q = parse(img);
        REQUIRE_FALSE(q.result);
        CHECK(str(q.result.error().what) ==
              "the loader's memory map is empty (no entry has a non-zero length)");
    }
}

TEST_CASE("Multiboot: no memory information at all", "[boot][multiboot]") {
    multiboot_image img;
    img.flags = flag_cmdline | 0x200; // command line and boot loader name, nothing about memory
    img.write_header();
    check_error(parse(img), "Multiboot info has no memory map (flags bits 0 and 6 are clear); flags", 0x204);
}

TEST_CASE("Multiboot: the info pointer outside memory", "[boot][multiboot]") {
    multiboot_image img;
    img.qemu_map();
    check_error(parse(img, 0x1000), "Multiboot info structure is unreadable", 0x1000);
    check_error(parse(img, 0x18000), "Multiboot info structure is unreadable", 0x18000);
    // Straddling the end: the first bytes exist, the mmap fields do not.
    check_error(parse(img, 0x18000 - 40), "Multiboot info structure is unreadable", 0x18000 - 40);
    check_error(parse(img, 0xfffffffffffffff0), "Multiboot info structure is unreadable", 0xfffffffffffffff0);
}

TEST_CASE("Multiboot: mmap pointing outside memory", "[boot][multiboot]") {
    multiboot_image img;
    img.qemu_map();
    img.put32(info_addr + 48, 0x20000);
    check_error(parse(img), "Multiboot memory map is unreadable at", 0x20000);
    // Starts inside, runs out: the entry at the edge is cut off by the end of memory.
    const std::uint64_t edge = 0x18000 - 30; // one whole entry fits, the second is cut off
    img.put32(edge, 20);
    img.put64(edge + 4, 0);
    img.put64(edge + 12, 0x1000);
    img.put32(edge + 20, 1);
    img.put32(info_addr + 44, 48);
    img.put32(info_addr + 48, static_cast<std::uint32_t>(edge));
    check_error(parse(img), "Multiboot memory map is unreadable at", edge + 24);
}

TEST_CASE("Multiboot: malformed mmap_length and entries", "[boot][multiboot]") {
    multiboot_image img;
    img.qemu_map();

    SECTION("zero length with bit 6 set") {
        img.put32(info_addr + 44, 0);
        check_error(parse(img), "Multiboot mmap_length is 0 although flags bit 6 promises a memory map", 0);
    }
    SECTION("absurd length") {
        img.put32(info_addr + 44, 64 * 1024 + 1);
        check_error(parse(img), "Multiboot mmap_length is absurd (more than 64 KiB)", 0x10001);
        img.put32(info_addr + 44, 0xffffffff);
        check_error(parse(img), "Multiboot mmap_length is absurd (more than 64 KiB)", 0xffffffff);
    }
    SECTION("entry crossing mmap_length") {
        img.put32(info_addr + 44, img.mmap_length - 1); // the last entry sticks out by one byte
        check_error(parse(img), "Multiboot mmap entry crosses the end of mmap_length; entry offset", 7 * 24);
        img.put32(info_addr + 44, 24 + 10); // a stub of 10 bytes after the first entry
        check_error(parse(img), "Multiboot mmap entry crosses the end of mmap_length; entry offset", 24);
    }
    SECTION("a stub shorter than an entry's size field") {
        img.put32(info_addr + 44, 24 + 2);
        check_error(parse(img), "Multiboot mmap entry crosses the end of mmap_length; entry offset", 24);
    }
    SECTION("a padded entry sticking out by less than its padding") {
        multiboot_image padded;
        padded.entry(0x0, 0x9fc00, 1, 24);
        padded.entry(0x100000, 0x100000, 1, 24);
        padded.put32(info_addr + 44, 28 + 26); // the second entry's 28 bytes, 2 of them outside
        check_error(parse(padded), "Multiboot mmap entry crosses the end of mmap_length; entry offset", 28);
    }
    SECTION("entry whose size field points past mmap_length") {
        img.put32(mmap_addr + 7 * 24, 100);
        check_error(parse(img), "Multiboot mmap entry crosses the end of mmap_length; entry offset", 7 * 24);
    }
    SECTION("entry size below 20") {
        img.put32(mmap_addr + 24, 19);
        check_error(parse(img), "Multiboot mmap entry size is below the minimum of 20", 19);
        img.put32(mmap_addr + 24, 0); // would loop forever if trusted
        check_error(parse(img), "Multiboot mmap entry size is below the minimum of 20", 0);
    }
    SECTION("wrap-around entry") {
        img.put64(mmap_addr + 2 * 24 + 4, 0xfffffffffffff000);
        img.put64(mmap_addr + 2 * 24 + 12, 0x2000);
        check_error(parse(img), "memory map entry wraps past the end of the address space; base",
                    0xfffffffffffff000);
    }
    SECTION("only zero-length entries") {
        multiboot_image zeros;
        zeros.entry(0x0, 0, 1);
        zeros.entry(0x100000, 0, 1);
        auto p = parse(zeros);
        REQUIRE_FALSE(p.result);
        CHECK(str(p.result.error().what) ==
              "the loader's memory map is empty (no entry has a non-zero length)");
    }
}

TEST_CASE("Multiboot: more entries than capacity", "[boot][multiboot]") {
    multiboot_image img;
    for (std::uint64_t i = 0; i < 128; ++i) img.entry(i * 0x2000, 0x1000, 1);
    REQUIRE(parse(img).result);
    img.entry(0x10000000, 0x1000, 1);
    check_error(parse(img), "Multiboot memory map has more than 128 entries; mmap_length", 129 * 24);
}

TEST_CASE("Multiboot: command line variants", "[boot][multiboot]") {
    multiboot_image img;
    img.qemu_map();

    SECTION("bit 2 clear: no command line, pointer ignored") {
        img.put32(info_addr + 16, 0x12345678);
        auto p = parse(img);
        REQUIRE(p.result);
        CHECK(p.info->cmdline().empty());
    }
    SECTION("bit 2 set, pointer 0: empty") {
        img.flags |= flag_cmdline;
        img.write_header();
        img.put32(info_addr + 16, 0);
        auto p = parse(img);
        REQUIRE(p.result);
        CHECK(p.info->cmdline().empty());
    }
    SECTION("empty string") {
        img.cmdline("");
        auto p = parse(img);
        REQUIRE(p.result);
        CHECK(p.info->cmdline().empty());
    }
    SECTION("exactly 2047 bytes") {
        const std::string s(2045, 'a');
        img.loader_name("qemu");
        img.cmdline("k " + s);
        auto p = parse(img);
        REQUIRE(p.result);
        CHECK(str(p.info->cmdline()) == s);
    }
    SECTION("the kernel path QEMU puts first is dropped, with the spaces after it") {
        img.loader_name("qemu");
        img.cmdline("/boot/kernel32.elf   answer=42  x");
        auto p = parse(img);
        REQUIRE(p.result);
        CHECK(str(p.info->cmdline()) == "answer=42  x");
    }
    SECTION("GRUB passes the arguments alone: kept whole") {
        img.loader_name("GRUB 2.06-13+deb12u1");
        img.cmdline("answer=42 x");
        auto p = parse(img);
        REQUIRE(p.result);
        CHECK(str(p.info->cmdline()) == "answer=42 x");
    }
    SECTION("no boot loader name: kept whole") {
        img.cmdline("answer=42 x");
        auto p = parse(img);
        REQUIRE(p.result);
        CHECK(str(p.info->cmdline()) == "answer=42 x");
    }
    SECTION("a loader merely starting with qemu is not QEMU") {
        img.loader_name("qemu-like");
        img.cmdline("answer=42 x");
        auto p = parse(img);
        REQUIRE(p.result);
        CHECK(str(p.info->cmdline()) == "answer=42 x");
    }
    SECTION("the kernel path alone leaves no arguments") {
        img.loader_name("qemu");
        img.cmdline("/boot/kernel32.elf");
        auto p = parse(img);
        REQUIRE(p.result);
        CHECK(p.info->cmdline().empty());
        CHECK(p.info->cmdline_buffer[0] == '\0');
    }
    SECTION("2048 bytes is an error, not a truncation") {
        img.cmdline(std::string(2048, 'a'));
        check_error(parse(img), "kernel command line is longer than 2047 bytes", cmdline_addr);
    }
    SECTION("pointer outside memory") {
        img.cmdline("x");
        img.put32(info_addr + 16, 0x7000);
        check_error(parse(img), "kernel command line runs into unreadable memory before its terminating NUL",
                    0x7000);
    }
    SECTION("not NUL-terminated before the end of memory") {
        img.cmdline("x");
        img.put_string(0x18000 - 5, "abcde", false);
        img.put32(info_addr + 16, 0x18000 - 5);
        check_error(parse(img), "kernel command line runs into unreadable memory before its terminating NUL",
                    0x18000);
    }
}
