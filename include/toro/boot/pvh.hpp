// PVH (Xen hvm_start_info, also used by QEMU/Firecracker PVH boot) -> boot_info.
// Layout from xen/include/public/arch-x86/hvm/start_info.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>

#include <toro/base/expected.hpp>
#include <toro/boot/boot_info.hpp>
#include <toro/boot/phys_reader.hpp>

namespace toro {

namespace pvh {

inline constexpr std::uint32_t start_info_magic =
    0x336ec578; // "xEn3" in memory, with the top bit of the E set

// hvm_start_info offsets; the structure is 56 bytes in version 1.
inline constexpr std::size_t off_magic = 0, off_version = 4, off_cmdline = 24, off_rsdp = 32, off_memmap = 40,
                             off_memmap_entries = 48, start_info_size = 56;

// hvm_memmap_table_entry: u64 addr, u64 size, u32 type (E820 numbering), u32 reserved.
inline constexpr std::size_t memmap_entry_size = 24;

} // namespace pvh

// Fills out from the hvm_start_info at info_addr (ebx at entry). out is reset first.
// The memory map exists only from version 1 on; toro has no other way to find memory under PVH.
template <phys_reader Reader>
expected<void> parse_pvh(Reader& mem, std::uint64_t info_addr, boot_info& out) {
    using namespace pvh;
    out.reset();
    out.protocol = boot_protocol::pvh;
    std::byte si[start_info_size];
    if (!mem.read(info_addr, si, sizeof si)) return unexpected{"PVH start info is unreadable", info_addr};
    if (const auto magic = load_le<std::uint32_t>(si + off_magic); magic != start_info_magic)
        return unexpected{"PVH start info magic is wrong (expected 0x336ec578)", magic};
    if (load_le<std::uint32_t>(si + off_version) == 0)
        return unexpected{"PVH start info version 0 carries no memory map", 0};

    const auto entries = load_le<std::uint32_t>(si + off_memmap_entries);
    const auto memmap = load_le<std::uint64_t>(si + off_memmap);
    if (entries == 0) return unexpected{"PVH memory map has no entries (memmap_entries is 0)", 0};
    if (entries > memory_map::max_regions)
        return unexpected{"PVH memory map has more than 128 entries; memmap_entries", entries};
    // Entry addresses are computed; make sure none of them wraps round to low memory.
    if (memmap > std::numeric_limits<std::uint64_t>::max() - entries * memmap_entry_size)
        return unexpected{"PVH memory map wraps past the end of the address space; memmap_paddr", memmap};
    if (auto r = detail::add_e820_table(mem, memmap, entries, memmap_entry_size, out.memory,
                                        "PVH memory map is unreadable at");
        !r)
        return r;

    out.rsdp = load_le<std::uint64_t>(si + off_rsdp);
    if (auto r = load_cmdline(mem, load_le<std::uint64_t>(si + off_cmdline), out); !r) return r;
    return detail::finish_memory_map(out.memory);
}

} // namespace toro
