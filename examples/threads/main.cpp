// threads: Toro's scheduler example re-imagined. One thread per CPU, each sleeping a different time and
// printing where it runs; a mutex keeps their lines whole; the main thread joins them all.
#include <toro/kernel.hpp>
#include <toro/mem/memory_unit.hpp>
#include <toro/proc/process_unit.hpp>

using app = toro::appliance<toro::memory, toro::process>;

namespace {

toro::mutex console_lock;

int worker(void* arg) {
    const auto n = static_cast<std::uint32_t>(reinterpret_cast<std::uintptr_t>(arg));
    for (int round = 1; round <= 3; ++round) {
        toro::thread_sleep(10 * (n + 1)); // ThreadSleep: the CPU halts meanwhile
        console_lock.lock();
        toro::print("thread {} on CPU {}: round {} at {} ms\n", toro::current_thread_id(),
                    toro::current_cpu(), round, toro::now_ns() / 1'000'000);
        console_lock.unlock();
    }
    return static_cast<int>(n);
}

} // namespace

int app_main(app& os) {
    toro::print("{} CPU(s), TSC {} MHz ({}), LAPIC {} timer\n", os.cpus(), os.tsc_hz() / 1'000'000,
                os.tsc_source(), os.timer_tsc_deadline() ? "TSC-deadline" : "one-shot");
    toro::thread_handle workers[toro::max_cpus];
    for (std::uint32_t cpu = 0; cpu < os.cpus(); ++cpu) {
        auto t = toro::begin_thread(&worker, reinterpret_cast<void*>(std::uintptr_t{cpu}), {.cpu = cpu});
        if (!t) {
            toro::print("begin_thread on CPU {}: {}\n", cpu, t.error());
            return 1;
        }
        workers[cpu] = std::move(*t);
    }
    int sum = 0;
    for (std::uint32_t cpu = 0; cpu < os.cpus(); ++cpu) sum += *workers[cpu].join();
    toro::print("all {} threads joined (sum of results {})\n", os.cpus(), sum);
    return 0;
}

TORO_APPLIANCE(app, app_main)
