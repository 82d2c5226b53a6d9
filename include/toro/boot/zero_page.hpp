// Linux 64-bit boot protocol "zero page" (struct boot_params) -> boot_info, as filled by Firecracker
// and other direct-boot VMMs. Offsets from Linux arch/x86/include/uapi/asm/bootparam.h and
// Documentation/arch/x86/zero-page.rst.
//
// Neither the "HdrS" magic nor boot_flag (0xAA55 at 0x1fe) is checked. Both belong to the setup header
// that a loader copies out of a bzImage's boot sector; toro is an ELF and has no such header, so a
// direct-boot VMM has nothing to copy, and whether it writes the values anyway varies by VMM.
// Their absence therefore says nothing about the zero page being valid. What guards the parser is
// that every field it uses is bounds-checked: e820_entries against the table size, each entry and the
// command line against readable memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>

#include <toro/base/expected.hpp>
#include <toro/boot/boot_info.hpp>
#include <toro/boot/phys_reader.hpp>

namespace toro {

namespace zero_page {

inline constexpr std::uint64_t boot_params_size = 4096;
inline constexpr std::uint64_t off_acpi_rsdp_addr = 0x070;   // u64
inline constexpr std::uint64_t off_ext_cmd_line_ptr = 0x0c8; // u32, bits 63:32 of the command line address
inline constexpr std::uint64_t off_e820_entries = 0x1e8;     // u8
inline constexpr std::uint64_t off_cmd_line_ptr = 0x228;     // u32, setup header (starts at 0x1f1)
inline constexpr std::uint64_t off_e820_table = 0x2d0; // boot_e820_entry[128]: u64 addr, u64 size, u32 type
inline constexpr std::size_t e820_entry_size = 20;
inline constexpr std::size_t e820_max_entries = 128; // E820_MAX_ENTRIES_ZEROPAGE
static_assert(e820_max_entries <= memory_map::max_regions);
static_assert(off_e820_table + e820_max_entries * e820_entry_size <= boot_params_size);

} // namespace zero_page

// Fills out from the boot_params at info_addr (rsi at the 64-bit entry). out is reset first.
// A command line pointer of 0 means none; acpi_rsdp_addr of 0 means the VMM left the RSDP to be found.
template <phys_reader Reader>
expected<void> parse_zero_page(Reader& mem, std::uint64_t info_addr, boot_info& out) {
    using namespace zero_page;
    out.reset();
    out.protocol = boot_protocol::linux64;
    // With this ruled out, info_addr + any offset below 4096 is a real address, not a wrapped one.
    if (info_addr > std::numeric_limits<std::uint64_t>::max() - (boot_params_size - 1))
        return unexpected{"Linux boot_params (zero page) is unreadable", info_addr};
    std::byte rsdp[8], ext_cmdline[4], count[1], cmdline[4];
    if (!mem.read(info_addr + off_acpi_rsdp_addr, rsdp, sizeof rsdp) ||
        !mem.read(info_addr + off_ext_cmd_line_ptr, ext_cmdline, sizeof ext_cmdline) ||
        !mem.read(info_addr + off_e820_entries, count, sizeof count) ||
        !mem.read(info_addr + off_cmd_line_ptr, cmdline, sizeof cmdline))
        return unexpected{"Linux boot_params (zero page) is unreadable", info_addr};

    const auto entries = load_le<std::uint8_t>(count);
    if (entries == 0) return unexpected{"Linux boot_params has no e820 entries (e820_entries is 0)", 0};
    if (entries > e820_max_entries)
        return unexpected{"Linux boot_params claims more e820 entries than the zero page holds (128)",
                          entries};
    if (auto r = detail::add_e820_table(mem, info_addr + off_e820_table, entries, e820_entry_size, out.memory,
                                        "Linux boot_params e820 table is unreadable at");
        !r)
        return r;

    out.rsdp = load_le<std::uint64_t>(rsdp);
    const std::uint64_t cmdline_addr =
        std::uint64_t{load_le<std::uint32_t>(ext_cmdline)} << 32 | load_le<std::uint32_t>(cmdline);
    if (auto r = load_cmdline(mem, cmdline_addr, out); !r) return r;
    return detail::finish_memory_map(out.memory);
}

} // namespace toro
