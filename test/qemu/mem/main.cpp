// mem: a test appliance for the memory unit. Command line:
//   exhaust     allocate 1 MiB blocks until get_mem fails, free them all, do it again: the same count
//   small       many small blocks of every size class, written and checked, then freed
//   new         operator new / delete[] on objects with constructors
//   new-huge    operator new of 1 TiB: the panic names the size
//   double-free free_mem twice on one block: the heap reports it
//   bench       alloc/free pairs over a window of live blocks (the host heap_bench's workload shape),
//               timed with the TSC: prints cycles per pair
#include <toro/kernel.hpp>
#include <toro/mem/memory_unit.hpp>

using mem_os = toro::appliance<toro::memory>;

namespace {

struct counted {
    static inline int live = 0;
    std::uint64_t value;
    counted() : value{0x5eed} { ++live; }
    ~counted() { --live; }
};

int exhaust() {
    std::size_t counts[2] = {};
    for (int round = 0; round < 2; ++round) {
        void* head = nullptr;
        toro::string_view why;
        for (;;) {
            auto p = toro::get_mem(1 << 20);
            if (!p) {
                why = p.error().what;
                break;
            }
            *static_cast<void**>(*p) = head; // a list through the blocks: no other memory needed
            head = *p;
            ++counts[round];
        }
        toro::print("mem: round {}: {} blocks of 1 MiB, then: {}\n", round, counts[round], why);
        while (head != nullptr) {
            void* next = *static_cast<void**>(head);
            toro::free_mem(head);
            head = next;
        }
    }
    toro::print("mem: recovered after out of memory: {}\n", counts[0] == counts[1] && counts[0] > 0);
    return counts[0] == counts[1] && counts[0] > 0 ? 0 : 1;
}

int small() {
    constexpr int n = 2000;
    static std::uint8_t* blocks[n];
    for (int i = 0; i < n; ++i) {
        std::size_t size = 1 + (i * 37) % 2100;
        auto p = toro::get_mem(size);
        if (!p) return 1;
        blocks[i] = static_cast<std::uint8_t*>(*p);
        for (std::size_t j = 0; j < size; ++j) blocks[i][j] = static_cast<std::uint8_t>(i + j);
    }
    int bad = 0;
    for (int i = 0; i < n; ++i) {
        std::size_t size = 1 + (i * 37) % 2100;
        for (std::size_t j = 0; j < size; ++j) bad += blocks[i][j] != static_cast<std::uint8_t>(i + j);
        toro::free_mem(blocks[i]);
    }
    toro::print("mem: {} small blocks written and checked, {} bad bytes\n", n, bad);
    return bad == 0 ? 0 : 1;
}

int bench() {
    constexpr std::size_t window = 1024, steps = 50'000;
    static void* live[window];
    std::uint64_t x = 0x9e3779b97f4a7c15;
    auto next = [&] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        return x;
    };
    auto size_of = [](std::uint64_t r) -> std::size_t {
        const unsigned bucket = r % 100;
        return bucket < 90   ? 16 + (r >> 8) % 497
               : bucket < 99 ? 512 + (r >> 8) % 1537
                             : 2048 + (r >> 8) % 14337;
    };
    for (auto& p : live) p = *toro::get_mem(size_of(next()));
    const std::uint64_t start = toro::arch::rdtsc();
    for (std::size_t i = 0; i < steps; ++i) {
        const std::uint64_t r = next();
        void*& slot = live[(r >> 32) % window];
        toro::free_mem(slot);
        auto p = toro::get_mem(size_of(r));
        if (!p) return 1;
        slot = *p;
        static_cast<volatile char*>(slot)[0] = 1;
    }
    const std::uint64_t cycles = toro::arch::rdtsc() - start;
    for (void* p : live) toro::free_mem(p);
    toro::print("mem: bench: {} pairs in {} cycles, {} cycles per pair\n", steps, cycles, cycles / steps);
    return 0;
}

} // namespace

int app_main(mem_os& os) {
    toro::string_view what = os.boot.cmdline();
    toro::print("mem: {} bytes usable, {} free\n", os.usable_bytes(), os.free_bytes());
    if (what == "exhaust") return exhaust();
    if (what == "small") return small();
    if (what == "bench") return bench();
    if (what == "new") {
        auto* a = new counted[100];
        bool ok = counted::live == 100 && a[99].value == 0x5eed;
        delete[] a;
        auto* one = new counted;
        delete one;
        toro::print("mem: new/delete: constructed {}, live after delete {}\n", ok, counted::live);
        return ok && counted::live == 0 ? 0 : 1;
    }
    if (what == "new-huge") {
        volatile std::size_t huge = std::size_t{1} << 40;
        char* p = new char[huge];
        p[0] = 1;
        return 1;
    }
    if (what == "double-free") {
        auto p = toro::get_mem(32);
        if (!p) return 1;
        toro::free_mem(*p);
        toro::free_mem(*p);
        return 1;
    }
    return 0;
}

TORO_APPLIANCE(mem_os, app_main)
