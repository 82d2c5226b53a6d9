// toro-vmm's boot layout: Firecracker's two x86_64 boot contracts for an ELF kernel, as pure functions over
// guest memory (a std::span, no KVM headers), so every byte the launcher writes can be checked on the host.
//
// Firecracker (>= 1.12) loads an ELF with rust-vmm's linux-loader and enters it one of two ways
// (src/vmm/src/arch/x86_64/{mod,regs,gdt,layout}.rs; linux-loader src/loader/elf/mod.rs):
//   PVH      when the ELF has a XEN_ELFNOTE_PHYS32_ENTRY note: 32-bit protected mode, paging off, at the
//            note's entry, ebx -> hvm_start_info (Xen's docs/misc/pvh.pandoc; Firecracker's docs/pvh.md);
//   Linux64  otherwise: long mode on an identity map, at e_entry, rsi -> boot_params (the zero page).
// toro-vmm chooses the same way (boot_request::automatic) and can be told to use either.
//
// Guest physical layout (both modes unless marked):
//   0x500    GDT: null, code (0x08), data (0x10), TSS (0x18)            0x520   IDT: one zero entry
//   0x6000   PVH: hvm_start_info (56 bytes)                             0x7000  PVH: its memory map
//   0x7000   Linux64: boot_params (the zero page), rsi points here      0x8ff0  Linux64: rsp = rbp
//   0x9000   Linux64: PML4 -> 0xa000 PDPT -> 0xb000 PD: 512 x 2 MiB, identity map of the first 1 GiB
//   0x20000  kernel command line (NUL-terminated, at most 2048 bytes with the NUL)
//   0xe0000  ACPI: RSDP, then at 0xe0040 the XSDT and at 0xe0080 the MADT (one vCPU, the IOAPIC); not RAM
//            in either memory map
//   1 MiB    the kernel's PT_LOAD segments at their p_paddr (HIMEM_START)
//   3 GiB    32-bit MMIO gap up to 4 GiB (the boot timer lives at its start); RAM beyond 3 GiB is
//            placed from 4 GiB on.
// Guest memory is fresh anonymous memory, so it is already zero: only non-zero bytes are written.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "elf/elf.hpp"

namespace toro::tools::vmm {

// result<void> spelled with the elf reader's result type (it holds a value or an elf_error).
using status = result<std::monostate>;
inline status ok() {
    return std::monostate{};
}

namespace layout {

inline constexpr std::uint64_t gdt_addr = 0x500;
inline constexpr std::uint64_t idt_addr = 0x520;
inline constexpr std::uint64_t zero_page_addr = 0x7000;
inline constexpr std::uint64_t zero_page_size = 0x1000;
inline constexpr std::uint64_t boot_stack_pointer = 0x8ff0;
inline constexpr std::uint64_t pml4_addr = 0x9000;
inline constexpr std::uint64_t pdpt_addr = 0xa000;
inline constexpr std::uint64_t pd_addr = 0xb000;
inline constexpr std::uint64_t cmdline_addr = 0x20000;
inline constexpr std::uint64_t cmdline_max_size = 2048; // bytes, the NUL included (Firecracker's limit)
inline constexpr std::uint64_t ebda_start = 0x9fc00;    // low RAM ends here
inline constexpr std::uint64_t himem_start = 0x100000;  // 1 MiB: the kernel's load address
inline constexpr std::uint64_t mmio32_start = 0xc0000000;
inline constexpr std::uint64_t first_addr_past_32bits = 1ull << 32;
inline constexpr std::uint64_t boot_timer_addr = mmio32_start; // Firecracker >= 1.13
inline constexpr std::uint64_t kvm_tss_addr = 0xfffbd000;
// PVH (Firecracker's layout.rs: PVH_INFO_START, MEMMAP_START). Firecracker puts the memory map at the
// zero page's address, not right after hvm_start_info: the two protocols never share a boot.
// (MODLIST_START, 0x6040, holds the initrd's module entry; toro-vmm has no initrd, and Firecracker
// writes nothing there without one.)
inline constexpr std::uint64_t pvh_start_info_addr = 0x6000;
inline constexpr std::uint64_t pvh_memmap_addr = 0x7000;
// Firecracker's [SYSTEM_MEM_START, RSDP_ADDR): reserved for the MP table and ACPI (EBDA to 0xe0000).
inline constexpr std::uint64_t system_mem_end = 0xe0000;
// ACPI (Firecracker >= 1.8's RSDP_ADDR): the RSDP at the start of the BIOS area, the first place a scan
// looks. Firecracker allocates its other tables from [0x9fc00, 0xe0000); toro-vmm puts its two right after
// the RSDP, so all of ACPI is one block in the [0xe0000, 1 MiB) hole that neither memory map calls RAM.
inline constexpr std::uint64_t rsdp_addr = 0xe0000;
inline constexpr std::uint64_t xsdt_addr = 0xe0040;
inline constexpr std::uint64_t madt_addr = 0xe0080;
inline constexpr std::uint64_t acpi_end = 0xe00c0;       // past the MADT with its IOAPIC entry (64 bytes)
inline constexpr std::uint32_t lapic_addr = 0xfee00000;  // Firecracker's APIC_ADDR (the xAPIC default)
inline constexpr std::uint32_t ioapic_addr = 0xfec00000; // IOAPIC_ADDR: where KVM's in-kernel IOAPIC sits
// Firecracker >= 1.13's PCI_MMCONFIG_START/SIZE: the last 256 MiB below the IOAPIC (0xfec00000).
inline constexpr std::uint64_t pci_mmconfig_start = 0xfec00000 - (256ull << 20);
inline constexpr std::uint64_t pci_mmconfig_size = 256ull << 20;
// 2 MiB is the least that holds the boot structures and a kernel at 1 MiB. Above 255 GiB Firecracker
// splits RAM again around its 64-bit MMIO gap at 256 GiB, which this launcher does not model.
inline constexpr std::uint64_t min_mem_size = 2ull << 20;
inline constexpr std::uint64_t max_mem_size = 255ull << 30;

} // namespace layout

// How the vCPU enters the kernel (see the top of this file).
enum class boot_mode { linux64, pvh };
// What --boot asks for: the mode Firecracker would use (automatic), or one of them outright.
enum class boot_request { automatic, linux64, pvh };

inline const char* boot_mode_name(boot_mode m) {
    return m == boot_mode::pvh ? "PVH" : "Linux 64-bit";
}

// --boot auto|pvh|linux64.
inline result<boot_request> parse_boot_request(std::string_view v) {
    if (v == "auto") return boot_request::automatic;
    if (v == "pvh") return boot_request::pvh;
    if (v == "linux64") return boot_request::linux64;
    return elf_error{"--boot " + std::string{v} + ": expected auto, pvh or linux64"};
}

// hvm_start_info (Xen xen/include/public/arch-x86/hvm/start_info.h; linux-loader's start_info.rs),
// version 1: 56 bytes, little-endian, naturally aligned.
namespace pvh_offsets {
inline constexpr std::size_t magic = 0;           // u32
inline constexpr std::size_t version = 4;         // u32
inline constexpr std::size_t flags = 8;           // u32
inline constexpr std::size_t nr_modules = 12;     // u32
inline constexpr std::size_t modlist_paddr = 16;  // u64
inline constexpr std::size_t cmdline_paddr = 24;  // u64
inline constexpr std::size_t rsdp_paddr = 32;     // u64
inline constexpr std::size_t memmap_paddr = 40;   // u64
inline constexpr std::size_t memmap_entries = 48; // u32
inline constexpr std::size_t reserved = 52;       // u32
inline constexpr std::size_t start_info_size = 56;
// hvm_memmap_table_entry: u64 addr, u64 size, u32 type (E820 numbering), u32 reserved.
inline constexpr std::size_t memmap_entry_size = 24;
} // namespace pvh_offsets

inline constexpr std::uint32_t pvh_start_info_magic = 0x336ec578; // XEN_HVM_START_MAGIC_VALUE
inline constexpr std::uint32_t pvh_start_info_version = 1;        // the first with a memory map
// The most entries pvh_memmap() makes: RAM below the EBDA, two reserved ranges, RAM below and above
// the 32-bit gap.
inline constexpr std::size_t pvh_memmap_max_entries = 5;

// Where toro-vmm writes, so a kernel segment that lands on one of them is refused instead of being
// silently overwritten (Firecracker writes these after loading the kernel). Each mode writes its own.
struct boot_structure {
    std::uint64_t addr;
    std::uint64_t size;
    const char* name;
};
inline constexpr boot_structure acpi_structure{layout::rsdp_addr, layout::acpi_end - layout::rsdp_addr,
                                               "the ACPI tables (RSDP, XSDT, MADT)"};
inline constexpr std::array<boot_structure, 7> linux64_boot_structures{{
    {layout::gdt_addr, 4 * 8, "the GDT"},
    {layout::idt_addr, 8, "the IDT"},
    {layout::zero_page_addr, layout::zero_page_size, "the zero page (boot_params)"},
    {layout::zero_page_addr + layout::zero_page_size, 0x1000, "the boot stack"},
    {layout::pml4_addr, 3 * 0x1000, "the boot page tables"},
    {layout::cmdline_addr, layout::cmdline_max_size, "the command line"},
    acpi_structure,
}};
inline constexpr std::array<boot_structure, 6> pvh_boot_structures{{
    {layout::gdt_addr, 4 * 8, "the GDT"},
    {layout::idt_addr, 8, "the IDT"},
    {layout::pvh_start_info_addr, pvh_offsets::start_info_size, "the PVH start info (hvm_start_info)"},
    {layout::pvh_memmap_addr, pvh_memmap_max_entries* pvh_offsets::memmap_entry_size, "the PVH memory map"},
    {layout::cmdline_addr, layout::cmdline_max_size, "the command line"},
    acpi_structure,
}};

inline std::span<const boot_structure> boot_structures(boot_mode m) {
    if (m == boot_mode::pvh) return pvh_boot_structures;
    return linux64_boot_structures;
}

// Offsets in struct boot_params (Linux arch/x86/include/uapi/asm/bootparam.h); hdr starts at 0x1f1.
namespace zero_page_offsets {
inline constexpr std::size_t acpi_rsdp_addr = 0x070; // u64
inline constexpr std::size_t e820_entries = 0x1e8;   // u8
inline constexpr std::size_t boot_flag = 0x1fe;      // u16, 0xaa55
inline constexpr std::size_t header = 0x202;         // u32, "HdrS"
inline constexpr std::size_t type_of_loader = 0x210;
inline constexpr std::size_t cmd_line_ptr = 0x228;     // u32
inline constexpr std::size_t kernel_alignment = 0x230; // u32
inline constexpr std::size_t cmdline_size = 0x238;     // u32
inline constexpr std::size_t e820_table = 0x2d0;       // {u64 addr; u64 size; u32 type} x 128, packed
inline constexpr std::size_t e820_entry_size = 20;
inline constexpr std::size_t e820_max_entries = 128;
} // namespace zero_page_offsets

inline constexpr std::uint16_t boot_flag_magic = 0xaa55;
inline constexpr std::uint32_t hdr_magic = 0x53726448; // "HdrS"
inline constexpr std::uint8_t loader_other = 0xff;     // type_of_loader: "undefined" boot loader
inline constexpr std::uint32_t kernel_min_alignment = 0x01000000;
inline constexpr std::uint32_t e820_ram = 1;
inline constexpr std::uint32_t e820_reserved = 2;

// The guest's RAM as KVM memory slots: [0, low_size) and, for more than 3 GiB, [4 GiB, +high_size).
// Host memory is one mapping: the high part follows the low part.
struct memory_plan {
    std::uint64_t total = 0;
    std::uint64_t low_size = 0;
    std::uint64_t high_size = 0;
};

inline std::string mib_text(std::uint64_t bytes) {
    return std::to_string(bytes >> 20) + " MiB";
}

// Validates a --mem value in MiB and splits it around the 32-bit MMIO gap.
inline result<memory_plan> plan_memory(std::uint64_t mib) {
    if (mib == 0) return elf_error{"--mem 0: the guest needs memory (at least 2 MiB)"};
    if (mib > (layout::max_mem_size >> 20))
        return elf_error{"--mem " + std::to_string(mib) + " MiB is more than toro-vmm supports (" +
                         mib_text(layout::max_mem_size) + ")"};
    const std::uint64_t total = mib << 20;
    if (total < layout::min_mem_size)
        return elf_error{"--mem " + std::to_string(mib) +
                         " MiB is too small: the kernel loads at 1 MiB, give at least 2 MiB"};
    memory_plan p;
    p.total = total;
    p.low_size = std::min(total, layout::mmio32_start);
    p.high_size = total - p.low_size;
    return p;
}

namespace detail {

inline void store_le(std::span<std::uint8_t> mem, std::uint64_t addr, std::uint64_t v, std::size_t width) {
    for (std::size_t i = 0; i < width; ++i) mem[addr + i] = static_cast<std::uint8_t>(v >> (8 * i));
}

inline bool overlaps(std::uint64_t a, std::uint64_t a_size, std::uint64_t b, std::uint64_t b_size) {
    return a < b + b_size && b < a + a_size;
}

inline status need(std::span<const std::uint8_t> mem, std::uint64_t end, const char* what) {
    if (mem.size() < end)
        return elf_error{std::string{what} + " needs guest memory up to " + ::toro::tools::detail::hex(end) +
                         ", but guest memory is " + ::toro::tools::detail::hex(mem.size()) + " bytes"};
    return ok();
}

} // namespace detail

// Where the vCPU starts: the mode and its entry address.
struct boot_entry {
    boot_mode mode = boot_mode::linux64;
    std::uint64_t addr = 0;
    bool operator==(const boot_entry&) const = default;
};

// The entry point in the kernel's XEN_ELFNOTE_PHYS32_ENTRY note, if it has one. linux-loader
// (parse_elf_note) reads the first 4 bytes of any descriptor of at least 4 as a little-endian u32 and
// refuses a shorter one. toro emits a 4-byte descriptor, Linux an 8-byte one (_ASM_PTR); toro-vmm takes
// those two sizes and refuses an 8-byte value above 4 GiB instead of silently truncating it.
inline result<std::optional<std::uint64_t>> find_pvh_entry(const elf64_image& image) {
    using ::toro::tools::detail::hex;
    const auto desc = image.find_note(xen_note_name, xen_elfnote_phys32_entry);
    if (!desc) return std::optional<std::uint64_t>{};
    if (desc->size() != 4 && desc->size() != 8)
        return elf_error{"its PVH note (Xen, XEN_ELFNOTE_PHYS32_ENTRY) has a " +
                         std::to_string(desc->size()) +
                         "-byte descriptor; expected a 4- or 8-byte entry address (or boot it with --boot "
                         "linux64)"};
    const std::uint64_t entry = ::toro::tools::detail::load_le(*desc, 0, desc->size());
    if (entry > 0xffffffffull)
        return elf_error{
            "its PVH note's entry point " + hex(entry) +
            " is above 4 GiB: the PVH entry runs in 32-bit mode (or boot it with --boot linux64)"};
    return std::optional<std::uint64_t>{entry};
}

// The mode and entry for `request`. automatic is Firecracker's choice (linux-loader's
// PvhEntryPresent -> PvhBoot): PVH at the note's entry when the note is there, else Linux 64-bit at
// e_entry. Asking for PVH of a kernel without the note is an error; asking for Linux 64-bit ignores
// the note, even a malformed one.
inline result<boot_entry> select_boot_entry(const elf64_image& image, boot_request request) {
    if (request == boot_request::linux64) return boot_entry{boot_mode::linux64, image.entry};
    auto pvh = find_pvh_entry(image);
    if (!pvh) return pvh.error();
    if (pvh->has_value()) return boot_entry{boot_mode::pvh, **pvh};
    if (request == boot_request::pvh)
        return elf_error{"--boot pvh: the kernel has no PVH entry (no \"Xen\" note of type "
                         "XEN_ELFNOTE_PHYS32_ENTRY = 18 in a PT_NOTE segment); boot it with --boot linux64 "
                         "or auto"};
    return boot_entry{boot_mode::linux64, image.entry};
}

// Copies every PT_LOAD's file bytes to p_paddr in `mem` (guest RAM below 3 GiB, from address 0). The rest
// of each segment (p_memsz - p_filesz) is left alone: fresh guest memory is zero already. Refused, with
// nothing written: a segment outside guest memory or over one of the boot structures `entry.mode`
// writes, an e_entry below 1 MiB (linux-loader refuses that whatever the mode), and an entry outside
// the file bytes of every loaded segment (toro-vmm's own check: both entries run on physical addresses).
inline status load_elf_segments(const elf64_image& image, std::span<std::uint8_t> mem,
                                const boot_entry& entry) {
    using ::toro::tools::detail::hex;
    for (std::size_t i = 0; i < image.segments.size(); ++i) {
        const elf_segment& s = image.segments[i];
        if (s.type != pt_load || s.memsz == 0) continue;
        const std::string where =
            "segment " + std::to_string(i) + " [" + hex(s.paddr) + ", " + hex(s.paddr + s.memsz) + ")";
        if (!::toro::tools::detail::range_ok(s.paddr, s.memsz, mem.size()))
            return elf_error{where + " lies outside guest memory [0, " + hex(mem.size()) +
                             "): give more --mem or link the kernel lower"};
        for (const auto& b : boot_structures(entry.mode))
            if (detail::overlaps(s.paddr, s.memsz, b.addr, b.size))
                return elf_error{where + " overlaps " + b.name + " at [" + hex(b.addr) + ", " +
                                 hex(b.addr + b.size) + ") of the " + boot_mode_name(entry.mode) +
                                 " boot: link the kernel at 1 MiB or above"};
    }
    if (image.entry < layout::himem_start)
        return elf_error{"entry point " + hex(image.entry) +
                         " is below 1 MiB: Firecracker's loader refuses that (link the kernel at 1 MiB)"};
    bool entry_loaded = false;
    for (const auto& s : image.segments)
        if (s.type == pt_load && entry.addr >= s.paddr && entry.addr - s.paddr < s.filesz)
            entry_loaded = true;
    if (!entry_loaded)
        return elf_error{entry.mode == boot_mode::pvh
                             ? "PVH entry point " + hex(entry.addr) +
                                   " (the Xen PHYS32_ENTRY note) is not inside the file bytes of any PT_LOAD "
                                   "segment (it is entered with paging off, so it must be a physical address)"
                             : "entry point " + hex(entry.addr) +
                                   " is not inside the file bytes of any PT_LOAD segment (e_entry must be a "
                                   "physical address: the Linux 64-bit entry runs on an identity map)"};

    for (const auto& s : image.segments) {
        if (s.type != pt_load || s.filesz == 0) continue;
        const auto bytes = s.bytes(image.file);
        std::copy(bytes.begin(), bytes.end(), mem.begin() + static_cast<std::ptrdiff_t>(s.paddr));
    }
    return ok();
}

// The Linux 64-bit load at e_entry; returns e_entry.
inline result<std::uint64_t> load_elf_segments(const elf64_image& image, std::span<std::uint8_t> mem) {
    if (auto r = load_elf_segments(image, mem, boot_entry{boot_mode::linux64, image.entry}); !r)
        return r.error();
    return image.entry;
}

// parse_elf64 + select_boot_entry + load_elf_segments: what the launcher does with the kernel file.
inline result<boot_entry> load_kernel(std::span<const std::uint8_t> file, std::span<std::uint8_t> mem,
                                      boot_request request = boot_request::automatic) {
    auto image = parse_elf64(file);
    if (!image) return image.error();
    auto entry = select_boot_entry(*image, request);
    if (!entry) return entry.error();
    if (auto r = load_elf_segments(*image, mem, *entry); !r) return r.error();
    return *entry;
}

// One e820 entry as the zero page stores it.
struct e820_entry {
    std::uint64_t addr;
    std::uint64_t size;
    std::uint32_t type;
    bool operator==(const e820_entry&) const = default;
};

// Firecracker's e820 map for a guest of `total` bytes: RAM below the EBDA, RAM from 1 MiB to the end
// of memory or to the 32-bit MMIO gap at 3 GiB, and the rest from 4 GiB. Firecracker also lists
// [0x9fc00, 0xe0000) (>= 1.12) and PCI MMCONFIG (>= 1.13) as reserved; here that space holds neither
// MP table nor PCI, and leaving it out says the same (not RAM). The ACPI tables at 0xe0000 are in the
// [0xe0000, 1 MiB) hole, which Firecracker does not list either: not RAM, so no allocator hands it out.
// RAM from 1 MiB: up to the 32-bit MMIO gap, and past 4 GiB what does not fit below it. Shared by both maps.
inline void append_high_ram(std::vector<e820_entry>& map, std::uint64_t total) {
    const std::uint64_t low_end = std::min(total, layout::mmio32_start);
    if (low_end > layout::himem_start)
        map.push_back({layout::himem_start, low_end - layout::himem_start, e820_ram});
    if (total > layout::mmio32_start)
        map.push_back({layout::first_addr_past_32bits, total - layout::mmio32_start, e820_ram});
}

inline std::vector<e820_entry> e820_map(std::uint64_t total) {
    std::vector<e820_entry> map;
    map.push_back({0, layout::ebda_start, e820_ram});
    append_high_ram(map, total);
    return map;
}

// Fills the zero page at 0x7000 (the fields Firecracker sets, its e820 map) and puts `cmdline` at
// 0x20000. `mem` is guest RAM from address 0, `total` the guest's whole RAM (for the e820 map).
namespace detail {

// The command line's checks, made before anything is written.
inline status check_cmdline(std::span<const std::uint8_t> mem, std::string_view cmdline, const char* what) {
    if (auto r = need(mem, layout::cmdline_addr + layout::cmdline_max_size, what); !r) return r;
    if (cmdline.find('\0') != std::string_view::npos)
        return elf_error{"the command line contains a NUL byte"};
    if (cmdline.size() + 1 > layout::cmdline_max_size)
        return elf_error{"the command line is " + std::to_string(cmdline.size()) + " bytes; at most " +
                         std::to_string(layout::cmdline_max_size - 1) + " fit (Firecracker's limit, " +
                         std::to_string(layout::cmdline_max_size) + " with the NUL)"};
    return ok();
}

// The text at 0x20000; the NUL after it is already there: memory is zero.
inline void copy_cmdline(std::span<std::uint8_t> mem, std::string_view cmdline) {
    std::copy(cmdline.begin(), cmdline.end(),
              mem.begin() + static_cast<std::ptrdiff_t>(layout::cmdline_addr));
}

} // namespace detail

inline status write_zero_page(std::span<std::uint8_t> mem, std::uint64_t total, std::string_view cmdline) {
    namespace off = zero_page_offsets;
    if (auto r = detail::check_cmdline(mem, cmdline, "the zero page"); !r) return r;

    const std::uint64_t zp = layout::zero_page_addr;
    // Firecracker sets acpi_rsdp_addr (Linux >= 5.0 reads it): the kernel need not scan for the RSDP.
    detail::store_le(mem, zp + off::acpi_rsdp_addr, layout::rsdp_addr, 8);
    detail::store_le(mem, zp + off::boot_flag, boot_flag_magic, 2);
    detail::store_le(mem, zp + off::header, hdr_magic, 4);
    detail::store_le(mem, zp + off::type_of_loader, loader_other, 1);
    detail::store_le(mem, zp + off::cmd_line_ptr, layout::cmdline_addr, 4);
    detail::store_le(mem, zp + off::cmdline_size, cmdline.size() + 1, 4); // Firecracker counts the NUL
    detail::store_le(mem, zp + off::kernel_alignment, kernel_min_alignment, 4);

    const auto map = e820_map(total);
    detail::store_le(mem, zp + off::e820_entries, map.size(), 1);
    for (std::size_t i = 0; i < map.size(); ++i) {
        const std::uint64_t e = zp + off::e820_table + i * off::e820_entry_size;
        detail::store_le(mem, e, map[i].addr, 8);
        detail::store_le(mem, e + 8, map[i].size, 8);
        detail::store_le(mem, e + 16, map[i].type, 4);
    }

    detail::copy_cmdline(mem, cmdline);
    return ok();
}

// Firecracker's PVH memory map (configure_pvh in mod.rs, >= 1.13), in its order: RAM below the EBDA,
// the EBDA-to-0xe0000 system area and PCI MMCONFIG as reserved, then each RAM region from 1 MiB (the
// 32-bit gap splits RAM at 3 GiB; past it RAM resumes at 4 GiB). The RAM ranges are the e820 map's.
inline std::vector<e820_entry> pvh_memmap(std::uint64_t total) {
    std::vector<e820_entry> map;
    map.push_back({0, layout::ebda_start, e820_ram});
    map.push_back({layout::ebda_start, layout::system_mem_end - layout::ebda_start, e820_reserved});
    map.push_back({layout::pci_mmconfig_start, layout::pci_mmconfig_size, e820_reserved});
    append_high_ram(map, total);
    return map;
}

// Fills hvm_start_info at 0x6000 as Firecracker's configure_pvh does (magic, version 1, cmdline_paddr,
// memmap_paddr, memmap_entries; no modules, flags 0), its memory map at 0x7000 and `cmdline` at 0x20000.
// rsdp_paddr is the RSDP at 0xe0000: Firecracker leaves it 0, for the guest to find the RSDP by the
// standard scan (which starts at 0xe0000), but the PVH ABI has the field so that no scan is needed.
inline status write_pvh_start_info(std::span<std::uint8_t> mem, std::uint64_t total,
                                   std::string_view cmdline) {
    namespace off = pvh_offsets;
    if (auto r = detail::check_cmdline(mem, cmdline, "the PVH start info"); !r) return r;
    const auto map = pvh_memmap(total);
    if (map.size() > pvh_memmap_max_entries) return elf_error{"internal error: the PVH memory map overflows"};

    const std::uint64_t si = layout::pvh_start_info_addr;
    detail::store_le(mem, si + off::magic, pvh_start_info_magic, 4);
    detail::store_le(mem, si + off::version, pvh_start_info_version, 4);
    detail::store_le(mem, si + off::cmdline_paddr, layout::cmdline_addr, 8);
    detail::store_le(mem, si + off::rsdp_paddr, layout::rsdp_addr, 8);
    detail::store_le(mem, si + off::memmap_paddr, layout::pvh_memmap_addr, 8);
    detail::store_le(mem, si + off::memmap_entries, map.size(), 4);
    for (std::size_t i = 0; i < map.size(); ++i) {
        const std::uint64_t e = layout::pvh_memmap_addr + i * off::memmap_entry_size;
        detail::store_le(mem, e, map[i].addr, 8);
        detail::store_le(mem, e + 8, map[i].size, 8);
        detail::store_le(mem, e + 16, map[i].type, 4);
    }
    detail::copy_cmdline(mem, cmdline);
    return ok();
}

// ACPI tables (ACPI 6.5 sections 5.2.5-5.2.12), as Firecracker's acpi-tables crate lays them out, minus
// its FADT and DSDT: toro reads only the MADT, to find the CPUs. Given neither ACPI nor an MP table, the
// kernel scans the EBDA, base memory and the BIOS area for both, which cost ~200M cycles (~75 ms) of boot
// on a host whose KVM emulates the guest's instructions.
// Byte for byte: an RSDP of revision 2 with both checksums and the XSDT's address (no RSDT: an ACPI 2.0
// reader takes the XSDT), an XSDT listing the MADT, and the MADT: local APIC at 0xfee00000, flags 0 (no
// 8259s to mask: PCAT_COMPAT clear, as Firecracker's), the IOAPIC when there is one, then the vCPU's
// local APIC. Every address is absolute; the bytes go at layout::rsdp_addr.

// Whether the VM has an IOAPIC for the MADT to list: KVM_CREATE_IRQCHIP makes one (24 pins at 0xfec00000,
// ID register 0, GSI base 0), as Firecracker's VMs always have.
enum class ioapic_presence { absent, present };

namespace acpi_offsets {
// RSDP (5.2.5.3): 36 bytes.
inline constexpr std::size_t rsdp_checksum = 8;           // u8: the first 20 bytes sum to 0
inline constexpr std::size_t rsdp_oem_id = 9;             // 6 bytes
inline constexpr std::size_t rsdp_revision = 15;          // u8, 2: ACPI 2.0 and later
inline constexpr std::size_t rsdp_rsdt = 16;              // u32
inline constexpr std::size_t rsdp_length = 20;            // u32
inline constexpr std::size_t rsdp_xsdt = 24;              // u64
inline constexpr std::size_t rsdp_extended_checksum = 32; // u8: all 36 bytes sum to 0
inline constexpr std::size_t rsdp_size = 36;
// System description table header (5.2.6): 36 bytes.
inline constexpr std::size_t length = 4;            // u32, the whole table
inline constexpr std::size_t revision = 8;          // u8
inline constexpr std::size_t checksum = 9;          // u8: the whole table sums to 0
inline constexpr std::size_t oem_id = 10;           // 6 bytes
inline constexpr std::size_t oem_table_id = 16;     // 8 bytes
inline constexpr std::size_t oem_revision = 24;     // u32
inline constexpr std::size_t creator_id = 28;       // 4 bytes
inline constexpr std::size_t creator_revision = 32; // u32
inline constexpr std::size_t header_size = 36;
// MADT (5.2.12): the header, u32 local APIC address, u32 flags, then the entries.
inline constexpr std::size_t madt_lapic_addr = 36;
inline constexpr std::size_t madt_flags = 40;
inline constexpr std::size_t madt_entries = 44;
inline constexpr std::size_t madt_lapic_size = 8;   // type 0: u8 ACPI UID, u8 APIC id, u32 flags
inline constexpr std::size_t madt_ioapic_size = 12; // type 1: u8 id, u8 0, u32 address, u32 GSI base
} // namespace acpi_offsets

inline constexpr std::string_view acpi_oem_id = "TORO  ";
inline constexpr std::uint8_t xsdt_revision = 1; // Firecracker's (the only XSDT revision)
inline constexpr std::uint8_t madt_revision = 6; // Firecracker's
inline constexpr std::uint32_t madt_lapic_enabled = 1;

namespace detail {

inline void store_text(std::span<std::uint8_t> t, std::size_t at, std::string_view s) {
    std::copy(s.begin(), s.end(), t.begin() + static_cast<std::ptrdiff_t>(at));
}

// The byte that makes [at, at + len) sum to 0 mod 256, stored at checksum_at (inside the range, 0 so far).
inline void fix_checksum(std::span<std::uint8_t> t, std::size_t at, std::size_t len,
                         std::size_t checksum_at) {
    std::uint8_t sum = 0;
    for (std::size_t i = at; i < at + len; ++i) sum = static_cast<std::uint8_t>(sum + t[i]);
    t[checksum_at] = static_cast<std::uint8_t>(-sum);
}

// A table header at `at` in the block, with everything but the checksum.
inline void store_acpi_header(std::span<std::uint8_t> t, std::size_t at, std::string_view signature,
                              std::size_t length, std::uint8_t revision, std::string_view oem_table_id) {
    namespace off = acpi_offsets;
    store_text(t, at, signature);
    store_le(t, at + off::length, length, 4);
    t[at + off::revision] = revision;
    store_text(t, at + off::oem_id, acpi_oem_id);
    store_text(t, at + off::oem_table_id, oem_table_id);
    store_le(t, at + off::oem_revision, 0, 4); // Firecracker's: one fixed OEM revision for every table
    store_text(t, at + off::creator_id, "TORO");
    store_le(t, at + off::creator_revision, 1, 4);
}

} // namespace detail

// The RSDP, XSDT and MADT for one vCPU (APIC id 0) as the bytes of [layout::rsdp_addr, layout::acpi_end).
inline std::vector<std::uint8_t> acpi_tables(ioapic_presence ioapic) {
    namespace off = acpi_offsets;
    using layout::rsdp_addr;
    std::vector<std::uint8_t> t(layout::acpi_end - rsdp_addr, 0);

    detail::store_text(t, 0, "RSD PTR ");
    detail::store_text(t, off::rsdp_oem_id, acpi_oem_id);
    t[off::rsdp_revision] = 2;
    detail::store_le(t, off::rsdp_length, off::rsdp_size, 4);
    detail::store_le(t, off::rsdp_xsdt, layout::xsdt_addr, 8);
    detail::fix_checksum(t, 0, 20, off::rsdp_checksum); // ACPI 1.0's, over the first 20 bytes, first
    detail::fix_checksum(t, 0, off::rsdp_size, off::rsdp_extended_checksum);

    const std::size_t xsdt = layout::xsdt_addr - rsdp_addr, xsdt_size = off::header_size + 8;
    detail::store_acpi_header(t, xsdt, "XSDT", xsdt_size, xsdt_revision, "TOROXSDT");
    detail::store_le(t, xsdt + off::header_size, layout::madt_addr, 8);
    detail::fix_checksum(t, xsdt, xsdt_size, xsdt + off::checksum);

    const std::size_t madt = layout::madt_addr - rsdp_addr;
    std::size_t e = madt + off::madt_entries;
    if (ioapic == ioapic_presence::present) {
        t[e] = 1; // I/O APIC; id 0 (its ID register's reset value, as Firecracker), GSI base 0
        t[e + 1] = off::madt_ioapic_size;
        detail::store_le(t, e + 4, layout::ioapic_addr, 4);
        e += off::madt_ioapic_size;
    }
    t[e] = 0; // Processor Local APIC: ACPI UID 0, APIC id 0 (CPUID's initial APIC id, see set_cpuid)
    t[e + 1] = off::madt_lapic_size;
    detail::store_le(t, e + 4, madt_lapic_enabled, 4);
    e += off::madt_lapic_size;
    const std::size_t madt_size = e - madt;
    detail::store_acpi_header(t, madt, "APIC", madt_size, madt_revision, "TOROMADT");
    detail::store_le(t, madt + off::madt_lapic_addr, layout::lapic_addr, 4);
    detail::fix_checksum(t, madt, madt_size, madt + off::checksum);
    return t;
}

// Writes acpi_tables(ioapic) at 0xe0000 (the zero page and the start info point there).
inline status write_acpi_tables(std::span<std::uint8_t> mem, ioapic_presence ioapic) {
    if (auto r = detail::need(mem, layout::acpi_end, "the ACPI tables"); !r) return r;
    const auto t = acpi_tables(ioapic);
    std::copy(t.begin(), t.end(), mem.begin() + static_cast<std::ptrdiff_t>(layout::rsdp_addr));
    return ok();
}

// Page-table entry bits.
inline constexpr std::uint64_t pte_present = 1 << 0;
inline constexpr std::uint64_t pte_writable = 1 << 1;
inline constexpr std::uint64_t pte_large = 1 << 7; // a 2 MiB page in a PD entry

// PML4[0] -> PDPT, PDPT[0] -> PD, PD[i] = 2 MiB page at i * 2 MiB: the first 1 GiB identity-mapped.
inline status write_page_tables(std::span<std::uint8_t> mem) {
    if (auto r = detail::need(mem, layout::pd_addr + 0x1000, "the boot page tables"); !r) return r;
    detail::store_le(mem, layout::pml4_addr, layout::pdpt_addr | pte_present | pte_writable, 8);
    detail::store_le(mem, layout::pdpt_addr, layout::pd_addr | pte_present | pte_writable, 8);
    for (std::uint64_t i = 0; i < 512; ++i)
        detail::store_le(mem, layout::pd_addr + i * 8, (i << 21) | pte_present | pte_writable | pte_large, 8);
    return ok();
}

// A GDT descriptor from Linux-style flags (access byte in bits 0-7, G/DB/L/AVL in bits 12-15), base
// and 20-bit limit, as Firecracker's gdt_entry() packs them.
constexpr std::uint64_t gdt_entry(std::uint16_t flags, std::uint32_t base, std::uint32_t limit) {
    return ((std::uint64_t{base} & 0xff000000) << (56 - 24)) | ((std::uint64_t{flags} & 0xf0ff) << 40) |
           ((std::uint64_t{limit} & 0x000f0000) << (48 - 16)) | ((std::uint64_t{base} & 0x00ffffff) << 16) |
           (std::uint64_t{limit} & 0x0000ffff);
}

// Firecracker's two boot GDTs (configure_segments_and_sregs in regs.rs), same selectors in both.
inline constexpr std::array<std::uint64_t, 4> boot_gdt{
    gdt_entry(0, 0, 0),            // null
    gdt_entry(0xa09b, 0, 0xfffff), // 0x08: code, 64-bit (L), present, execute/read, accessed
    gdt_entry(0xc093, 0, 0xfffff), // 0x10: data, 32-bit default size, present, read/write, accessed
    gdt_entry(0x808b, 0, 0xfffff), // 0x18: TSS, busy 64-bit (KVM wants a valid TR even if never used)
};
// PVH (Xen's docs/misc/pvh.pandoc: cs a 32-bit flat code segment, ds and es 32-bit flat data, tr an active
// 32-bit TSS of limit 0x67; Firecracker also loads the data segment into fs, gs and ss).
// Firecracker passes limit 0xffff_ffff, of which gdt_entry keeps the 20 bits 0xfffff; with G that is 4 GiB.
inline constexpr std::array<std::uint64_t, 4> pvh_boot_gdt{
    gdt_entry(0, 0, 0),               // null
    gdt_entry(0xc09b, 0, 0xffffffff), // 0x08: code, 32-bit (D), 4 KiB granular, present, exec/read, accessed
    gdt_entry(0xc093, 0, 0xffffffff), // 0x10: data, 32-bit, 4 KiB granular, present, read/write, accessed
    gdt_entry(0x008b, 0, 0x67),       // 0x18: TSS, busy 32-bit, byte granular, 104 bytes
};

inline const std::array<std::uint64_t, 4>& gdt_for(boot_mode m) {
    return m == boot_mode::pvh ? pvh_boot_gdt : boot_gdt;
}

// Writes the mode's GDT at 0x500. The IDT at 0x520 is one zero descriptor, which zero memory already is.
inline status write_gdt(std::span<std::uint8_t> mem, boot_mode mode = boot_mode::linux64) {
    if (auto r = detail::need(mem, layout::idt_addr + 8, "the GDT and IDT"); !r) return r;
    const auto& gdt = gdt_for(mode);
    for (std::size_t i = 0; i < gdt.size(); ++i) detail::store_le(mem, layout::gdt_addr + i * 8, gdt[i], 8);
    return ok();
}

// kvm_segment's fields, decoded from a GDT descriptor (KVM wants the limit scaled to bytes when G is set).
struct segment {
    std::uint64_t base = 0;
    std::uint32_t limit = 0;
    std::uint16_t selector = 0;
    std::uint8_t type = 0, present = 0, dpl = 0, db = 0, s = 0, l = 0, g = 0, avl = 0, unusable = 0;
    bool operator==(const segment&) const = default;
};

constexpr segment segment_from_gdt(std::uint64_t e, std::uint16_t index) {
    segment s;
    s.base = ((e >> 16) & 0xffffff) | (((e >> 56) & 0xff) << 24);
    const auto raw_limit = static_cast<std::uint32_t>((e & 0xffff) | (((e >> 48) & 0xf) << 16));
    s.g = static_cast<std::uint8_t>((e >> 55) & 1);
    s.limit = s.g ? (raw_limit << 12) | 0xfff : raw_limit;
    s.selector = static_cast<std::uint16_t>(index * 8);
    s.type = static_cast<std::uint8_t>((e >> 40) & 0xf);
    s.s = static_cast<std::uint8_t>((e >> 44) & 1);
    s.dpl = static_cast<std::uint8_t>((e >> 45) & 3);
    s.present = static_cast<std::uint8_t>((e >> 47) & 1);
    s.avl = static_cast<std::uint8_t>((e >> 52) & 1);
    s.l = static_cast<std::uint8_t>((e >> 53) & 1);
    s.db = static_cast<std::uint8_t>((e >> 54) & 1);
    s.unusable = s.present ? 0 : 1;
    return s;
}

// Control-register bits.
inline constexpr std::uint64_t cr0_pe = 1ull << 0;
inline constexpr std::uint64_t cr0_et = 1ull << 4;
inline constexpr std::uint64_t cr0_pg = 1ull << 31;
inline constexpr std::uint64_t cr4_pae = 1ull << 5;
inline constexpr std::uint64_t efer_lme = 1ull << 8;
inline constexpr std::uint64_t efer_lma = 1ull << 10;

// The vCPU's state at the kernel's entry. Each control register becomes (reset & ~clear) | set, where
// reset is what KVM_GET_SREGS returns for a fresh vCPU (Firecracker starts from it too); everything else
// is set outright. Linux 64-bit ORs into the reset values (KVM's reset CR0 is ET|NW|CD, so the guest
// sees 0xe0000011); PVH replaces CR0 and CR4 (regs.rs: cr0 = PE | ET, cr4 = 0).
struct boot_cpu_state {
    boot_mode mode = boot_mode::linux64;
    std::uint64_t rip = 0;
    std::uint64_t rsp = layout::boot_stack_pointer;
    std::uint64_t rbp = layout::boot_stack_pointer;
    std::uint64_t rsi = layout::zero_page_addr; // the zero page, per the Linux boot protocol
    std::uint64_t rbx = 0;                      // PVH: hvm_start_info
    std::uint64_t rflags = 0x2;                 // bit 1 is reserved and reads as one; IF clear
    std::uint64_t cr0_clear = 0;
    std::uint64_t cr0_set = cr0_pe | cr0_pg;
    std::uint64_t cr3 = layout::pml4_addr;
    std::uint64_t cr4_clear = 0;
    std::uint64_t cr4_set = cr4_pae;
    std::uint64_t efer_clear = 0;
    std::uint64_t efer_set = efer_lme | efer_lma;
    std::uint64_t gdt_base = layout::gdt_addr;
    std::uint16_t gdt_limit = boot_gdt.size() * 8 - 1;
    std::uint64_t idt_base = layout::idt_addr;
    std::uint16_t idt_limit = 8 - 1; // Firecracker's: one (zero) descriptor
    segment code = segment_from_gdt(boot_gdt[1], 1);
    segment data = segment_from_gdt(boot_gdt[2], 2); // ds, es, fs, gs, ss
    segment tss = segment_from_gdt(boot_gdt[3], 3);
};

// Firecracker's setup_regs and configure_segments_and_sregs (regs.rs) for each mode.
inline boot_cpu_state initial_cpu_state(std::uint64_t entry, boot_mode mode = boot_mode::linux64) {
    boot_cpu_state s;
    s.mode = mode;
    s.rip = entry;
    if (mode == boot_mode::pvh) {
        // PVH: rip, rbx -> start info and rflags; every other GPR 0 (no stack: the ABI gives none).
        s.rsp = s.rbp = s.rsi = 0;
        s.rbx = layout::pvh_start_info_addr;
        // 32-bit protected mode, paging off: CR0 = PE | ET, CR4 = 0 (pvh.pandoc: PE set, every other
        // writable CR0 bit clear; ET is read-only on every x86-64 CPU, hence Firecracker's PE | ET).
        // Firecracker leaves EFER and CR3 at KVM's reset values, both 0; they are zeroed here outright, which
        // is the same.
        s.cr0_clear = ~0ull;
        s.cr0_set = cr0_pe | cr0_et;
        s.cr3 = 0;
        s.cr4_clear = ~0ull;
        s.cr4_set = 0;
        s.efer_clear = ~0ull;
        s.efer_set = 0;
        s.code = segment_from_gdt(pvh_boot_gdt[1], 1);
        s.data = segment_from_gdt(pvh_boot_gdt[2], 2);
        s.tss = segment_from_gdt(pvh_boot_gdt[3], 3);
    }
    return s;
}

inline boot_cpu_state initial_cpu_state(const boot_entry& entry) {
    return initial_cpu_state(entry.addr, entry.mode);
}

// Everything the launcher writes into guest memory before the first KVM_RUN, for a parsed kernel whose
// entry select_boot_entry chose: the segments, then the mode's structures (Firecracker's
// configure_system_for_boot: zero page or start info, ACPI tables, and in regs.rs the GDT, and page
// tables for Linux 64-bit only). `mem` is guest RAM from address 0 (the part below 3 GiB), `total` the
// whole RAM, `ioapic` whether the VM has the IOAPIC the MADT lists.
inline result<boot_cpu_state> prepare_boot(const elf64_image& image, const boot_entry& entry,
                                           std::span<std::uint8_t> mem, std::uint64_t total,
                                           std::string_view cmdline,
                                           ioapic_presence ioapic = ioapic_presence::present) {
    // Everything that can fail for a bad kernel or command line fails before anything is written.
    if (auto r = detail::check_cmdline(mem, cmdline, "the boot structures"); !r) return r.error();
    if (auto r = detail::need(mem, layout::acpi_end, "the ACPI tables"); !r) return r.error();
    if (auto r = load_elf_segments(image, mem, entry); !r) return r.error();
    if (auto r = write_acpi_tables(mem, ioapic); !r) return r.error();
    if (entry.mode == boot_mode::pvh) {
        if (auto r = write_pvh_start_info(mem, total, cmdline); !r) return r.error();
    } else {
        if (auto r = write_zero_page(mem, total, cmdline); !r) return r.error();
        if (auto r = write_page_tables(mem); !r) return r.error();
    }
    if (auto r = write_gdt(mem, entry.mode); !r) return r.error();
    return initial_cpu_state(entry);
}

// parse_elf64 + select_boot_entry + prepare_boot.
inline result<boot_cpu_state> setup_boot(std::span<const std::uint8_t> kernel_file,
                                         std::span<std::uint8_t> mem, std::uint64_t total,
                                         std::string_view cmdline,
                                         boot_request request = boot_request::automatic,
                                         ioapic_presence ioapic = ioapic_presence::present) {
    auto image = parse_elf64(kernel_file);
    if (!image) return image.error();
    auto entry = select_boot_entry(*image, request);
    if (!entry) return entry.error();
    return prepare_boot(*image, *entry, mem, total, cmdline, ioapic);
}

} // namespace toro::tools::vmm
