// boot_info: what the kernel learns from its loader, the same shape whichever boot protocol was used.
// The protocol parsers (multiboot.hpp, pvh.hpp, zero_page.hpp) fill it; nothing here allocates.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>

#include <toro/base/expected.hpp>
#include <toro/base/string_view.hpp>
#include <toro/boot/phys_reader.hpp>

namespace toro {

// The numeric values are fixed: the assembly entry stubs load them into a register.
enum class boot_protocol : std::uint8_t { unknown = 0, multiboot = 1, pvh = 2, linux64 = 3 };

constexpr string_view protocol_name(boot_protocol p) {
    switch (p) {
    case boot_protocol::multiboot:
        return "Multiboot";
    case boot_protocol::pvh:
        return "PVH";
    case boot_protocol::linux64:
        return "Linux 64-bit boot protocol";
    case boot_protocol::unknown:
        break;
    }
    return "unknown";
}

// Declared from least to most restrictive, so "more restrictive" is simply "greater": where loader
// entries overlap, the greater type wins (usable memory wrongly reported reserved is lost, reserved
// memory wrongly reported usable corrupts firmware or hardware state).
enum class memory_type : std::uint8_t { usable, acpi_reclaimable, reserved, acpi_nvs, bad };
static_assert(memory_type::usable < memory_type::acpi_reclaimable &&
              memory_type::acpi_reclaimable < memory_type::reserved &&
              memory_type::reserved < memory_type::acpi_nvs && memory_type::acpi_nvs < memory_type::bad);

constexpr string_view memory_type_name(memory_type t) {
    switch (t) {
    case memory_type::usable:
        return "usable";
    case memory_type::acpi_reclaimable:
        return "ACPI reclaimable";
    case memory_type::reserved:
        return "reserved";
    case memory_type::acpi_nvs:
        return "ACPI NVS";
    case memory_type::bad:
        return "bad";
    }
    return "unknown";
}

// E820 type numbers, shared by Multiboot, PVH and the Linux zero page. Anything we do not know
// (persistent memory, vendor types, 0) must not be handed out, so it is reserved.
constexpr memory_type memory_type_from_e820(std::uint32_t raw) {
    switch (raw) {
    case 1:
        return memory_type::usable;
    case 3:
        return memory_type::acpi_reclaimable;
    case 4:
        return memory_type::acpi_nvs;
    case 5:
        return memory_type::bad;
    default:
        return memory_type::reserved;
    }
}

struct memory_region {
    std::uint64_t base = 0;
    std::uint64_t size = 0;
    memory_type type = memory_type::usable;

    // Never wraps: memory_map::add rejects regions whose end does not fit in 64 bits.
    constexpr std::uint64_t end() const { return base + size; }
    friend constexpr bool operator==(const memory_region&, const memory_region&) = default;
};

// A fixed-capacity physical memory map. Loader entries go in raw with add(); normalise() turns them
// into sorted, non-overlapping, non-empty regions with equal-type neighbours merged.
// O(n^2) on a fixed array: n <= 128, and the kernel has no heap yet when this runs.
class memory_map {
public:
    static constexpr std::size_t max_regions = 128;

    constexpr void clear() { count_ = 0; }
    constexpr std::span<const memory_region> regions() const { return {regions_.data(), count_}; }
    constexpr std::size_t size() const { return count_; }
    constexpr bool empty() const { return count_ == 0; }

    // Sum of usable bytes; meaningful after normalise() (before it, overlaps count twice).
    constexpr std::uint64_t usable_bytes() const {
        std::uint64_t total = 0;
        for (const auto& r : regions())
            if (r.type == memory_type::usable) total += r.size;
        return total;
    }

    // Appends one loader entry. Zero-length entries are dropped (loaders emit them; they mean nothing).
    constexpr expected<void> add(std::uint64_t base, std::uint64_t size, memory_type type) {
        if (size == 0) return {};
        if (size > std::numeric_limits<std::uint64_t>::max() - base)
            return unexpected{"memory map entry wraps past the end of the address space; base", base};
        if (count_ == max_regions)
            return unexpected{"memory map has more entries than fit (128)", max_regions};
        regions_[count_++] = {base, size, type};
        return {};
    }
    // Same, with an E820-style type number (1 usable, 2 reserved, 3 ACPI reclaimable, 4 ACPI NVS,
    // 5 bad, anything else reserved).
    constexpr expected<void> add(std::uint64_t base, std::uint64_t size, std::uint32_t raw_e820_type) {
        return add(base, size, memory_type_from_e820(raw_e820_type));
    }

    // Sorts, resolves overlaps to the most restrictive type and merges equal-type neighbours, in place.
    // Fails only if the result needs more than max_regions regions.
    constexpr expected<void> normalise() {
        // 0. The common case, in O(n): loaders hand over maps already sorted and disjoint, which only need
        //    equal-type neighbours merged. (Boot time here is counted in instructions on hypervisors that
        //    emulate guest code.)
        if (sorted_and_disjoint()) {
            fold();
            return {};
        }
        // 1. Union the entries of each type on its own, so same-type regions are disjoint and apart.
        sort(true);
        fold();
        // 2. Cut each region down to what no more restrictive region covers, least restrictive types
        //    first: while type t is cut, every greater-typed region is still whole and in base order,
        //    so one forward scan subtracts them all, and each piece left over is final. Nothing is
        //    stored that the result does not contain, so capacity fails only for a too-large result.
        sort(false);
        const std::size_t n = count_;
        for (int t = 0; t < static_cast<int>(memory_type::bad); ++t) // bad is never cut
            for (std::size_t j = 0; j < n; ++j)
                if (static_cast<int>(regions_[j].type) == t && regions_[j].size != 0)
                    if (auto r = cut_by_greater(j); !r) return r;
        // 3. Address order again; fold drops the slots emptied above.
        sort(false);
        fold();
        return {};
    }

private:
    constexpr bool sorted_and_disjoint() const {
        for (std::size_t i = 1; i < count_; ++i)
            if (regions_[i].base < regions_[i - 1].end()) return false;
        return true;
    }

    // Insertion sort (small n, no library) by base, or by type then base.
    constexpr void sort(bool type_major) {
        for (std::size_t i = 1; i < count_; ++i) {
            const memory_region x = regions_[i];
            std::size_t j = i;
            for (; j > 0; --j) {
                const memory_region& y = regions_[j - 1];
                if ((type_major && x.type != y.type) ? x.type > y.type : x.base >= y.base) break;
                regions_[j] = y;
            }
            regions_[j] = x;
        }
    }

    // Drops empty regions and merges each region into its predecessor when both have the same type
    // and they overlap or touch. Expects the array sorted by base within each type.
    constexpr void fold() {
        std::size_t n = 0;
        for (std::size_t i = 0; i < count_; ++i) {
            const memory_region r = regions_[i];
            if (r.size == 0) continue;
            if (n > 0 && regions_[n - 1].type == r.type && r.base <= regions_[n - 1].end()) {
                memory_region& last = regions_[n - 1];
                if (r.end() > last.end()) last.size = r.end() - last.base;
            } else {
                regions_[n++] = r;
            }
        }
        count_ = n;
    }

    // Replaces regions_[j] by its parts not covered by any region of a greater type. Relies on the
    // greater-typed regions being whole and sorted by base; the pieces stored are of a lesser type.
    constexpr expected<void> cut_by_greater(std::size_t j) {
        const memory_region lo = regions_[j];
        regions_[j].size = 0; // free the slot: the first piece lands back here
        std::uint64_t pos = lo.base;
        for (std::size_t k = 0; k < count_ && pos < lo.end(); ++k) {
            const memory_region& hi = regions_[k];
            if (hi.size == 0 || hi.type <= lo.type || hi.end() <= pos || hi.base >= lo.end()) continue;
            if (hi.base > pos)
                if (auto r = store_piece({pos, hi.base - pos, lo.type}); !r) return r;
            pos = hi.end();
        }
        if (pos < lo.end()) return store_piece({pos, lo.end() - pos, lo.type});
        return {};
    }

    // A piece goes into a slot emptied earlier, else at the end.
    constexpr expected<void> store_piece(const memory_region& piece) {
        for (std::size_t k = 0; k < count_; ++k)
            if (regions_[k].size == 0) {
                regions_[k] = piece;
                return {};
            }
        if (count_ == max_regions)
            return unexpected{"memory map needs more than 128 regions once overlapping entries are resolved",
                              max_regions};
        regions_[count_++] = piece;
        return {};
    }

    std::array<memory_region, max_regions> regions_{};
    std::size_t count_ = 0;
};

// Everything the kernel is told at boot. About 5 KiB: keep it in static storage, not on a stack.
struct boot_info {
    static constexpr std::size_t max_cmdline = 2047; // bytes, NUL not included

    boot_protocol protocol = boot_protocol::unknown;
    memory_map memory;
    std::array<char, max_cmdline + 1> cmdline_buffer{}; // NUL-terminated at cmdline_length
    std::size_t cmdline_length = 0;
    std::uint64_t rsdp = 0; // physical address of the ACPI RSDP; 0 = the loader did not say
    std::uint64_t tsc_at_entry = 0;

    constexpr string_view cmdline() const { return {cmdline_buffer.data(), cmdline_length}; }

    // Back to the default state without building a 5 KiB temporary.
    constexpr void reset() {
        protocol = boot_protocol::unknown;
        memory.clear();
        cmdline_length = 0;
        cmdline_buffer[0] = '\0';
        rsdp = 0;
        tsc_at_entry = 0;
    }

    // For loaders (and tests) that already hold the command line in readable memory.
    constexpr expected<void> set_cmdline(string_view s) {
        if (s.size() > max_cmdline)
            return unexpected{"kernel command line is longer than 2047 bytes", s.size()};
        for (std::size_t i = 0; i < s.size(); ++i) cmdline_buffer[i] = s[i];
        cmdline_buffer[s.size()] = '\0';
        cmdline_length = s.size();
        return {};
    }

    // Removes the first space-separated word and the spaces after it.
    constexpr void drop_first_word() {
        std::size_t i = 0;
        while (i < cmdline_length && cmdline_buffer[i] != ' ') ++i;
        while (i < cmdline_length && cmdline_buffer[i] == ' ') ++i;
        for (std::size_t j = i; j <= cmdline_length; ++j) cmdline_buffer[j - i] = cmdline_buffer[j];
        cmdline_length -= i;
    }
};
static_assert(boot_info::max_cmdline == 2047, "the error messages spell out 2047");

// Copies the loader's command line at phys_addr into out. Address 0 means "none given": empty, no error.
// A command line that is too long is an error rather than silently cut: a truncated option is worse
// than a clear refusal to boot.
template <phys_reader Reader>
expected<void> load_cmdline(Reader& mem, std::uint64_t phys_addr, boot_info& out) {
    out.cmdline_length = 0;
    out.cmdline_buffer[0] = '\0';
    if (phys_addr == 0) return {};
    auto n = read_cstring(mem, phys_addr, std::span<char>{out.cmdline_buffer},
                          "kernel command line runs into unreadable memory before its terminating NUL",
                          "kernel command line is longer than 2047 bytes");
    if (!n) return unexpected{n.error()};
    out.cmdline_length = *n;
    return {};
}

namespace detail {

// Adds `count` E820-style entries (u64 addr, u64 size, u32 type, then padding up to `stride`) found at
// table. Shared by PVH and the zero page; the caller has ruled out wrap-around of the table.
template <phys_reader Reader>
expected<void> add_e820_table(Reader& mem, std::uint64_t table, std::size_t count, std::size_t stride,
                              memory_map& map, string_view unreadable) {
    for (std::size_t i = 0; i < count; ++i) {
        const std::uint64_t at = table + i * stride;
        std::byte e[20];
        if (!mem.read(at, e, sizeof e)) return unexpected{unreadable, at};
        if (auto r = map.add(load_le<std::uint64_t>(e), load_le<std::uint64_t>(e + 8),
                             load_le<std::uint32_t>(e + 16));
            !r)
            return r;
    }
    return {};
}

// Last step of every parser: a loader that described no memory at all is broken, not merely frugal.
inline expected<void> finish_memory_map(memory_map& map) {
    if (auto r = map.normalise(); !r) return r;
    if (map.empty()) return unexpected{"the loader's memory map is empty (no entry has a non-zero length)"};
    return {};
}

} // namespace detail

} // namespace toro
