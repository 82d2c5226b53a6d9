// Host tests for toro::heap and heap_group over buffer_page_source: size classes and alignment, a seeded
// random stress checked against a model, out of memory, realloc, corruption reports, and cross-CPU frees with
// real threads.
#include <catch2/catch.hpp>

#include "../xorshift.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <toro/mem/heap.hpp>
#include <toro/mem/page_source.hpp>

namespace {

using toro::buffer_page_source;
using toro::page_size;

std::string str(toro::string_view s) {
    return {s.data(), s.size()};
}

// Corruption reports are recorded (not fatal) so tests can look at them; the CPU id is per thread.
std::mutex reports_lock;
std::vector<toro::heap_corruption> reports;

struct test_policy {
    static inline thread_local std::uint32_t cpu = 0;
    static std::uint32_t current_cpu() { return cpu; }
    static void corruption(const toro::heap_corruption& r) {
        std::lock_guard<std::mutex> g{reports_lock};
        reports.push_back(r);
    }
};

std::vector<std::string> take_reports() {
    std::lock_guard<std::mutex> g{reports_lock};
    std::vector<std::string> out;
    for (const auto& r : reports) out.push_back(str(r.what));
    reports.clear();
    return out;
}

using test_heap = toro::heap<buffer_page_source, test_policy>;

// An ASan-visible buffer for a page source: exactly `pages` page-aligned pages.
struct arena {
    explicit arena(std::size_t n) : pages{n}, storage{new std::byte[(n + 1) * page_size]} {}
    std::span<std::byte> span() {
        const auto at = (reinterpret_cast<std::uintptr_t>(storage.get()) + page_size - 1) & ~(page_size - 1);
        return {reinterpret_cast<std::byte*>(at), pages * page_size};
    }
    std::size_t pages;
    std::unique_ptr<std::byte[]> storage;
};

bool aligned(const void* p, std::size_t a) {
    return reinterpret_cast<std::uintptr_t>(p) % a == 0;
}

// Live blocks by address, with what the test wrote into them; checks that blocks never overlap.
class model {
public:
    struct block {
        std::size_t size, usable;
        std::uint8_t fill;
    };

    void add(void* p, std::size_t size, std::size_t usable, std::uint8_t fill) {
        const auto a = reinterpret_cast<std::uintptr_t>(p);
        REQUIRE(usable >= size);
        auto next = live_.lower_bound(a);
        if (next != live_.end()) REQUIRE(a + usable <= next->first);
        if (next != live_.begin()) {
            auto prev = std::prev(next);
            REQUIRE(prev->first + prev->second.usable <= a);
        }
        std::memset(p, fill, size);
        live_[a] = {size, usable, fill};
    }

    // Checks the contents are intact, forgets the block and returns it.
    block remove(void* p) {
        auto it = live_.find(reinterpret_cast<std::uintptr_t>(p));
        REQUIRE(it != live_.end());
        const block b = it->second;
        REQUIRE(intact(p, b.size, b.fill));
        live_.erase(it);
        return b;
    }

    static bool intact(const void* p, std::size_t n, std::uint8_t fill) {
        auto* c = static_cast<const std::uint8_t*>(p);
        for (std::size_t i = 0; i < n; ++i)
            if (c[i] != fill) return false;
        return true;
    }

    std::size_t size() const { return live_.size(); }
    void* nth(std::size_t i) const { return reinterpret_cast<void*>(std::next(live_.begin(), i)->first); }
    bool empty() const { return live_.empty(); }

private:
    std::map<std::uintptr_t, block> live_;
};

} // namespace

// The heap only uses what the concept promises: it instantiates over the archetype.
template class toro::heap<toro::page_source_archetype, test_policy>;
template class toro::heap_group<toro::page_source_archetype, test_policy, 2>;

TEST_CASE("every size gets a 16-aligned block that holds it, and everything comes back", "[mem][heap]") {
    arena a{1024};
    buffer_page_source src{a.span()};
    const std::size_t initial = src.free_bytes();
    REQUIRE(initial == 1024 * page_size);
    test_heap h{src};
    model m;
    for (std::size_t size = 0; size <= 5000; size += (size < 300 ? 1 : 7)) {
        auto p = h.get_mem(size);
        REQUIRE(p);
        CHECK(aligned(*p, 16));
        const std::size_t usable = h.usable_size(*p);
        CHECK(usable >= (size == 0 ? 1 : size));
        if (size <= test_heap::max_small) CHECK(usable <= size + size / 2 + 16); // classes step <= 1.5x
        m.add(*p, size, usable, static_cast<std::uint8_t>(size));
    }
    CHECK(h.stats().live_blocks == m.size());
    while (!m.empty()) {
        void* p = m.nth(0);
        m.remove(p);
        h.free_mem(p);
    }
    CHECK(h.stats().live_blocks == 0);
    CHECK(h.stats().live_bytes == 0);
    CHECK(h.stats().large_pages == 0);
    h.trim();
    CHECK(h.stats().slab_pages == 0);
    CHECK(src.free_bytes() == initial);
    CHECK(src.invalid_frees() == 0);
    CHECK(take_reports().empty());
}

TEST_CASE("get_aligned_mem honours every power-of-two alignment up to 4096", "[mem][heap]") {
    arena a{4096};
    buffer_page_source src{a.span()};
    const std::size_t initial = src.free_bytes();
    test_heap h{src};
    model m;
    for (std::size_t align = 1; align <= 4096; align *= 2)
        for (std::size_t size : {0, 1, 17, 64, 100, 500, 2016, 2017, 4032, 4096, 5000, 10000}) {
            auto p = h.get_aligned_mem(size, align);
            REQUIRE(p);
            CHECK(aligned(*p, align));
            m.add(*p, size, h.usable_size(*p), static_cast<std::uint8_t>(align + size));
        }
    // Alignments up to 64 keep small requests in slab classes (no page per block).
    auto small64 = h.get_aligned_mem(100, 64);
    REQUIRE(small64);
    CHECK(h.usable_size(*small64) == 128);
    h.free_mem(*small64);

    for (std::size_t bad : {0u, 3u, 48u, 8192u, 1u << 20}) {
        auto p = h.get_aligned_mem(16, bad);
        REQUIRE_FALSE(p);
        CHECK(str(p.error().what) == "alignment must be a power of two no greater than 4096");
        CHECK(p.error().value == bad);
    }
    while (!m.empty()) {
        void* p = m.nth(0);
        m.remove(p);
        h.free_mem(p);
    }
    h.trim();
    CHECK(src.free_bytes() == initial);
    CHECK(take_reports().empty());
}

TEST_CASE("randomized alloc/free/realloc stress agrees with a model", "[mem][heap]") {
    for (std::uint64_t seed : {1u, 0x5eedu, 0xdeadbeefu}) {
        INFO("seed " << seed);
        arena a{4096}; // 16 MiB
        buffer_page_source src{a.span()};
        const std::size_t initial = src.free_bytes();
        test_heap h{src};
        model m;
        xorshift rng{seed};
        auto pick_size = [&] {
            const auto r = rng.below(100);
            if (r < 70) return rng.below(257);
            if (r < 90) return 257 + rng.below(2016 - 256);
            if (r < 98) return 2017 + rng.below(20000);
            return rng.below(100000);
        };
        std::size_t ooms = 0;
        for (int op = 0; op < 60000; ++op) {
            const auto r = rng.below(100);
            const bool shrink = m.size() > 3000;
            if (!shrink && r < 50) {
                const std::size_t size = pick_size();
                const bool with_align = rng.below(6) == 0;
                const std::size_t align = with_align ? std::size_t{1} << rng.below(13) : 16;
                auto p = with_align ? h.get_aligned_mem(size, align) : h.get_mem(size);
                if (!p) {
                    CHECK(str(p.error().what) == "out of memory; bytes requested");
                    ++ooms;
                    continue;
                }
                REQUIRE(aligned(*p, align));
                m.add(*p, size, h.usable_size(*p), static_cast<std::uint8_t>(rng.next()));
            } else if (!m.empty() && (shrink || r < 85)) {
                void* p = m.nth(rng.below(m.size()));
                m.remove(p);
                h.free_mem(p);
            } else if (!m.empty()) {
                void* p = m.nth(rng.below(m.size()));
                const auto old = m.remove(p);
                const std::size_t size = pick_size();
                auto q = h.realloc_mem(p, size);
                if (!q) {
                    // The old block is untouched and still ours.
                    CHECK(size > old.usable);
                    REQUIRE(model::intact(p, old.size, old.fill));
                    m.add(p, old.size, old.usable, old.fill);
                    ++ooms;
                    continue;
                }
                const std::size_t kept = old.size < size ? old.size : size;
                REQUIRE(model::intact(*q, kept, old.fill));
                REQUIRE(aligned(*q, 16));
                m.add(*q, size, h.usable_size(*q), static_cast<std::uint8_t>(rng.next()));
            }
            if (op % 1024 == 0) REQUIRE(h.stats().live_blocks == m.size());
        }
        CHECK(ooms < 100); // 16 MiB is meant to be enough; a flood of errors would hide a leak
        while (!m.empty()) {
            void* p = m.nth(m.size() / 2);
            m.remove(p);
            h.free_mem(p);
        }
        CHECK(h.stats().live_blocks == 0);
        CHECK(h.stats().live_bytes == 0);
        h.trim();
        CHECK(h.stats().slab_pages == 0);
        CHECK(h.stats().large_pages == 0);
        CHECK(src.free_bytes() == initial); // every byte recovered
        CHECK(src.invalid_frees() == 0);
        CHECK(take_reports().empty());
    }
}

TEST_CASE("out of memory is an error value, and memory freed afterwards is usable again", "[mem][heap]") {
    arena a{16};
    buffer_page_source src{a.span()};
    const std::size_t initial = src.free_bytes();
    test_heap h{src};

    std::vector<void*> blocks;
    for (;;) {
        auto p = h.get_mem(100);
        if (!p) {
            CHECK(str(p.error().what) == "out of memory; bytes requested");
            CHECK(p.error().value == 100);
            break;
        }
        std::memset(*p, 0xab, 100);
        blocks.push_back(*p);
        REQUIRE(blocks.size() < 10000);
    }
    CHECK(blocks.size() == 16 * ((page_size - 64) / 112)); // 16 pages of 112-byte blocks
    CHECK(src.free_bytes() == 0);
    auto big = h.get_mem(5000);
    REQUIRE_FALSE(big);
    CHECK(big.error().value == 5000);
    auto aligned_big = h.get_aligned_mem(10, 4096);
    REQUIRE_FALSE(aligned_big);
    // Still consistent: freeing and allocating again works, in the same amounts.
    for (std::size_t i = 0; i < blocks.size(); i += 2) h.free_mem(blocks[i]);
    std::size_t again = 0;
    for (std::size_t i = 0; i < blocks.size(); i += 2) {
        auto p = h.get_mem(100);
        REQUIRE(p);
        blocks[i] = *p;
        ++again;
    }
    CHECK_FALSE(h.get_mem(100));
    for (void* p : blocks) h.free_mem(p);
    h.trim();
    CHECK(src.free_bytes() == initial);
    // The whole buffer as one large block: nothing was lost to fragmentation.
    auto whole = h.get_mem(16 * page_size - 64);
    REQUIRE(whole);
    CHECK_FALSE(h.get_mem(1));
    h.free_mem(*whole);
    CHECK(src.free_bytes() == initial);
    CHECK(take_reports().empty());
}

TEST_CASE("an injected page-source failure surfaces as an error and leaves the heap sound", "[mem][heap]") {
    arena a{64};
    buffer_page_source src{a.span()};
    const std::size_t initial = src.free_bytes();
    test_heap h{src};
    auto small = h.get_mem(40); // one slab page of class 48
    REQUIRE(small);
    src.fail_after(0);
    CHECK_FALSE(h.get_mem(3000));    // large: needs pages
    CHECK_FALSE(h.get_mem(200));     // a class with no page yet
    auto same_class = h.get_mem(48); // the existing page still has room
    REQUIRE(same_class);

    // realloc that must move fails, and the old block is intact.
    std::memset(*small, 0x5c, 40);
    auto grown = h.realloc_mem(*small, 9000);
    REQUIRE_FALSE(grown);
    CHECK(model::intact(*small, 40, 0x5c));
    // Shrinking never fails, even when a move would have been preferred.
    src.fail_after(buffer_page_source::no_limit);
    auto large = h.get_mem(8000);
    REQUIRE(large);
    src.fail_after(0);
    auto shrunk = h.realloc_mem(*large, 100);
    REQUIRE(shrunk);
    CHECK(*shrunk == *large);

    src.fail_after(buffer_page_source::no_limit);
    for (void* p : {*small, *same_class, *large}) h.free_mem(p);
    h.trim();
    CHECK(src.free_bytes() == initial);
    CHECK(take_reports().empty());
}

TEST_CASE("realloc_mem keeps contents and moves only when it must", "[mem][heap]") {
    arena a{256};
    buffer_page_source src{a.span()};
    const std::size_t initial = src.free_bytes();
    test_heap h{src};

    auto p = h.realloc_mem(nullptr, 30); // null: an allocation
    REQUIRE(p);
    CHECK(h.usable_size(*p) == 32);
    std::memset(*p, 1, 30);
    auto same = h.realloc_mem(*p, 20); // still more than half used: in place
    REQUIRE(same);
    CHECK(*same == *p);
    auto bigger = h.realloc_mem(*p, 1000); // grows across classes
    REQUIRE(bigger);
    CHECK(model::intact(*bigger, 20, 1));
    std::memset(*bigger, 2, 1000);
    auto large = h.realloc_mem(*bigger, 50000); // small -> large
    REQUIRE(large);
    CHECK(model::intact(*large, 1000, 2));
    std::memset(*large, 3, 50000);
    auto back = h.realloc_mem(*large, 100); // large -> small: wastes more than half, so it moves
    REQUIRE(back);
    CHECK(*back != *large);
    CHECK(h.usable_size(*back) == 112);
    CHECK(model::intact(*back, 100, 3));
    auto zero = h.realloc_mem(*back, 0); // 0 is the minimal block
    REQUIRE(zero);
    CHECK(h.usable_size(*zero) == 16);
    CHECK(model::intact(*zero, 1, 3));
    h.free_mem(*zero);
    h.free_mem(nullptr); // no-op
    CHECK(h.usable_size(nullptr) == 0);
    h.trim();
    CHECK(h.stats().live_blocks == 0);
    CHECK(src.free_bytes() == initial);
    CHECK(take_reports().empty());
}

TEST_CASE("double frees and foreign pointers are reported, never acted on", "[mem][heap]") {
    arena a{256};
    buffer_page_source src{a.span()};
    const std::size_t initial = src.free_bytes();
    toro::heap_group<buffer_page_source, test_policy, 2> group;
    REQUIRE(group.init(src, 2));
    test_heap& h = group.of(0);
    test_policy::cpu = 0;

    // A page-aligned buffer the heap never saw (zeroed: no header magic at its page starts).
    auto foreign_storage = std::make_unique<std::byte[]>(4 * page_size);
    std::memset(foreign_storage.get(), 0, 4 * page_size);
    auto* foreign_page = reinterpret_cast<std::byte*>(
        (reinterpret_cast<std::uintptr_t>(foreign_storage.get()) + page_size - 1) &
        ~std::uintptr_t{page_size - 1});

    auto keep = h.get_mem(64); // keeps the slab page alive through the checks below
    auto p = h.get_mem(64);
    auto large = h.get_mem(10000);
    REQUIRE(keep);
    REQUIRE(p);
    REQUIRE(large);
    const auto stats_before = h.stats();

    SECTION("double free of a small block") {
        h.free_mem(*p);
        h.free_mem(*p);
        CHECK(take_reports() == std::vector<std::string>{"double free"});
        // The class still works and hands the block out exactly once.
        auto again = h.get_mem(64);
        auto other = h.get_mem(64);
        REQUIRE(again);
        REQUIRE(other);
        CHECK(*again == *p);
        CHECK(*other != *p);
        h.free_mem(*again);
        h.free_mem(*other);
    }
    SECTION("double free of a large block") {
        h.free_mem(*large);
        h.free_mem(*large);
        CHECK(take_reports() == std::vector<std::string>{"free of a pointer the heap does not own"});
        h.free_mem(*p);
    }
    SECTION("pointers that are not block starts") {
        auto* b = static_cast<std::byte*>(*p);
        h.free_mem(b + 16);                                 // inside a block
        h.free_mem(b + 1);                                  // misaligned
        h.free_mem(b + 64);                                 // the next slot, never handed out
        h.free_mem(static_cast<std::byte*>(*large) + 4096); // inside a large block
        h.free_mem(foreign_page + 64);                      // memory the heap never owned
        CHECK(h.usable_size(foreign_page + 128) == 0);
        auto r = h.realloc_mem(foreign_page + 256, 10);
        REQUIRE_FALSE(r);
        CHECK(str(r.error().what) == "realloc of a pointer the heap does not own; address");
        CHECK(take_reports().size() == 7);
        CHECK(h.stats().live_blocks == stats_before.live_blocks);
        h.free_mem(*p);
    }
    SECTION("a free block overwritten on a free list") {
        h.free_mem(*p);
        std::memset(*p, 0x41, 16); // use after free: the link and the tag are gone
        auto next = h.get_mem(64);
        REQUIRE(next); // served from a fresh page; the damaged one is quarantined
        CHECK(*next != *p);
        CHECK(take_reports() ==
              std::vector<std::string>{"heap free list corrupted (a block written after it was freed?)"});
        h.free_mem(*next);
    }
    SECTION("a remote double free") {
        test_policy::cpu = 1;
        group.free_mem(*p); // goes to cpu 0's remote list
        group.free_mem(*p);
        CHECK(take_reports() == std::vector<std::string>{"double free"});
        test_policy::cpu = 0;
        CHECK(h.drain_remote() == 1);
        group.free_mem(*p); // and after draining, still a double free
        CHECK(take_reports() == std::vector<std::string>{"double free"});
    }
    h.free_mem(*keep);
    if (h.stats().live_blocks == 1) h.free_mem(*large);
    CHECK(h.stats().live_blocks == 0);
    CHECK(h.stats().live_bytes == 0);
    h.trim();
    CHECK(take_reports().empty());
    // Only a quarantined page may stay behind.
    CHECK(src.free_bytes() + h.stats().slab_pages * page_size == initial);
    CHECK(src.invalid_frees() == 0);
}

TEST_CASE("blocks freed on other CPUs go home through the remote list", "[mem][heap][smp]") {
    constexpr std::uint32_t cpus = 4;
    constexpr int rounds = 30000;
    arena a{8192}; // 32 MiB, shared by the four heaps
    buffer_page_source src{a.span()};
    const std::size_t initial = src.free_bytes();
    toro::heap_group<buffer_page_source, test_policy, cpus> group;
    REQUIRE(group.init(src, cpus));

    // Blocks travel between threads through mailboxes; each carries its allocator's id and a sequence number.
    struct mailbox {
        std::mutex lock;
        std::vector<std::pair<void*, std::size_t>> items;
    };
    mailbox boxes[cpus];
    std::atomic<std::uint32_t> done{0}, emptied{0};
    std::atomic<std::size_t> remote_frees{0}, bad{0};

    auto worker = [&](std::uint32_t me) {
        test_policy::cpu = me;
        xorshift rng{0x1234 + me};
        std::size_t my_remote = 0;
        auto consume = [&] {
            std::vector<std::pair<void*, std::size_t>> got;
            {
                std::lock_guard<std::mutex> g{boxes[me].lock};
                got.swap(boxes[me].items);
            }
            for (auto [p, size] : got) {
                const auto* w = static_cast<const std::uint32_t*>(p);
                if (size >= 8 && w[1] != static_cast<std::uint32_t>(size)) ++bad;
                if (w[0] != me) ++my_remote; // allocated by another CPU
                group.free_mem(p);
            }
        };
        for (int i = 0; i < rounds; ++i) {
            const std::size_t size = 8 + (rng.below(8) == 0 ? rng.below(6000) : rng.below(300));
            auto p = group.get_mem(size);
            if (!p) {
                ++bad;
                continue;
            }
            auto* w = static_cast<std::uint32_t*>(*p);
            w[0] = me;
            w[1] = static_cast<std::uint32_t>(size);
            const std::uint32_t to = static_cast<std::uint32_t>(rng.below(cpus));
            {
                std::lock_guard<std::mutex> g{boxes[to].lock};
                boxes[to].items.push_back({*p, size});
            }
            if (i % 8 == 0) consume();
        }
        ++done;
        while (done.load() < cpus) std::this_thread::yield();
        consume(); // nobody sends any more
        remote_frees += my_remote;
        ++emptied;
        while (emptied.load() < cpus) std::this_thread::yield();
        group.local().drain_remote(); // every remote free has been pushed now
        group.local().trim();
    };
    std::vector<std::thread> threads;
    for (std::uint32_t i = 0; i < cpus; ++i) threads.emplace_back(worker, i);
    for (auto& t : threads) t.join();

    CHECK(bad.load() == 0);
    CHECK(remote_frees.load() > std::size_t{rounds}); // about 3/4 of all frees were cross-CPU
    for (std::uint32_t i = 0; i < cpus; ++i) {
        INFO("cpu " << i);
        CHECK(group.of(i).stats().live_blocks == 0);
        CHECK(group.of(i).stats().live_bytes == 0);
        CHECK(group.of(i).stats().slab_pages == 0);
        CHECK(group.of(i).stats().large_pages == 0);
    }
    CHECK(src.free_bytes() == initial);
    CHECK(src.invalid_frees() == 0);
    CHECK(take_reports().empty());
    test_policy::cpu = 0;
}

TEST_CASE("remote frees racing the owner's allocations and drains lose nothing", "[mem][heap][smp]") {
    constexpr std::uint32_t cpus = 4;
    arena a{4096};
    buffer_page_source src{a.span()};
    const std::size_t initial = src.free_bytes();
    toro::heap_group<buffer_page_source, test_policy, cpus> group;
    REQUIRE(group.init(src, cpus));

    for (int iteration = 0; iteration < 20; ++iteration) {
        // CPU 0 allocates a batch; CPUs 1-3 free it concurrently while CPU 0 keeps allocating and freeing.
        test_policy::cpu = 0;
        std::vector<void*> batch;
        for (int i = 0; i < 6000; ++i) {
            auto p = group.get_mem(16 + (i % 7) * 40);
            REQUIRE(p);
            batch.push_back(*p);
        }
        std::atomic<bool> go{false};
        std::vector<std::thread> freers;
        for (std::uint32_t c = 1; c < cpus; ++c)
            freers.emplace_back([&, c] {
                test_policy::cpu = c;
                while (!go.load()) std::this_thread::yield();
                for (std::size_t i = c - 1; i < batch.size(); i += cpus - 1) group.free_mem(batch[i]);
            });
        go = true;
        std::size_t churn = 0;
        for (int i = 0; i < 3000; ++i) { // the owner's own traffic drains the remote list as it goes
            auto p = group.get_mem(24);
            REQUIRE(p);
            group.free_mem(*p);
            ++churn;
        }
        for (auto& t : freers) t.join();
        group.local().drain_remote();
        REQUIRE(group.local().stats().live_blocks == 0);
        REQUIRE(churn == 3000);
    }
    group.local().trim();
    CHECK(src.free_bytes() == initial);
    CHECK(take_reports().empty());
}
