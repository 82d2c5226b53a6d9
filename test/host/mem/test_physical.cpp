// Host tests for toro::physical_memory: QEMU-shaped maps (PCI hole, RAM above 4 GiB, a 4 MiB guest), reserved
// ranges, page rounding, exhaustion, run coalescing, bad frees, and set-up cost independent of RAM size.
//
// "RAM" is a lazily backed host mapping (MAP_NORESERVE) reached through physical_memory's direct-map offset.
// The kernel never reads memory it has not handed out, so mincore() must show no page of it resident after
// init, whatever the map's size; pages become resident only once written.
#include <catch2/catch.hpp>

#include "../xorshift.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <toro/boot/boot_info.hpp>
#include <toro/mem/heap.hpp>
#include <toro/mem/physical.hpp>

namespace {

using toro::memory_map;
using toro::page_size;
using toro::phys_range;
using toro::physical_memory;

constexpr std::uint64_t KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;

std::string str(toro::string_view s) {
    return {s.data(), s.size()};
}

// Host address space standing in for physical [0, bytes): reserved, backed only where written.
class fake_ram {
public:
    explicit fake_ram(std::uint64_t bytes) : bytes_{bytes} {
        void* p =
            mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        base_ = p == MAP_FAILED ? nullptr : static_cast<std::byte*>(p);
    }
    ~fake_ram() {
        if (base_ != nullptr) munmap(base_, bytes_);
    }
    fake_ram(const fake_ram&) = delete;
    fake_ram& operator=(const fake_ram&) = delete;

    bool ok() const { return base_ != nullptr; }
    std::uintptr_t direct_map() const { return reinterpret_cast<std::uintptr_t>(base_); }

    // Pages of the mapping the process has touched (read or written).
    std::size_t resident_pages() const {
        std::vector<unsigned char> v(bytes_ / page_size);
        REQUIRE(mincore(base_, bytes_, v.data()) == 0);
        return static_cast<std::size_t>(
            std::count_if(v.begin(), v.end(), [](unsigned char c) { return c & 1; }));
    }

private:
    std::uint64_t bytes_;
    std::byte* base_;
};

struct e820 {
    std::uint64_t base, size;
    std::uint32_t type;
};

memory_map make_map(const std::vector<e820>& entries) {
    memory_map m;
    for (const auto& e : entries) REQUIRE(m.add(e.base, e.size, e.type));
    REQUIRE(m.normalise());
    return m;
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> regions(const physical_memory& pm) {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
    for (std::size_t i = 0; i < pm.region_count(); ++i) out.push_back({pm.region(i).base, pm.region(i).end});
    return out;
}

// QEMU q35 with 6 GiB: RAM up to the PCI hole at 2 GiB + 127 MiB, the rest above 4 GiB.
const std::vector<e820> qemu_q35 = {
    {0, 0x9fc00, 1},          {0x9fc00, 0x400, 2},
    {0xf0000, 0x10000, 2},    {MiB, 0x87fe0000 - MiB, 1},
    {0x87fe0000, 0x20000, 2}, {0xb0000000, 0x10000000, 2},
    {0xfed1c000, 0x4000, 2},  {0xfffc0000, 0x40000, 2},
    {4 * GiB, 0x78020000, 1},
};

} // namespace

TEST_CASE("a QEMU map with a PCI hole and RAM above 4 GiB, minus reserved ranges", "[mem][physical]") {
    const memory_map map = make_map(qemu_q35);
    fake_ram ram{4 * GiB + 0x78020000};
    if (!ram.ok()) {
        WARN("cannot reserve 6 GiB of address space; skipped");
        return;
    }
    const phys_range reserved[] = {
        {MiB, 2 * MiB + 0x1234}, // kernel image, end not page-aligned: widened
        {0x9000, 0x9800},        // boot data inside a page
        {0x70000, 0x73000},      // page tables
        {8 * GiB, 9 * GiB},      // beyond RAM: no effect
    };
    physical_memory pm;
    REQUIRE(pm.init(map, reserved, ram.direct_map()));
    using R = std::pair<std::uint64_t, std::uint64_t>;
    const std::vector<R> expected = {
        {0x1000, 0x9000},       {0xa000, 0x70000},
        {0x73000, 0x9f000}, // page 0 and the partial page dropped
        {0x202000, 0x87fe0000}, {4 * GiB, 4 * GiB + 0x78020000},
    };
    CHECK(regions(pm) == expected);
    std::uint64_t total = 0;
    for (const auto& r : expected) total += r.second - r.first;
    CHECK(pm.usable_bytes() == total);
    CHECK(pm.free_bytes() == total);
    CHECK(ram.resident_pages() == 0);

    // Hand everything out: big runs, then single pages. Every run lies inside one region.
    std::vector<std::pair<std::byte*, std::size_t>> runs;
    std::uint64_t handed = 0;
    for (std::size_t count : {std::size_t{4096}, std::size_t{1}})
        for (;;) {
            auto p = pm.allocate_pages(count);
            if (!p) break;
            const std::uint64_t at = pm.phys(*p);
            CHECK(at % page_size == 0);
            CHECK(std::any_of(expected.begin(), expected.end(), [&](const R& r) {
                return at >= r.first && at + count * page_size <= r.second;
            }));
            runs.push_back({*p, count});
            handed += count * page_size;
        }
    CHECK(handed == total);
    CHECK(pm.free_bytes() == 0);
    auto none = pm.allocate_pages(1);
    REQUIRE_FALSE(none);
    CHECK(str(none.error().what) == "out of memory; pages");
    CHECK(none.error().value == 1);

    // Give it all back in a scrambled order: runs coalesce, bump pointers retract.
    xorshift rng{42};
    for (std::size_t i = runs.size(); i > 1; --i) std::swap(runs[i - 1], runs[rng.below(i)]);
    for (auto [p, count] : runs) pm.free_pages(p, count);
    CHECK(pm.free_bytes() == total);
    CHECK(pm.invalid_frees() == 0);
    // Coalesced: each region comes back as one run.
    for (const auto& r : expected) {
        auto whole = pm.allocate_pages((r.second - r.first) / page_size);
        REQUIRE(whole);
        CHECK(pm.phys(*whole) == r.first);
    }
    // Only the pages that held free-run records were ever touched.
    CHECK(ram.resident_pages() <= runs.size());
}

TEST_CASE("set-up touches no RAM and does not depend on its size", "[mem][physical]") {
    // 16 GiB guest: 3 GiB below the hole, 13 GiB above 4 GiB.
    const memory_map big =
        make_map({{0, 0x9fc00, 1}, {MiB, 3 * GiB - MiB, 1}, {3 * GiB, GiB, 2}, {4 * GiB, 13 * GiB, 1}});
    const memory_map small = make_map({{0, 0x9fc00, 1}, {MiB, 127 * MiB, 1}});
    fake_ram ram{17 * GiB};
    if (!ram.ok()) {
        WARN("cannot reserve 17 GiB of address space; skipped");
        return;
    }
    const phys_range kernel[] = {{MiB, 2 * MiB}};
    physical_memory pm;
    REQUIRE(pm.init(big, kernel, ram.direct_map()));
    CHECK(pm.usable_bytes() == (0x9f000 - 0x1000) + (3 * GiB - 2 * MiB) + 13 * GiB);
    CHECK(ram.resident_pages() == 0); // nothing read or written: no per-page work at all
    CHECK(pm.region_count() == 3);
    // The state is a fixed-size object whatever the RAM size.
    physical_memory pm_small;
    REQUIRE(pm_small.init(small, kernel, ram.direct_map()));
    CHECK(pm_small.region_count() == 2);
    STATIC_REQUIRE(sizeof(physical_memory) < 8 * KiB);

    // Pages become resident only when the user writes them, and freeing does not walk them.
    auto p = pm.allocate_pages(3);
    REQUIRE(p);
    std::memset(*p, 0xcd, 3 * page_size);
    CHECK(ram.resident_pages() == 3);
    auto high = pm.allocate_pages(GiB / page_size); // a whole GiB is handed out without a touch
    REQUIRE(high);
    CHECK(ram.resident_pages() == 3);
    pm.free_pages(*high, GiB / page_size); // back at the bump pointer: no record written
    pm.free_pages(*p, 3);
    CHECK(ram.resident_pages() == 3);
    CHECK(pm.free_bytes() == pm.usable_bytes());
}

TEST_CASE("a 4 MiB guest runs a heap to exhaustion and back", "[mem][physical]") {
    const memory_map map =
        make_map({{0, 0x9fc00, 1}, {0x9fc00, 0x400, 2}, {0xf0000, 0x10000, 2}, {MiB, 3 * MiB, 1}});
    fake_ram ram{4 * MiB};
    REQUIRE(ram.ok());
    const phys_range reserved[] = {{MiB, MiB + 700 * KiB}, {0x7000, 0x8000}}; // kernel image, boot stack
    physical_memory pm;
    REQUIRE(pm.init(map, reserved, ram.direct_map()));
    const std::size_t usable = (0x9f000 - 0x1000 - 0x1000) + (4 * MiB - (MiB + 700 * KiB));
    CHECK(pm.usable_bytes() == usable);

    toro::heap<physical_memory> h{pm};
    std::vector<void*> blocks;
    for (std::size_t i = 0;; ++i) {
        auto p = h.get_mem(i % 3 == 0 ? 5000 : 200);
        if (!p) {
            CHECK(str(p.error().what) == "out of memory; bytes requested");
            break;
        }
        std::memset(*p, static_cast<int>(i), i % 3 == 0 ? 5000 : 200);
        blocks.push_back(*p);
    }
    CHECK(pm.free_bytes() < 2 * page_size);
    CHECK(blocks.size() > 500);
    for (void* p : blocks) h.free_mem(p);
    h.trim();
    CHECK(pm.free_bytes() == usable);
    CHECK(h.stats().live_blocks == 0);
    // All of it again, as one run per region.
    REQUIRE(pm.region_count() == 3);
    for (std::size_t i = 0; i < pm.region_count(); ++i) {
        auto run = pm.allocate_pages((pm.region(i).end - pm.region(i).base) / page_size);
        REQUIRE(run);
        CHECK(pm.phys(*run) == pm.region(i).base);
    }
    CHECK(pm.free_bytes() == 0);
    CHECK(pm.invalid_frees() == 0);
}

TEST_CASE("rounding, reserved edges and bad maps", "[mem][physical]") {
    fake_ram ram{64 * MiB};
    REQUIRE(ram.ok());
    physical_memory pm;
    using R = std::pair<std::uint64_t, std::uint64_t>;

    SECTION("usable regions shrink to whole pages; page 0 is never handed out") {
        memory_map m;
        REQUIRE(m.add(0, 0x5800, toro::memory_type::usable));
        REQUIRE(
            m.add(0x10010, 0x3000, toro::memory_type::usable));    // [0x10010, 0x13010) -> [0x11000, 0x13000)
        REQUIRE(m.add(0x20000, 0xfff, toro::memory_type::usable)); // less than a page: gone
        REQUIRE(m.normalise());
        REQUIRE(pm.init(m, {}, ram.direct_map()));
        CHECK(regions(pm) == std::vector<R>{{0x1000, 0x5000}, {0x11000, 0x13000}});
    }
    SECTION("reserved ranges widen to pages, may overlap, and may swallow a region") {
        const memory_map m = make_map({{0x100000, 0x100000, 1}, {0x300000, 0x10000, 1}});
        const phys_range reserved[] = {
            {0x100800, 0x101001}, {0x101000, 0x103000}, // overlapping, unaligned: [0x100000, 0x103000)
            {0x180000, 0x180001},                       // one byte: one page
            {0x2ff000, 0x320000},                       // the whole second region and more
            {0x1ff000, 0x300000},                       // the tail of the first
            {0x500000, 0x500000},                       // empty: ignored
        };
        REQUIRE(pm.init(m, reserved, ram.direct_map()));
        CHECK(regions(pm) == std::vector<R>{{0x103000, 0x180000}, {0x181000, 0x1ff000}});
    }
    SECTION("reserved and unusable types are never handed out") {
        const memory_map m = make_map({{0x1000, 0x10000, 1},
                                       {0x4000, 0x1000, 2},
                                       {0x8000, 0x1000, 3},
                                       {0x9000, 0x1000, 4},
                                       {0xa000, 0x1000, 5}});
        REQUIRE(pm.init(m, {}, ram.direct_map()));
        CHECK(regions(pm) == std::vector<R>{{0x1000, 0x4000}, {0x5000, 0x8000}, {0xb000, 0x11000}});
    }
    SECTION("errors") {
        const memory_map m = make_map({{MiB, MiB, 1}});
        const phys_range reversed[] = {{0x200000, 0x100000}};
        auto r = pm.init(m, reversed, ram.direct_map());
        REQUIRE_FALSE(r);
        CHECK(str(r.error().what) == "reserved physical range ends before it starts; base");
        CHECK(r.error().value == 0x200000);

        std::vector<phys_range> many(physical_memory::max_reserved + 1, phys_range{0x100000, 0x101000});
        r = pm.init(m, many, ram.direct_map());
        REQUIRE_FALSE(r);
        CHECK(r.error().value == physical_memory::max_reserved + 1);

        memory_map raw; // overlapping and out of order: not normalised
        REQUIRE(raw.add(0x200000, 0x10000, 1u));
        REQUIRE(raw.add(0x100000, 0x10000, 1u));
        r = pm.init(raw, {}, ram.direct_map());
        REQUIRE_FALSE(r);
        CHECK(str(r.error().what) == "memory map is not normalised (overlap or disorder at)");

        const memory_map top = make_map({{~std::uint64_t{0} - 0x10000, 0x8000, 1}});
        r = pm.init(top, {}, ~std::uintptr_t{0} - 0x100000);
        REQUIRE_FALSE(r);
        CHECK(str(r.error().what) == "RAM lies beyond the direct map's reach; physical address");
    }
    SECTION("an empty map gives an empty source") {
        REQUIRE(pm.init(memory_map{}, {}, ram.direct_map()));
        CHECK(pm.usable_bytes() == 0);
        CHECK_FALSE(pm.allocate_pages(1));
        CHECK_FALSE(pm.allocate_pages(0));
    }
}

TEST_CASE("returned runs merge, are reused, and bad frees change nothing", "[mem][physical]") {
    fake_ram ram{MiB};
    REQUIRE(ram.ok());
    const memory_map m = make_map({{0x10000, 0x10000, 1}, {0x20000, 0x1000, 2}, {0x21000, 0x10000, 1}});
    physical_memory pm;
    REQUIRE(pm.init(m, {}, ram.direct_map()));
    const std::size_t total = pm.usable_bytes();
    REQUIRE(total == 32 * page_size);

    auto a = pm.allocate_pages(1), b = pm.allocate_pages(1), c = pm.allocate_pages(1),
         d = pm.allocate_pages(1);
    REQUIRE((a && b && c && d));
    CHECK(pm.phys(*a) == 0x10000);
    CHECK(pm.phys(*d) == 0x13000);
    pm.free_pages(*b, 1);
    pm.free_pages(*a, 1); // merges with b
    pm.free_pages(*c, 1); // merges with a+b
    CHECK(pm.free_bytes() == total - page_size);
    auto three = pm.allocate_pages(3); // first fit: the merged run
    REQUIRE(three);
    CHECK(*three == *a);

    SECTION("bad frees") {
        pm.free_pages(*b, 1);
        const std::size_t before = pm.free_bytes();
        pm.free_pages(*b, 1);               // double free
        pm.free_pages(*a + 1, 1);           // misaligned
        pm.free_pages(*a, 0);               // zero pages
        pm.free_pages(*a, 2);               // overlaps the free page b
        pm.free_pages(*d + page_size, 1);   // above the bump pointer: never handed out
        pm.free_pages(pm.virt(0x20000), 1); // the hole
        pm.free_pages(pm.virt(0x40000), 1); // outside every region
        CHECK(pm.invalid_frees() == 7);
        CHECK(pm.free_bytes() == before);
        pm.free_pages(*a, 1);
        pm.free_pages(*c, 1);
    }
    SECTION("sub-runs of one allocation come back separately") {
        pm.free_pages(*three, 3);
        auto run = pm.allocate_pages(8);
        REQUIRE(run);
        pm.free_pages(*run + 3 * page_size, 2);
        pm.free_pages(*run, 3);
        pm.free_pages(*run + 5 * page_size, 3);
        CHECK(pm.invalid_frees() == 0);
        // Merged and back under the bump pointer (at d): 12 pages fit above d again.
        auto twelve = pm.allocate_pages(12);
        REQUIRE(twelve);
        CHECK(pm.phys(*twelve) == 0x14000);
        pm.free_pages(*twelve, 12);
    }
    pm.free_pages(*d, 1);
    CHECK(pm.free_bytes() == total);
}

TEST_CASE("random page runs against a model", "[mem][physical]") {
    fake_ram ram{64 * MiB};
    REQUIRE(ram.ok());
    const memory_map m =
        make_map({{0x1000, 8 * MiB, 1}, {9 * MiB, MiB, 2}, {10 * MiB, 20 * MiB, 1}, {40 * MiB, 0x5000, 1}});
    const phys_range reserved[] = {{2 * MiB, 3 * MiB}, {12 * MiB + 5, 12 * MiB + 0x3000}};
    physical_memory pm;
    REQUIRE(pm.init(m, reserved, ram.direct_map()));
    const std::size_t total = pm.usable_bytes();
    std::map<std::uint64_t, std::size_t> live; // phys -> pages
    xorshift rng{7};
    for (int op = 0; op < 20000; ++op) {
        if (live.empty() || rng.below(100) < 55) {
            const std::size_t count = rng.below(10) == 0 ? 1 + rng.below(2000) : 1 + rng.below(16);
            auto p = pm.allocate_pages(count);
            if (!p) continue;
            const std::uint64_t at = pm.phys(*p);
            REQUIRE(at % page_size == 0);
            auto next = live.lower_bound(at);
            if (next != live.end()) REQUIRE(at + count * page_size <= next->first);
            if (next != live.begin())
                REQUIRE(std::prev(next)->first + std::prev(next)->second * page_size <= at);
            for (const auto& r : reserved)
                REQUIRE((at + count * page_size <= (r.base & ~std::uint64_t{4095}) || at >= r.end));
            live[at] = count;
        } else {
            auto it = std::next(live.begin(), static_cast<long>(rng.below(live.size())));
            // Sometimes give back only part of the run.
            const std::size_t pages = it->second;
            if (pages > 2 && rng.below(4) == 0) {
                const std::size_t cut = 1 + rng.below(pages - 1);
                pm.free_pages(pm.virt(it->first + cut * page_size), pages - cut);
                it->second = cut;
            } else {
                pm.free_pages(pm.virt(it->first), pages);
                live.erase(it);
            }
        }
        std::size_t in_use = 0;
        if (op % 500 == 0) {
            for (const auto& [at, pages] : live) in_use += pages * page_size;
            REQUIRE(pm.free_bytes() == total - in_use);
        }
    }
    for (const auto& [at, pages] : live) pm.free_pages(pm.virt(at), pages);
    CHECK(pm.free_bytes() == total);
    CHECK(pm.invalid_frees() == 0);
    // Everything merged back: each region is one run again.
    for (std::size_t i = 0; i < pm.region_count(); ++i) {
        const auto r = pm.region(i);
        auto run = pm.allocate_pages((r.end - r.base) / page_size);
        REQUIRE(run);
        CHECK(pm.phys(*run) == r.base);
    }
}
