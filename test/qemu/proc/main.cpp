// proc: a test appliance for the process unit. Command line (one word):
//   cpus      a thread on every CPU reports where it runs
//   many      10,000 threads created and joined in rounds over every CPU; memory must come back exactly
//   sleep     20 sleeps of 10 ms: how late each wakes (never early)
//   idle      every thread (and main) sleeps 3 s, between two marks the harness times QEMU's CPU use at
//   sync      mutex, semaphore, event and timed waits across CPUs
//   overflow  a thread recurses through its guard page: the report names the thread
//   bench     yield, create+join, remote creation latency, sleep overshoot (./cloudit bench sched)
//   irq       the PIT's interrupt, routed through the IOAPIC to the last CPU, wakes a thread waiting on CPU 0
#include <toro/kernel.hpp>
#include <toro/mem/memory_unit.hpp>
#include <toro/proc/process_unit.hpp>

using proc_os = toro::appliance<toro::memory, toro::process>;

namespace {

std::uint64_t counter = 0; // atomic

int report_cpu(void* arg) {
    const auto want = static_cast<std::uint32_t>(reinterpret_cast<std::uintptr_t>(arg));
    toro::print("proc: thread {} asked for CPU {}, runs on CPU {} (APIC id {})\n", toro::current_thread_id(),
                want, toro::current_cpu(), toro::arch::this_cpu().apic_id);
    return static_cast<int>(toro::current_cpu());
}

int cpus(proc_os& os) {
    toro::thread_handle hs[toro::max_cpus];
    for (std::uint32_t c = 0; c < os.cpus(); ++c) {
        auto h = toro::begin_thread(&report_cpu, reinterpret_cast<void*>(std::uintptr_t{c}), {.cpu = c});
        if (!h) {
            toro::print("proc: begin_thread on CPU {}: {}\n", c, h.error());
            toro::panic("proc: begin_thread failed");
        }
        hs[c] = std::move(*h);
    }
    int wrong = 0;
    for (std::uint32_t c = 0; c < os.cpus(); ++c) wrong += *hs[c].join() != static_cast<int>(c);
    auto bad = toro::begin_thread(&report_cpu, nullptr, {.cpu = os.cpus()});
    toro::print("proc: {} CPUs, {} threads on the wrong CPU; a thread on CPU {}: {}\n", os.cpus(), wrong,
                os.cpus(), bad ? toro::string_view{"created"} : bad.error().what);
    return wrong;
}

int bump(void*) {
    __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED);
    return 7;
}

int many(proc_os& os) {
    constexpr int rounds = 100, per_round = 100;
    auto round = [&] {
        toro::thread_handle hs[per_round];
        for (int i = 0; i < per_round; ++i) {
            auto h = toro::begin_thread(&bump, nullptr, {.cpu = static_cast<std::uint32_t>(i) % os.cpus()});
            if (!h) {
                toro::print("proc: begin_thread failed: {}\n", h.error());
                return false;
            }
            hs[i] = std::move(*h);
        }
        for (auto& h : hs)
            if (*h.join() != 7) return false;
        return true;
    };
    if (!round()) return 1; // warms the stack caches and slab pages
    const std::size_t free_before = toro::kernel_pages.free_bytes();
    const std::size_t live_before = toro::kernel_heap.of(0).stats().live_blocks;
    for (int r = 1; r < rounds; ++r)
        if (!round()) return 1;
    const std::size_t free_after = toro::kernel_pages.free_bytes();
    const std::size_t live_after = toro::kernel_heap.of(0).stats().live_blocks;
    toro::print("proc: {} threads finished on {} CPUs, counter {}\n", rounds * per_round, os.cpus(),
                __atomic_load_n(&counter, __ATOMIC_RELAXED));
    toro::print("proc: pages leaked {} bytes, heap blocks leaked {}\n",
                static_cast<std::int64_t>(free_before - free_after),
                static_cast<std::int64_t>(live_after - live_before));
    return 0;
}

int sleep_test() {
    constexpr int n = 20;
    std::uint64_t late[n];
    std::uint64_t early = 0;
    for (int i = 0; i < n; ++i) {
        const std::uint64_t t0 = toro::now_ns();
        toro::thread_sleep(10);
        const std::uint64_t took = toro::now_ns() - t0;
        if (took < 10'000'000) ++early;
        late[i] = took > 10'000'000 ? took - 10'000'000 : 0;
    }
    for (int i = 1; i < n; ++i) // insertion sort: tiny
        for (int j = i; j > 0 && late[j] < late[j - 1]; --j) {
            const std::uint64_t t = late[j];
            late[j] = late[j - 1];
            late[j - 1] = t;
        }
    toro::print("proc: sleep 10 ms x{}: early {}, late by median {} us, max {} us\n", n, early,
                late[n / 2] / 1000, late[n - 1] / 1000);
    return 0;
}

int sleeper(void*) {
    toro::thread_sleep(3000);
    return 0;
}

int idle(proc_os& os) {
    toro::thread_handle hs[toro::max_cpus];
    toro::print("proc: idle begin\n");
    for (std::uint32_t c = 0; c < os.cpus(); ++c)
        hs[c] = std::move(*toro::begin_thread(&sleeper, nullptr, {.cpu = c}));
    toro::thread_sleep(3000);
    for (std::uint32_t c = 0; c < os.cpus(); ++c) (void)hs[c].join();
    toro::print("proc: idle end\n");
    return 0;
}

toro::mutex m;
toro::semaphore ping, pong;
toro::event go;
std::uint64_t guarded = 0; // only under m
int contender(void*) {
    go.wait();
    for (int i = 0; i < 1000; ++i) {
        m.lock();
        const std::uint64_t v = guarded;
        if (i % 7 == 0) toro::yield(); // others run and must block on m
        guarded = v + 1;
        m.unlock();
    }
    return 0;
}
int ponger(void*) {
    for (int i = 0; i < 1000; ++i) {
        ping.acquire();
        pong.release();
    }
    return 0;
}

int sync(proc_os& os) {
    constexpr int per_cpu = 3;
    toro::thread_handle hs[toro::max_cpus * per_cpu];
    int n = 0;
    for (std::uint32_t c = 0; c < os.cpus(); ++c)
        for (int k = 0; k < per_cpu; ++k)
            hs[n++] = std::move(*toro::begin_thread(&contender, nullptr, {.cpu = c}));
    toro::yield();
    go.set(); // releases every contender at once, on every CPU
    for (int i = 0; i < n; ++i) (void)hs[i].join();
    const bool counted = guarded == static_cast<std::uint64_t>(n) * 1000;

    auto p = toro::begin_thread(&ponger, nullptr, {.cpu = os.cpus() - 1});
    const std::uint64_t t0 = toro::now_ns();
    for (int i = 0; i < 1000; ++i) {
        ping.release();
        pong.acquire();
    }
    const std::uint64_t round_trip = (toro::now_ns() - t0) / 1000;
    (void)p->join();

    const std::uint64_t w0 = toro::now_ns();
    const bool got = ping.acquire_until(toro::deadline_after_ns(5'000'000));
    const std::uint64_t waited = toro::now_ns() - w0;
    toro::print("proc: mutex counter {} ({}), ping-pong CPU 0 <-> CPU {}: {} us per round trip\n", guarded,
                counted ? "right" : "WRONG", os.cpus() - 1, round_trip / 1000);
    toro::print("proc: timed wait: {} after {} ms\n", got ? "acquired" : "timed out", waited / 1'000'000);
    return counted && !got && waited >= 5'000'000 ? 0 : 1;
}

[[gnu::noinline]] int recurse(int depth) {
    volatile char pad[512];
    pad[0] = static_cast<char>(depth);
    return depth > 1'000'000 ? pad[0] : recurse(depth + 1) + pad[0];
}
int overflow_body(void*) {
    return recurse(0);
}

int bench(proc_os& os) {
    // yield: two threads on CPU 0 passing the CPU back and forth
    constexpr int yields = 20000;
    auto y = toro::begin_thread(
        [](void*) {
            for (int i = 0; i < yields; ++i) toro::yield();
            return 0;
        },
        nullptr);
    std::uint64_t t0 = toro::now_ns();
    for (int i = 0; i < yields; ++i) toro::yield();
    const std::uint64_t yield_ns = (toro::now_ns() - t0) / (2 * yields);
    (void)y->join();

    constexpr int creates = 2000;
    t0 = toro::now_ns();
    for (int i = 0; i < creates; ++i) (void)toro::begin_thread(&bump, nullptr)->join();
    const std::uint64_t create_ns = (toro::now_ns() - t0) / creates;

    static std::uint64_t started_at;
    std::uint64_t remote_ns = 0;
    constexpr int remotes = 200;
    if (os.cpus() > 1) {
        std::uint64_t sum = 0;
        for (int i = 0; i < remotes; ++i) {
            t0 = toro::now_ns();
            auto h = toro::begin_thread(
                [](void*) {
                    started_at = toro::now_ns();
                    return 0;
                },
                nullptr, {.cpu = 1});
            (void)h->join();
            sum += started_at - t0;
        }
        remote_ns = sum / remotes;
    }
    std::uint64_t worst = 0, total = 0;
    for (int i = 0; i < 20; ++i) {
        t0 = toro::now_ns();
        toro::thread_sleep(10);
        const std::uint64_t late = toro::now_ns() - t0 - 10'000'000;
        total += late;
        worst = late > worst ? late : worst;
    }
    toro::print("bench: yield_ns {} create_join_ns {} remote_start_ns {} sleep_late_avg_ns {} "
                "sleep_late_max_ns {} cpus {}\n",
                yield_ns, create_ns, remote_ns, total / 20, worst, os.cpus());
    return 0;
}

toro::event pit_fired;
std::uint32_t pit_calls = 0, pit_cpu = ~0u;

int irq_test(proc_os& os) {
    auto vector = toro::register_interrupt(
        [](void*) {
            ++pit_calls;
            pit_cpu = toro::current_cpu();
            pit_fired.set(); // wakes the waiter, on another CPU when there is one
        },
        nullptr);
    if (!vector) return toro::print("proc: irq: {}\n", vector.error()), 1;
    const std::uint32_t cpu = os.cpus() - 1;
    if (auto r = toro::route_isa_irq(0, *vector, cpu); !r)
        return toro::print("proc: irq: {}\n", r.error()), 1;
    // An edge the PIT raised while the pin was masked (TSC calibration used channel 0) may be pending.
    toro::thread_sleep(2);
    pit_fired.reset();
    pit_calls = 0;
    // Channel 0, mode 0 (interrupt on terminal count), 5966 clocks: 5 ms.
    toro::arch::outb(0x43, 0x30);
    toro::arch::outb(0x40, 5966 & 0xff);
    toro::arch::outb(0x40, 5966 >> 8);
    const std::uint64_t t0 = toro::now_ns();
    const bool woke = pit_fired.wait_until(toro::deadline_after_ns(1'000'000'000));
    const std::uint64_t us = (toro::now_ns() - t0) / 1000;
    toro::print("proc: irq: vector {:#x} on CPU {}: {} after {} us, handler ran {} time(s) on CPU {}\n",
                *vector, cpu, woke ? "woken" : "timed out", us, pit_calls, pit_cpu);
    return woke && pit_calls == 1 && pit_cpu == cpu && us >= 4000 ? 0 : 1;
}

} // namespace

int app_main(proc_os& os) {
    const toro::string_view mode = os.boot.cmdline();
    toro::print("proc: {} CPU(s), TSC {} kHz from {}, {}, {} timer\n", os.cpus(), os.tsc_hz() / 1000,
                os.tsc_source(), os.apic_x2() ? "x2APIC" : "xAPIC",
                os.timer_tsc_deadline() ? "TSC-deadline" : "one-shot");
    if (toro::has_word(mode, "cpus")) return cpus(os);
    if (toro::has_word(mode, "many")) return many(os);
    if (toro::has_word(mode, "sleep")) return sleep_test();
    if (toro::has_word(mode, "idle")) return idle(os);
    if (toro::has_word(mode, "sync")) return sync(os);
    if (toro::has_word(mode, "overflow"))
        return *toro::begin_thread(&overflow_body, nullptr, {.stack_size = 8192})->join();
    if (toro::has_word(mode, "bench")) return bench(os);
    if (toro::has_word(mode, "irq")) return irq_test(os);
    toro::print("proc: unknown mode '{}'\n", mode);
    return 2;
}

TORO_APPLIANCE(proc_os, app_main)
