// libFuzzer target for the boot-info parsers (Multiboot, PVH, Linux zero page) and memory_map.
//
// Input layout:
//   byte 0   mode. Bit 7 clear: bits 0-2 are the boot_protocol number handed to parse_boot_info
//            (1-3 are real protocols, 0 and 4-7 must be refused). Bit 7 set: differential test of
//            memory_map::normalise against a page-by-page reference (see check_normalise).
//   bytes 1-2 little-endian offset of the info structure from image_base (it may point past the image);
//            with mode bit 6 set, bytes 1-8 are instead the raw 64-bit info address.
//   the rest  the physical memory image, readable at image_base and nowhere else.
// Any violated invariant calls __builtin_trap, which libFuzzer reports as a crash.
//
// Build and run:
//   clang++ -std=c++20 -g -O1 -Iinclude -fsanitize=fuzzer,address,undefined test/fuzz/fuzz_boot_info.cpp -o
//   /tmp/fz /tmp/fz -runs=200000 test/fuzz/corpus/boot_info
#include <cstddef>
#include <cstdint>
#include <span>

#include <toro/boot/parse.hpp>

namespace {

constexpr std::uint64_t image_base = 0x10000;
constexpr std::uint64_t tsc = 0x0123456789abcdef;

toro::boot_info info; // 5 KiB: static, as in the kernel

void check(bool ok) {
    if (!ok) __builtin_trap();
}

void check_boot_info(toro::boot_protocol protocol, const toro::expected<void>& result) {
    check(info.tsc_at_entry == tsc);
    const auto view = info.cmdline();
    check(view.size() <= toro::boot_info::max_cmdline);
    check(info.cmdline_buffer[view.size()] == '\0');
    for (char c : view) check(c != '\0');
    if (!result) {
        check(!result.error().what.empty());
        check(info.memory.empty() && view.empty() && info.rsdp == 0);
        return;
    }
    check(protocol == toro::boot_protocol::multiboot || protocol == toro::boot_protocol::pvh ||
          protocol == toro::boot_protocol::linux64);
    check(info.protocol == protocol);
    const auto regions = info.memory.regions();
    check(!regions.empty() && regions.size() <= toro::memory_map::max_regions);
    for (std::size_t i = 0; i < regions.size(); ++i) {
        const auto& r = regions[i];
        check(r.size != 0 && r.end() > r.base); // non-empty, no wrap
        check(r.type <= toro::memory_type::bad);
        if (i == 0) continue;
        const auto& prev = regions[i - 1];
        check(prev.end() <= r.base);                           // sorted, non-overlapping
        check(!(prev.end() == r.base && prev.type == r.type)); // merged
    }
}

// Records of 3 bytes (first page, page count, E820 type) on a page grid. After normalise the map
// must equal the maximal runs of the per-page most restrictive type, and normalise may fail only
// when those runs are too many to fit.
void check_normalise(std::span<const std::uint8_t> in) {
    constexpr std::uint64_t page = 0x1000, pages = 510 + 255; // the furthest a record reaches
    int reference[pages];
    for (auto& t : reference) t = -1;
    toro::memory_map map;
    for (std::size_t i = 0; i + 3 <= in.size(); i += 3) {
        const std::uint64_t first = in[i] * 2u, count = in[i + 1];
        const std::uint32_t raw = in[i + 2] % 8;
        if (!map.add(first * page, count * page, raw)) return; // over capacity: nothing to compare
        const int type = static_cast<int>(toro::memory_type_from_e820(raw));
        for (std::uint64_t p = first; p < first + count; ++p)
            if (type > reference[p]) reference[p] = type;
    }
    std::size_t runs = 0;
    for (std::uint64_t p = 0; p < pages; ++p)
        if (reference[p] >= 0 && (p == 0 || reference[p - 1] != reference[p])) ++runs;
    auto result = map.normalise();
    if (!result) {
        check(runs > toro::memory_map::max_regions);
        return;
    }
    const auto regions = map.regions();
    check(regions.size() == runs);
    std::size_t k = 0;
    for (std::uint64_t p = 0; p < pages;) {
        std::uint64_t q = p;
        while (q < pages && reference[q] == reference[p]) ++q;
        if (reference[p] >= 0) {
            check(k < regions.size());
            check(regions[k].base == p * page && regions[k].end() == q * page);
            check(static_cast<int>(regions[k].type) == reference[p]);
            ++k;
        }
        p = q;
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 3) return 0;
    const std::uint8_t mode = data[0];
    if (mode & 0x80) {
        check_normalise({data + 1, size - 1});
        return 0;
    }
    std::uint64_t info_addr = image_base + (data[1] | std::uint64_t{data[2]} << 8);
    std::size_t header = 3;
    if (mode & 0x40) {
        if (size < 9) return 0;
        info_addr = 0;
        for (int i = 0; i < 8; ++i) info_addr |= std::uint64_t{data[1 + i]} << (8 * i);
        header = 9;
    }
    const auto protocol = static_cast<toro::boot_protocol>(mode & 7);
    toro::span_phys_reader mem{std::as_bytes(std::span{data + header, size - header}), image_base};
    auto result = toro::parse_boot_info(protocol, info_addr, tsc, mem, info);
    check_boot_info(protocol, result);
    return 0;
}
