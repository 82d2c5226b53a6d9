// Multiboot (version 1) info structure -> boot_info.
// Layout from the Multiboot 0.6.96 specification, section 3.3; only the fields toro uses are read.
#pragma once

#include <cstddef>
#include <cstdint>

#include <toro/base/expected.hpp>
#include <toro/boot/boot_info.hpp>
#include <toro/boot/phys_reader.hpp>

namespace toro {

namespace multiboot {

inline constexpr std::uint32_t flag_mem = 1u << 0;         // mem_lower / mem_upper valid
inline constexpr std::uint32_t flag_cmdline = 1u << 2;     // cmdline valid
inline constexpr std::uint32_t flag_mmap = 1u << 6;        // mmap_length / mmap_addr valid
inline constexpr std::uint32_t flag_loader_name = 1u << 9; // boot_loader_name valid
inline constexpr std::size_t off_loader_name = 64;

// Offsets into the info structure. Every loader provides at least the fields up to mmap_addr, so the
// parser reads that prefix in one go.
inline constexpr std::size_t off_flags = 0, off_mem_lower = 4, off_mem_upper = 8, off_cmdline = 16,
                             off_mmap_length = 44, off_mmap_addr = 48, info_prefix_size = 52;

// mmap entry: u32 size (not counting itself), u64 addr, u64 len, u32 type; packed.
inline constexpr std::uint32_t min_entry_size = 20;
// GRUB's map is a few hundred bytes; beyond this the length is garbage, not a big machine.
inline constexpr std::uint32_t max_mmap_length = 64 * 1024;

} // namespace multiboot

namespace detail {

// Walks the variable-size mmap entries; every step is checked against mmap_length before it is taken,
// so a size field of 0 or a huge one cannot loop forever or escape the buffer.
// Is the boot loader QEMU's own Multiboot loader (boot_loader_name "qemu")? Unreadable means no.
template <phys_reader Reader>
bool loader_is_qemu(Reader& mem, std::uint64_t info_addr) {
    auto name_addr = read_u32(mem, info_addr + multiboot::off_loader_name);
    char name[5];
    if (!name_addr || !mem.read(*name_addr, name, sizeof name)) return false;
    return string_view{name, 5} == string_view{"qemu", 5};
}

template <phys_reader Reader>
expected<void> parse_multiboot_mmap(Reader& mem, std::uint32_t mmap_addr, std::uint32_t length,
                                    memory_map& map) {
    if (length == 0)
        return unexpected{"Multiboot mmap_length is 0 although flags bit 6 promises a memory map", 0};
    if (length > multiboot::max_mmap_length)
        return unexpected{"Multiboot mmap_length is absurd (more than 64 KiB)", length};
    std::uint32_t off = 0;
    for (std::size_t count = 0; off < length; ++count) {
        if (count == memory_map::max_regions)
            return unexpected{"Multiboot memory map has more than 128 entries; mmap_length", length};
        std::byte e[4 + multiboot::min_entry_size];
        if (length - off < sizeof e)
            return unexpected{"Multiboot mmap entry crosses the end of mmap_length; entry offset", off};
        // mmap_addr < 2^32 and off < 64 KiB: the sum cannot wrap.
        const std::uint64_t at = std::uint64_t{mmap_addr} + off;
        if (!mem.read(at, e, sizeof e)) return unexpected{"Multiboot memory map is unreadable at", at};
        const auto size = load_le<std::uint32_t>(e);
        if (size < multiboot::min_entry_size)
            return unexpected{"Multiboot mmap entry size is below the minimum of 20", size};
        if (size > length - off - 4)
            return unexpected{"Multiboot mmap entry crosses the end of mmap_length; entry offset", off};
        if (auto r = map.add(load_le<std::uint64_t>(e + 4), load_le<std::uint64_t>(e + 12),
                             load_le<std::uint32_t>(e + 20));
            !r)
            return r;
        off += 4 + size;
    }
    return {};
}

} // namespace detail

// Fills out from the Multiboot info structure at info_addr (ebx at entry). out is reset first.
// Memory comes from the full map (flags bit 6) when present, else from mem_lower / mem_upper (bit 0).
// A missing command line (bit 2 clear or pointer 0) is empty, not an error. Multiboot 1 carries no RSDP.
template <phys_reader Reader>
expected<void> parse_multiboot(Reader& mem, std::uint64_t info_addr, boot_info& out) {
    using namespace multiboot;
    out.reset();
    out.protocol = boot_protocol::multiboot;
    std::byte info[info_prefix_size];
    if (!mem.read(info_addr, info, sizeof info))
        return unexpected{"Multiboot info structure is unreadable", info_addr};
    const auto flags = load_le<std::uint32_t>(info + off_flags);

    if (flags & flag_mmap) {
        if (auto r = detail::parse_multiboot_mmap(mem, load_le<std::uint32_t>(info + off_mmap_addr),
                                                  load_le<std::uint32_t>(info + off_mmap_length), out.memory);
            !r)
            return r;
    } else if (flags & flag_mem) {
        // Both in KiB; lower memory starts at 0, upper memory at 1 MiB. Neither add can fail: the map is
        // empty and a 32-bit KiB count cannot reach 2^64.
        (void)out.memory.add(0, std::uint64_t{load_le<std::uint32_t>(info + off_mem_lower)} * 1024,
                             memory_type::usable);
        (void)out.memory.add(1024 * 1024, std::uint64_t{load_le<std::uint32_t>(info + off_mem_upper)} * 1024,
                             memory_type::usable);
    } else {
        return unexpected{"Multiboot info has no memory map (flags bits 0 and 6 are clear); flags", flags};
    }

    if (flags & flag_cmdline) {
        if (auto r = load_cmdline(mem, load_le<std::uint32_t>(info + off_cmdline), out); !r) return r;
        // QEMU puts the kernel image's path first, like argv[0]; GRUB 2 passes the arguments alone.
        // boot_info carries the arguments only, the same on every protocol and loader.
        if (flags & flag_loader_name && detail::loader_is_qemu(mem, info_addr)) out.drop_first_word();
    }
    return detail::finish_memory_map(out.memory);
}

} // namespace toro
