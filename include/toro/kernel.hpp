// Composition of an appliance: toro::appliance<Units...>, kernel_main and TORO_APPLIANCE.
//
// An appliance is a translation unit that includes <toro/kernel.hpp> (and the units it uses) and ends with
//
//     using my_os = toro::appliance<>;            // the optional units it names, in start order
//     int app_main(my_os& os) { ...; return 0; }  // runs on the boot CPU once every unit is up
//     TORO_APPLIANCE(my_os, app_main)
//
// The console, the CPU tables and fault reporting are always there; everything else is a unit the app names,
// and a unit nobody names is never instantiated, so it is not in the image.
#pragma once

#include <concepts>
#include <cstdint>

#include <toro/arch/x86_64/cpu.hpp>
#include <toro/arch/x86_64/exceptions.hpp>
#include <toro/arch/x86_64/gdt.hpp>
#include <toro/arch/x86_64/shutdown.hpp>
#include <toro/base/expected.hpp>
#include <toro/boot/boot_info.hpp>
#include <toro/boot/parse.hpp>
#include <toro/boot/phys_reader.hpp>
#include <toro/config.hpp>
#include <toro/console/console.hpp>
#include <toro/panic.hpp>

// Left by the boot shim (src/boot/entry.S) and the linker script (src/boot/kernel.ld).
extern "C" {
extern std::uint64_t toro_boot_tsc;
extern std::uint64_t toro_boot_info_addr;
extern std::uint32_t toro_boot_protocol;
extern std::uint32_t toro_boot_magic;
extern std::uint64_t toro_boot_mapped_limit;
extern char boot_stack_bottom[], boot_stack_top[];
extern char toro_ist_double_fault_top[], toro_ist_nmi_top[], toro_ist_machine_check_top[];
extern const std::uint64_t toro_stack_guards[4]; // the unmapped page below each stack
using toro_init_fn = void (*)();
extern toro_init_fn __init_array_start[], __init_array_end[];
}

namespace toro {

// A unit an appliance can name: started in order before the app's entry runs.
template <class U>
concept kernel_unit = requires(U& u, const boot_info& b) {
    { U::name } -> std::convertible_to<string_view>;
    { u.start(b) } -> std::same_as<expected<void>>;
};

struct kernel_unit_archetype {
    static constexpr string_view name = "archetype";
    expected<void> start(const boot_info&) { return {}; }
};
static_assert(kernel_unit<kernel_unit_archetype>);

// The running system as the app sees it: the boot facts plus every unit it named (as base classes).
template <kernel_unit... Units>
class appliance : public Units... {
public:
    explicit appliance(const boot_info& b) : boot{b} {}

    // Starts the units in the order named; stops at the first failure and says which unit failed.
    expected<void> start_units(string_view& failed_unit) {
        expected<void> r;
        (void)((r = static_cast<Units&>(*this).start(boot), failed_unit = Units::name, r.has_value()) && ...);
        return r;
    }

    const boot_info& boot;
};

// Is `word` one of the space-separated words of `text`?
constexpr bool has_word(string_view text, string_view word) {
    for (std::size_t i = 0; i + word.size() <= text.size(); ++i)
        if ((i == 0 || text[i - 1] == ' ') && text.substr(i, word.size()) == word &&
            (i + word.size() == text.size() || text[i + word.size()] == ' '))
            return true;
    return false;
}
static_assert(has_word("a toro.boot_trace b", "toro.boot_trace") &&
              !has_word("toro.boot_traced", "toro.boot_trace"));

// Where kernel_main keeps what it parsed; 3 KiB that would not fit a boot stack frame comfortably.
inline boot_info the_boot_info;
inline arch::cpu_tables boot_cpu_tables;
inline arch::idt kernel_idt;
inline std::uint32_t fault_reporter = 0; // index + 1 of the CPU reporting a fault (atomic)

[[noreturn]] inline void report_exception(const arch::fault_frame& f) {
    // One report at a time: the first CPU to fault reports and shuts the machine down; a fault on another
    // CPU meanwhile stops that CPU, so the report is not cut off or interleaved.
    const std::uint32_t me = arch::this_cpu_index() + 1;
    std::uint32_t none = 0;
    if (!__atomic_compare_exchange_n(&fault_reporter, &none, me, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        if (none != me) arch::halt_forever();
        print("\ntoro: CPU exception {} at RIP {:#018x} while reporting a fault; giving up\n", f.vector,
              f.rip);
        arch::shutdown(panic_status);
    }
    const auto& e = arch::exceptions[f.vector % arch::exception_vectors];
    print("\ntoro: CPU exception {} ({}, vector {}), error code {:#x}\n", e.mnemonic, e.name, f.vector,
          f.error_code);
    print("  RIP {:#018x}  CS {:#06x}  RFLAGS {:#018x}\n", f.rip, f.cs, f.rflags);
    if (f.vector == 14) {
        arch::page_fault_cause c{f.error_code};
        print("  CR2 {:#018x}  ({}, {}, {} mode)\n", arch::read_cr2(), c.access(), c.reason(), c.mode());
    }
    print("  RAX {:#018x}  RBX {:#018x}  RCX {:#018x}\n", f.rax, f.rbx, f.rcx);
    print("  RDX {:#018x}  RSI {:#018x}  RDI {:#018x}\n", f.rdx, f.rsi, f.rdi);
    print("  RBP {:#018x}  RSP {:#018x}  R8  {:#018x}\n", f.rbp, f.rsp, f.r8);
    print("  R9  {:#018x}  R10 {:#018x}  R11 {:#018x}\n", f.r9, f.r10, f.r11);
    print("  R12 {:#018x}  R13 {:#018x}  R14 {:#018x}\n", f.r12, f.r13, f.r14);
    print("  R15 {:#018x}  CR3 {:#018x}  SS  {:#06x}\n", f.r15, arch::read_cr3(), f.ss);
    if (f.vector == 14 || f.vector == 8) {
        // A #PF on a guard page, or the #DF it becomes when the CPU cannot push the #PF frame there.
        const std::uint64_t page = arch::read_cr2() & ~std::uint64_t{0xfff};
        for (std::uint64_t guard : toro_stack_guards)
            if (page == guard) print("  the fault address is a stack guard page: kernel stack overflow\n");
        if (arch::stack_overflow_note) arch::stack_overflow_note(arch::read_cr2());
    }
    print_backtrace(f.rip, f.rbp);
    print("toro: panic: unhandled CPU exception {}\n", e.mnemonic);
    arch::shutdown(panic_status);
}

// Brings up the core, parses the boot information, starts the app's units, runs the app, shuts down with
// its status. Reached from the boot shim through TORO_APPLIANCE's toro_boot_entry.
template <class App, class Entry>
[[noreturn]] void kernel_main(Entry&& entry) {
    if constexpr (config::profile_boot) arch::debug_exit(0); // must stay the first statement
    const std::uint64_t tsc_kernel_main = arch::rdtsc();
    // Per-CPU data first: print (the console lock), panics (backtraces) and the heap read it. The process
    // unit updates the stack range on every context switch.
    arch::install_cpu_local(0);
    // Fault reporting first, so that a fault anywhere after this (constructors included) is reported.
    boot_cpu_tables.load({reinterpret_cast<std::uintptr_t>(toro_ist_double_fault_top),
                          reinterpret_cast<std::uintptr_t>(toro_ist_nmi_top),
                          reinterpret_cast<std::uintptr_t>(toro_ist_machine_check_top)});
    kernel_idt.install_exception_stubs();
    kernel_idt.load();
    arch::cpu_locals[0].stack = {reinterpret_cast<std::uintptr_t>(boot_stack_bottom),
                                 reinterpret_cast<std::uintptr_t>(boot_stack_top)};
    for (auto* f = __init_array_start; f != __init_array_end; ++f) (*f)();
    console_init();

    // What the boot shim mapped (at least 1 GiB); page 0 is the NULL guard. Boot structures beyond that are
    // reported as unreadable, not faulted on.
    identity_phys_reader memory{4096, toro_boot_mapped_limit};
    auto protocol = static_cast<boot_protocol>(toro_boot_protocol);
    if (auto r = parse_boot_info(protocol, toro_boot_info_addr, toro_boot_tsc, memory, the_boot_info); !r) {
        print("toro: cannot boot: {}\n", r.error());
        if (protocol == boot_protocol::unknown)
            print("toro: entry registers were eax={:#010x} ebx={:#010x}\n", toro_boot_magic,
                  toro_boot_info_addr);
        arch::shutdown(panic_status);
    }

    App app{the_boot_info};
    string_view unit;
    if (auto r = app.start_units(unit); !r) {
        print("toro: unit {} failed to start: {}\n", unit, r.error());
        arch::shutdown(panic_status);
    }
    if (has_word(the_boot_info.cmdline(), "toro.boot_trace"))
        print("toro: boot trace: first instruction -> kernel_main {} cycles, -> app entry {} cycles\n",
              tsc_kernel_main - toro_boot_tsc, arch::rdtsc() - toro_boot_tsc);
    arch::shutdown(entry(app));
}

} // namespace toro

// Defines the kernel's two C-linkage entry points for appliance type App with entry function `entry`
// (int entry(App&)). Use it exactly once, in the appliance's main source file.
#define TORO_APPLIANCE(App, entry)                                                                           \
    extern "C" [[noreturn]] void toro_boot_entry() {                                                         \
        ::toro::kernel_main<App>(entry);                                                                     \
    }                                                                                                        \
    extern "C" void toro_exception(::toro::arch::fault_frame* frame) {                                       \
        if (frame->vector == 14 && ::toro::arch::page_fault_handler &&                                       \
            ::toro::arch::page_fault_handler(*frame))                                                        \
            return; /* resolved: retry the instruction */                                                    \
        ::toro::report_exception(*frame);                                                                    \
    }
