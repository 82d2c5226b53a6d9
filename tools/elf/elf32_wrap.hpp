// Rewraps a toro ELF64 kernel as an ELF32 Multiboot1 image for QEMU's `-kernel` loader.
// QEMU's multiboot loader refuses EM_X86_64 files, but its ELF path happily loads an EM_386 ELF32
// whose PT_LOADs hold the very same bytes at the very same physical addresses. The kernel's 32-bit
// entry (named by the PVH note) serves both PVH and Multiboot, so it becomes e_entry.
//
// Output layout: ELF32 header | PT_LOAD program headers | Multiboot header | segment data.
// The Multiboot header sits right after the program headers, well inside the first 8192 bytes
// QEMU scans, so nothing earlier in the file can be mistaken for it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "elf.hpp"

namespace toro::tools {

inline constexpr std::uint32_t multiboot_magic = 0x1BADB002;
// Bit 0: page-align modules; bit 1: ask for memory info. Bit 16 (a.out kludge) stays clear so
// QEMU takes its ELF path and honours our program headers.
inline constexpr std::uint32_t multiboot_flags = (1u << 0) | (1u << 1);
inline constexpr std::uint32_t multiboot_checksum = 0u - (multiboot_magic + multiboot_flags);
// QEMU and GRUB look for the header in this many leading bytes of the file; QEMU stops its
// 4-byte-stepped scan 48 bytes short of the end (room for the full 12-word header).
inline constexpr std::size_t multiboot_search_limit = 8192;
inline constexpr std::size_t multiboot_scan_end = multiboot_search_limit - 48;
inline constexpr std::size_t multiboot_header_size = 12;

inline constexpr std::size_t elf32_ehdr_size = 52;
inline constexpr std::size_t elf32_phdr_size = 32;

namespace detail {

inline void store_le(std::vector<std::uint8_t>& out, std::size_t off, std::uint64_t v, std::size_t width) {
    for (std::size_t i = 0; i < width; ++i) out[off + i] = static_cast<std::uint8_t>(v >> (8 * i));
}

// Where QEMU's scan (hw/i386/multiboot.c) would find a Multiboot header: the first 4-aligned
// offset below 8192 - 48 whose magic, flags and checksum sum to zero.
inline std::optional<std::size_t> qemu_multiboot_scan(std::span<const std::uint8_t> file) {
    for (std::size_t i = 0; i < multiboot_scan_end && i + multiboot_header_size <= file.size(); i += 4) {
        if (le32(file, i) != multiboot_magic) continue;
        if (static_cast<std::uint32_t>(le32(file, i) + le32(file, i + 4) + le32(file, i + 8)) == 0) return i;
    }
    return std::nullopt;
}

} // namespace detail

// Builds the ELF32 Multiboot image for `img`; `file` is the buffer `img` was parsed from.
inline result<std::vector<std::uint8_t>> wrap_multiboot_elf32(const elf64_image& img,
                                                              std::span<const std::uint8_t> file) {
    using namespace detail;
    auto fail = [](std::string m) { return elf_error{std::move(m)}; };
    constexpr std::uint64_t four_gib = std::uint64_t{1} << 32;

    // The entry: PVH's XEN_ELFNOTE_PHYS32_ENTRY, 4 bytes (or 8 with a zero upper half).
    auto note = img.find_note(xen_note_name, xen_elfnote_phys32_entry);
    if (!note) return fail("no PVH note (\"Xen\", type 18 XEN_ELFNOTE_PHYS32_ENTRY) in any PT_NOTE segment");
    std::uint64_t entry = 0;
    if (note->size() == 4)
        entry = le32(*note, 0);
    else if (note->size() == 8)
        entry = le64(*note, 0);
    else
        return fail("PVH entry note descriptor is " + std::to_string(note->size()) +
                    " bytes, expected 4 or 8");
    if (entry >= four_gib) return fail("PVH entry " + hex(entry) + " is not a 32-bit address");

    // Loadable segments, in physical-address order as the ELF spec wants for PT_LOAD.
    std::vector<elf_segment> loads;
    for (const auto& s : img.segments) {
        if (s.type != pt_load || s.memsz == 0) continue; // an empty PT_LOAD loads nothing
        if (s.paddr >= four_gib || s.memsz > four_gib - s.paddr)
            return fail("PT_LOAD at " + hex(s.paddr) + " (+" + hex(s.memsz) +
                        ") reaches above 4 GiB, which ELF32 cannot express");
        if (s.filesz > s.memsz) return fail("PT_LOAD at " + hex(s.paddr) + " has p_filesz > p_memsz");
        // Re-checked against this buffer: `file` need not be the one `img` was parsed from.
        if (!range_ok(s.offset, s.filesz, file.size()))
            return fail("PT_LOAD at " + hex(s.paddr) + " has a file range outside the file");
        loads.push_back(s);
    }
    if (loads.empty()) return fail("no PT_LOAD segment with contents");
    std::stable_sort(loads.begin(), loads.end(),
                     [](const auto& a, const auto& b) { return a.paddr < b.paddr; });

    // The entry must land on loaded bytes, or the loader would jump into nothing.
    const bool entry_loaded = std::any_of(loads.begin(), loads.end(), [&](const elf_segment& s) {
        return entry >= s.paddr && entry - s.paddr < s.filesz;
    });
    if (!entry_loaded) return fail("PVH entry " + hex(entry) + " is not inside any PT_LOAD's file contents");

    const std::size_t phoff = elf32_ehdr_size;
    const std::size_t mb_off = phoff + loads.size() * elf32_phdr_size;
    if (mb_off >= multiboot_scan_end)
        return fail("too many PT_LOAD segments (" + std::to_string(loads.size()) +
                    ") for the Multiboot header to stay within the first 8192 bytes");

    std::vector<std::uint8_t> out(mb_off + multiboot_header_size, 0);

    // ELF32 header. Unset fields (section headers, e_flags, OS ABI) stay zero.
    const std::uint8_t ident[] = {0x7f, 'E', 'L', 'F', 1 /*ELFCLASS32*/, 1 /*LSB*/, 1 /*EV_CURRENT*/};
    std::copy(std::begin(ident), std::end(ident), out.begin());
    store_le(out, 16, et_exec, 2);
    store_le(out, 18, em_386, 2);
    store_le(out, 20, 1, 4); // e_version
    store_le(out, 24, entry, 4);
    store_le(out, 28, phoff, 4);
    store_le(out, 40, elf32_ehdr_size, 2);
    store_le(out, 42, elf32_phdr_size, 2);
    store_le(out, 44, loads.size(), 2);

    store_le(out, mb_off, multiboot_magic, 4);
    store_le(out, mb_off + 4, multiboot_flags, 4);
    store_le(out, mb_off + 8, multiboot_checksum, 4);

    // Segment data follows, each at an offset congruent to its address modulo its alignment so the
    // file is a conforming ELF; alignment is capped at a page to keep the padding small.
    for (std::size_t i = 0; i < loads.size(); ++i) {
        const elf_segment& s = loads[i];
        const std::uint64_t align = std::min<std::uint64_t>(std::max<std::uint64_t>(s.align, 1), 4096);
        const std::uint64_t cursor = out.size();
        const std::uint64_t offset = cursor + ((s.paddr - cursor) & (align - 1));
        if (offset + s.filesz > 0xffffffffu) return fail("output image would exceed 4 GiB");
        out.resize(static_cast<std::size_t>(offset + s.filesz), 0);
        const auto bytes = s.bytes(file);
        std::copy(bytes.begin(), bytes.end(), out.begin() + static_cast<std::ptrdiff_t>(offset));

        const std::size_t ph = phoff + i * elf32_phdr_size;
        store_le(out, ph + 0, pt_load, 4);
        store_le(out, ph + 4, offset, 4);
        store_le(out, ph + 8, s.paddr, 4); // p_vaddr = p_paddr: the kernel runs identity-mapped here
        store_le(out, ph + 12, s.paddr, 4);
        store_le(out, ph + 16, s.filesz, 4);
        store_le(out, ph + 20, s.memsz, 4);
        store_le(out, ph + 24, s.flags, 4);
        store_le(out, ph + 28, align, 4);
    }

    // Belt and braces: QEMU takes the first valid header it meets, and that must be ours.
    const auto found = qemu_multiboot_scan(out);
    if (!found || *found != mb_off)
        return fail("internal: a QEMU-style scan does not find the Multiboot header where it was written");
    return out;
}

} // namespace toro::tools
