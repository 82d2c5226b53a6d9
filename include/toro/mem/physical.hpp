// physical_memory: the machine's usable RAM as a page_source. Built from boot_info's memory map minus the
// ranges the caller says are taken (kernel image, boot data, page tables...), page-aligned, never page 0.
// Setting up is O(regions) and touches no RAM, so boot cost does not grow with the guest's memory size:
// each usable piece is a bump pointer, and bookkeeping lives only in pages that were handed out and returned.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include <toro/base/expected.hpp>
#include <toro/boot/boot_info.hpp>
#include <toro/mem/page_source.hpp>

namespace toro {

// [base, end) in physical addresses.
struct phys_range {
    std::uint64_t base = 0;
    std::uint64_t end = 0;
};

class physical_memory {
public:
    static constexpr std::size_t max_reserved = 16;
    // Each reserved range can split one usable region in two.
    static constexpr std::size_t max_regions = memory_map::max_regions + max_reserved;

    constexpr physical_memory() = default;
    physical_memory(const physical_memory&) = delete;
    physical_memory& operator=(const physical_memory&) = delete;

    // Takes the usable regions of a normalised map, shrinks each to whole pages, and cuts out page 0 (its
    // address would be the null pointer) and the reserved ranges (widened to whole pages). RAM is reached at
    // physical address + direct_map: 0 in the kernel (identity map), a reservation's base in host tests.
    // Errors: the map is not normalised, a reserved range ends before it starts, too many reserved ranges,
    // RAM that direct_map would put past the end of the address space.
    expected<void> init(const memory_map& map, std::span<const phys_range> reserved,
                        std::uintptr_t direct_map = 0) {
        runs_.clear();
        direct_map_ = direct_map;
        if (reserved.size() > max_reserved)
            return unexpected{"too many reserved physical ranges (at most 16)", reserved.size()};
        // A sorted copy, widened to pages: anything touching a reserved byte is not handed out.
        phys_range holes[max_reserved + 1];
        std::size_t n = 0;
        holes[n++] = {0, page_size}; // the null page
        for (const phys_range& r : reserved) {
            if (r.end < r.base)
                return unexpected{"reserved physical range ends before it starts; base", r.base};
            if (r.end == r.base) continue;
            phys_range h{r.base & ~std::uint64_t{page_size - 1}, round_up(r.end)};
            std::size_t j = n++;
            for (; j > 0 && holes[j - 1].base > h.base; --j) holes[j] = holes[j - 1];
            holes[j] = h;
        }
        std::uint64_t last_end = 0;
        for (const memory_region& r : map.regions()) {
            if (r.base < last_end)
                return unexpected{"memory map is not normalised (overlap or disorder at)", r.base};
            last_end = r.end();
            if (r.type != memory_type::usable) continue;
            std::uint64_t pos = round_up(r.base);
            const std::uint64_t end = r.end() & ~std::uint64_t{page_size - 1};
            for (std::size_t i = 0; i < n && pos < end; ++i) {
                if (holes[i].end <= pos || holes[i].base >= end) continue;
                if (holes[i].base > pos)
                    if (auto e = add(pos, holes[i].base); !e) return e;
                if (holes[i].end > pos) pos = holes[i].end;
            }
            if (pos < end)
                if (auto e = add(pos, end); !e) return e;
        }
        return {};
    }

    expected<std::byte*> allocate_pages(std::size_t count) {
        if (std::byte* p = runs_.allocate(count)) return p;
        return unexpected{"out of memory; pages", count};
    }
    // A bad call (pages never handed out, already free, misaligned) changes nothing and is counted.
    void free_pages(std::byte* p, std::size_t count) { runs_.release(p, count); }

    std::size_t usable_bytes() const { return runs_.usable_bytes(); }
    std::size_t free_bytes() const { return runs_.free_bytes(); }
    std::size_t invalid_frees() const { return runs_.invalid_frees(); }

    // The usable pieces, in physical addresses.
    std::size_t region_count() const { return runs_.region_count(); }
    phys_range region(std::size_t i) const {
        return {runs_.region_base(i) - direct_map_, runs_.region_end(i) - direct_map_};
    }

    std::uint64_t phys(const std::byte* p) const { return reinterpret_cast<std::uintptr_t>(p) - direct_map_; }
    std::byte* virt(std::uint64_t phys) const { return reinterpret_cast<std::byte*>(phys + direct_map_); }

private:
    static constexpr std::uint64_t round_up(std::uint64_t a) {
        const std::uint64_t r = (a + page_size - 1) & ~std::uint64_t{page_size - 1};
        // Saturates at the last page's base: usable ends are rounded down, so nothing reaches past it anyway.
        return r < a ? ~std::uint64_t{page_size - 1} : r;
    }

    expected<void> add(std::uint64_t base, std::uint64_t end) {
        if (end > ~std::uintptr_t{0} - direct_map_)
            return unexpected{"RAM lies beyond the direct map's reach; physical address", end - 1};
        if (!runs_.add_region(base + direct_map_, end + direct_map_))
            return unexpected{"too many usable physical regions once reserved ranges are cut out",
                              max_regions};
        return {};
    }

    detail::page_runs<max_regions> runs_;
    std::uintptr_t direct_map_ = 0;
};
static_assert(page_source<physical_memory>);

} // namespace toro
