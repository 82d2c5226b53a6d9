// phys_reader: the only way the boot parsers touch memory the loader handed over.
// A reader refuses any byte it was not told is readable, so a broken or hostile loader structure
// (a wild pointer, a count that runs off the end) becomes an error value instead of a fault.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <utility>

#include <toro/base/expected.hpp>
#include <toro/base/string_view.hpp>

namespace toro {

// Copies [phys_addr, phys_addr + len) into dst. Returns false, and copies nothing useful, if any byte
// of that range is not readable, including when phys_addr + len would wrap past 2^64.
template <class Reader>
concept phys_reader = requires(Reader& r, std::uint64_t phys_addr, void* dst, std::size_t len) {
    { r.read(phys_addr, dst, len) } -> std::same_as<bool>;
};

// A reader that can also hand out a pointer to n readable bytes (nullptr if any is not readable): firmware
// scans (128 KiB of BIOS area in 16-byte steps) then cost one load per step instead of copies. Where a
// hypervisor emulates every guest instruction, that is the difference between ~50 ms and ~250 ms of boot.
template <class Reader>
concept phys_viewer = phys_reader<Reader> && requires(Reader& r, std::uint64_t phys_addr, std::size_t len) {
    { r.view(phys_addr, len) } -> std::same_as<const std::byte*>;
};

// Models phys_reader and nothing more: not copyable, not movable, no const read. Code written against
// the concept must instantiate with it (the host tests do).
struct phys_reader_archetype {
    phys_reader_archetype() = default;
    phys_reader_archetype(const phys_reader_archetype&) = delete;
    phys_reader_archetype& operator=(const phys_reader_archetype&) = delete;
    bool read(std::uint64_t, void*, std::size_t) { return false; }
};
static_assert(phys_reader<phys_reader_archetype>);

namespace detail {

// [addr, addr + len) inside [low, high), phrased so that no sum can wrap.
constexpr bool range_inside(std::uint64_t addr, std::uint64_t len, std::uint64_t low, std::uint64_t high) {
    return addr >= low && addr <= high && len <= high - addr;
}

// A plain byte loop: no libc in the kernel, and -ffreestanding keeps it from becoming a memcpy call.
inline void copy_bytes(void* dst, const std::byte* src, std::size_t len) {
    auto* d = static_cast<std::byte*>(dst);
    for (std::size_t i = 0; i < len; ++i) d[i] = src[i];
}

} // namespace detail

// A fake physical memory for host tests and the fuzzer: `bytes` appears at physical address `base`,
// nothing else is readable. Freestanding-safe.
struct span_phys_reader {
    std::span<const std::byte> bytes;
    std::uint64_t base = 0;

    bool read(std::uint64_t phys_addr, void* dst, std::size_t len) const {
        if (phys_addr < base) return false;
        const std::uint64_t off = phys_addr - base; // subtraction first: base + size may not fit
        if (off > bytes.size() || len > bytes.size() - off) return false;
        detail::copy_bytes(dst, bytes.data() + off, len);
        return true;
    }
    const std::byte* view(std::uint64_t phys_addr, std::size_t len) const {
        if (phys_addr < base) return nullptr;
        const std::uint64_t off = phys_addr - base;
        if (off > bytes.size() || len > bytes.size() - off) return nullptr;
        return bytes.data() + off;
    }
};
static_assert(phys_viewer<span_phys_reader>);

// The kernel's reader: physical memory in [low, high) is identity-mapped, so an address is a pointer.
// The kernel passes low = 4096 because page 0 stays unmapped as a NULL guard.
struct identity_phys_reader {
    std::uint64_t low = 0;
    std::uint64_t high = 0;

    bool read(std::uint64_t phys_addr, void* dst, std::size_t len) const {
        if (!detail::range_inside(phys_addr, len, low, high)) return false;
        detail::copy_bytes(dst, reinterpret_cast<const std::byte*>(static_cast<std::uintptr_t>(phys_addr)),
                           len);
        return true;
    }
};
static_assert(phys_reader<identity_phys_reader>);

// Little-endian decode of bytes already copied out of loader memory: the layouts are LE on x86, and
// spelling it out avoids alignment assumptions. Written as one unrolled OR of shifted bytes, a pattern
// both compilers turn into a single load even at -Os (a loop would stay a loop).
template <std::unsigned_integral T>
constexpr T load_le(const std::byte* p) {
    return [p]<std::size_t... I>(std::index_sequence<I...>) {
        return static_cast<T>(((static_cast<T>(p[I]) << (8 * I)) | ...));
    }
    (std::make_index_sequence<sizeof(T)>{});
}

// A little-endian integer at a physical address; the error carries the address.
template <std::unsigned_integral T, phys_reader Reader>
expected<T> read_le(Reader& mem, std::uint64_t phys_addr) {
    std::byte buf[sizeof(T)];
    if (!mem.read(phys_addr, buf, sizeof buf))
        return unexpected{"physical memory is not readable", phys_addr};
    return load_le<T>(buf);
}

template <phys_reader Reader>
expected<std::uint8_t> read_u8(Reader& mem, std::uint64_t phys_addr) {
    return read_le<std::uint8_t>(mem, phys_addr);
}
template <phys_reader Reader>
expected<std::uint16_t> read_u16(Reader& mem, std::uint64_t phys_addr) {
    return read_le<std::uint16_t>(mem, phys_addr);
}
template <phys_reader Reader>
expected<std::uint32_t> read_u32(Reader& mem, std::uint64_t phys_addr) {
    return read_le<std::uint32_t>(mem, phys_addr);
}
template <phys_reader Reader>
expected<std::uint64_t> read_u64(Reader& mem, std::uint64_t phys_addr) {
    return read_le<std::uint64_t>(mem, phys_addr);
}

// Copies the NUL-terminated string at phys_addr into dst, NUL included, and returns its length
// (at most dst.size() - 1). Reads one byte at a time so that nothing past the NUL is touched.
// Errors (messages are the caller's, so they can name what the string is):
//   `unreadable`: a byte before the NUL is unreadable or the string would wrap past 2^64;
//                 value = the first unreadable address (phys_addr on wrap-around).
//   `too_long`:   no NUL among the first dst.size() bytes; value = phys_addr.
// On error dst holds the empty string.
template <phys_reader Reader>
expected<std::size_t> read_cstring(Reader& mem, std::uint64_t phys_addr, std::span<char> dst,
                                   string_view unreadable = "string runs into unreadable physical memory",
                                   string_view too_long = "string is longer than its buffer") {
    for (std::size_t i = 0; i < dst.size(); ++i) {
        if (i > std::numeric_limits<std::uint64_t>::max() - phys_addr) {
            dst[0] = '\0';
            return unexpected{unreadable, phys_addr};
        }
        char c = '\0';
        if (!mem.read(phys_addr + i, &c, 1)) {
            dst[0] = '\0';
            return unexpected{unreadable, phys_addr + i};
        }
        if (c == '\0') {
            dst[i] = '\0';
            return i;
        }
        if (i + 1 == dst.size()) break; // no room left for the NUL
        dst[i] = c;
    }
    if (!dst.empty()) dst[0] = '\0';
    return unexpected{too_long, phys_addr};
}

} // namespace toro
