// The process unit's containers and its pure selection policy: intrusive lists, the SPSC mailbox (alone and
// between two real threads), insertion by deadline, and select_next.
#include <catch2/catch.hpp>

#include <thread>
#include <vector>

#include <toro/proc/queues.hpp>
#include <toro/proc/thread.hpp>

using toro::thread;

TEST_CASE("intrusive lists keep FIFO order and remove from anywhere") {
    thread a, b, c;
    toro::ready_queue q;
    q.push_back(&a);
    q.push_back(&b);
    q.push_back(&c);
    CHECK(q.size() == 3);
    q.remove(&b);
    CHECK_FALSE(toro::ready_queue::linked(&b));
    CHECK(q.pop_front() == &a);
    CHECK(q.pop_front() == &c);
    CHECK(q.pop_front() == nullptr);
    CHECK(q.empty());
    // The same thread in two lists at once, through different links.
    toro::sleep_list s;
    q.push_back(&a);
    s.push_back(&a);
    q.remove(&a);
    CHECK(toro::sleep_list::linked(&a));
    CHECK(s.front() == &a);
}

TEST_CASE("the mailbox is a bounded FIFO: full, empty and wrap-around") {
    toro::spsc_ring<thread, 4> r;
    thread t[6];
    CHECK(r.empty());
    CHECK(r.pop() == nullptr);
    for (int round = 0; round < 3; ++round) { // indices run past the capacity several times
        for (int i = 0; i < 4; ++i) REQUIRE(r.push(&t[i]));
        CHECK_FALSE(r.push(&t[4]));
        for (int i = 0; i < 4; ++i) REQUIRE(r.pop() == &t[i]);
        CHECK(r.empty());
    }
}

TEST_CASE("the mailbox hands a million items from one thread to another in order") {
    static toro::spsc_ring<thread, 32> r;
    constexpr std::uintptr_t n = 1'000'000;
    std::thread producer{[] {
        for (std::uintptr_t i = 1; i <= n; ++i)
            while (!r.push(reinterpret_cast<thread*>(i * 16))) std::this_thread::yield();
    }};
    std::uintptr_t expected = 1, bad = 0;
    while (expected <= n) {
        thread* t = r.pop();
        if (t == nullptr) continue;
        if (reinterpret_cast<std::uintptr_t>(t) != expected * 16) ++bad;
        ++expected;
    }
    producer.join();
    CHECK(bad == 0);
    CHECK(r.empty());
}

TEST_CASE("sleepers are kept by deadline, FIFO among equal deadlines") {
    thread t[5];
    const std::uint64_t deadlines[] = {50, 10, 50, 30, 10};
    toro::sleep_list s;
    for (int i = 0; i < 5; ++i) {
        t[i].deadline = deadlines[i];
        toro::insert_by_deadline(s, &t[i]);
    }
    std::vector<thread*> order;
    while (thread* x = s.pop_front()) order.push_back(x);
    CHECK(order == std::vector<thread*>{&t[1], &t[4], &t[3], &t[0], &t[2]});
}

TEST_CASE("select_next: expired sleepers join the ready queue behind it; else idle until the next deadline") {
    thread r1, r2, s1, s2, s3;
    toro::ready_queue ready;
    toro::sleep_list sleepers;
    ready.push_back(&r1);
    ready.push_back(&r2);
    s1.deadline = 100;
    s2.deadline = 200;
    s3.deadline = 300;
    for (thread* t : {&s1, &s2, &s3}) toro::insert_by_deadline(sleepers, t);

    std::vector<thread*> expired;
    auto expire = [&](thread* t) {
        expired.push_back(t);
        return t != &s2; // s2 was woken by someone else first: not made ready twice
    };
    toro::selection sel = toro::select_next(ready, sleepers, 250, expire);
    CHECK(sel.next == &r1);
    CHECK(expired == std::vector<thread*>{&s1, &s2});
    CHECK(ready.pop_front() == &r2);
    CHECK(ready.pop_front() == &s1);
    CHECK(ready.empty());

    sel = toro::select_next(ready, sleepers, 250, expire);
    CHECK(sel.next == nullptr);
    CHECK(sel.idle_until == 300);
    sleepers.pop_front();
    sel = toro::select_next(ready, sleepers, 250, expire);
    CHECK(sel.next == nullptr);
    CHECK(sel.idle_until == 0); // nothing to wait for: idle until an interrupt
}
