// sched_bench: the process unit's scheduler on the host against Linux doing the same with pthreads, measured
// in the same run. The toro side is the kernel's code (toro::scheduler over x86_64_context, the sync
// primitives of proc/sync.hpp) with std::thread "CPUs" under a minimal host platform: the TSC as the clock,
// as in the kernel, and idle CPUs that block on a condition variable until kicked (the kernel's hlt + IPI).
//
//   yield        two threads of one CPU yielding to each other: ns per switch
//                vs two pthreads pinned to one core calling sched_yield: ns per yield
//   create_join  create (thread object from the heap, stack from a cache, prepare + start), run, exit, join:
//                ns per thread, vs pthread_create + pthread_join (glibc caches stacks too)
//   cross_cpu    semaphore ping-pong between threads of two CPUs: ns per round trip (two cross-CPU wakes)
//                vs two pthreads ping-ponging through a mutex and two condition variables
//   cross_cpu_poll  the same toro ping-pong with idle CPUs polling their inbox instead of blocking (no OS
//                wake-up on the path: the scheduler's own cost), vs two pthreads spinning on a shared word
//
//   sched_bench [runs]   one line per benchmark: medians of the runs (min-max) and the ratio of the medians
#include <pthread.h>
#include <sched.h>
#include <x86intrin.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <toro/arch/x86_64/cpu_local.hpp> // toro::max_cpus: per-CPU arrays sized as in the kernel
#include <toro/proc/scheduler.hpp>
#include <toro/proc/sync.hpp>

namespace {

using clk = std::chrono::steady_clock;

double ns_since(clk::time_point t0, double per) {
    return std::chrono::duration<double, std::nano>(clk::now() - t0).count() / per;
}

struct cpu_signal {
    std::mutex m;
    std::condition_variable cv;
    bool kicked = false;
};

struct platform {
    static inline thread_local std::uint32_t cpu = 0;
    static inline bool poll_idle = false;
    static inline std::array<cpu_signal, toro::max_cpus> signals;

    static std::uint32_t this_cpu() { return cpu; }
    static std::uint64_t now() { return __rdtsc(); }
    // The bench never sleeps on a deadline; the 1 ms cap is an early return, which idle_wait may do.
    static void idle_wait(std::uint64_t) {
        if (poll_idle) return;
        cpu_signal& s = signals[cpu];
        std::unique_lock<std::mutex> l{s.m};
        s.cv.wait_for(l, std::chrono::milliseconds(1), [&] { return s.kicked; });
        s.kicked = false;
    }
    static void kick(std::uint32_t c) {
        if (poll_idle) return;
        cpu_signal& s = signals[c];
        {
            std::lock_guard<std::mutex> l{s.m};
            s.kicked = true;
        }
        s.cv.notify_one();
    }
    static void poll_interrupts() {}
    static bool in_interrupt() { return false; }
    static void switched(toro::thread*) {}
};
static_assert(toro::scheduler_platform<platform>);

using scheduler = toro::scheduler<toro::x86_64_context, platform, toro::max_cpus>;
scheduler* sched = nullptr;

struct facade {
    static toro::thread* current() { return sched->current(); }
    static toro::wake_reason block(std::uint64_t deadline) { return sched->block(deadline); }
    static bool claim(toro::thread* t) { return scheduler::claim(t); }
    static void make_ready(toro::thread* t) { sched->make_ready(t); }
};
using semaphore = toro::basic_semaphore<facade>;
using wait_queue = toro::basic_wait_queue<facade>;

// As the process unit's begin_thread / join: a thread object with its joiners' queue, a 32 KiB stack from a
// per-CPU cache; the finished hook marks it done and wakes its joiners.
constexpr std::size_t stack_size = 32 * 1024;
struct kthread {
    toro::thread t;
    wait_queue joiners;
    std::byte* stack = nullptr;
};
std::vector<std::byte*> stack_cache;

void on_finished(toro::thread* t) {
    __atomic_store_n(&t->done, 1u, __ATOMIC_RELEASE);
    reinterpret_cast<kthread*>(t)->joiners.wake_all();
}

kthread* begin_thread(int (*fn)(void*), void* arg, std::uint32_t cpu) {
    auto* k = new kthread;
    if (stack_cache.empty()) {
        k->stack = new std::byte[stack_size];
    } else {
        k->stack = stack_cache.back();
        stack_cache.pop_back();
    }
    k->t.fn = fn;
    k->t.arg = arg;
    k->t.cpu = cpu;
    sched->prepare(&k->t, k->stack + stack_size);
    sched->start(&k->t);
    return k;
}

int join(kthread* k) {
    k->joiners.wait_while([&] { return __atomic_load_n(&k->t.done, __ATOMIC_ACQUIRE) == 0; });
    const int code = k->t.exit_code;
    stack_cache.push_back(k->stack);
    delete k;
    return code;
}

// A fresh scheduler; cpu(c) brings CPU c under it from the calling OS thread, which becomes its main thread.
struct machine {
    std::unique_ptr<scheduler> s{new scheduler};
    std::array<toro::thread, toro::max_cpus> mains{};
    std::array<std::unique_ptr<std::byte[]>, toro::max_cpus> idle_stacks{};
    machine() {
        sched = s.get();
        s->make_instance();
        s->set_finished_hook(&on_finished);
    }
    void cpu(std::uint32_t c) {
        platform::cpu = c;
        idle_stacks[c].reset(new std::byte[64 * 1024]);
        s->start_cpu(c, &mains[c], idle_stacks[c].get(), idle_stacks[c].get() + 64 * 1024);
    }
};

void pin(pthread_t t, int core) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(core, &set);
    pthread_setaffinity_np(t, sizeof set, &set);
}

// --- yield ---

double toro_yield(long n) {
    double ns = 0;
    std::thread cpu0([&] {
        machine m;
        m.cpu(0);
        kthread* other = begin_thread(
            [](void* p) {
                for (long i = 0, n = *static_cast<long*>(p); i < n; ++i) sched->yield();
                return 0;
            },
            &n, 0);
        const auto t0 = clk::now();
        for (long i = 0; i < n; ++i) sched->yield();
        ns = ns_since(t0, 2.0 * static_cast<double>(n));
        join(other);
    });
    cpu0.join();
    return ns;
}

double linux_yield(long n) {
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    auto body = [&] {
        ++ready;
        while (!go) sched_yield();
        for (long i = 0; i < n; ++i) sched_yield();
    };
    std::thread a{body}, b{body};
    pin(a.native_handle(), 0);
    pin(b.native_handle(), 0);
    while (ready != 2) std::this_thread::yield();
    const auto t0 = clk::now();
    go = true;
    a.join();
    b.join();
    return ns_since(t0, 2.0 * static_cast<double>(n));
}

// --- create + join ---

int nothing(void*) {
    return 7;
}

double toro_create(long n) {
    double ns = 0;
    std::thread cpu0([&] {
        machine m;
        m.cpu(0);
        join(begin_thread(&nothing, nullptr, 0)); // warms the stack cache
        const auto t0 = clk::now();
        for (long i = 0; i < n; ++i)
            if (join(begin_thread(&nothing, nullptr, 0)) != 7) std::abort();
        ns = ns_since(t0, static_cast<double>(n));
    });
    cpu0.join();
    return ns;
}

double linux_create(long n) {
    auto body = [](void*) -> void* { return reinterpret_cast<void*>(7); };
    const auto t0 = clk::now();
    for (long i = 0; i < n; ++i) {
        pthread_t t;
        void* r = nullptr;
        if (pthread_create(&t, nullptr, body, nullptr) != 0 || pthread_join(t, &r) != 0 ||
            r != reinterpret_cast<void*>(7))
            std::abort();
    }
    return ns_since(t0, static_cast<double>(n));
}

// --- cross-CPU ping-pong ---

double toro_pingpong(long rounds, bool poll) {
    platform::poll_idle = poll;
    machine m;
    semaphore ping, pong;
    std::atomic<bool> up{false};
    double ns = 0;
    std::thread cpu1([&] {
        m.cpu(1);
        up = true;
        for (long i = 0; i < rounds; ++i) {
            ping.acquire();
            pong.release();
        }
    });
    std::thread cpu0([&] {
        m.cpu(0);
        while (!up) std::this_thread::yield();
        const auto t0 = clk::now();
        for (long i = 0; i < rounds; ++i) {
            ping.release();
            pong.acquire();
        }
        ns = ns_since(t0, static_cast<double>(rounds));
    });
    cpu0.join();
    cpu1.join();
    platform::poll_idle = false;
    return ns;
}

double linux_pingpong(long rounds) {
    std::mutex m;
    std::condition_variable to_b, to_a;
    int turn = 0; // 0: a's, 1: b's
    std::thread b([&] {
        for (long i = 0; i < rounds; ++i) {
            std::unique_lock<std::mutex> l{m};
            to_b.wait(l, [&] { return turn == 1; });
            turn = 0;
            to_a.notify_one();
        }
    });
    const auto t0 = clk::now();
    for (long i = 0; i < rounds; ++i) {
        std::unique_lock<std::mutex> l{m};
        turn = 1;
        to_b.notify_one();
        to_a.wait(l, [&] { return turn == 0; });
    }
    const double ns = ns_since(t0, static_cast<double>(rounds));
    b.join();
    return ns;
}

// The baseline of the polling variant: two threads spinning on a shared word, no OS involved.
double linux_spin_pingpong(long rounds) {
    std::atomic<int> turn{0};
    std::thread b([&] {
        for (long i = 0; i < rounds; ++i) {
            while (turn.load(std::memory_order_acquire) != 1) __builtin_ia32_pause();
            turn.store(0, std::memory_order_release);
        }
    });
    const auto t0 = clk::now();
    for (long i = 0; i < rounds; ++i) {
        turn.store(1, std::memory_order_release);
        while (turn.load(std::memory_order_acquire) != 0) __builtin_ia32_pause();
    }
    const double ns = ns_since(t0, static_cast<double>(rounds));
    b.join();
    return ns;
}

struct stats {
    double median, min, max;
};
stats summarise(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return {v[v.size() / 2], v.front(), v.back()};
}

void report(const char* name, const char* what, const std::vector<double>& toro_ns,
            const std::vector<double>& linux_ns) {
    const stats t = summarise(toro_ns), l = summarise(linux_ns);
    std::printf("%-14s toro %.1f ns (%.1f-%.1f)  linux %.1f ns (%.1f-%.1f)  toro/linux %.3f  [%s]\n", name,
                t.median, t.min, t.max, l.median, l.min, l.max, t.median / l.median, what);
}

} // namespace

int main(int argc, char** argv) {
    const int runs = argc > 1 ? std::max(1, std::atoi(argv[1])) : 5;
    constexpr long yields = 200'000, creates = 100'000, linux_creates = 10'000, rounds = 20'000;
    std::vector<double> ty, ly, tc, lc, tp, lp, tq, lq;
    for (int r = 0; r < runs; ++r) { // interleaved: both sides of each ratio see the same machine noise
        ty.push_back(toro_yield(yields));
        ly.push_back(linux_yield(yields / 10));
        tc.push_back(toro_create(creates));
        lc.push_back(linux_create(linux_creates));
        tp.push_back(toro_pingpong(rounds, false));
        lp.push_back(linux_pingpong(rounds));
        tq.push_back(toro_pingpong(rounds, true));
        lq.push_back(linux_spin_pingpong(rounds));
    }
    std::printf("sched_bench: median of %d runs (min-max), ns\n", runs);
    report("yield", "per switch, 2 threads on 1 CPU / sched_yield, 2 pthreads pinned to 1 core", ty, ly);
    report("create_join", "per thread: create, run, exit, join / pthread_create + pthread_join", tc, lc);
    report("cross_cpu", "per round trip: semaphores, 2 CPUs, idle blocks / mutex + condvars, 2 pthreads", tp,
           lp);
    report("cross_cpu_poll", "the same, toro's idle CPUs polling / 2 pthreads spinning on a shared word", tq,
           lq);
    return 0;
}
