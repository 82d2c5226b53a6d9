// Host tests for tools/elf: the checked ELF64 reader and the ELF32 Multiboot wrapper.
// Images are built in memory by a tiny builder below, then broken on purpose; the wrapper's output
// is checked with an independent ELF32 reader and a Multiboot scan written the way QEMU does it.
#include <catch2/catch.hpp>

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "elf/elf.hpp"
#include "elf/elf32_wrap.hpp"
#include "elf_image_builder.hpp"

using namespace toro::tools;
using namespace elf_test;

namespace {

bytes le32_bytes(std::uint32_t v) {
    return {std::uint8_t(v), std::uint8_t(v >> 8), std::uint8_t(v >> 16), std::uint8_t(v >> 24)};
}

bytes pattern(std::size_t n, std::uint8_t seed) {
    bytes b(n);
    for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<std::uint8_t>(seed + i * 7);
    return b;
}

constexpr std::uint32_t pvh_entry = 0x100040;

// A kernel shaped like toro's: text at 1 MiB (higher-half vaddr), data + bss, and a PT_NOTE that
// holds a GNU note before the Xen one.
elf64_builder kernel_like() {
    elf64_builder k;
    seg_spec text{pt_load, pf_r | pf_x, 0x100000, 0xffffffff80100000, 0, 4096, pattern(0x300, 1)};
    seg_spec data{pt_load, pf_r | pf_w, 0x102000, 0xffffffff80102000, 0x3000, 4096, pattern(0x123, 9)};
    bytes notes = make_note("GNU", 3, pattern(20, 3));
    const bytes xen = make_note("Xen", xen_elfnote_phys32_entry, le32_bytes(pvh_entry));
    notes.insert(notes.end(), xen.begin(), xen.end());
    seg_spec note{pt_note, pf_r, 0, 0, 0, 4, notes};
    k.segs = {text, data, note};
    return k;
}

result<elf64_image> parse(const bytes& b) {
    return parse_elf64(std::span<const std::uint8_t>(b));
}

// Expects a parse failure whose message mentions `needle`.
void require_parse_error(const bytes& b, const std::string& needle) {
    auto r = parse(b);
    REQUIRE_FALSE(r.has_value());
    INFO("message: " << r.error().message);
    CHECK(r.error().message.find(needle) != std::string::npos);
}

// QEMU's hw/i386/multiboot.c scan, restated independently: 4-byte steps below 8192 - 48, first
// offset where magic, flags and checksum add up to zero.
std::optional<std::size_t> scan_like_qemu(const bytes& f) {
    for (std::size_t i = 0; i < 8192 - 48 && i + 12 <= f.size(); i += 4) {
        if (peek(f, i, 4) != 0x1BADB002) continue;
        if (static_cast<std::uint32_t>(peek(f, i, 4) + peek(f, i + 4, 4) + peek(f, i + 8, 4)) == 0) return i;
    }
    return std::nullopt;
}

struct elf32_phdr {
    std::uint32_t type, offset, vaddr, paddr, filesz, memsz, flags, align;
};
std::vector<elf32_phdr> read_elf32_phdrs(const bytes& f) {
    std::vector<elf32_phdr> v;
    const std::size_t phoff = peek(f, 28, 4), phnum = peek(f, 44, 2);
    for (std::size_t i = 0; i < phnum; ++i) {
        const std::size_t p = phoff + i * 32;
        v.push_back({std::uint32_t(peek(f, p, 4)), std::uint32_t(peek(f, p + 4, 4)),
                     std::uint32_t(peek(f, p + 8, 4)), std::uint32_t(peek(f, p + 12, 4)),
                     std::uint32_t(peek(f, p + 16, 4)), std::uint32_t(peek(f, p + 20, 4)),
                     std::uint32_t(peek(f, p + 24, 4)), std::uint32_t(peek(f, p + 28, 4))});
    }
    return v;
}

result<bytes> wrap(const bytes& b) {
    auto img = parse(b);
    REQUIRE(img.has_value());
    return wrap_multiboot_elf32(*img, b);
}

void require_wrap_error(const bytes& b, const std::string& needle) {
    auto r = wrap(b);
    REQUIRE_FALSE(r.has_value());
    INFO("message: " << r.error().message);
    CHECK(r.error().message.find(needle) != std::string::npos);
}

} // namespace

TEST_CASE("parse_elf64 decodes a well-formed kernel", "[elf]") {
    const bytes b = kernel_like().build();
    auto r = parse(b);
    REQUIRE(r.has_value());
    CHECK(r->entry == 0xffffffff80100000);
    CHECK(r->machine == em_x86_64);
    CHECK(r->type == et_exec);
    REQUIRE(r->segments.size() == 3);

    const auto& text = r->segments[0];
    CHECK(text.type == pt_load);
    CHECK(text.flags == (pf_r | pf_x));
    CHECK(text.paddr == 0x100000);
    CHECK(text.vaddr == 0xffffffff80100000);
    CHECK(text.filesz == 0x300);
    CHECK(text.memsz == 0x300);
    CHECK(text.align == 4096);
    CHECK(peek(b, elf64_builder::phdr_at(0) + 8, 8) == text.offset);
    const auto tb = text.bytes(b);
    CHECK(bytes(tb.begin(), tb.end()) == pattern(0x300, 1));

    const auto& data = r->segments[1];
    CHECK(data.filesz == 0x123);
    CHECK(data.memsz == 0x3000);
    CHECK(r->segments[2].type == pt_note);

    auto desc = r->find_note("Xen", xen_elfnote_phys32_entry);
    REQUIRE(desc.has_value());
    REQUIRE(desc->size() == 4);
    CHECK(bytes(desc->begin(), desc->end()) == le32_bytes(pvh_entry));

    auto gnu = r->find_note("GNU", 3);
    REQUIRE(gnu.has_value());
    CHECK(bytes(gnu->begin(), gnu->end()) == pattern(20, 3));

    CHECK_FALSE(r->find_note("Xen", 17).has_value());
    CHECK_FALSE(r->find_note("Xe", xen_elfnote_phys32_entry).has_value());
    CHECK_FALSE(r->find_note("Xenon", xen_elfnote_phys32_entry).has_value());
}

TEST_CASE("find_note honours 8-byte note alignment", "[elf]") {
    auto k = kernel_like();
    // 8-byte notes pad relative to the entry start: a GNU note with a 4-byte descriptor leaves 4 bytes
    // of padding before the Xen note, which a 4-byte walk would misread as the next header.
    bytes notes = make_note("GNU", 5, bytes{1, 2, 3, 4}, 8);
    const bytes xen = make_note("Xen", xen_elfnote_phys32_entry, le32_bytes(pvh_entry), 8);
    notes.insert(notes.end(), xen.begin(), xen.end());
    k.segs[2] = {pt_note, pf_r, 0, 0, 0, 8, notes};
    const bytes b = k.build();
    auto r = parse(b);
    REQUIRE(r.has_value());
    auto desc = r->find_note("Xen", xen_elfnote_phys32_entry);
    REQUIRE(desc.has_value());
    CHECK(bytes(desc->begin(), desc->end()) == le32_bytes(pvh_entry));
}

TEST_CASE("parse_elf64 rejects malformed headers", "[elf]") {
    const bytes good = kernel_like().build();

    SECTION("bad magic") {
        bytes b = good;
        b[1] = 'X';
        require_parse_error(b, "bad magic");
    }
    SECTION("empty file") {
        require_parse_error(bytes{}, "bad magic");
    }
    SECTION("ELFCLASS32 input") {
        bytes b = good;
        b[4] = 1;
        require_parse_error(b, "ELFCLASS32");
    }
    SECTION("big-endian") {
        bytes b = good;
        b[5] = 2;
        require_parse_error(b, "little-endian");
    }
    SECTION("wrong machine") {
        auto k = kernel_like();
        k.machine = em_386;
        require_parse_error(k.build(), "wrong machine");
    }
    SECTION("not an executable") {
        auto k = kernel_like();
        k.type = 3; // ET_DYN
        require_parse_error(k.build(), "not an executable");
    }
    SECTION("truncated header") {
        require_parse_error(bytes(good.begin(), good.begin() + 40), "truncated ELF header");
        require_parse_error(bytes(good.begin(), good.begin() + 10), "truncated ELF identification");
    }
    SECTION("no program headers") {
        bytes b = good;
        poke(b, 56, 0, 2);
        require_parse_error(b, "no program headers");
    }
    SECTION("wrong e_phentsize") {
        bytes b = good;
        poke(b, 54, 32, 2);
        require_parse_error(b, "e_phentsize");
    }
    SECTION("program headers past the end of the file") {
        bytes b = good;
        poke(b, 32, b.size() - 100, 8);
        require_parse_error(b, "program header table");
    }
    SECTION("program header offset that overflows") {
        bytes b = good;
        poke(b, 32, ~std::uint64_t{0} - 8, 8);
        require_parse_error(b, "program header table");
    }
    SECTION("program headers cut off by truncation") {
        require_parse_error(bytes(good.begin(), good.begin() + elf64_builder::phdr_at(2) + 10),
                            "program header table");
    }
}

TEST_CASE("parse_elf64 rejects malformed segments", "[elf]") {
    const bytes good = kernel_like().build();
    const std::size_t text = elf64_builder::phdr_at(0);

    SECTION("segment offset outside the file") {
        bytes b = good;
        poke(b, text + 8, b.size() + 1, 8);
        require_parse_error(b, "outside the file");
    }
    SECTION("segment running past the end of the file") {
        bytes b = good;
        poke(b, text + 32, b.size(), 8);
        poke(b, text + 40, b.size(), 8);
        require_parse_error(b, "outside the file");
    }
    SECTION("segment whose offset + size overflows") {
        bytes b = good;
        poke(b, text + 8, 16, 8);
        poke(b, text + 32, ~std::uint64_t{0}, 8);
        poke(b, text + 40, ~std::uint64_t{0}, 8);
        require_parse_error(b, "outside the file");
    }
    SECTION("p_filesz > p_memsz") {
        bytes b = good;
        poke(b, text + 40, 0x2ff, 8);
        require_parse_error(b, "p_filesz");
    }
    SECTION("alignment that is not a power of two") {
        bytes b = good;
        poke(b, text + 48, 3000, 8);
        require_parse_error(b, "power of two");
    }
    SECTION("overlapping PT_LOADs") {
        bytes b = good;
        poke(b, elf64_builder::phdr_at(1) + 24, 0x100200, 8);
        require_parse_error(b, "overlap");
    }
    SECTION("address range that wraps") {
        bytes b = good;
        poke(b, text + 24, ~std::uint64_t{0} - 0x10, 8);
        require_parse_error(b, "wraps");
    }
    SECTION("no PT_LOAD") {
        auto k = kernel_like();
        k.segs.erase(k.segs.begin(), k.segs.begin() + 2);
        require_parse_error(k.build(), "no PT_LOAD");
    }
}

TEST_CASE("parse_elf64 rejects notes with bogus sizes", "[elf]") {
    const bytes good = kernel_like().build();
    auto img = parse(good);
    REQUIRE(img.has_value());
    const std::size_t notes = static_cast<std::size_t>(img->segments[2].offset);
    const std::size_t xen = notes + make_note("GNU", 3, pattern(20, 3)).size();

    SECTION("namesz beyond the segment") {
        bytes b = good;
        poke(b, xen, 0x1000, 4);
        require_parse_error(b, "beyond its segment");
    }
    SECTION("descsz beyond the segment") {
        bytes b = good;
        poke(b, xen + 4, 0xffffffff, 4);
        require_parse_error(b, "beyond its segment");
    }
    SECTION("namesz at the 32-bit limit") {
        bytes b = good;
        poke(b, notes, 0xffffffff, 4);
        require_parse_error(b, "beyond its segment");
    }
    SECTION("name without NUL parses but does not match") {
        bytes b = good;
        b[xen + 12 + 3] = 'x';
        auto r = parse(b);
        REQUIRE(r.has_value());
        CHECK_FALSE(r->find_note("Xen", xen_elfnote_phys32_entry).has_value());
        CHECK_FALSE(wrap_multiboot_elf32(*r, b).has_value());
    }
    SECTION("segment too short for a note header") {
        bytes b = good;
        poke(b, elf64_builder::phdr_at(2) + 32, 5, 8);
        require_parse_error(b, "truncated note header");
    }
}

TEST_CASE("parse_elf64 and the wrapper survive corrupted input", "[elf][fuzz]") {
    const bytes good = kernel_like().build();
    // Every truncation: must fail cleanly (ASan/UBSan catch any stray read).
    for (std::size_t n = 0; n < good.size(); ++n) {
        bytes b(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n));
        auto r = parse(b);
        if (r) (void)wrap_multiboot_elf32(*r, b);
    }
    // Random corruption of the headers and notes, where the interesting fields live.
    std::mt19937 rng(12345);
    std::size_t parsed = 0;
    for (int iter = 0; iter < 20000; ++iter) {
        bytes b = good;
        const int flips = 1 + static_cast<int>(rng() % 4);
        for (int f = 0; f < flips; ++f) {
            const std::size_t at = rng() % (rng() % 2 ? good.size() : elf64_builder::phdr_at(3));
            b[at] = static_cast<std::uint8_t>(rng());
        }
        auto r = parse(b);
        if (!r) continue;
        ++parsed;
        for (const auto& s : r->segments) (void)s.bytes(b);
        (void)r->find_note("Xen", xen_elfnote_phys32_entry);
        (void)wrap_multiboot_elf32(*r, b);
    }
    CHECK(parsed > 0); // some corruption lands in data bytes and must still parse
}

TEST_CASE("wrap_multiboot_elf32 produces a loadable ELF32 with a Multiboot header", "[elf][wrap]") {
    const bytes in = kernel_like().build();
    auto img = parse(in);
    REQUIRE(img.has_value());
    auto r = wrap_multiboot_elf32(*img, in);
    REQUIRE(r.has_value());
    const bytes& out = *r;

    // ELF32 header.
    REQUIRE(out.size() >= 52);
    CHECK(bytes(out.begin(), out.begin() + 7) == bytes{0x7f, 'E', 'L', 'F', 1, 1, 1});
    CHECK(peek(out, 16, 2) == 2); // ET_EXEC
    CHECK(peek(out, 18, 2) == 3); // EM_386
    CHECK(peek(out, 20, 4) == 1); // EV_CURRENT
    CHECK(peek(out, 24, 4) == pvh_entry);
    CHECK(peek(out, 28, 4) == 52); // program headers right after the header
    CHECK(peek(out, 40, 2) == 52);
    CHECK(peek(out, 42, 2) == 32);
    CHECK(peek(out, 44, 2) == 2); // the two PT_LOADs; the note is not carried over
    CHECK(peek(out, 48, 2) == 0); // e_shnum

    // Segments: same bytes at the same physical address, vaddr = paddr.
    const auto ph = read_elf32_phdrs(out);
    REQUIRE(ph.size() == 2);
    const std::vector<const elf_segment*> src = {&img->segments[0], &img->segments[1]};
    for (std::size_t i = 0; i < ph.size(); ++i) {
        INFO("segment " << i);
        const auto& p = ph[i];
        const auto& s = *src[i];
        CHECK(p.type == pt_load);
        CHECK(p.paddr == s.paddr);
        CHECK(p.vaddr == s.paddr);
        CHECK(p.filesz == s.filesz);
        CHECK(p.memsz == s.memsz);
        CHECK(p.flags == s.flags);
        REQUIRE(p.align >= 1);
        CHECK((p.align & (p.align - 1)) == 0);
        CHECK(p.align <= 4096);
        CHECK(p.offset % p.align == p.paddr % p.align);
        REQUIRE(std::uint64_t{p.offset} + p.filesz <= out.size());
        const auto sb = s.bytes(in);
        CHECK(bytes(out.begin() + p.offset, out.begin() + p.offset + p.filesz) ==
              bytes(sb.begin(), sb.end()));
    }

    // Multiboot header, found the way QEMU finds it.
    const auto mb = scan_like_qemu(out);
    REQUIRE(mb.has_value());
    CHECK(*mb == 52 + 2 * 32);
    CHECK(*mb % 4 == 0);
    CHECK(*mb + 12 <= 8192);
    const std::uint32_t flags = static_cast<std::uint32_t>(peek(out, *mb + 4, 4));
    CHECK(flags == 0x3);
    CHECK((flags & (1u << 16)) == 0); // no a.out kludge: QEMU must use the ELF program headers
    CHECK(static_cast<std::uint32_t>(peek(out, *mb + 8, 4)) == 0xE4524FFBu);
    // Nothing before it even looks like the magic.
    for (std::size_t i = 0; i < *mb; i += 4) CHECK(peek(out, i, 4) != 0x1BADB002);
}

TEST_CASE("wrap_multiboot_elf32 sorts PT_LOADs and drops empty ones", "[elf][wrap]") {
    auto k = kernel_like();
    std::swap(k.segs[0], k.segs[1]);
    k.segs.push_back({pt_load, pf_r, 0x200000, 0x200000, 0, 4096, {}}); // memsz 0
    const bytes in = k.build();
    auto r = wrap(in);
    REQUIRE(r.has_value());
    const auto ph = read_elf32_phdrs(*r);
    REQUIRE(ph.size() == 2);
    CHECK(ph[0].paddr == 0x100000);
    CHECK(ph[1].paddr == 0x102000);
    CHECK(bytes(r->begin() + ph[0].offset, r->begin() + ph[0].offset + ph[0].filesz) == pattern(0x300, 1));
}

TEST_CASE("wrap_multiboot_elf32 accepts an 8-byte PVH descriptor", "[elf][wrap]") {
    auto k = kernel_like();
    bytes desc = le32_bytes(pvh_entry);
    desc.resize(8, 0);
    k.segs[2].data = make_note("Xen", xen_elfnote_phys32_entry, desc);
    auto r = wrap(k.build());
    REQUIRE(r.has_value());
    CHECK(peek(*r, 24, 4) == pvh_entry);

    desc[5] = 1; // entry above 4 GiB
    k.segs[2].data = make_note("Xen", xen_elfnote_phys32_entry, desc);
    require_wrap_error(k.build(), "not a 32-bit address");
}

TEST_CASE("wrap_multiboot_elf32 reports unusable kernels", "[elf][wrap]") {
    auto k = kernel_like();

    SECTION("missing PVH note") {
        k.segs[2].data = make_note("GNU", 3, pattern(20, 3));
        require_wrap_error(k.build(), "no PVH note");
    }
    SECTION("no PT_NOTE at all") {
        k.segs.pop_back();
        require_wrap_error(k.build(), "no PVH note");
    }
    SECTION("PVH note of the wrong size") {
        k.segs[2].data = make_note("Xen", xen_elfnote_phys32_entry, bytes{1, 2});
        require_wrap_error(k.build(), "expected 4 or 8");
    }
    SECTION("segment above 4 GiB") {
        k.segs[1].paddr = 0x100000000;
        require_wrap_error(k.build(), "4 GiB");
    }
    SECTION("segment ending above 4 GiB") {
        k.segs[1].paddr = 0xfffff000;
        k.segs[1].memsz = 0x2000;
        require_wrap_error(k.build(), "4 GiB");
    }
    SECTION("segment ending exactly at 4 GiB is fine") {
        k.segs[1].paddr = 0xffffe000;
        k.segs[1].memsz = 0x2000;
        CHECK(wrap(k.build()).has_value());
    }
    SECTION("entry outside the loaded bytes") {
        k.segs[2].data = make_note("Xen", xen_elfnote_phys32_entry, le32_bytes(0x500000));
        require_wrap_error(k.build(), "not inside any PT_LOAD");
    }
}
