// heap_bench: alloc/free pairs per second of toro's heap (over a buffer page source) against glibc malloc,
// on one and the same pseudo-random workload: a window of live blocks of mixed sizes (mostly small, some
// large), each step frees a random live block and allocates a new one in its place.
//
//   heap_bench [steps] [runs]    prints one line per allocator: median ns per pair and pairs per second
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include <toro/mem/heap.hpp>
#include <toro/mem/page_source.hpp>

namespace {

constexpr std::size_t window = 4096;

// The workload: sizes drawn once, so both allocators see exactly the same requests.
struct workload {
    std::vector<std::uint32_t> sizes, slots;
    explicit workload(std::size_t steps) {
        std::uint64_t x = 0x9e3779b97f4a7c15;
        auto next = [&] {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            return x;
        };
        for (std::size_t i = 0; i < steps + window; ++i) {
            const std::uint64_t r = next();
            // 90 % small (16..512), 9 % medium (..2 KiB), 1 % large (..16 KiB)
            const unsigned bucket = r % 100;
            std::uint32_t size = bucket < 90   ? 16 + (r >> 8) % 497
                                 : bucket < 99 ? 512 + (r >> 8) % 1537
                                               : 2048 + (r >> 8) % 14337;
            sizes.push_back(size);
            slots.push_back(static_cast<std::uint32_t>((r >> 32) % window));
        }
    }
};

template <class Alloc, class Free>
double ns_per_pair(const workload& w, std::size_t steps, Alloc alloc, Free release) {
    std::vector<void*> live(window);
    for (std::size_t i = 0; i < window; ++i) live[i] = alloc(w.sizes[i]);
    const auto start = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < steps; ++i) {
        void*& slot = live[w.slots[i]];
        release(slot);
        slot = alloc(w.sizes[window + i]);
        static_cast<volatile char*>(slot)[0] = 1; // touch it, as a program would
    }
    const auto end = std::chrono::steady_clock::now();
    for (void* p : live) release(p);
    return std::chrono::duration<double, std::nano>(end - start).count() / static_cast<double>(steps);
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

} // namespace

int main(int argc, char** argv) {
    const std::size_t steps = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 2'000'000;
    const int runs = argc > 2 ? std::atoi(argv[2]) : 5;
    const workload w(steps);

    constexpr std::size_t arena_size = std::size_t{512} << 20;
    auto arena = std::unique_ptr<std::byte[]>(new (std::align_val_t{4096}) std::byte[arena_size]);
    std::vector<double> toro_ns, glibc_ns;
    for (int r = 0; r < runs; ++r) {
        toro::buffer_page_source pages{std::span<std::byte>(arena.get(), arena_size)};
        auto heap = std::make_unique<toro::heap<toro::buffer_page_source>>(); // a fresh heap each run
        auto& h = *heap;
        h.attach(pages, 0, &h, 1);
        toro_ns.push_back(ns_per_pair(
            w, steps,
            [&](std::size_t n) {
                auto p = h.get_mem(n);
                if (!p) std::abort();
                return *p;
            },
            [&](void* p) { h.free_mem(p); }));
        glibc_ns.push_back(ns_per_pair(
            w, steps, [](std::size_t n) { return std::malloc(n); }, std::free));
    }
    const double t = median(toro_ns), g = median(glibc_ns);
    std::printf("toro heap    %.1f ns/pair  %.2f M pairs/s\n", t, 1e3 / t);
    std::printf("glibc malloc %.1f ns/pair  %.2f M pairs/s\n", g, 1e3 / g);
    std::printf("toro/glibc throughput ratio %.2f (median of %d runs of %zu pairs)\n", g / t, runs, steps);
    return 0;
}
