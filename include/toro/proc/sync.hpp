// Synchronisation for cooperative threads on one or several CPUs: wait_queue (with timeout), mutex,
// semaphore, event. Templates over a scheduler facade S with static current(), block(deadline),
// make_ready(t) and now() (the kernel's is toro::threads; host tests bring their own), so the kernel names
// them toro::mutex and friends.
//
// A wait queue's list is guarded by a spin lock, because wakers may run on other CPUs. Nothing yields while
// holding it: a waker claims threads under the lock (the compare-exchange that also settles the race with a
// timeout) and makes them ready after releasing it. Every primitive changes its condition under that lock
// too, so a waiter that sees the change knows the waker is done with the object and may free it.
#pragma once

#include <cstddef>
#include <cstdint>

#include <toro/mem/page_source.hpp> // detail::spin_lock
#include <toro/proc/thread.hpp>

namespace toro {

template <class S>
class basic_wait_queue {
public:
    // Blocks the calling thread while still_blocked() (evaluated under the queue's lock, so a wake between
    // the check and the sleep is not lost), until woken or until the deadline (clock ticks, 0: none).
    // Returns false on timeout.
    template <class Pred>
    bool wait_while(Pred&& still_blocked, std::uint64_t deadline = 0) {
        thread* t = S::current();
        lock_.lock();
        if (!still_blocked()) {
            lock_.unlock();
            return true;
        }
        store_wake(t, wake_reason::waiting);
        waiters_.push_back(t);
        lock_.unlock();
        if (S::block(deadline) != wake_reason::timed_out) return true;
        lock_.lock();
        if (wait_list::linked(t)) waiters_.remove(t);
        lock_.unlock();
        return false;
    }

    // Wakes up to n waiters, oldest first; returns how many it woke.
    std::size_t wake(std::size_t n = 1) {
        return update_and_wake([] {}, n);
    }
    std::size_t wake_all() { return wake(~std::size_t{0}); }

    // Runs update() under the queue's lock, then wakes up to n waiters. A waiter's condition changed inside
    // the lock cannot be seen by it before the waker is done with the queue: the queue may then be freed by
    // the woken thread (a thread's join queue is).
    template <class Update>
    std::size_t update_and_wake(Update&& update, std::size_t n) {
        thread* claimed = nullptr; // chained through wait_link.next: they are ours until made ready
        std::size_t woken = 0;
        lock_.lock();
        update();
        while (woken < n && !waiters_.empty()) {
            thread* t = waiters_.pop_front();
            if (!S::claim(t)) continue; // its timeout won; it is on its way out
            t->wait_link.next = claimed;
            claimed = t;
            ++woken;
        }
        lock_.unlock();
        // Made ready in the order they waited.
        thread* ordered = nullptr;
        while (claimed != nullptr) {
            thread* next = static_cast<thread*>(claimed->wait_link.next);
            claimed->wait_link.next = ordered;
            ordered = claimed;
            claimed = next;
        }
        while (ordered != nullptr) {
            thread* next = static_cast<thread*>(ordered->wait_link.next);
            ordered->wait_link.next = nullptr;
            S::make_ready(ordered);
            ordered = next;
        }
        return woken;
    }

    std::size_t waiting() {
        lock_.lock();
        const std::size_t n = waiters_.size();
        lock_.unlock();
        return n;
    }

private:
    detail::spin_lock lock_;
    wait_list waiters_;
};

// Mutual exclusion between threads, on any CPUs. Not recursive; unlocking a mutex the caller does not hold
// is a bug the caller's TORO_ASSERT should catch (lock() records the owner).
template <class S>
class basic_mutex {
public:
    void lock() {
        while (!try_lock()) queue_.wait_while([&] { return __atomic_load_n(&held_, __ATOMIC_ACQUIRE) != 0; });
    }
    bool try_lock() {
        std::uint32_t expected = 0;
        if (!__atomic_compare_exchange_n(&held_, &expected, 1u, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return false;
        owner_ = S::current();
        return true;
    }
    // The release happens under the queue's lock (update_and_wake): a thread that then takes the mutex,
    // unlocks it and frees it cannot free it while this unlock still touches the queue.
    void unlock() {
        owner_ = nullptr;
        queue_.update_and_wake([&] { __atomic_store_n(&held_, 0u, __ATOMIC_RELEASE); }, 1);
    }
    thread* owner() const { return owner_; }

private:
    std::uint32_t held_ = 0;
    thread* owner_ = nullptr;
    basic_wait_queue<S> queue_;
};

// Counting semaphore. acquire_until returns false when the deadline passes first.
template <class S>
class basic_semaphore {
public:
    explicit basic_semaphore(std::uint32_t initial = 0) : count_{initial} {}

    bool try_acquire() {
        std::uint32_t c = __atomic_load_n(&count_, __ATOMIC_RELAXED);
        while (c != 0)
            if (__atomic_compare_exchange_n(&count_, &c, c - 1, true, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
                return true;
        return false;
    }
    bool acquire_until(std::uint64_t deadline) {
        while (!try_acquire())
            if (!queue_.wait_while([&] { return __atomic_load_n(&count_, __ATOMIC_ACQUIRE) == 0; }, deadline))
                return try_acquire(); // a release may have landed with the timeout
        return true;
    }
    void acquire() { (void)acquire_until(0); }
    void release(std::uint32_t n = 1) {
        queue_.update_and_wake([&] { __atomic_fetch_add(&count_, n, __ATOMIC_RELEASE); }, n);
    }
    std::uint32_t count() const { return __atomic_load_n(&count_, __ATOMIC_RELAXED); }

private:
    std::uint32_t count_;
    basic_wait_queue<S> queue_;
};

// An event threads wait for: set() releases every waiter and stays set until reset().
template <class S>
class basic_event {
public:
    void set() {
        queue_.update_and_wake([&] { __atomic_store_n(&set_, 1u, __ATOMIC_RELEASE); }, ~std::size_t{0});
    }
    void reset() { __atomic_store_n(&set_, 0u, __ATOMIC_RELEASE); }
    bool is_set() const { return __atomic_load_n(&set_, __ATOMIC_ACQUIRE) != 0; }
    bool wait_until(std::uint64_t deadline) {
        return queue_.wait_while([&] { return !is_set(); }, deadline) || is_set();
    }
    void wait() { (void)wait_until(0); }

private:
    std::uint32_t set_ = 0;
    basic_wait_queue<S> queue_;
};

} // namespace toro
