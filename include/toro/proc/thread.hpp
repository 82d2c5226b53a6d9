// A thread as the scheduler sees it: saved stack pointer, links for the containers it can be in, its CPU,
// and how it was last woken. Threads never migrate: `cpu` is fixed at creation (Toro's model).
#pragma once

#include <cstddef>
#include <cstdint>

#include <toro/proc/queues.hpp>

namespace toro {

enum class thread_state : std::uint8_t { ready, running, blocked, finished };

// How a blocked thread was woken. A waker and a timeout race for it with a compare-exchange from `waiting`;
// only the winner makes the thread ready, so it is never made ready twice.
enum class wake_reason : std::uint32_t { none, waiting, woken, timed_out };

struct thread {
    std::uintptr_t sp = 0;      // saved stack pointer while not running
    list_link run_link;         // its CPU's ready queue
    list_link wait_link;        // a wait queue (mutex, semaphore, event, join)
    list_link timer_link;       // its CPU's sleep list, ordered by deadline
    std::uint64_t deadline = 0; // in clock ticks, while in the sleep list
    std::uint32_t wake = 0;     // a wake_reason; atomic (use the functions below)
    thread_state state = thread_state::ready;
    bool detached = false;
    std::uint32_t cpu = 0;
    std::uint64_t id = 0;
    int (*fn)(void*) = nullptr;
    void* arg = nullptr;
    int exit_code = 0;
    std::uint32_t done = 0;         // 1 once it has finished and its CPU no longer runs on its stack (atomic)
    void* join_queue = nullptr;     // the wait queue joiners sleep on (owned by the process layer)
    std::byte* stack_low = nullptr; // usable stack [stack_low, stack_high), for backtraces and reports
    std::byte* stack_high = nullptr;
    std::byte* stack_guard = nullptr; // the unmapped page below it, nullptr for stacks it does not own
};

inline wake_reason load_wake(const thread* t) {
    return static_cast<wake_reason>(__atomic_load_n(&t->wake, __ATOMIC_ACQUIRE));
}
inline void store_wake(thread* t, wake_reason r) {
    __atomic_store_n(&t->wake, static_cast<std::uint32_t>(r), __ATOMIC_RELEASE);
}
// Moves t->wake from `from` to `to`; false (and nothing changed) if it was not `from`.
inline bool change_wake(thread* t, wake_reason from, wake_reason to) {
    auto expected = static_cast<std::uint32_t>(from);
    return __atomic_compare_exchange_n(&t->wake, &expected, static_cast<std::uint32_t>(to), false,
                                       __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

using ready_queue = intrusive_list<thread, &thread::run_link>;
using wait_list = intrusive_list<thread, &thread::wait_link>;
using sleep_list = intrusive_list<thread, &thread::timer_link>;

// Inserts t by deadline, after threads with the same deadline (FIFO among equals). Scans from the end:
// threads sleeping for the same length arrive in deadline order, so the common case is O(1).
inline void insert_by_deadline(sleep_list& sleepers, thread* t) {
    thread* pos = sleepers.back();
    while (pos != nullptr && pos->deadline > t->deadline) pos = sleep_list::prev(pos);
    sleepers.insert_before(pos != nullptr ? sleep_list::next(pos) : sleepers.front(), t);
}

// The scheduling policy, pure: given the ready queue, the sleep list and the time, move every thread whose
// deadline has passed to the ready queue (timeouts race with wakers: `expire` decides, and returns whether
// the thread is to run), then choose: the ready queue's head (round robin, FIFO), or else idle until the
// earliest deadline (0: no deadline, sleep until an interrupt).
struct selection {
    thread* next = nullptr;
    std::uint64_t idle_until = 0;
};

template <class Expire>
selection select_next(ready_queue& ready, sleep_list& sleepers, std::uint64_t now, Expire&& expire) {
    while (!sleepers.empty() && sleepers.front()->deadline <= now) {
        thread* t = sleepers.pop_front();
        if (expire(t)) ready.push_back(t);
    }
    if (thread* t = ready.pop_front()) return {t, 0};
    return {nullptr, sleepers.empty() ? 0 : sleepers.front()->deadline};
}

} // namespace toro
