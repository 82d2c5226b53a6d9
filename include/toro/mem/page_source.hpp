// page_source: where the heap gets its memory, in runs of 4 KiB pages. The concept, an archetype that models
// exactly it, the run allocator shared by every real source (a bump pointer per region plus an
// address-ordered list of returned runs), and buffer_page_source, a source over a buffer you hand it, for
// host tests.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <new>
#include <span>

#include <toro/base/expected.hpp>

namespace toro {

inline constexpr std::size_t page_size = 4096;

// allocate_pages(count): `count` (>= 1) contiguous pages, page-aligned, contents unspecified; or an error
// ("out of memory" with the count) when no such run is free. free_pages(p, count): gives back pages; any
// page-aligned sub-run of what one allocation returned may be given back on its own (callers trim runs).
// A source shared by several CPUs' heaps must be safe to call from all of them at once.
template <class P>
concept page_source = requires(P& p, std::byte* pages, std::size_t count) {
    { p.allocate_pages(count) } -> std::same_as<expected<std::byte*>>;
    { p.free_pages(pages, count) } -> std::same_as<void>;
};

// Models page_source and nothing more (not copyable, no const members); the host tests instantiate the heap
// with it to prove the heap asks for no more.
struct page_source_archetype {
    page_source_archetype() = default;
    page_source_archetype(const page_source_archetype&) = delete;
    page_source_archetype& operator=(const page_source_archetype&) = delete;
    expected<std::byte*> allocate_pages(std::size_t count) {
        return unexpected{"out of memory; pages", count};
    }
    void free_pages(std::byte*, std::size_t) {}
};
static_assert(page_source<page_source_archetype>);

namespace detail {

// Test-and-test-and-set lock on a plain word (<atomic> would drag glibc headers into freestanding code).
class spin_lock {
public:
    void lock() {
        while (__atomic_exchange_n(&held_, 1u, __ATOMIC_ACQUIRE) != 0)
            while (__atomic_load_n(&held_, __ATOMIC_RELAXED) != 0) pause();
    }
    void unlock() { __atomic_store_n(&held_, 0u, __ATOMIC_RELEASE); }

private:
    static void pause() {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
    unsigned held_ = 0;
};

class lock_guard {
public:
    explicit lock_guard(spin_lock& l) : l_{l} { l_.lock(); }
    ~lock_guard() { l_.unlock(); }
    lock_guard(const lock_guard&) = delete;
    lock_guard& operator=(const lock_guard&) = delete;

private:
    spin_lock& l_;
};

// Hands out page runs from up to MaxRegions address ranges. Setting up is O(regions) and touches none of
// the memory: each region is a bump pointer, and only pages given back hold bookkeeping (a free_run node in
// the first page of each returned run). Allocation is first fit over the returned runs, then the regions'
// bump pointers; a returned run is merged with its neighbours, and one that ends at its region's bump pointer
// moves the pointer back down, so alloc/free in LIFO order never builds a list. Costs: allocate O(free runs +
// regions), free O(free runs + log regions). Addresses are those of the memory as this code sees it.
template <std::size_t MaxRegions>
class page_runs {
public:
    constexpr page_runs() = default;

    constexpr void clear() {
        count_ = 0;
        free_ = nullptr;
        usable_pages_ = free_pages_ = invalid_frees_ = 0;
    }

    // Appends [base, end): page-aligned, non-empty, above every region added so far.
    constexpr bool add_region(std::uintptr_t base, std::uintptr_t end) {
        if (count_ == MaxRegions || base % page_size != 0 || end % page_size != 0 || end <= base)
            return false;
        if (count_ > 0 && base < regions_[count_ - 1].end) return false;
        regions_[count_++] = {base, base, end};
        usable_pages_ += (end - base) / page_size;
        free_pages_ += (end - base) / page_size;
        return true;
    }

    std::byte* allocate(std::size_t count) {
        lock_guard g{lock_};
        if (count == 0 || count > free_pages_) return nullptr;
        // Returned runs first, so freed memory is reused before fresh memory is cut. The tail of a run is
        // taken: its node stays where it is.
        for (free_run** link = &free_; *link != nullptr; link = &(*link)->next) {
            free_run* r = *link;
            if (r->pages < count) continue;
            r->pages -= count;
            if (r->pages == 0) *link = r->next;
            free_pages_ -= count;
            return reinterpret_cast<std::byte*>(r) + r->pages * page_size;
        }
        for (std::size_t i = 0; i < count_; ++i) {
            region& r = regions_[i];
            if ((r.end - r.bump) / page_size < count) continue;
            const std::uintptr_t at = r.bump;
            r.bump += count * page_size;
            free_pages_ -= count;
            return reinterpret_cast<std::byte*>(at);
        }
        return nullptr;
    }

    // False, and nothing changes, if [p, p + count pages) is not a run of handed-out pages of one region
    // (misaligned, outside every region, or overlapping pages already free).
    bool release(std::byte* p, std::size_t count) {
        const auto base = reinterpret_cast<std::uintptr_t>(p);
        lock_guard g{lock_};
        region* reg = find(base);
        if (count == 0 || base % page_size != 0 || reg == nullptr ||
            count > (reg->bump - base) / page_size) { // above the bump pointer: never handed out
            ++invalid_frees_;
            return false;
        }
        const std::uintptr_t end = base + count * page_size;
        free_run** link = &free_;
        free_run* prev = nullptr;
        while (*link != nullptr && reinterpret_cast<std::uintptr_t>(*link) < base) {
            prev = *link;
            link = &(*link)->next;
        }
        free_run* next = *link;
        if ((prev != nullptr && run_end(prev) > base) ||
            (next != nullptr && reinterpret_cast<std::uintptr_t>(next) < end)) {
            ++invalid_frees_;
            return false;
        }
        free_pages_ += count;
        // Runs never span two regions, even touching ones: the bump pointer step below needs one region.
        const bool joins_prev = prev != nullptr && run_end(prev) == base && base != reg->base;
        const bool joins_next =
            next != nullptr && reinterpret_cast<std::uintptr_t>(next) == end && end != reg->end;
        // A run that reaches the bump pointer goes back into the untouched part of its region, and then
        // no record is written at all: LIFO frees never touch the memory.
        const std::uintptr_t lo = joins_prev ? reinterpret_cast<std::uintptr_t>(prev) : base;
        const std::uintptr_t hi = joins_next ? run_end(next) : end;
        if (hi == reg->bump) {
            reg->bump = lo;
            if (joins_prev) unlink(prev); // (joins_next cannot hold: no free run lies above the bump pointer)
            return true;
        }
        free_run* run;
        if (joins_prev) {
            prev->pages += count;
            run = prev;
        } else {
            run = ::new (p) free_run{next, count};
            *link = run;
        }
        if (joins_next) {
            run->pages += next->pages;
            run->next = next->next;
        }
        return true;
    }

    std::size_t usable_bytes() const { return usable_pages_ * page_size; } // fixed once set up
    std::size_t free_bytes() const {
        lock_guard g{lock_};
        return free_pages_ * page_size;
    }
    std::size_t invalid_frees() const {
        lock_guard g{lock_};
        return invalid_frees_;
    }
    constexpr std::size_t region_count() const { return count_; }
    // The i-th region as [base, end), for tests and diagnostics.
    constexpr std::uintptr_t region_base(std::size_t i) const { return regions_[i].base; }
    constexpr std::uintptr_t region_end(std::size_t i) const { return regions_[i].end; }

private:
    struct region {
        std::uintptr_t base, bump, end; // [base, bump) has been handed out at some time; [bump, end) never
    };
    struct free_run {
        free_run* next;
        std::size_t pages;
    };

    static std::uintptr_t run_end(const free_run* r) {
        return reinterpret_cast<std::uintptr_t>(r) + r->pages * page_size;
    }

    // The region holding address a, by binary search (regions are sorted and disjoint).
    region* find(std::uintptr_t a) {
        std::size_t lo = 0, hi = count_;
        while (lo < hi) {
            const std::size_t mid = lo + (hi - lo) / 2;
            if (a < regions_[mid].base)
                hi = mid;
            else if (a >= regions_[mid].end)
                lo = mid + 1;
            else
                return &regions_[mid];
        }
        return nullptr;
    }

    void unlink(free_run* r) {
        for (free_run** link = &free_; *link != nullptr; link = &(*link)->next)
            if (*link == r) {
                *link = r->next;
                return;
            }
    }

    region regions_[MaxRegions]{};
    std::size_t count_ = 0;
    free_run* free_ = nullptr;
    std::size_t usable_pages_ = 0, free_pages_ = 0, invalid_frees_ = 0;
    mutable spin_lock lock_;
};

} // namespace detail

// A page_source over a caller's buffer: the page-aligned part of it. Freestanding-safe, thread-safe, with
// fault injection (fail_after) so tests can drive the heap out of memory at a chosen point.
class buffer_page_source {
public:
    static constexpr std::size_t no_limit = ~std::size_t{0};

    explicit buffer_page_source(std::span<std::byte> buffer) {
        const auto lo = reinterpret_cast<std::uintptr_t>(buffer.data());
        const auto hi = lo + buffer.size();
        const std::uintptr_t base = (lo + page_size - 1) & ~(page_size - 1);
        const std::uintptr_t end = hi & ~(page_size - 1);
        if (base < end) runs_.add_region(base, end);
    }
    buffer_page_source(const buffer_page_source&) = delete;
    buffer_page_source& operator=(const buffer_page_source&) = delete;

    expected<std::byte*> allocate_pages(std::size_t count) {
        if (!admit()) return unexpected{"out of memory (injected failure); pages", count};
        if (std::byte* p = runs_.allocate(count)) return p;
        return unexpected{"out of memory; pages", count};
    }
    void free_pages(std::byte* p, std::size_t count) { runs_.release(p, count); }

    // The next n allocations may succeed; every one after them fails until fail_after(no_limit).
    void fail_after(std::size_t n) {
        detail::lock_guard g{lock_};
        budget_ = n;
    }

    std::size_t usable_bytes() const { return runs_.usable_bytes(); }
    std::size_t free_bytes() const { return runs_.free_bytes(); }
    std::size_t invalid_frees() const { return runs_.invalid_frees(); }
    std::size_t allocations() const { // calls to allocate_pages that were admitted
        detail::lock_guard g{lock_};
        return allocations_;
    }

private:
    bool admit() {
        detail::lock_guard g{lock_};
        if (budget_ == 0) return false;
        if (budget_ != no_limit) --budget_;
        ++allocations_;
        return true;
    }

    detail::page_runs<1> runs_;
    mutable detail::spin_lock lock_;
    std::size_t budget_ = no_limit;
    std::size_t allocations_ = 0;
};
static_assert(page_source<buffer_page_source>);

} // namespace toro
