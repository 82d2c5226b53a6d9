// toro::process: the process unit an appliance names after toro::memory
// (toro::appliance<toro::memory, toro::process>). Threads on chosen CPUs (Toro's BeginThread), one
// cooperative scheduler per CPU, TSC time, sleeping without spinning (the LAPIC timer wakes a halted CPU at
// the next deadline), the other CPUs started through INIT-SIPI-SIPI, remote creation through mailboxes.
//
// Interrupts are off while threads run: a CPU takes them only in its idle loop's `sti; hlt` and in a short
// window at each scheduling point. So nothing is preempted, no scheduler structure is ever touched from an
// interrupt, and interrupt handlers (timer, wake-up IPI) only acknowledge: the idle loop does the rest.
//
// The app's entry runs as the boot CPU's main thread on the boot stack (16 KiB); when it returns, the
// appliance shuts down with its status, whatever other threads are doing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

#include <toro/arch/x86_64/cpu.hpp>
#include <toro/arch/x86_64/cpu_local.hpp>
#include <toro/arch/x86_64/exceptions.hpp>
#include <toro/arch/x86_64/gdt.hpp>
#include <toro/arch/x86_64/ioapic.hpp>
#include <toro/arch/x86_64/lapic.hpp>
#include <toro/arch/x86_64/port_io.hpp>
#include <toro/arch/x86_64/time.hpp>
#include <toro/base/expected.hpp>
#include <toro/boot/boot_info.hpp>
#include <toro/boot/platform.hpp>
#include <toro/console/console.hpp>
#include <toro/mem/memory_unit.hpp>
#include <toro/panic.hpp>
#include <toro/proc/context.hpp>
#include <toro/proc/scheduler.hpp>
#include <toro/proc/sync.hpp>

extern "C" {
extern const char toro_ap_trampoline[], toro_ap_trampoline_end[], toro_ap_params[]; // src/boot/smp.S
void toro_ap_start64();
extern std::uint64_t boot_pml4[];
extern toro_init_fn __init_array_start[];
}

namespace toro {

inline constexpr std::uint8_t timer_vector = 0xf0;
inline constexpr std::uint8_t wake_vector = 0xf1;
inline constexpr std::uint8_t spurious_vector = 0xff;
inline constexpr std::size_t default_stack_size = 32 * 1024;
inline constexpr std::size_t ap_idle_stack = 16 * 1024; // each CPU's idle loop (and the start-up of the APs)

// A CPU's local APIC in whichever mode the CPU offers: x2APIC (MSRs) when CPUID says so, else xAPIC (MMIO).
// One per CPU: the driver caches the timer's LVT, and each CPU has its own.
struct kernel_apic {
    bool x2 = false;
    arch::lapic<arch::x2apic_msr<>> x2apic{arch::x2apic_msr<>{}};
    arch::lapic<arch::xapic_mmio<>> xapic{arch::xapic_mmio<>{arch::mmio_window{nullptr}}};

    template <class F>
    decltype(auto) with(F&& f) {
        return x2 ? f(x2apic) : f(xapic);
    }
};

// What the process unit knows about the machine once started.
struct process_state {
    std::array<kernel_apic, max_cpus> apics;
    bool x2apic = false;
    volatile std::uint32_t* xapic_regs = nullptr;
    arch::timebase clock; // TSC <-> ns
    std::uint64_t tsc_hz = 0;
    string_view tsc_source;
    bool tsc_deadline = false; // LAPIC timer in TSC-deadline mode
    arch::tick_scale lapic_per_tsc;
    std::uint64_t lapic_hz = 0;
    std::uint32_t cpu_count = 1;
    std::array<std::uint32_t, max_cpus> apic_ids{};
    std::uint64_t next_thread_id = 1; // atomic
};
inline process_state proc;

inline kernel_apic& local_apic() {
    return proc.apics[arch::this_cpu_index()];
}

struct kernel_sched_platform {
    static std::uint32_t this_cpu() { return arch::this_cpu_index(); }
    static std::uint64_t now() { return arch::rdtsc(); }
    static void idle_wait(std::uint64_t deadline) {
        if (deadline != 0) {
            const arch::timer_plan p =
                arch::plan_timer(arch::rdtsc(), deadline, proc.tsc_deadline, proc.lapic_per_tsc);
            local_apic().with([&](auto& a) {
                if (p.how == arch::timer_arm::tsc_deadline)
                    a.arm_tsc_deadline(timer_vector, p.value);
                else
                    a.arm_one_shot(timer_vector, static_cast<std::uint32_t>(p.value));
            });
        }
        // sti takes effect after the next instruction: an interrupt pending since the idle loop's last
        // check is taken in hlt, not lost before it.
        asm volatile("sti; hlt; cli" ::: "memory");
    }
    static void kick(std::uint32_t cpu) {
        auto r = local_apic().with([&](auto& a) { return a.send_ipi(proc.apic_ids[cpu], wake_vector); });
        // A lost wake-up would leave a thread in the inbox of a CPU halted without a deadline: say so.
        if (!r) print("toro: wake-up IPI to CPU {} failed: {}\n", cpu, r.error());
    }
    static void poll_interrupts() { asm volatile("sti; nop; cli" ::: "memory"); }
    static bool in_interrupt() { return arch::this_cpu().in_interrupt != 0; }
    static void switched(thread* t) {
        arch::this_cpu().stack = {reinterpret_cast<std::uintptr_t>(t->stack_low),
                                  reinterpret_cast<std::uintptr_t>(t->stack_high)};
    }
};
static_assert(scheduler_platform<kernel_sched_platform>);

using kernel_scheduler = scheduler<x86_64_context, kernel_sched_platform, max_cpus>;
// Not cleared at boot (src/boot/kernel.ld's .noinit): start() calls init(), each CPU constructs its own part.
[[gnu::section(".bss.noinit.toro_scheduler")]] inline kernel_scheduler the_scheduler;

// The facade the sync primitives use, and the namespace of the thread API below.
struct threads {
    static thread* current() { return the_scheduler.current(); }
    static wake_reason block(std::uint64_t deadline) { return the_scheduler.block(deadline); }
    static bool claim(thread* t) { return kernel_scheduler::claim(t); }
    static void make_ready(thread* t) { the_scheduler.make_ready(t); }
};
using mutex = basic_mutex<threads>;
using semaphore = basic_semaphore<threads>;
using event = basic_event<threads>;
using wait_queue = basic_wait_queue<threads>;

// ---- time -----------------------------------------------------------------------------------------------

// Monotonic nanoseconds since the process unit started.
inline std::uint64_t now_ns() {
    return proc.clock.ns(arch::rdtsc());
}
// The clock-tick deadline `ns` from now, for the timed waits (semaphore::acquire_until...).
inline std::uint64_t deadline_after_ns(std::uint64_t ns) {
    return arch::rdtsc() + proc.clock.ticks_for_ns(ns);
}
inline void sleep_ns(std::uint64_t ns) {
    the_scheduler.sleep_until(deadline_after_ns(ns));
}
// Toro's ThreadSleep: the calling thread sleeps; its CPU runs others or halts.
inline void thread_sleep(std::uint64_t ms) {
    sleep_ns(ms * 1'000'000);
}

// ---- threads --------------------------------------------------------------------------------------------

inline constexpr std::uint32_t caller_cpu = ~0u;

struct thread_options {
    std::uint32_t cpu = caller_cpu; // which CPU runs it, for its whole life
    std::size_t stack_size = default_stack_size;
    bool detached = false; // released when it ends; otherwise join() releases it
};

namespace detail {

// The boot CPU's main thread: the app's entry, on the boot stack.
inline thread main_thread;

// A kernel thread: the scheduler's part, who waits to join it, its stack, and the app's function.
struct kernel_thread {
    thread t;
    wait_queue joiners;
    guarded_stack stack;
    int (*fn)(void*) = nullptr;
    void* arg = nullptr;
};

// Every kernel thread starts here, on its own CPU (threads never migrate): the guard page was unmapped
// on the creating CPU, and this CPU may still cache a translation of it (it may have been heap memory
// here a moment ago), so drop that before the thread can overflow into it.
inline int kernel_thread_main(void* p) {
    auto* k = static_cast<kernel_thread*>(p);
    asm volatile("invlpg (%0)" ::"r"(k->stack.guard) : "memory");
    return k->fn(k->arg);
}

// Per-CPU cache of default-size stacks: thread creation then costs no page-table edit (the guard page stays
// unmapped while cached). Touched only by its own CPU.
struct stack_cache {
    static constexpr std::size_t capacity = 8;
    std::array<guarded_stack, capacity> stacks{};
    std::size_t count = 0;
};
inline std::array<stack_cache, max_cpus> stack_caches;

inline expected<guarded_stack> get_stack(std::size_t size) {
    stack_cache& c = stack_caches[arch::this_cpu_index()];
    if (size == default_stack_size && c.count > 0) return c.stacks[--c.count];
    return allocate_stack(size);
}
inline void put_stack(const guarded_stack& s) {
    stack_cache& c = stack_caches[arch::this_cpu_index()];
    if (s.size == default_stack_size && c.count < stack_cache::capacity) {
        c.stacks[c.count++] = s;
        return;
    }
    free_stack(s);
}

inline void release(kernel_thread* k) {
    put_stack(k->stack);
    k->~kernel_thread();
    free_mem(k);
}

// Runs on the thread's CPU once it has left the finished thread's stack.
inline void on_finished(thread* t) {
    auto* k = reinterpret_cast<kernel_thread*>(t);
    if (t->detached) return release(k);
    // done is set under the join queue's lock: a joiner that sees it may free k at once.
    k->joiners.update_and_wake([t] { __atomic_store_n(&t->done, 1u, __ATOMIC_RELEASE); }, ~std::size_t{0});
}

} // namespace detail

// A thread begin_thread created and nobody has joined yet.
class thread_handle {
public:
    thread_handle() = default;
    explicit thread_handle(detail::kernel_thread* k) : k_{k} {}
    // Move-only: one handle, one join.
    thread_handle(thread_handle&& o) : k_{o.k_} { o.k_ = nullptr; }
    thread_handle& operator=(thread_handle&& o) {
        TORO_ASSERT(k_ == nullptr || k_ == o.k_, "a thread_handle that was never joined is overwritten");
        k_ = o.k_;
        o.k_ = nullptr;
        return *this;
    }
    thread_handle(const thread_handle&) = delete;
    thread_handle& operator=(const thread_handle&) = delete;
    // Dropping a handle would leak the thread once it ends: join it, or create it detached.
    ~thread_handle() { TORO_ASSERT(k_ == nullptr, "a thread_handle was dropped without join()"); }
    std::uint64_t id() const { return k_ != nullptr ? k_->t.id : 0; }
    std::uint32_t cpu() const { return k_ != nullptr ? k_->t.cpu : 0; }
    bool finished() const { return k_ != nullptr && __atomic_load_n(&k_->t.done, __ATOMIC_ACQUIRE) != 0; }

    // Waits for the thread to end, releases it, and returns its exit code.
    expected<int> join() {
        if (k_ == nullptr) return unexpected{"join: not a joinable thread"};
        detail::kernel_thread* k = k_;
        k_ = nullptr;
        // done is read under the queue's lock and set under it too: once seen, the finishing CPU is done with
        // k.
        while (!k->joiners.wait_while([&] { return __atomic_load_n(&k->t.done, __ATOMIC_ACQUIRE) == 0; })) {
        }
        const int code = k->t.exit_code;
        detail::release(k);
        return code;
    }

private:
    detail::kernel_thread* k_ = nullptr;
};

inline std::uint32_t current_cpu() {
    return arch::this_cpu_index();
}
inline std::uint32_t cpu_count() {
    return proc.cpu_count;
}
inline std::uint64_t current_thread_id() {
    return the_scheduler.current()->id;
}
// SysThreadSwitch: lets the other ready threads of this CPU run.
inline void yield() {
    the_scheduler.yield();
}
[[noreturn]] inline void thread_exit(int code) {
    if (the_scheduler.current() == &detail::main_thread)
        arch::shutdown(code); // as if the app's entry returned
    the_scheduler.current()->exit_code = code;
    the_scheduler.exit_current();
}

// Toro's BeginThread: fn(arg) runs on options.cpu (default: the caller's), on a stack of its own above a
// guard page. Errors: no such CPU, out of memory.
inline expected<thread_handle> begin_thread(int (*fn)(void*), void* arg, thread_options o = {}) {
    const std::uint32_t cpu = o.cpu == caller_cpu ? current_cpu() : o.cpu;
    if (!the_scheduler.online(cpu)) return unexpected{"begin_thread: no such CPU online", cpu};
    auto mem = get_mem(sizeof(detail::kernel_thread));
    if (!mem) return unexpected{mem.error()};
    auto stack = detail::get_stack(o.stack_size);
    if (!stack) {
        free_mem(*mem);
        return unexpected{stack.error()};
    }
    auto* k = ::new (*mem) detail::kernel_thread{};
    k->stack = *stack;
    k->fn = fn;
    k->arg = arg;
    thread& t = k->t;
    t.fn = &detail::kernel_thread_main;
    t.arg = k;
    t.cpu = cpu;
    t.detached = o.detached;
    t.id = __atomic_fetch_add(&proc.next_thread_id, 1, __ATOMIC_RELAXED);
    t.stack_low = stack->bottom();
    t.stack_high = stack->top();
    t.stack_guard = stack->guard;
    the_scheduler.prepare(&t, stack->top());
    the_scheduler.start(&t);
    return thread_handle{o.detached ? nullptr : k};
}

// ---- start-up -------------------------------------------------------------------------------------------

// The parameter block at toro_ap_params (src/boot/smp.S).
struct ap_params {
    std::uint32_t cr0, cr3, cr4, efer;
    std::uint32_t far64_offset;
    std::uint16_t far64_selector, pad;
    std::uint64_t stack;
    std::uint32_t cpu;
    std::uint32_t started; // written by the AP (atomic)
    std::uint64_t entry;
};
static_assert(sizeof(ap_params) == 48);

namespace detail {

inline std::array<arch::cpu_tables*, max_cpus> ap_tables{};
inline ap_params* live_params = nullptr;

extern "C" [[gnu::used]] inline void toro_irq_ack() {
    local_apic().with([](auto& a) { a.eoi(); });
}

// Timer and wake-up IPI: acknowledge and return; the idle loop that was halted does the work. Saves the
// registers a call may clobber. On entry rsp is 16-aligned minus the 40-byte frame; 9 pushes re-align it.
[[gnu::naked]] inline void irq_ack_stub() {
    asm("push %rax\n\tpush %rcx\n\tpush %rdx\n\tpush %rsi\n\tpush %rdi\n\t"
        "push %r8\n\tpush %r9\n\tpush %r10\n\tpush %r11\n\t"
        "cld\n\tcall toro_irq_ack\n\t"
        "pop %r11\n\tpop %r10\n\tpop %r9\n\tpop %r8\n\t"
        "pop %rdi\n\tpop %rsi\n\tpop %rdx\n\tpop %rcx\n\tpop %rax\n\t"
        "iretq");
}
// Spurious interrupts get no EOI.
[[gnu::naked]] inline void irq_spurious_stub() {
    asm("iretq");
}

// The 8259 PICs, where there are any (pc), are left by the firmware with its timer tick unmasked at real-mode
// vectors. The LAPIC's LINT0 is masked, yet a request the PIC raised before that can still be taken at the
// first sti (seen under TCG with SeaBIOS: a #GP on a bogus vector). So: move them above the exception vectors
// (0x20-0x2f, in case one sends a spurious IRQ 7/15) and mask every line. Harmless where there is no PIC.
inline void silence_legacy_pic() {
    using arch::outb;
    outb(0x20, 0x11); // ICW1: initialise, ICW4 follows
    outb(0xa0, 0x11);
    outb(0x21, 0x20); // ICW2: vector base
    outb(0xa1, 0x28);
    outb(0x21, 0x04); // ICW3: slave on IRQ 2
    outb(0xa1, 0x02);
    outb(0x21, 0x01); // ICW4: 8086 mode
    outb(0xa1, 0x01);
    outb(0x21, 0xff); // OCW1: every line masked
    outb(0xa1, 0xff);
}

inline void note_stack_overflow(std::uint64_t address) {
    thread* t = the_scheduler.current();
    if (t != nullptr && t->stack_guard != nullptr &&
        address - reinterpret_cast<std::uintptr_t>(t->stack_guard) < page_size)
        print(
            "  the fault address is the guard page of thread {}'s stack ({} bytes, CPU {}): stack overflow\n",
            t->id, static_cast<std::size_t>(t->stack_high - t->stack_low), t->cpu);
}

inline expected<void> start_lapic(bool boot_cpu) {
    kernel_apic& a = local_apic();
    a.x2 = proc.x2apic;
    if (a.x2) {
        arch::cpu_msr msr;
        arch::enable_x2apic(msr);
    } else {
        a.xapic = arch::lapic<arch::xapic_mmio<>>{arch::xapic_mmio<>{arch::mmio_window{proc.xapic_regs}}};
    }
    if (auto r = local_apic().with([](auto& a) { return a.enable(spurious_vector); }); !r) return r;
    if (boot_cpu) proc.apic_ids[0] = local_apic().with([](auto& a) { return a.id(); });
    return {};
}

extern "C" [[noreturn]] inline void toro_ap_main(std::uint32_t cpu) {
    arch::install_cpu_local(cpu);
    arch::cpu_locals[cpu].stack = {live_params->stack - ap_idle_stack, live_params->stack};
    arch::cpu_tables* tables = ap_tables[cpu];
    // IST stacks: the three guarded stacks were put right after the tables' allocation (see start_aps).
    const auto* ist = reinterpret_cast<const std::uintptr_t*>(tables + 1);
    tables->load({ist[0], ist[1], ist[2]});
    kernel_idt.load();
    if (auto r = start_lapic(false); !r) {
        print("toro: CPU {}: {}\n", cpu, r.error());
        arch::halt_forever();
    }
    arch::cpu_locals[cpu].apic_id = proc.apic_ids[cpu];
    __atomic_store_n(&live_params->started, 1u, __ATOMIC_RELEASE);
    the_scheduler.run_idle(cpu, reinterpret_cast<std::byte*>(live_params->stack - ap_idle_stack),
                           reinterpret_cast<std::byte*>(live_params->stack));
}

} // namespace detail
// ---- device interrupts ----------------------------------------------------------------------------------
//
// A driver registers a handler and gets a vector, then routes its device to it (an IOAPIC pin here; MSI-X
// with the device unit). Like every interrupt, a device's arrives only at a scheduling point (the idle loop's
// hlt or the window at each switch), so its handler interrupts nothing half-done: it may wake threads
// (event::set, semaphore::release) but never blocks or switches (in_interrupt() makes the scheduler wait
// instead of yielding).

using interrupt_handler = void (*)(void* context);
inline constexpr std::uint8_t first_device_vector = 0x30;
inline constexpr std::size_t device_vectors = 16;

namespace detail {

struct interrupt_slot {
    interrupt_handler fn = nullptr;
    void* context = nullptr;
};
inline std::array<interrupt_slot, device_vectors> interrupt_slots{};
inline std::array<std::uint64_t, device_vectors> interrupt_counts{}; // per vector, like /proc/interrupts
inline std::uint32_t interrupt_slots_used = 0;                       // atomic
inline platform_info platform; // what the firmware said (process::start)

struct kernel_ioapic {
    arch::ioapic<arch::mmio_window> regs{arch::mmio_window{nullptr}};
    std::uint16_t pins = 0;
};
inline std::array<kernel_ioapic, platform_info::max_ioapics> ioapics{};

extern "C" [[gnu::used]] inline void toro_device_interrupt(std::uint64_t vector) {
    arch::cpu_local& c = arch::this_cpu();
    ++c.in_interrupt;
    const std::size_t i = (vector - first_device_vector) % device_vectors;
    __atomic_fetch_add(&interrupt_counts[i], 1, __ATOMIC_RELAXED);
    const interrupt_slot& s = interrupt_slots[i];
    if (s.fn != nullptr) s.fn(s.context);
    --c.in_interrupt;
    local_apic().with([](auto& a) { a.eoi(); });
}

// The stub pushed the vector above the CPU's 5-word frame (rsp 16-aligned again); 9 saved registers and
// 8 bytes of padding keep the call aligned.
extern "C" [[gnu::naked, gnu::used]] inline void toro_device_interrupt_common() {
    asm("push %rax\n\tpush %rcx\n\tpush %rdx\n\tpush %rsi\n\tpush %rdi\n\t"
        "push %r8\n\tpush %r9\n\tpush %r10\n\tpush %r11\n\t"
        "sub $8, %rsp\n\t"
        "mov 80(%rsp), %rdi\n\t"
        "cld\n\tcall toro_device_interrupt\n\t"
        "add $8, %rsp\n\t"
        "pop %r11\n\tpop %r10\n\tpop %r9\n\tpop %r8\n\t"
        "pop %rdi\n\tpop %rsi\n\tpop %rdx\n\tpop %rcx\n\tpop %rax\n\t"
        "add $8, %rsp\n\t"
        "iretq");
}
template <std::size_t I>
[[gnu::naked]] void device_interrupt_stub() {
    asm("pushq %0\n\tjmp toro_device_interrupt_common" ::"i"(first_device_vector + I));
}
template <std::size_t... I>
void install_device_stubs(std::index_sequence<I...>) {
    (kernel_idt.set_gate(first_device_vector + I,
                         reinterpret_cast<std::uintptr_t>(&device_interrupt_stub<I>)),
     ...);
}

// Maps every IOAPIC the firmware lists and masks all its pins: firmware may leave some live.
inline expected<void> start_ioapics(const platform_info& plat) {
    for (std::size_t i = 0; i < plat.ioapic_count; ++i) {
        auto regs = kernel_map.map_device(plat.ioapics[i].address, page_size);
        if (!regs) return unexpected{regs.error()};
        ioapics[i].regs = arch::ioapic<arch::mmio_window>{
            arch::mmio_window{static_cast<volatile std::uint32_t*>(*regs)}, plat.ioapics[i].gsi_base};
        ioapics[i].pins = static_cast<std::uint16_t>(ioapics[i].regs.max_pin() + 1);
        ioapics[i].regs.mask_all();
    }
    install_device_stubs(std::make_index_sequence<device_vectors>{});
    return {};
}

} // namespace detail

// Gives `fn(context)` a vector of its own; program the device (IOAPIC route, MSI-X entry) with it.
inline expected<std::uint8_t> register_interrupt(interrupt_handler fn, void* context) {
    const std::uint32_t slot = __atomic_fetch_add(&detail::interrupt_slots_used, 1, __ATOMIC_RELAXED);
    if (slot >= device_vectors) return unexpected{"no free device interrupt vector; in use", device_vectors};
    detail::interrupt_slots[slot] = {fn, context};
    return static_cast<std::uint8_t>(first_device_vector + slot);
}

// Device interrupts taken so far on `vector` (every CPU).
inline std::uint64_t interrupt_count(std::uint8_t vector) {
    if (vector < first_device_vector || vector >= first_device_vector + device_vectors) return 0;
    return __atomic_load_n(&detail::interrupt_counts[vector - first_device_vector], __ATOMIC_RELAXED);
}
// ... on every device vector.
inline std::uint64_t device_interrupt_count() {
    std::uint64_t n = 0;
    for (const std::uint64_t& c : detail::interrupt_counts) n += __atomic_load_n(&c, __ATOMIC_RELAXED);
    return n;
}

// Routes GSI `gsi` through its IOAPIC to `vector` on `cpu`.
inline expected<void> route_gsi(std::uint32_t gsi, std::uint8_t vector, std::uint32_t cpu,
                                arch::trigger_mode t, arch::polarity p) {
    if (cpu >= proc.cpu_count) return unexpected{"route_gsi: no such CPU", cpu};
    std::array<std::uint16_t, platform_info::max_ioapics> pins{};
    for (std::size_t i = 0; i < detail::platform.ioapic_count; ++i) pins[i] = detail::ioapics[i].pins;
    auto at = arch::find_ioapic_pin(detail::platform.ioapic_list(),
                                    {pins.data(), detail::platform.ioapic_count}, gsi);
    if (!at) return unexpected{at.error()};
    return detail::ioapics[at->ioapic].regs.route(at->pin, vector, proc.apic_ids[cpu], t, p);
}

// An ISA IRQ (the PIT's 0, COM1's 4...) through the firmware's overrides to `vector` on `cpu`.
inline expected<void> route_isa_irq(std::uint8_t irq, std::uint8_t vector, std::uint32_t cpu) {
    const arch::gsi_route r = arch::isa_route(irq, detail::platform.override_list());
    return route_gsi(r.gsi, vector, cpu, r.trigger, r.pol);
}

namespace detail {

// A free page below 1 MiB for the AP start-up code: usable RAM in the boot map, above the real-mode IVT/BDA.
inline std::uint64_t trampoline_page(const boot_info& boot) {
    for (std::uint64_t page = 0x8000; page < 0x9f000; page += page_size)
        for (const memory_region& r : boot.memory.regions())
            if (r.type == memory_type::usable && r.base <= page && r.end() >= page + page_size) return page;
    return 0;
}

inline bool wait_started(volatile ap_params* p, std::uint64_t ticks) {
    const std::uint64_t until = arch::rdtsc() + ticks;
    while (arch::rdtsc() < until)
        if (__atomic_load_n(&p->started, __ATOMIC_ACQUIRE) != 0) return true;
    return false;
}

// Starts the CPUs the firmware lists, one at a time (they share one parameter block). A CPU that does not
// answer is reported and left out; the appliance goes on with the others.
inline expected<void> start_aps(const boot_info& boot, const platform_info& plat, std::uint32_t limit) {
    const std::uint64_t page = trampoline_page(boot);
    if (page == 0) return unexpected{"no usable page below 1 MiB for the start-up code of the other CPUs"};
    const std::size_t blob = static_cast<std::size_t>(toro_ap_trampoline_end - toro_ap_trampoline);
    auto* dst = reinterpret_cast<char*>(page);
    for (std::size_t i = 0; i < blob; ++i) dst[i] = toro_ap_trampoline[i];
    auto* params = reinterpret_cast<ap_params*>(page + (toro_ap_params - toro_ap_trampoline));
    live_params = params;
    // The boot CPU's control registers, limited to what the trampoline can load in 32-bit mode: the page
    // tables below 4 GiB, CR4's PAE and SSE bits (a loader's PCIDE would fault there), EFER's SCE/LME/NXE.
    TORO_ASSERT(arch::read_cr3() < (std::uint64_t{1} << 32), "the kernel's page tables must lie below 4 GiB");
    params->cr0 = static_cast<std::uint32_t>(arch::read_cr0());
    params->cr3 = static_cast<std::uint32_t>(arch::read_cr3());
    params->cr4 =
        static_cast<std::uint32_t>(arch::read_cr4() & (0x20 | 0x200 | 0x400));  // PAE, OSFXSR, OSXMMEXCPT
    params->efer = static_cast<std::uint32_t>(arch::rdmsr(0xc0000080) & 0x901); // SCE, LME, NXE
    params->far64_offset = static_cast<std::uint32_t>(reinterpret_cast<std::uintptr_t>(&toro_ap_start64));
    params->far64_selector = 0x18;
    params->entry = reinterpret_cast<std::uintptr_t>(&toro_ap_main);
    if (auto r = kernel_map.set_page_executable(page, true); !r) return r;

    for (const cpu_entry& c : plat.cpu_list()) {
        if (proc.cpu_count >= limit) break;
        if (c.apic_id == proc.apic_ids[0] || !c.enabled) continue;
        const std::uint32_t index = proc.cpu_count;
        // Idle stack, then the tables and three IST stacks of the new CPU.
        auto idle = allocate_stack(ap_idle_stack);
        auto mem = get_aligned_mem(sizeof(arch::cpu_tables) + 3 * sizeof(std::uintptr_t), 64);
        if (!idle || !mem) return unexpected{"out of memory starting CPU", index};
        auto* tables = ::new (*mem) arch::cpu_tables{};
        auto* ist = reinterpret_cast<std::uintptr_t*>(tables + 1);
        for (int i = 0; i < 3; ++i) {
            auto s = allocate_stack(8 * 1024);
            if (!s) return unexpected{"out of memory starting CPU", index};
            ist[i] = reinterpret_cast<std::uintptr_t>(s->top());
        }
        ap_tables[index] = tables;
        proc.apic_ids[index] = c.apic_id;
        params->stack = reinterpret_cast<std::uintptr_t>(idle->top());
        params->cpu = index;
        __atomic_store_n(&params->started, 0u, __ATOMIC_RELEASE);

        // INIT, then STARTUP; a second STARTUP only if the first was missed (the MP spec's sequence
        // without its fixed delays: virtual CPUs start at once, and each delay would be boot time).
        const std::uint64_t ms = proc.tsc_hz / 1000;
        const auto vector = static_cast<std::uint8_t>(page >> 12);
        auto sent = local_apic().with([&](auto& a) -> expected<void> {
            if (auto r = a.send_init(c.apic_id); !r) return r;
            return a.send_startup(c.apic_id, vector);
        });
        if (!sent) return unexpected{sent.error()};
        if (!wait_started(params, 10 * ms)) {
            if (auto r = local_apic().with([&](auto& a) { return a.send_startup(c.apic_id, vector); }); !r)
                return r;
            if (!wait_started(params, 200 * ms)) {
                // Park it (INIT: wait for a SIPI that never comes), so that a CPU that was only slow cannot
                // start later on the parameters of the next one.
                (void)local_apic().with([&](auto& a) { return a.send_init(c.apic_id); });
                print("toro: CPU with APIC id {} did not start; going on without it\n", c.apic_id);
                continue;
            }
        }
        // Started is said before the CPU's scheduler is up (it cannot speak after): wait for that too, so
        // begin_thread on it works as soon as start() returns.
        const std::uint64_t until = arch::rdtsc() + 200 * ms;
        while (!the_scheduler.online(index) && arch::rdtsc() < until) __builtin_ia32_pause();
        if (!the_scheduler.online(index))
            return unexpected{"a started CPU never brought its scheduler up", index};
        ++proc.cpu_count;
    }
    return kernel_map.set_page_executable(page, false);
}

// The number after "toro.cpus=" on the command line, or max_cpus.
inline std::uint32_t cpu_limit(string_view cmdline) {
    constexpr string_view key = "toro.cpus=";
    for (std::size_t i = 0; i + key.size() <= cmdline.size(); ++i) {
        if ((i != 0 && cmdline[i - 1] != ' ') || cmdline.substr(i, key.size()) != key) continue;
        std::uint32_t n = 0;
        for (std::size_t j = i + key.size(); j < cmdline.size() && cmdline[j] >= '0' && cmdline[j] <= '9';
             ++j)
            n = n * 10 + static_cast<std::uint32_t>(cmdline[j] - '0');
        return n == 0 ? 1 : n < max_cpus ? n : max_cpus;
    }
    return max_cpus;
}

} // namespace detail

class process {
public:
    static constexpr string_view name = "process";

    expected<void> start(const boot_info& boot) {
        if (kernel_heap.cpus() == 0)
            return unexpected{"the process unit needs toro::memory, named before it"};
        // Time first: everything after it (timeouts, start-up waits) counts in TSC ticks.
        auto f = arch::detect_tsc_hz();
        if (!f) return unexpected{f.error()};
        proc.tsc_hz = f->hz;
        proc.tsc_source = f->source;
        auto tb = arch::timebase::from_hz(f->hz, arch::rdtsc());
        if (!tb) return unexpected{tb.error()};
        proc.clock = *tb;

        // The local APIC: x2APIC when the CPU has it, else xAPIC through its (uncached) MMIO page.
        const auto l1 = arch::cpuid(1);
        proc.x2apic = (l1.ecx >> 21 & 1) != 0;
        if (!proc.x2apic) {
            const std::uint64_t base = arch::rdmsr(arch::msr_apic_base) & 0x000ffffffffff000;
            auto regs = kernel_map.map_device(base, page_size);
            if (!regs) return unexpected{regs.error()};
            proc.xapic_regs = static_cast<volatile std::uint32_t*>(*regs);
        }
        detail::silence_legacy_pic();
        kernel_idt.set_gate(timer_vector, reinterpret_cast<std::uintptr_t>(&detail::irq_ack_stub));
        kernel_idt.set_gate(wake_vector, reinterpret_cast<std::uintptr_t>(&detail::irq_ack_stub));
        kernel_idt.set_gate(spurious_vector, reinterpret_cast<std::uintptr_t>(&detail::irq_spurious_stub));
        kernel_idt.set_gate(0x27, reinterpret_cast<std::uintptr_t>(&detail::irq_spurious_stub)); // PIC IRQ 7
        kernel_idt.set_gate(0x2f, reinterpret_cast<std::uintptr_t>(&detail::irq_spurious_stub)); // PIC IRQ 15
        if (auto r = detail::start_lapic(true); !r) return r;
        arch::cpu_locals[0].apic_id = proc.apic_ids[0];
        proc.tsc_deadline = (l1.ecx >> 24 & 1) != 0;
        if (!proc.tsc_deadline) {
            auto hz = local_apic().with([&](auto& a) {
                return arch::measure_lapic_timer_hz(
                    a, [] { return arch::rdtsc(); }, proc.tsc_hz,
                    proc.tsc_hz / 2000); // 0.5 ms
            });
            if (!hz) return unexpected{hz.error()};
            proc.lapic_hz = *hz;
            auto scale = arch::lapic_counts_per_tsc_tick(*hz, proc.tsc_hz);
            if (!scale) return unexpected{scale.error()};
            proc.lapic_per_tsc = *scale;
        }

        // The boot CPU's scheduler: this context becomes its main thread; its idle loop gets a stack.
        auto idle = allocate_stack(16 * 1024);
        if (!idle) return unexpected{idle.error()};
        detail::main_thread.stack_low = reinterpret_cast<std::byte*>(arch::cpu_locals[0].stack.low);
        detail::main_thread.stack_high = reinterpret_cast<std::byte*>(arch::cpu_locals[0].stack.high);
        the_scheduler.init();
        the_scheduler.make_instance();
        the_scheduler.set_finished_hook(&detail::on_finished);
        the_scheduler.start_cpu(0, &detail::main_thread, idle->bottom(), idle->top());
        arch::stack_overflow_note = &detail::note_stack_overflow;

        // The other CPUs, as the firmware lists them (none listed: one CPU).
        platform_info& plat = detail::platform;
        firmware_reader reader;
        if (auto r = discover_platform(reader, boot.rsdp, plat); !r) return r;
        if (auto r = detail::start_ioapics(plat); !r) return r;
        const std::uint32_t limit = detail::cpu_limit(boot.cmdline());
        if (plat.cpu_count > 1 && limit > 1)
            if (auto r = detail::start_aps(boot, plat, limit); !r) return r;
        return {};
    }

    std::uint32_t cpus() const { return proc.cpu_count; }
    std::uint64_t tsc_hz() const { return proc.tsc_hz; }
    string_view tsc_source() const { return proc.tsc_source; }
    bool apic_x2() const { return proc.x2apic; }
    bool timer_tsc_deadline() const { return proc.tsc_deadline; }
};

} // namespace toro
