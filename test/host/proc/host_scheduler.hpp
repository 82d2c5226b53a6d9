// A host platform for the process unit's scheduler: std::thread "CPUs", a clock that is either fake (jumps to
// the next deadline when a CPU idles: deterministic single-CPU tests) or real (steady_clock ns: multi-CPU
// tests), condition variables for idle and kick. Threads run on heap stacks through the real x86-64 context
// switch.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include <toro/proc/scheduler.hpp>
#include <toro/proc/sync.hpp>

namespace host {

inline constexpr std::uint32_t cpus = 4;

struct cpu_signal {
    std::mutex m;
    std::condition_variable cv;
    bool kicked = false;
};

struct platform {
    static inline thread_local std::uint32_t cpu = 0;
    static inline bool fake_clock = true;
    static inline std::atomic<std::uint64_t> fake_now{1000};
    static inline std::array<cpu_signal, cpus> signals;
    static inline std::atomic<std::uint64_t> kicks{0};
    static inline std::atomic<std::uint64_t> lost_kicks{0};

    static std::uint32_t this_cpu() { return cpu; }
    static std::uint64_t now() {
        if (fake_clock) return fake_now.load();
        return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                              std::chrono::steady_clock::now().time_since_epoch())
                                              .count());
    }
    static void idle_wait(std::uint64_t deadline) {
        if (fake_clock) {
            // Single CPU: nothing else can make a thread ready, so time jumps to the deadline.
            std::uint64_t n = fake_now.load();
            while (deadline > n && !fake_now.compare_exchange_weak(n, deadline)) {
            }
            return;
        }
        cpu_signal& s = signals[cpu];
        std::unique_lock<std::mutex> l{s.m};
        if (deadline != 0) {
            const std::uint64_t n = now();
            s.cv.wait_for(l, std::chrono::nanoseconds(deadline > n ? deadline - n : 0),
                          [&] { return s.kicked; });
        } else if (!s.cv.wait_for(l, std::chrono::seconds(2), [&] { return s.kicked; })) {
            ++lost_kicks; // nothing to wait for but a kick, and none came: the scheduler lost one
        }
        s.kicked = false;
    }
    static void kick(std::uint32_t c) {
        ++kicks;
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

using scheduler = toro::scheduler<toro::x86_64_context, platform, cpus>;

// The scheduler under test and the facade the sync primitives use.
inline scheduler* sched = nullptr;
struct facade {
    static toro::thread* current() { return sched->current(); }
    static toro::wake_reason block(std::uint64_t deadline) { return sched->block(deadline); }
    static bool claim(toro::thread* t) { return scheduler::claim(t); }
    static void make_ready(toro::thread* t) { sched->make_ready(t); }
};
using mutex = toro::basic_mutex<facade>;
using semaphore = toro::basic_semaphore<facade>;
using event = toro::basic_event<facade>;
using wait_queue = toro::basic_wait_queue<facade>;

// A thread with its own heap stack.
struct test_thread {
    toro::thread t;
    std::unique_ptr<std::byte[]> stack;
    explicit test_thread(int (*fn)(void*), void* arg, std::uint32_t cpu, std::size_t size = 64 * 1024)
        : stack{new std::byte[size]} {
        t.fn = fn;
        t.arg = arg;
        t.cpu = cpu;
        sched->prepare(&t, stack.get() + size);
    }
};

// Everything one test needs: a fresh scheduler, CPU `cpu` driven from the calling OS thread as its main
// thread (its idle loop on a stack of its own), finished threads counted.
struct fixture {
    std::unique_ptr<scheduler> s{new scheduler};
    toro::thread main_thread;
    std::vector<std::unique_ptr<std::byte[]>> idle_stacks;
    static inline std::atomic<int> finished{0};

    explicit fixture(bool fake_clock) {
        sched = s.get();
        s->make_instance();
        platform::fake_clock = fake_clock;
        platform::fake_now = 1000;
        finished = 0;
        s->set_finished_hook([](toro::thread* t) {
            __atomic_store_n(&t->done, 1u, __ATOMIC_RELEASE);
            ++finished;
        });
    }
    void enter(std::uint32_t cpu, toro::thread* self) {
        platform::cpu = cpu;
        idle_stacks.emplace_back(new std::byte[64 * 1024]);
        s->start_cpu(cpu, self, idle_stacks.back().get(), idle_stacks.back().get() + 64 * 1024);
    }
};

} // namespace host
