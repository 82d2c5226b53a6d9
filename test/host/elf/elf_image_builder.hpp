// Test support shared by the ELF tool tests and the toro-vmm tests: little-endian pokes and peeks, ELF note
// entries and an ELF64 image builder (header | program headers | segment data), so each test builds exactly
// the image it needs and then breaks it on purpose.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "elf/elf.hpp"

namespace elf_test {

using bytes = std::vector<std::uint8_t>;
using namespace toro::tools;

inline void poke(bytes& b, std::size_t off, std::uint64_t v, std::size_t width) {
    for (std::size_t i = 0; i < width; ++i) b.at(off + i) = static_cast<std::uint8_t>(v >> (8 * i));
}
inline std::uint64_t peek(const bytes& b, std::size_t off, std::size_t width) {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < width; ++i) v |= std::uint64_t{b.at(off + i)} << (8 * i);
    return v;
}

// One note entry: 12-byte header, NUL-terminated name and descriptor, each padded to `align`.
inline bytes make_note(const std::string& name, std::uint32_t type, const bytes& desc,
                       std::size_t align = 4) {
    bytes n(12, 0);
    poke(n, 0, name.size() + 1, 4);
    poke(n, 4, desc.size(), 4);
    poke(n, 8, type, 4);
    n.insert(n.end(), name.begin(), name.end());
    n.push_back(0);
    while (n.size() % align) n.push_back(0);
    n.insert(n.end(), desc.begin(), desc.end());
    while (n.size() % align) n.push_back(0);
    return n;
}

struct seg_spec {
    std::uint32_t type = pt_load;
    std::uint32_t flags = pf_r;
    std::uint64_t paddr = 0;
    std::uint64_t vaddr = 0;
    std::uint64_t memsz = 0; // 0 means "same as data.size()"
    std::uint64_t align = 4096;
    bytes data;
};

// Lays out: ELF64 header | program headers | segment data (16-byte aligned, in spec order).
struct elf64_builder {
    std::uint16_t type = et_exec;
    std::uint16_t machine = em_x86_64;
    std::uint64_t entry = 0xffffffff80100000; // the 64-bit entry; the wrapper must not use it
    std::vector<seg_spec> segs;

    static std::size_t phdr_at(std::size_t i) { return elf64_ehdr_size + i * elf64_phdr_size; }

    bytes build() const {
        bytes b(elf64_ehdr_size + segs.size() * elf64_phdr_size, 0);
        const std::uint8_t ident[] = {0x7f, 'E', 'L', 'F', 2, 1, 1};
        std::copy(std::begin(ident), std::end(ident), b.begin());
        poke(b, 16, type, 2);
        poke(b, 18, machine, 2);
        poke(b, 20, 1, 4);
        poke(b, 24, entry, 8);
        poke(b, 32, elf64_ehdr_size, 8);
        poke(b, 52, elf64_ehdr_size, 2);
        poke(b, 54, elf64_phdr_size, 2);
        poke(b, 56, segs.size(), 2);
        for (std::size_t i = 0; i < segs.size(); ++i) {
            const auto& s = segs[i];
            while (b.size() % 16) b.push_back(0);
            const std::size_t off = b.size();
            b.insert(b.end(), s.data.begin(), s.data.end());
            const std::size_t p = phdr_at(i);
            poke(b, p, s.type, 4);
            poke(b, p + 4, s.flags, 4);
            poke(b, p + 8, off, 8);
            poke(b, p + 16, s.vaddr, 8);
            poke(b, p + 24, s.paddr, 8);
            poke(b, p + 32, s.data.size(), 8);
            poke(b, p + 40, s.memsz ? s.memsz : s.data.size(), 8);
            poke(b, p + 48, s.align, 8);
        }
        return b;
    }
};

} // namespace elf_test
