// libFuzzer target for firmware platform discovery (platform.hpp): RSDP search, RSDT/XSDT, MADT, MP table.
//
// Input layout:
//   bytes 0-7  little-endian RSDP hint handed to discover_platform (0 = scan). Bit 63 set: "repair mode",
//              cleared from the hint; the target first fixes the checksum of every RSDP, ACPI table and
//              MP structure it finds in the image, so mutations reach the entry parsers instead of
//              stopping at a checksum.
//   the rest   the first 64 KiB of a physical memory image (longer inputs are cut). Physical memory below
//              1 MiB reads as that image repeated every 64 KiB, zero past the input's end, so the BIOS
//              areas (0xE0000, 0xF0000), the BDA words and the EBDA are all reachable from a small input;
//              nothing at or above 1 MiB is readable.
// Any violated invariant calls __builtin_trap, which libFuzzer reports as a crash.
//
// Build and run:
//   clang++ -std=c++20 -g -O1 -Iinclude -fsanitize=fuzzer,address,undefined test/fuzz/fuzz_platform.cpp -o
//   /tmp/fp /tmp/fp -max_total_time=30 test/fuzz/corpus/platform
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include <toro/boot/platform.hpp>

namespace {

constexpr std::size_t window = 64 * 1024;
constexpr std::uint64_t readable_end = 0x100000;
constexpr std::uint64_t repair_bit = std::uint64_t{1} << 63;

std::uint8_t image[window];
std::size_t image_size = 0;

struct window_reader {
    bool read(std::uint64_t phys_addr, void* dst, std::size_t len) const {
        if (phys_addr >= readable_end || len > readable_end - phys_addr) return false;
        auto* d = static_cast<std::uint8_t*>(dst);
        while (len != 0) { // one copy per stretch of the window that is backed by input or not
            const std::size_t at = static_cast<std::size_t>(phys_addr % window);
            std::size_t n = window - at < len ? window - at : len;
            if (at < image_size) {
                if (n > image_size - at) n = image_size - at;
                std::memcpy(d, image + at, n);
            } else {
                std::memset(d, 0, n);
            }
            d += n;
            phys_addr += n;
            len -= n;
        }
        return true;
    }
};
static_assert(toro::phys_reader<window_reader>);

void check(bool ok) {
    if (!ok) __builtin_trap();
}

std::uint32_t le(std::size_t at, int width) {
    std::uint32_t v = 0;
    for (int i = 0; i < width; ++i) v |= std::uint32_t{image[at + static_cast<std::size_t>(i)]} << (8 * i);
    return v;
}

bool has(std::size_t at, const char* sig, std::size_t n) {
    if (at + n > image_size) return false;
    for (std::size_t i = 0; i < n; ++i)
        if (image[at + i] != static_cast<std::uint8_t>(sig[i])) return false;
    return true;
}

// Sets image[at + slot] so that [at, at + len) sums to 0, when that range lies in the image.
void fix(std::size_t at, std::size_t len, std::size_t slot) {
    if (len <= slot || at + len > image_size) return;
    image[at + slot] = 0;
    std::uint8_t sum = 0;
    for (std::size_t i = 0; i < len; ++i) sum = static_cast<std::uint8_t>(sum + image[at + i]);
    image[at + slot] = static_cast<std::uint8_t>(-sum);
}

// Tables first, then the structures that point at them (an RSDP may sit inside nothing else).
void repair() {
    for (std::size_t at = 0; at + 8 <= image_size; ++at) {
        if (has(at, "APIC", 4) || has(at, "RSDT", 4) || has(at, "XSDT", 4) || has(at, "MCFG", 4))
            fix(at, le(at + 4, 4), 9);
        if (has(at, "PCMP", 4)) fix(at, le(at + 4, 2), 7);
    }
    for (std::size_t at = 0; at + 16 <= image_size; ++at) {
        if (has(at, "_MP_", 4)) fix(at, 16, 10);
        if (has(at, "RSD PTR ", 8) && at + 20 <= image_size) {
            fix(at, 20, 8);
            if (image[at + 15] >= 2 && at + 24 <= image_size) {
                const std::uint32_t length = le(at + 20, 4);
                if (length >= 36 && length <= 4096) fix(at, length, 32);
            }
        }
    }
}

void check_info(const toro::platform_info& p) {
    check(p.cpu_count <= toro::platform_info::max_cpus);
    check(p.ioapic_count <= toro::platform_info::max_ioapics);
    check(p.override_count <= toro::platform_info::max_overrides);
    check(p.cpus_ignored == 0 || p.cpu_count == toro::platform_info::max_cpus);
    for (std::size_t i = 0; i < p.cpu_count; ++i)
        for (std::size_t j = i + 1; j < p.cpu_count; ++j) check(p.cpus[i].apic_id != p.cpus[j].apic_id);
    check((p.rsdp_address == 0) == (p.root_table.address == 0));
    switch (p.source) {
    case toro::platform_source::none:
        check(p.cpu_count == 0 && p.ioapic_count == 0 && p.override_count == 0 && p.table_address == 0);
        break;
    case toro::platform_source::acpi: // parse_madt leaves rsdp_address to discover_platform
        check(p.table_address != 0);
        break;
    case toro::platform_source::mp_table:
        check(p.table_address != 0 && p.pcat_compat);
        for (const auto& c : p.cpu_list()) check(c.apic_id <= 0xff && c.acpi_uid == 0 && c.enabled);
        break;
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 8) return 0;
    std::uint64_t hint = 0;
    for (int i = 0; i < 8; ++i) hint |= std::uint64_t{data[i]} << (8 * i);
    image_size = size - 8 < window ? size - 8 : window;
    for (std::size_t i = 0; i < image_size; ++i) image[i] = data[8 + i];
    if (hint & repair_bit) {
        hint &= ~repair_bit;
        repair();
    }

    window_reader mem;
    static toro::platform_info info; // as in the kernel: too big for a small stack
    auto result = toro::discover_platform(mem, hint);
    if (result) {
        info = *result;
        check_info(info);
        check(info.source != toro::platform_source::acpi || info.rsdp_address != 0);
        if (info.rsdp_address != 0) {
            auto root = toro::find_acpi_root(mem, info.rsdp_address);
            check(root && root->address == info.root_table.address &&
                  root->is_xsdt == info.root_table.is_xsdt);
            if (auto mcfg = toro::find_acpi_table(mem, info.root_table, "MCFG"))
                check(*mcfg != 0 && *mcfg < readable_end);
        }
    } else {
        check(!result.error().what.empty());
    }

    // The hint also goes straight to the table parsers, so mutations reach them without an RSDP.
    if (auto madt = toro::parse_madt(mem, hint)) check_info(*madt);
    if (auto mp = toro::parse_mp_table(mem, hint)) check_info(*mp);
    if (hint != 0)
        if (auto rsdp = toro::find_rsdp(mem, 0)) check(*rsdp != 0 && *rsdp < readable_end && *rsdp % 16 == 0);
    return 0;
}
