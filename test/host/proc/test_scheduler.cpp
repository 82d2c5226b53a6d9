// The scheduler and the sync primitives on the host: one CPU with a fake clock (deterministic orders and
// timeouts), then four std::thread CPUs with the real clock (remote creation, cross-CPU wakes, contention).
#include <catch2/catch.hpp>

#include <atomic>
#include <thread>
#include <vector>

#include "host_scheduler.hpp"

using host::fixture;
using host::sched;

namespace {

std::vector<int> trace;

struct yielder {
    int id;
    int rounds;
};
int yield_body(void* p) {
    auto* y = static_cast<yielder*>(p);
    for (int i = 0; i < y->rounds; ++i) {
        trace.push_back(y->id);
        sched->yield();
    }
    return y->id * 10;
}

// Blocks the calling (main) thread until every thread in `ts` has finished.
void join_all(std::vector<std::unique_ptr<host::test_thread>>& ts) {
    for (auto& t : ts)
        while (__atomic_load_n(&t->t.done, __ATOMIC_ACQUIRE) == 0)
            sched->sleep_until(host::platform::now() + 1);
}

} // namespace

TEST_CASE("threads of one CPU take turns in FIFO order, and exit with their result") {
    fixture f{true};
    f.enter(0, &f.main_thread);
    trace.clear();
    yielder ys[3] = {{1, 3}, {2, 3}, {3, 2}};
    std::vector<std::unique_ptr<host::test_thread>> ts;
    for (auto& y : ys) {
        ts.emplace_back(new host::test_thread(&yield_body, &y, 0));
        sched->start(&ts.back()->t);
    }
    join_all(ts);
    CHECK(trace == std::vector<int>{1, 2, 3, 1, 2, 3, 1, 2});
    CHECK(fixture::finished == 3);
    CHECK(ts[0]->t.exit_code == 10);
    CHECK(ts[2]->t.exit_code == 30);
    CHECK(ts[1]->t.state == toro::thread_state::finished);
}

TEST_CASE("sleeping threads wake in deadline order; the idle CPU waits for the earliest") {
    fixture f{true};
    f.enter(0, &f.main_thread);
    trace.clear();
    struct sleeper {
        int id;
        std::uint64_t ticks;
    } ss[] = {{1, 300}, {2, 100}, {3, 200}, {4, 100}};
    std::vector<std::unique_ptr<host::test_thread>> ts;
    for (auto& s : ss) {
        ts.emplace_back(new host::test_thread(
            [](void* p) {
                auto* s = static_cast<sleeper*>(p);
                const std::uint64_t start = host::platform::now();
                sched->sleep_until(start + s->ticks);
                trace.push_back(s->id);
                return static_cast<int>(host::platform::now() - start);
            },
            &s, 0));
        sched->start(&ts.back()->t);
    }
    join_all(ts);
    CHECK(trace == std::vector<int>{2, 4, 3, 1});
    // The fake clock jumps to each deadline exactly: no thread wakes early, none late.
    CHECK(ts[0]->t.exit_code == 300);
    CHECK(ts[1]->t.exit_code == 100);
}

TEST_CASE("a mutex keeps a critical section whole across yields") {
    fixture f{true};
    f.enter(0, &f.main_thread);
    static host::mutex m;
    static int inside, worst, total;
    inside = worst = total = 0;
    std::vector<std::unique_ptr<host::test_thread>> ts;
    for (int i = 0; i < 4; ++i) {
        ts.emplace_back(new host::test_thread(
            [](void*) {
                for (int k = 0; k < 50; ++k) {
                    m.lock();
                    worst = std::max(worst, ++inside);
                    sched->yield(); // others run, and must block on the mutex
                    ++total;
                    --inside;
                    m.unlock();
                    sched->yield();
                }
                return 0;
            },
            nullptr, 0));
        sched->start(&ts.back()->t);
    }
    join_all(ts);
    CHECK(worst == 1);
    CHECK(total == 200);
    CHECK_FALSE(m.try_lock() == false);
    m.unlock();
}

TEST_CASE("timed waits: a semaphore times out at its deadline, an event releases every waiter") {
    fixture f{true};
    f.enter(0, &f.main_thread);
    host::semaphore sem{0};
    const std::uint64_t start = host::platform::now();
    CHECK_FALSE(sem.acquire_until(start + 500));
    CHECK(host::platform::now() == start + 500);
    sem.release(2);
    CHECK(sem.acquire_until(start + 600));
    CHECK(sem.count() == 1);

    static host::event ev;
    ev.reset();
    static int released;
    released = 0;
    std::vector<std::unique_ptr<host::test_thread>> ts;
    for (int i = 0; i < 3; ++i) {
        ts.emplace_back(new host::test_thread(
            [](void*) {
                ev.wait();
                ++released;
                return 0;
            },
            nullptr, 0));
        sched->start(&ts.back()->t);
    }
    sched->yield(); // all three now wait
    CHECK(released == 0);
    ev.set();
    join_all(ts);
    CHECK(released == 3);
    CHECK(ev.wait_until(host::platform::now() + 1)); // set stays set
}

TEST_CASE("a wake that loses to the timeout does not make the thread ready twice") {
    fixture f{true};
    f.enter(0, &f.main_thread);
    static host::wait_queue q;
    static bool result;
    static int resumed;
    static std::size_t woken;
    result = true;
    resumed = 0;
    woken = 99;
    const std::uint64_t t0 = host::platform::now();
    host::test_thread waiter{[](void*) {
                                 result = q.wait_while([] { return true; }, host::platform::now() + 50);
                                 ++resumed;
                                 return 0;
                             },
                             nullptr, 0};
    sched->start(&waiter.t);
    sched->yield(); // the waiter queues itself and blocks, its timeout at t0 + 50
    REQUIRE(q.waiting() == 1);
    host::test_thread waker{[](void*) {
                                woken = q.wake(1);
                                return 0;
                            },
                            nullptr, 0};
    sched->start(&waker.t);
    // Time passes the deadline with the waker queued: the next scheduling point expires the waiter (its
    // timeout wins the wake word) and queues it behind the waker, which then wakes a thread still linked in
    // the queue but no longer claimable.
    host::platform::fake_now = t0 + 60;
    sched->yield();
    while (__atomic_load_n(&waiter.t.done, __ATOMIC_ACQUIRE) == 0 ||
           __atomic_load_n(&waker.t.done, __ATOMIC_ACQUIRE) == 0)
        sched->yield();
    CHECK(woken == 0);
    CHECK_FALSE(result);
    CHECK(resumed == 1);
    CHECK(q.waiting() == 0);
    CHECK(toro::load_wake(&waiter.t) == toro::wake_reason::timed_out);
}

TEST_CASE("four CPUs: remote creation, cross-CPU wakes and a contended mutex") {
    fixture f{false};
    host::platform::lost_kicks = 0;
    constexpr int per_thread = 2000;
    static host::mutex m;
    static long counter;
    static host::event stop;
    static host::semaphore ping, pong;
    counter = 0;
    stop.reset();
    for (int i = 0; i < 3; ++i) f.idle_stacks.emplace_back(new std::byte[64 * 1024]);
    std::vector<toro::thread> mains(host::cpus);

    // CPUs 1..3: a main thread that waits for the end; their idle loops run the threads sent to them.
    std::vector<std::thread> cpus;
    std::atomic<int> up{0};
    for (std::uint32_t c = 1; c < host::cpus; ++c)
        cpus.emplace_back([&, c] {
            host::platform::cpu = c;
            sched->start_cpu(c, &mains[c], f.idle_stacks[c - 1].get(),
                             f.idle_stacks[c - 1].get() + 64 * 1024);
            ++up;
            stop.wait();
        });
    host::platform::cpu = 0;
    f.idle_stacks.emplace_back(new std::byte[64 * 1024]);
    sched->start_cpu(0, &mains[0], f.idle_stacks.back().get(), f.idle_stacks.back().get() + 64 * 1024);
    while (up != 3) std::this_thread::yield();

    std::vector<std::unique_ptr<host::test_thread>> ts;
    for (std::uint32_t c = 0; c < host::cpus; ++c)
        for (int k = 0; k < 2; ++k) {
            ts.emplace_back(new host::test_thread(
                [](void*) {
                    for (int i = 0; i < per_thread; ++i) {
                        m.lock();
                        ++counter;
                        m.unlock();
                        if (i % 16 == 0) sched->yield();
                    }
                    return static_cast<int>(host::platform::this_cpu());
                },
                nullptr, c));
            sched->start(&ts.back()->t); // from CPU 0: remote creation for CPUs 1..3
        }
    // Ping-pong between CPUs 1 and 2 through semaphores: each round is two cross-CPU wakes.
    static int rounds_done;
    rounds_done = 0;
    ts.emplace_back(new host::test_thread(
        [](void*) {
            for (int i = 0; i < 500; ++i) {
                ping.release();
                pong.acquire();
            }
            return 0;
        },
        nullptr, 1));
    sched->start(&ts.back()->t);
    ts.emplace_back(new host::test_thread(
        [](void*) {
            for (int i = 0; i < 500; ++i) {
                ping.acquire();
                ++rounds_done;
                pong.release();
            }
            return 0;
        },
        nullptr, 2));
    sched->start(&ts.back()->t);

    join_all(ts);
    stop.set();
    for (auto& t : cpus) t.join();
    // An idle CPU with nothing to wait for sleeps until kicked; had a kick been lost, it would have slept
    // out its (long) safety timeout.
    CHECK(host::platform::lost_kicks == 0);
    CHECK(counter == long{per_thread} * 2 * host::cpus);
    CHECK(rounds_done == 500);
    for (std::size_t i = 0; i < 2 * host::cpus; ++i) CHECK(ts[i]->t.exit_code == static_cast<int>(i / 2));
}
