// The kernel heap: Toro's GetMem/FreeMem as toro::heap<PageSource, Policy>, one per CPU, plus heap_group, the
// per-CPU front (get_mem on the calling CPU's heap). A template over a page_source, so it runs on the host
// over a plain buffer exactly as it runs in the kernel over physical_memory.
//
// Layout. Small blocks (<= 2016 bytes) live in slab pages: one 4 KiB page per slab, a 64-byte header at its
// start (magic, owner CPU, size class, free list), blocks of one class after it. A large block is a run of
// pages with the same kind of header at its start and the block after it. Every block pointer p has its
// header at (p - 1) rounded down to a page: p is never at offset 0 of a slab page (the header is there), and
// only a 4096-aligned large block sits at offset 0, of the page after its header's. So free_mem finds the
// header, and with it the owner CPU, with one mask and no lookup table (no metadata proportional to RAM).
//
// Cross-CPU frees. A block freed on a CPU that does not own it is pushed on its owner's remote list: a
// lock-free multi-producer stack on one word (compare-exchange of the head; the block's first word is the
// link). The owner takes the whole list with one exchange, on its next allocation or in drain_remote(), and
// frees the blocks locally. The owner never pops single nodes, so there is no ABA; no 16-byte atomics.
//
// Checks (reported through Policy::corruption, the TORO_HEAP_CORRUPTION hook, never acted on): a free block
// carries a tag (its address xor a key) in its second word, so a double free, a free of an unused slot, a
// pointer not at a block start or into no heap page, and a free block overwritten while on a free list are
// all seen; the heap then leaves the memory alone (at worst leaks it) rather than corrupt itself.
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <new>

#include <toro/base/expected.hpp>
#include <toro/base/string_view.hpp>
#include <toro/mem/page_source.hpp>

// What the default policy does with a corruption report. The kernel's policy panics with the message; define
// this before including the heap to change the default instead.
#ifndef TORO_HEAP_CORRUPTION
#define TORO_HEAP_CORRUPTION(report) ((void)(report), __builtin_trap())
#endif

namespace toro {

// A heap misuse or corruption the heap noticed: what, the pointer involved, the CPU whose heap noticed.
struct heap_corruption {
    string_view what;
    const void* pointer = nullptr;
    std::uint32_t cpu = 0;
};

// current_cpu(): the calling CPU's index (heap_group picks that CPU's heap). corruption(report): called
// when the heap detects misuse; it may return (host tests record the report) and the heap stays consistent.
template <class T>
concept heap_policy = requires(const heap_corruption& report) {
    { T::current_cpu() } -> std::convertible_to<std::uint32_t>;
    { T::corruption(report) } -> std::same_as<void>;
};

struct default_heap_policy {
    static std::uint32_t current_cpu() { return 0; }
    static void corruption(const heap_corruption& report) { TORO_HEAP_CORRUPTION(report); }
};
static_assert(heap_policy<default_heap_policy>);

// Per-heap counters, owner's view: a block freed on another CPU counts as live until its owner drains it.
struct heap_stats {
    std::size_t live_blocks = 0;
    std::size_t live_bytes = 0;  // usable sizes of the live blocks
    std::size_t slab_pages = 0;  // pages holding small blocks, at most one empty page cached per class
    std::size_t large_pages = 0; // pages of large blocks, headers included
};

namespace heap_detail {

inline constexpr std::size_t header_size = 64;
inline constexpr std::size_t slab_room = page_size - header_size;

// Size classes. Each fills a slab page's 4032 bytes to within 5%. Up to 128 in steps of 16 (small requests
// are the most common; 16 is the alignment every block has), 160-224 in steps of 32, then one class per
// blocks-per-page count k = 15, 12, 10, 9, 7, 6, 5, 4, 3, 2: the largest size that fits k blocks (4032 / k,
// rounded down to 16), or for k = 15, 12, 10 the multiple of 64 just under it (256, 320, 384) so that it
// serves 64-aligned requests. A class between two of those would fit no more blocks per page than the next
// one up, so it would save nothing; steps stay at or below 1.33x except the last (1344 -> 2016, both fill a
// page). Larger requests are large blocks (page runs); 2048 exactly therefore costs a page. Classes that are
// multiples of 64 (64, 128, 192, ... 576, 1344) start 64-aligned, the header being 64 bytes: they serve
// get_aligned_mem for alignments 32 and 64.
inline constexpr std::array<std::uint16_t, 21> class_sizes = {
    16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 576, 672, 800, 1008, 1344, 2016};
inline constexpr std::size_t class_count = class_sizes.size();
inline constexpr std::size_t max_small = class_sizes[class_count - 1];

constexpr bool classes_are_sound() {
    for (std::size_t i = 0; i < class_count; ++i) {
        const std::size_t c = class_sizes[i];
        if (c % 16 != 0 || (i > 0 && c <= class_sizes[i - 1])) return false;
        if ((slab_room / c) * c * 20 < slab_room * 19) return false; // fills the page to within 5%
        if (slab_room / c > 0xffff) return false;                    // block indices are 16-bit
    }
    return true;
}
static_assert(classes_are_sound());
static_assert(header_size % 64 == 0, "blocks of classes that are multiples of 64 must start 64-aligned");

// class_of[(size + 15) / 16]: the smallest class holding size bytes, for 1 <= size <= max_small.
constexpr std::array<std::uint8_t, max_small / 16 + 1> make_class_of() {
    std::array<std::uint8_t, max_small / 16 + 1> t{};
    std::size_t c = 0;
    for (std::size_t i = 0; i < t.size(); ++i) {
        while (class_sizes[c] < i * 16) ++c;
        t[i] = static_cast<std::uint8_t>(c);
    }
    return t;
}
inline constexpr auto class_of = make_class_of();

inline constexpr std::uint32_t slab_magic = 0x62616c73;  // "slab"
inline constexpr std::uint32_t large_magic = 0x6772616c; // "larg"
// A free block's second word is its address xor this: live data matches it only by accident of 1 in 2^64.
inline constexpr std::uint64_t free_key = 0x9e3779b97f4a7c15;

inline std::uint64_t free_tag(const std::byte* b) {
    return reinterpret_cast<std::uintptr_t>(b) ^ free_key;
}

// Block words through memcpy: the memory held user objects of any type a moment ago.
inline std::uint64_t load_word(const std::byte* b, std::size_t i) {
    std::uint64_t w;
    __builtin_memcpy(&w, b + i * 8, 8);
    return w;
}
inline void store_word(std::byte* b, std::size_t i, std::uint64_t w) {
    __builtin_memcpy(b + i * 8, &w, 8);
}

// At the start of every slab page. Only the owner writes it; other CPUs read the fields fixed at creation
// (magic, owner, cls) to route a free.
struct slab_page {
    std::uint32_t magic;
    std::uint32_t owner;
    std::uint16_t cls;
    std::uint16_t carved;    // blocks [0, carved) have been handed out at least once; the rest never touched
    std::uint16_t used;      // live blocks, those pending on a remote list included
    std::uint16_t free_head; // index + 1 of the first free block; 0 = none
    bool listed;             // on its class's list of pages with room
    bool quarantined;        // its free list was found corrupt: never allocated from again
    slab_page* prev;
    slab_page* next;
};
static_assert(sizeof(slab_page) <= header_size);

// At the start of every large block's page run.
struct large_run {
    std::uint32_t magic;
    std::uint32_t owner;
    std::size_t pages;
    std::size_t offset; // of the block from the run's start: 64, or the alignment asked for if larger
};
static_assert(sizeof(large_run) <= header_size);

} // namespace heap_detail

template <page_source P, heap_policy Policy = default_heap_policy>
class heap {
public:
    static constexpr std::size_t max_small = heap_detail::max_small;
    static constexpr std::size_t max_alignment = page_size;

    constexpr heap() = default;
    explicit heap(P& pages, std::uint32_t cpu = 0) { attach(pages, cpu, nullptr, 0); }
    heap(const heap&) = delete;
    heap& operator=(const heap&) = delete;

    // Binds the heap to its page source and CPU. peers[0, peer_count) are every CPU's heap, peers[cpu] being
    // this one, so that blocks of other CPUs can be sent home; a lone heap passes none.
    void attach(P& pages, std::uint32_t cpu, heap* peers, std::uint32_t peer_count) {
        pages_ = &pages;
        cpu_ = cpu;
        peers_ = peers;
        peer_count_ = peer_count;
    }

    // Toro's GetMem: at least size bytes, 16-byte aligned (get_mem(0) is a unique minimal block).
    expected<void*> get_mem(std::size_t size) {
        take_remote();
        if (size == 0) size = 1;
        if (size <= max_small) return small_or_oom(heap_detail::class_of[(size + 15) / 16], size);
        return alloc_large(size, 16);
    }

    // Alignment: a power of two up to 4096. Up to 64 a small request stays small (a class whose blocks are
    // aligned); above 64 it is a large block, so it costs at least one page.
    expected<void*> get_aligned_mem(std::size_t size, std::size_t alignment) {
        if (alignment == 0 || (alignment & (alignment - 1)) != 0 || alignment > max_alignment)
            return unexpected{"alignment must be a power of two no greater than 4096", alignment};
        if (alignment <= 16) return get_mem(size);
        take_remote();
        if (size == 0) size = 1;
        if (size <= max_small && alignment <= heap_detail::header_size)
            for (std::size_t c = heap_detail::class_of[(size + 15) / 16]; c < heap_detail::class_count; ++c)
                if (heap_detail::class_sizes[c] % alignment == 0) return small_or_oom(c, size);
        return alloc_large(size, alignment);
    }

    // Toro's FreeMem. Null is a no-op. Call it on the calling CPU's heap, whoever allocated the block.
    void free_mem(void* p) {
        if (p == nullptr) return;
        auto* b = static_cast<std::byte*>(p);
        located at;
        if (!check_live(b, at, "free of a pointer the heap does not own", "double free")) return;
        if (at.owner == cpu_) return release(b, at);
        heap* owner = peer(at.owner);
        if (owner == nullptr) return report("free of a block whose owner CPU has no heap here", b);
        owner->push_remote(b);
    }

    // Moves the block only when it must grow or would waste more than half of itself; the contents up to the
    // smaller size are kept. On error the old block is untouched; shrinking never fails. The new block's
    // alignment is 16, whatever the old one had.
    expected<void*> realloc_mem(void* p, std::size_t size) {
        if (p == nullptr) return get_mem(size);
        auto* b = static_cast<std::byte*>(p);
        located at;
        if (!check_live(b, at, "realloc of a pointer the heap does not own", "realloc of a freed block"))
            return unexpected{"realloc of a pointer the heap does not own; address",
                              reinterpret_cast<std::uintptr_t>(p)};
        if (size == 0) size = 1;
        if (size <= at.usable && (size > at.usable / 2 || at.usable <= 16)) return p;
        auto moved = get_mem(size);
        if (!moved) {
            if (size <= at.usable) return p;
            return moved;
        }
        __builtin_memcpy(*moved, p, size < at.usable ? size : at.usable);
        free_mem(p);
        return moved;
    }

    // The bytes the block can hold (>= what was asked). 0 for null; a foreign pointer is reported, 0.
    std::size_t usable_size(const void* p) {
        if (p == nullptr) return 0;
        auto* b = static_cast<std::byte*>(const_cast<void*>(p));
        located at;
        if (!check_live(b, at, "usable_size of a pointer the heap does not own",
                        "usable_size of a freed block"))
            return 0;
        return at.usable;
    }

    // Frees every block other CPUs sent home; returns how many. Owner CPU only.
    std::size_t drain_remote() {
        std::uintptr_t list = __atomic_exchange_n(&remote_, std::uintptr_t{0}, __ATOMIC_ACQUIRE);
        std::size_t n = 0;
        while (list != 0) {
            auto* b = reinterpret_cast<std::byte*>(list);
            located at;
            if (!locate(b, at) || at.owner != cpu_ ||
                heap_detail::load_word(b, 1) != heap_detail::free_tag(b) ||
                (at.slab != nullptr && at.index >= at.slab->carved)) {
                // The rest of the list cannot be trusted: its blocks leak rather than corrupt the heap.
                report("remote free list corrupted (a block written after it was freed?)", b);
                break;
            }
            list = heap_detail::load_word(b, 0);
            release(b, at);
            ++n;
        }
        return n;
    }

    // Drains remote frees, then gives every empty slab page back to the page source; returns the pages.
    std::size_t trim() {
        drain_remote();
        std::size_t n = 0;
        for (heap_detail::slab_page* pg : partial_)
            while (pg != nullptr) {
                heap_detail::slab_page* next = pg->next;
                if (pg->used == 0) {
                    release_slab(pg);
                    ++n;
                }
                pg = next;
            }
        return n;
    }

    const heap_stats& stats() const { return stats_; }
    std::uint32_t cpu() const { return cpu_; }

private:
    using slab_page = heap_detail::slab_page;
    using large_run = heap_detail::large_run;

    struct located {
        slab_page* slab = nullptr; // exactly one of slab and large is set
        large_run* large = nullptr;
        std::size_t index = 0; // of the block in its slab
        std::uint32_t owner = 0;
        std::size_t usable = 0;
    };

    void report(string_view what, const void* p) { Policy::corruption(heap_corruption{what, p, cpu_}); }

    heap* peer(std::uint32_t cpu) { return peers_ != nullptr && cpu < peer_count_ ? &peers_[cpu] : nullptr; }

    // Reads the header of the span b would belong to and checks b is a block start there. Reads only what
    // any CPU may (the fields fixed when the span was made), so it is safe for blocks of other CPUs.
    static bool locate(std::byte* b, located& out) {
        const auto addr = reinterpret_cast<std::uintptr_t>(b);
        if (addr % 16 != 0) return false; // every block is 16-aligned
        auto* page = reinterpret_cast<std::byte*>((addr - 1) & ~std::uintptr_t{page_size - 1});
        std::uint32_t magic;
        __builtin_memcpy(&magic, page, sizeof magic);
        if (magic == heap_detail::slab_magic) {
            auto* pg = reinterpret_cast<slab_page*>(page);
            if (pg->cls >= heap_detail::class_count) return false;
            const std::size_t size = heap_detail::class_sizes[pg->cls];
            const std::size_t off = static_cast<std::size_t>(b - page);
            if (off < heap_detail::header_size || (off - heap_detail::header_size) % size != 0) return false;
            const std::size_t index = (off - heap_detail::header_size) / size;
            if (index >= heap_detail::slab_room / size) return false;
            out = {pg, nullptr, index, pg->owner, size};
            return true;
        }
        if (magic == heap_detail::large_magic) {
            auto* run = reinterpret_cast<large_run*>(page);
            if (run->offset < heap_detail::header_size || run->offset > page_size || page + run->offset != b)
                return false;
            out = {nullptr, run, 0, run->owner, run->pages * page_size - run->offset};
            return true;
        }
        return false;
    }

    // locate, then: not already free (tag), and for this CPU's slabs a slot that was ever handed out.
    bool check_live(std::byte* b, located& at, string_view foreign, string_view freed) {
        string_view problem;
        if (!locate(b, at))
            problem = foreign;
        else if (heap_detail::load_word(b, 1) == heap_detail::free_tag(b))
            problem = freed;
        else if (at.owner == cpu_ && at.slab != nullptr && at.index >= at.slab->carved)
            problem = foreign; // a slot of a slab of ours that was never handed out
        else
            return true;
        report(problem, b);
        return false;
    }

    void take_remote() {
        if (__atomic_load_n(&remote_, __ATOMIC_RELAXED) != 0) drain_remote();
    }

    // Called on the owner's heap by another CPU.
    void push_remote(std::byte* b) {
        heap_detail::store_word(b, 1, heap_detail::free_tag(b)); // a second free of it is now seen at once
        std::uintptr_t head = __atomic_load_n(&remote_, __ATOMIC_RELAXED);
        do heap_detail::store_word(b, 0, head);
        while (!__atomic_compare_exchange_n(&remote_, &head, reinterpret_cast<std::uintptr_t>(b), true,
                                            __ATOMIC_RELEASE, __ATOMIC_RELAXED));
    }

    static unexpected out_of_memory(std::size_t size) {
        return unexpected{"out of memory; bytes requested", size};
    }

    void hand_out(std::byte* b, std::size_t usable) {
        heap_detail::store_word(b, 1, 0); // a stale tag would make the first free look like a double free
        ++stats_.live_blocks;
        stats_.live_bytes += usable;
    }

    expected<void*> small_or_oom(std::size_t cls, std::size_t size) {
        if (void* p = alloc_small(cls)) return p;
        return out_of_memory(size);
    }

    void* alloc_small(std::size_t cls) {
        for (;;) {
            slab_page* pg = partial_[cls];
            if (pg == nullptr && (pg = new_slab(cls)) == nullptr) return nullptr;
            std::byte* b;
            if (pg->free_head != 0) {
                b = block(pg, pg->free_head - 1u);
                const std::uint64_t next = heap_detail::load_word(b, 0);
                if (heap_detail::load_word(b, 1) != heap_detail::free_tag(b) || next > pg->carved) {
                    report("heap free list corrupted (a block written after it was freed?)", b);
                    quarantine(pg);
                    continue;
                }
                pg->free_head = static_cast<std::uint16_t>(next);
            } else {
                b = block(pg, pg->carved++);
            }
            if (++pg->used == heap_detail::slab_room / heap_detail::class_sizes[cls]) unlink(pg);
            hand_out(b, heap_detail::class_sizes[cls]);
            return b;
        }
    }

    expected<void*> alloc_large(std::size_t size, std::size_t alignment) {
        const std::size_t offset =
            alignment > heap_detail::header_size ? alignment : heap_detail::header_size;
        if (size > ~std::size_t{0} - offset - page_size) return out_of_memory(size);
        const std::size_t pages = (offset + size + page_size - 1) / page_size;
        auto run = pages_->allocate_pages(pages);
        if (!run) return out_of_memory(size);
        ::new (*run) large_run{heap_detail::large_magic, cpu_, pages, offset};
        std::byte* b = *run + offset;
        stats_.large_pages += pages;
        hand_out(b, pages * page_size - offset);
        return b;
    }

    slab_page* new_slab(std::size_t cls) {
        auto run = pages_->allocate_pages(1);
        if (!run) return nullptr;
        auto* pg = ::new (*run) slab_page{heap_detail::slab_magic,
                                          cpu_,
                                          static_cast<std::uint16_t>(cls),
                                          0,
                                          0,
                                          0,
                                          false,
                                          false,
                                          nullptr,
                                          nullptr};
        ++stats_.slab_pages;
        link(pg);
        return pg;
    }

    static std::byte* block(slab_page* pg, std::size_t index) {
        return reinterpret_cast<std::byte*>(pg) + heap_detail::header_size +
               index * heap_detail::class_sizes[pg->cls];
    }

    void release(std::byte* b, const located& at) {
        if (at.slab != nullptr) return release_small(at.slab, b, at.index);
        large_run* run = at.large;
        const std::size_t pages = run->pages;
        --stats_.live_blocks;
        stats_.live_bytes -= at.usable;
        stats_.large_pages -= pages;
        run->magic = 0; // a later free of the same pointer no longer finds a header
        pages_->free_pages(reinterpret_cast<std::byte*>(run), pages);
    }

    void release_small(slab_page* pg, std::byte* b, std::size_t index) {
        heap_detail::store_word(b, 0, pg->free_head);
        heap_detail::store_word(b, 1, heap_detail::free_tag(b));
        pg->free_head = static_cast<std::uint16_t>(index + 1);
        --pg->used;
        --stats_.live_blocks;
        stats_.live_bytes -= heap_detail::class_sizes[pg->cls];
        if (pg->quarantined) return;
        if (!pg->listed) link(pg);
        // One empty page per class stays cached, so a class hovering at one page does not churn the source.
        if (pg->used == 0 && (partial_[pg->cls] != pg || pg->next != nullptr)) release_slab(pg);
    }

    void release_slab(slab_page* pg) {
        if (pg->listed) unlink(pg);
        pg->magic = 0;
        --stats_.slab_pages;
        pages_->free_pages(reinterpret_cast<std::byte*>(pg), 1);
    }

    // A page whose free list is corrupt: off the lists for good (its free blocks leak, the heap stays sound).
    void quarantine(slab_page* pg) {
        if (pg->listed) unlink(pg);
        pg->quarantined = true;
        pg->free_head = 0;
    }

    void link(slab_page* pg) {
        slab_page*& head = partial_[pg->cls];
        pg->prev = nullptr;
        pg->next = head;
        if (head != nullptr) head->prev = pg;
        head = pg;
        pg->listed = true;
    }

    void unlink(slab_page* pg) {
        if (pg->prev != nullptr)
            pg->prev->next = pg->next;
        else
            partial_[pg->cls] = pg->next;
        if (pg->next != nullptr) pg->next->prev = pg->prev;
        pg->prev = pg->next = nullptr;
        pg->listed = false;
    }

    // Written by other CPUs: alone on its cache line, away from the owner's fields.
    alignas(64) std::uintptr_t remote_ = 0;
    alignas(64) P* pages_ = nullptr;
    heap* peers_ = nullptr;
    std::uint32_t peer_count_ = 0;
    std::uint32_t cpu_ = 0;
    std::array<slab_page*, heap_detail::class_count>
        partial_{}; // per class: pages with a free or unused slot
    heap_stats stats_;
};

// One heap per CPU and the calling-CPU front: get_mem and friends go to heaps_[Policy::current_cpu()].
template <page_source P, heap_policy Policy = default_heap_policy, std::size_t MaxCpus = 64>
class heap_group {
public:
    using heap_type = heap<P, Policy>;

    constexpr heap_group() = default;
    heap_group(const heap_group&) = delete;
    heap_group& operator=(const heap_group&) = delete;

    // Before any other CPU uses the group.
    expected<void> init(P& pages, std::uint32_t cpus) {
        if (cpus == 0 || cpus > MaxCpus) return unexpected{"heap group: CPU count out of range", cpus};
        for (std::uint32_t i = 0; i < cpus; ++i) heaps_[i].attach(pages, i, heaps_.data(), cpus);
        cpus_ = cpus;
        return {};
    }

    heap_type& local() {
        const std::uint32_t cpu = Policy::current_cpu();
        if (cpu >= cpus_) [[unlikely]] {
            Policy::corruption(heap_corruption{"heap group: the calling CPU has no heap", nullptr, cpu});
            __builtin_trap();
        }
        return heaps_[cpu];
    }
    heap_type& of(std::uint32_t cpu) { return heaps_[cpu]; }
    std::uint32_t cpus() const { return cpus_; }

    expected<void*> get_mem(std::size_t size) { return local().get_mem(size); }
    expected<void*> get_aligned_mem(std::size_t size, std::size_t alignment) {
        return local().get_aligned_mem(size, alignment);
    }
    void free_mem(void* p) { local().free_mem(p); }
    expected<void*> realloc_mem(void* p, std::size_t size) { return local().realloc_mem(p, size); }
    std::size_t usable_size(const void* p) { return local().usable_size(p); }

private:
    std::array<heap_type, MaxCpus> heaps_{};
    std::uint32_t cpus_ = 0;
};

} // namespace toro
