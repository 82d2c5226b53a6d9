// The intrusive containers of the process unit: no allocation while scheduling. A thread carries one link
// per container it can be in at once (ready queue, a wait queue, its CPU's sleep list), so being woken by an
// event while a timeout is pending needs no memory. Also spsc_ring, the single-producer/single-consumer
// mailbox through which one CPU hands threads to another (Toro's remote creation).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace toro {

struct list_link {
    void* next = nullptr;
    void* prev = nullptr;
    bool linked = false;
};

// A FIFO of T through the member `Link` (a list_link). Doubly linked: removal from the middle is O(1).
template <class T, list_link T::*Link>
class intrusive_list {
public:
    bool empty() const { return head_ == nullptr; }
    std::size_t size() const { return size_; }
    T* front() const { return head_; }
    T* back() const { return tail_; }
    static T* next(T* t) { return static_cast<T*>((t->*Link).next); }
    static T* prev(T* t) { return static_cast<T*>((t->*Link).prev); }
    static bool linked(const T* t) { return (t->*Link).linked; }

    void push_back(T* t) { insert_before(nullptr, t); }

    // Inserts t before `pos` (nullptr: at the end).
    void insert_before(T* pos, T* t) {
        list_link& l = t->*Link;
        l.next = pos;
        l.prev = pos != nullptr ? (pos->*Link).prev : tail_;
        if (l.prev != nullptr)
            (static_cast<T*>(l.prev)->*Link).next = t;
        else
            head_ = t;
        if (pos != nullptr)
            (pos->*Link).prev = t;
        else
            tail_ = t;
        l.linked = true;
        ++size_;
    }

    void remove(T* t) {
        list_link& l = t->*Link;
        if (l.prev != nullptr)
            (static_cast<T*>(l.prev)->*Link).next = l.next;
        else
            head_ = static_cast<T*>(l.next);
        if (l.next != nullptr)
            (static_cast<T*>(l.next)->*Link).prev = l.prev;
        else
            tail_ = static_cast<T*>(l.prev);
        l = {};
        --size_;
    }

    T* pop_front() {
        T* t = head_;
        if (t != nullptr) remove(t);
        return t;
    }

private:
    T* head_ = nullptr;
    T* tail_ = nullptr;
    std::size_t size_ = 0;
};

// Bounded single-producer/single-consumer ring of pointers: the producer owns tail_, the consumer head_;
// each publishes with a release store and reads the other's with an acquire load. Indices run freely
// (unsigned wrap-around), so full is tail - head == N. Each index sits on its own cache line.
template <class T, std::size_t N>
class spsc_ring {
    static_assert(N >= 2 && (N & (N - 1)) == 0, "the capacity must be a power of two");

public:
    static constexpr std::size_t capacity = N;

    // Producer side. False when full (nothing stored).
    bool push(T* v) {
        const std::uint32_t tail = tail_;
        if (tail - __atomic_load_n(&head_, __ATOMIC_ACQUIRE) == N) return false;
        slots_[tail % N] = v;
        __atomic_store_n(&tail_, tail + 1, __ATOMIC_RELEASE);
        return true;
    }

    // Consumer side. nullptr when empty.
    T* pop() {
        const std::uint32_t head = head_;
        if (head == __atomic_load_n(&tail_, __ATOMIC_ACQUIRE)) return nullptr;
        T* v = slots_[head % N];
        __atomic_store_n(&head_, head + 1, __ATOMIC_RELEASE);
        return v;
    }

    // Either side: a snapshot.
    bool empty() const {
        return __atomic_load_n(&head_, __ATOMIC_ACQUIRE) == __atomic_load_n(&tail_, __ATOMIC_ACQUIRE);
    }

private:
    alignas(64) std::uint32_t head_ = 0;
    alignas(64) std::uint32_t tail_ = 0;
    std::array<T*, N> slots_{};
};

} // namespace toro
