// The cooperative scheduler: one per CPU, no migration, threads handed between CPUs through single-producer/
// single-consumer mailboxes (Toro's model). A template over the context switch and a platform, so the same
// code runs in the kernel (LAPIC timer, hlt, IPIs) and on the host (std::thread "CPUs", condition variables).
//
// Rules that keep it simple (Hubris): a CPU's ready queue and sleep list are touched only by that CPU; other
// CPUs reach it only through its inbox (one ring per sending CPU, so each ring has one producer) and a kick
// (IPI) when it idles. Interrupt handlers only wake CPUs; they never touch scheduler state. A thread that
// exits is released by the context that runs after it (it cannot free the stack it is running on).
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <new>

#include <toro/proc/context.hpp>
#include <toro/proc/queues.hpp>
#include <toro/proc/thread.hpp>

namespace toro {

// What the scheduler needs from the machine. this_cpu(): the caller's CPU index. now(): the clock, in
// ticks. idle_wait(deadline): sleep until an interrupt, a kick, or the deadline (0: none); may return early.
// kick(cpu): wake that CPU from idle_wait. poll_interrupts(): let pending interrupts in (between threads).
// in_interrupt(): true inside an interrupt handler, which may make threads ready but must never switch.
// switched(t): t runs from now on (the kernel records its stack for backtraces).
template <class P>
concept scheduler_platform = requires(std::uint64_t ticks, std::uint32_t cpu, thread* t) {
    { P::this_cpu() } -> std::convertible_to<std::uint32_t>;
    { P::now() } -> std::convertible_to<std::uint64_t>;
    { P::idle_wait(ticks) } -> std::same_as<void>;
    { P::kick(cpu) } -> std::same_as<void>;
    { P::poll_interrupts() } -> std::same_as<void>;
    { P::in_interrupt() } -> std::same_as<bool>;
    { P::switched(t) } -> std::same_as<void>;
};

struct scheduler_platform_archetype {
    static std::uint32_t this_cpu() { return 0; }
    static std::uint64_t now() { return 0; }
    static void idle_wait(std::uint64_t) {}
    static void kick(std::uint32_t) {}
    static void poll_interrupts() {}
    static bool in_interrupt() { return false; }
    static void switched(thread*) {}
};
static_assert(scheduler_platform<scheduler_platform_archetype>);

inline constexpr std::size_t mailbox_capacity = 32;

template <context_switch Ctx, scheduler_platform P, std::uint32_t MaxCpus>
class scheduler {
public:
    struct cpu_state {
        thread* current = nullptr;
        thread idle; // the idle loop's context
        ready_queue ready;
        sleep_list sleepers;
        thread* finishing = nullptr; // exited; released by the next context to run
        std::uint32_t idle_flag = 0; // 1 while in idle_wait (atomic)
        std::uint64_t switches = 0;
        std::array<spsc_ring<thread, mailbox_capacity>, MaxCpus> inbox{}; // inbox[sending CPU]
    };

    // Called with each finished thread by the context that runs after it, on the same CPU.
    using finished_fn = void (*)(thread*);
    void set_finished_hook(finished_fn f) { finished_ = f; }

    // For a scheduler in memory nobody cleared (the kernel keeps its ~3 KiB per CPU out of the BSS that boot
    // clears, as clearing costs boot time where a hypervisor emulates rep stos): resets what start_cpu does
    // not construct. A value-initialised scheduler needs no init().
    void init() {
        for (auto& o : online_) o = 0;
        finished_ = nullptr;
    }

    // Brings CPU `c` under the scheduler from the calling context, which becomes thread `self` (the boot
    // CPU's main thread) — or, with self == nullptr, the idle loop itself (never returns). The idle loop's
    // stack is [idle_low, idle_top): a new one when self is given, else the calling one.
    void start_cpu(std::uint32_t c, thread* self, std::byte* idle_low, std::byte* idle_top) {
        cpu_state& s = *::new (&cpus_[c]) cpu_state{};
        s.idle.cpu = c;
        s.idle.state = thread_state::running;
        s.idle.stack_low = idle_low;
        s.idle.stack_high = idle_top;
        if (self != nullptr) {
            self->cpu = c;
            self->state = thread_state::running;
            s.current = self;
            s.idle.sp = Ctx::prepare(idle_top, &idle_entry, this);
            __atomic_store_n(&online_[c], 1u, __ATOMIC_RELEASE);
            return;
        }
        s.current = &s.idle;
        __atomic_store_n(&online_[c], 1u, __ATOMIC_RELEASE);
        idle_loop(s);
    }
    [[noreturn]] void run_idle(std::uint32_t c, std::byte* stack_low, std::byte* stack_top) {
        start_cpu(c, nullptr, stack_low, stack_top);
        __builtin_unreachable();
    }

    bool online(std::uint32_t c) const {
        return c < MaxCpus && __atomic_load_n(&online_[c], __ATOMIC_ACQUIRE) != 0;
    }
    thread* current() { return here().current; }
    cpu_state& cpu(std::uint32_t c) { return cpus_[c]; }

    // Lays out a new thread's first context on its stack; start() then makes it runnable on t->cpu.
    void prepare(thread* t, std::byte* stack_top) { t->sp = Ctx::prepare(stack_top, &thread_entry, t); }
    // A thread body: runs fn(arg) and exits with its result. Kept here so every thread starts the same way.
    void start(thread* t) {
        t->state = thread_state::blocked;
        store_wake(t, wake_reason::none);
        make_ready(t);
    }

    // Lets every other ready thread of this CPU run once; returns at once if there is none.
    void yield() {
        cpu_state& s = here();
        poll(s);
        selection sel = select_next(s.ready, s.sleepers, P::now(), expire);
        if (sel.next == nullptr) return;
        thread* t = s.current;
        t->state = thread_state::ready;
        s.ready.push_back(t);
        switch_to(s, sel.next);
    }

    // Blocks the running thread until a wake() that wins, or until `deadline` (clock ticks; 0: none). The
    // caller set current()->wake = waiting before making itself findable by wakers.
    wake_reason block(std::uint64_t deadline) {
        cpu_state& s = here();
        thread* t = s.current;
        if (deadline != 0) {
            t->deadline = deadline;
            insert_by_deadline(s.sleepers, t);
        }
        t->state = thread_state::blocked;
        reschedule(s);
        cpu_state& after = here(); // same CPU: threads never migrate
        if (sleep_list::linked(t)) after.sleepers.remove(t);
        return load_wake(t);
    }

    // Sleeps until the clock reaches `deadline`.
    void sleep_until(std::uint64_t deadline) {
        thread* t = current();
        store_wake(t, wake_reason::waiting);
        while (block(deadline) != wake_reason::timed_out) store_wake(t, wake_reason::waiting); // stray wake
    }

    // Wakes a thread blocked in block(): true if this call won the race against its timeout (and any other
    // waker) and made it ready.
    bool wake(thread* t) {
        if (!claim(t)) return false;
        make_ready(t);
        return true;
    }
    // Claims a blocked thread for waking (the race above) without making it ready yet: wait queues claim
    // under their lock and make ready after releasing it (make_ready may yield).
    static bool claim(thread* t) { return change_wake(t, wake_reason::waiting, wake_reason::woken); }

    // Puts a thread that is not running on its CPU's ready queue: directly on this CPU, through the mailbox
    // from this CPU to its own otherwise, kicking that CPU if it idles.
    void make_ready(thread* t) {
        const std::uint32_t me = P::this_cpu();
        cpu_state& s = cpus_[me];
        if (t->cpu == me) {
            t->state = thread_state::ready;
            s.ready.push_back(t);
            return;
        }
        cpu_state& target = cpus_[t->cpu];
        while (!target.inbox[me].push(t)) { // full: let the target drain it
            P::kick(t->cpu);
            // Drain our own inbox meanwhile: the target may be stuck the same way, sending to us. An
            // interrupt handler can do neither (it runs inside whatever it interrupted): it waits.
            if (P::in_interrupt())
                __builtin_ia32_pause();
            else if (s.current != &s.idle)
                yield();
            else
                poll(s);
        }
        // Pairs with the idle loop's store of idle_flag then its check of the inbox: one of the two sees
        // the other, so a thread is never left in the inbox of a halted CPU.
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (__atomic_load_n(&target.idle_flag, __ATOMIC_RELAXED) != 0) P::kick(t->cpu);
    }

    // Ends the running thread; `finished` hook runs once its CPU has left its stack.
    [[noreturn]] void exit_current() {
        cpu_state& s = here();
        s.current->state = thread_state::finished;
        s.finishing = s.current;
        reschedule(s);
        __builtin_unreachable();
    }

private:
    cpu_state& here() { return cpus_[P::this_cpu()]; }

    static bool expire(thread* t) { return change_wake(t, wake_reason::waiting, wake_reason::timed_out); }

    // Moves threads other CPUs made ready into the ready queue; lets pending interrupts in.
    void poll(cpu_state& s) {
        P::poll_interrupts();
        for (auto& box : s.inbox)
            while (thread* t = box.pop()) {
                t->state = thread_state::ready;
                s.ready.push_back(t);
            }
    }
    bool inbox_empty(const cpu_state& s) const {
        for (const auto& box : s.inbox)
            if (!box.empty()) return false;
        return true;
    }

    // The running thread cannot go on (blocked, finished): run the next ready thread, or idle.
    void reschedule(cpu_state& s) {
        poll(s);
        selection sel = select_next(s.ready, s.sleepers, P::now(), expire);
        switch_to(s, sel.next != nullptr ? sel.next : &s.idle);
    }

    void switch_to(cpu_state& s, thread* next) {
        thread* prev = s.current;
        next->state = thread_state::running;
        if (next == prev) return; // woken before it had switched away
        s.current = next;
        ++s.switches;
        P::switched(next);
        Ctx::switch_to(&prev->sp, next->sp);
        after_switch(here());
    }

    void after_switch(cpu_state& s) {
        if (thread* f = s.finishing) {
            s.finishing = nullptr;
            if (finished_ != nullptr) finished_(f);
        }
    }

    [[noreturn]] void idle_loop(cpu_state& s) {
        for (;;) {
            after_switch(s);
            poll(s);
            selection sel = select_next(s.ready, s.sleepers, P::now(), expire);
            if (sel.next != nullptr) {
                switch_to(s, sel.next);
                continue;
            }
            // Store idle_flag, then check the inbox; a sender pushes, then checks idle_flag. The fences make
            // at least one side see the other (a Dekker pair), so no thread is left in a halted CPU's inbox.
            __atomic_store_n(&s.idle_flag, 1u, __ATOMIC_RELAXED);
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            if (inbox_empty(s)) P::idle_wait(sel.idle_until);
            __atomic_store_n(&s.idle_flag, 0u, __ATOMIC_RELAXED);
        }
    }

    static void idle_entry(void* self) {
        auto* me = static_cast<scheduler*>(self);
        me->idle_loop(me->here());
    }
    static void thread_entry(void* arg) {
        auto* t = static_cast<thread*>(arg);
        auto* me = instance_for_entry;
        me->after_switch(me->here());
        t->exit_code = t->fn(t->arg);
        me->exit_current();
    }

public:
    // thread_entry's way back to the scheduler: set once, before the first thread starts.
    static inline scheduler* instance_for_entry = nullptr;
    void make_instance() { instance_for_entry = this; }

private:
    std::array<cpu_state, MaxCpus> cpus_{};
    std::array<std::uint32_t, MaxCpus> online_{}; // atomic
    finished_fn finished_ = nullptr;
};

} // namespace toro
