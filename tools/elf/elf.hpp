// Host-side checked ELF64 reader for toro's build tools (elfwrap) and the KVM launcher.
// parse_elf64 validates the header, the program header table, every segment's file range and
// every PT_NOTE before handing anything out, so later users can trust the offsets it returns.
// Errors come back as values with a message a person can act on; malformed input never causes an
// out-of-bounds read.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace toro::tools {

// What went wrong, as one human-readable sentence fragment ("segment 2: p_filesz > p_memsz").
struct elf_error {
    std::string message;
};

// A T or an elf_error. Mirrors toro::expected's surface, but the message is an owned string so
// it can carry offsets and sizes (toro::error holds a static text plus one number).
template <class T>
class [[nodiscard]] result {
public:
    result(const T& v) : v_{std::in_place_index<0>, v} {}
    result(T&& v) : v_{std::in_place_index<0>, std::move(v)} {}
    result(elf_error e) : v_{std::in_place_index<1>, std::move(e)} {}

    bool has_value() const { return v_.index() == 0; }
    explicit operator bool() const { return has_value(); }
    T& value() & { return std::get<0>(v_); }
    const T& value() const& { return std::get<0>(v_); }
    T&& value() && { return std::get<0>(std::move(v_)); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    const elf_error& error() const { return std::get<1>(v_); }

private:
    std::variant<T, elf_error> v_;
};

// ELF constants this reader and its users need (values from the System V gABI and the psABI).
inline constexpr std::uint32_t pt_load = 1;
inline constexpr std::uint32_t pt_note = 4;
inline constexpr std::uint32_t pf_x = 1;
inline constexpr std::uint32_t pf_w = 2;
inline constexpr std::uint32_t pf_r = 4;
inline constexpr std::uint16_t et_exec = 2;
inline constexpr std::uint16_t em_386 = 3;
inline constexpr std::uint16_t em_x86_64 = 62;
inline constexpr std::size_t elf64_ehdr_size = 64;
inline constexpr std::size_t elf64_phdr_size = 56;
// Xen's PVH boot protocol: a note named "Xen" whose descriptor is the 32-bit entry point.
inline constexpr std::string_view xen_note_name = "Xen";
inline constexpr std::uint32_t xen_elfnote_phys32_entry = 18;

// One program header, widened to host types.
struct elf_segment {
    std::uint32_t type = 0;
    std::uint32_t flags = 0;
    std::uint64_t offset = 0;
    std::uint64_t vaddr = 0;
    std::uint64_t paddr = 0;
    std::uint64_t filesz = 0;
    std::uint64_t memsz = 0;
    std::uint64_t align = 0;

    // The segment's bytes in the file; valid because parse_elf64 checked the range.
    std::span<const std::uint8_t> bytes(std::span<const std::uint8_t> file) const {
        return file.subspan(static_cast<std::size_t>(offset), static_cast<std::size_t>(filesz));
    }
};

// A parsed ELF64 executable. `file` views the buffer given to parse_elf64 (not a copy): that
// buffer must outlive the image.
struct elf64_image {
    std::span<const std::uint8_t> file;
    std::uint16_t type = 0;
    std::uint16_t machine = 0;
    std::uint64_t entry = 0;
    std::vector<elf_segment> segments;

    // The descriptor of the first note called `name` with type `type` in any PT_NOTE segment.
    // `name` is compared without its terminating NUL (which the note must have).
    std::optional<std::span<const std::uint8_t>> find_note(std::string_view name, std::uint32_t type) const;
};

namespace detail {

// Little-endian loads independent of host byte order; callers have already checked the range.
inline std::uint64_t load_le(std::span<const std::uint8_t> b, std::size_t off, std::size_t width) {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < width; ++i) v |= std::uint64_t{b[off + i]} << (8 * i);
    return v;
}
inline std::uint16_t le16(std::span<const std::uint8_t> b, std::size_t off) {
    return static_cast<std::uint16_t>(load_le(b, off, 2));
}
inline std::uint32_t le32(std::span<const std::uint8_t> b, std::size_t off) {
    return static_cast<std::uint32_t>(load_le(b, off, 4));
}
inline std::uint64_t le64(std::span<const std::uint8_t> b, std::size_t off) {
    return load_le(b, off, 8);
}

inline std::string hex(std::uint64_t v) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "%#llx", static_cast<unsigned long long>(v));
    return buf;
}

// True when [off, off + len) lies inside a buffer of `size` bytes, without overflowing.
inline bool range_ok(std::uint64_t off, std::uint64_t len, std::uint64_t size) {
    return off <= size && len <= size - off;
}

inline std::uint64_t align_up(std::uint64_t v, std::uint64_t a) {
    return (v + (a - 1)) & ~(a - 1);
}

// Note entries are padded to 4 bytes, except in PT_NOTE segments aligned to 8 (lld and GNU ld
// emit .note.gnu.property that way), where the gABI's 8-byte layout applies.
inline std::uint64_t note_alignment(const elf_segment& s) {
    return s.align == 8 ? 8 : 4;
}

// Walks the notes of one PT_NOTE segment. `visit(name, type, desc)` returns true to stop.
// Returns an error message for the first malformed entry, or an empty string.
template <class Visit>
std::string walk_notes(std::span<const std::uint8_t> notes, std::uint64_t align, Visit&& visit) {
    std::uint64_t pos = 0;
    const std::uint64_t size = notes.size();
    while (pos < size) {
        if (!range_ok(pos, 12, size)) return "truncated note header at offset " + hex(pos);
        const std::uint64_t namesz = le32(notes, pos);
        const std::uint64_t descsz = le32(notes, pos + 4);
        const std::uint32_t type = le32(notes, pos + 8);
        // 32-bit sizes widened to 64 bits cannot overflow when padded and summed.
        const std::uint64_t name_off = pos + 12;
        // Padding aligns the descriptor and the next entry relative to the segment start (for
        // 4-byte notes that is the same as padding each field; for 8-byte ones it is not).
        const std::uint64_t desc_off = align_up(name_off + namesz, align);
        if (!range_ok(name_off, namesz, size) || !range_ok(desc_off, descsz, size))
            return "note at offset " + hex(pos) + " has sizes (namesz " + hex(namesz) + ", descsz " +
                   hex(descsz) + ") beyond its segment";
        // namesz counts the name's NUL; a producer that left it out gets its bytes compared as-is
        // (so "Xenx" never passes for "Xen") rather than failing the whole file.
        std::string_view name(reinterpret_cast<const char*>(notes.data() + name_off), namesz);
        if (!name.empty() && name.back() == '\0') name.remove_suffix(1);
        if (visit(name, type, notes.subspan(desc_off, descsz))) return {};
        const std::uint64_t next = align_up(desc_off + descsz, align);
        // The last note's trailing padding may be missing; that ends the walk cleanly.
        if (next >= size) break;
        pos = next;
    }
    return {};
}

} // namespace detail

inline std::optional<std::span<const std::uint8_t>> elf64_image::find_note(std::string_view name,
                                                                           std::uint32_t want) const {
    for (const auto& s : segments) {
        if (s.type != pt_note || !detail::range_ok(s.offset, s.filesz, file.size())) continue;
        std::optional<std::span<const std::uint8_t>> found;
        // A malformed segment just stops the walk; parse_elf64 already rejected those anyway.
        (void)detail::walk_notes(s.bytes(file), detail::note_alignment(s),
                                 [&](std::string_view n, std::uint32_t t, std::span<const std::uint8_t> d) {
                                     if (t != want || n != name) return false;
                                     found = d;
                                     return true;
                                 });
        if (found) return found;
    }
    return std::nullopt;
}

// Validates and decodes an ELF64 little-endian x86-64 ET_EXEC image held in `file`.
inline result<elf64_image> parse_elf64(std::span<const std::uint8_t> file) {
    using namespace detail;
    auto fail = [](std::string m) { return elf_error{std::move(m)}; };

    if (file.size() < 4 || file[0] != 0x7f || file[1] != 'E' || file[2] != 'L' || file[3] != 'F')
        return fail("not an ELF file (bad magic)");
    if (file.size() < 16) return fail("truncated ELF identification");
    if (file[4] == 1) return fail("ELFCLASS32 file: expected a 64-bit (ELFCLASS64) kernel");
    if (file[4] != 2) return fail("unknown ELF class " + std::to_string(file[4]));
    if (file[5] != 1) return fail("not little-endian (EI_DATA " + std::to_string(file[5]) + ")");
    if (file[6] != 1) return fail("unsupported EI_VERSION " + std::to_string(file[6]));
    if (file.size() < elf64_ehdr_size)
        return fail("truncated ELF header (" + std::to_string(file.size()) + " bytes, need 64)");

    elf64_image img;
    img.file = file;
    img.type = le16(file, 16);
    img.machine = le16(file, 18);
    const std::uint32_t version = le32(file, 20);
    img.entry = le64(file, 24);
    const std::uint64_t phoff = le64(file, 32);
    const std::uint16_t ehsize = le16(file, 52);
    const std::uint16_t phentsize = le16(file, 54);
    const std::uint16_t phnum = le16(file, 56);

    if (img.machine != em_x86_64)
        return fail("wrong machine " + std::to_string(img.machine) + ": expected EM_X86_64 (62)");
    if (img.type != et_exec) return fail("not an executable (e_type " + std::to_string(img.type) + ")");
    if (version != 1) return fail("unsupported e_version " + std::to_string(version));
    if (ehsize < elf64_ehdr_size) return fail("e_ehsize " + std::to_string(ehsize) + " is below 64");
    if (phnum == 0) return fail("no program headers");
    if (phnum == 0xffff) return fail("extended program header numbering (PN_XNUM) is not supported");
    if (phentsize != elf64_phdr_size) return fail("e_phentsize " + std::to_string(phentsize) + " is not 56");
    if (!range_ok(phoff, std::uint64_t{phnum} * elf64_phdr_size, file.size()))
        return fail("program header table (offset " + hex(phoff) + ", " + std::to_string(phnum) +
                    " entries) lies outside the file");

    img.segments.reserve(phnum);
    for (std::size_t i = 0; i < phnum; ++i) {
        const std::size_t p = static_cast<std::size_t>(phoff) + i * elf64_phdr_size;
        elf_segment s;
        s.type = le32(file, p);
        s.flags = le32(file, p + 4);
        s.offset = le64(file, p + 8);
        s.vaddr = le64(file, p + 16);
        s.paddr = le64(file, p + 24);
        s.filesz = le64(file, p + 32);
        s.memsz = le64(file, p + 40);
        s.align = le64(file, p + 48);
        const std::string where = "segment " + std::to_string(i) + ": ";

        if (!range_ok(s.offset, s.filesz, file.size()))
            return fail(where + "file range [" + hex(s.offset) + ", +" + hex(s.filesz) +
                        ") lies outside the file (" + hex(file.size()) + " bytes)");
        if (s.align > 1 && (s.align & (s.align - 1)) != 0)
            return fail(where + "p_align " + hex(s.align) + " is not a power of two");
        if (s.type == pt_load) {
            if (s.filesz > s.memsz)
                return fail(where + "p_filesz " + hex(s.filesz) + " > p_memsz " + hex(s.memsz));
            if (s.paddr + s.memsz < s.paddr || s.vaddr + s.memsz < s.vaddr)
                return fail(where + "address range wraps around");
        }
        if (s.type == pt_note) {
            auto err = walk_notes(s.bytes(file), note_alignment(s), [](auto, auto, auto) { return false; });
            if (!err.empty()) return fail(where + err);
        }
        img.segments.push_back(s);
    }

    // Loaders copy every PT_LOAD to its physical address; overlapping ones would clobber each other.
    std::vector<const elf_segment*> loads;
    for (const auto& s : img.segments)
        if (s.type == pt_load && s.memsz > 0) loads.push_back(&s);
    if (loads.empty()) return fail("no PT_LOAD segment with contents");
    std::sort(loads.begin(), loads.end(), [](auto* a, auto* b) { return a->paddr < b->paddr; });
    for (std::size_t i = 1; i < loads.size(); ++i)
        if (loads[i - 1]->paddr + loads[i - 1]->memsz > loads[i]->paddr)
            return fail("PT_LOAD segments overlap in physical memory at " + hex(loads[i]->paddr));

    return img;
}

} // namespace toro::tools
