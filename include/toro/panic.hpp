// Kernel panic and assertions: print the reason and a backtrace on the console, then shut down with
// panic_status. TORO_ASSERT(cond, "why") checks an invariant in every build.
#pragma once

#include <cstdint>

#include <toro/arch/x86_64/backtrace.hpp>
#include <toro/arch/x86_64/cpu_local.hpp>
#include <toro/arch/x86_64/shutdown.hpp>
#include <toro/base/string_view.hpp>
#include <toro/console/console.hpp>

namespace toro {

// The status every panic exits with (CloudIt prints "guest panicked" for it). 101, as Rust's test harness.
inline constexpr int panic_status = 101;

inline void print_backtrace(std::uintptr_t first_ip, std::uintptr_t rbp) {
    print("  backtrace:\n");
    unsigned n = 0;
    if (first_ip != 0) print("    #{} {:#018x}\n", n++, first_ip);
    arch::walk_frames(rbp, arch::this_cpu().stack, [&](std::uintptr_t ret) {
        // A return address points after the call; report the call itself for the symbolizer.
        print("    #{} {:#018x}\n", n++, ret - 1);
    });
}

[[noreturn, gnu::noinline]] inline void panic(string_view message) {
    print("\ntoro: panic: {}\n", message);
    print_backtrace(0, reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0)));
    arch::shutdown(panic_status);
}

} // namespace toro

#define TORO_STRINGIFY2(x) #x
#define TORO_STRINGIFY(x) TORO_STRINGIFY2(x)
// Checks an invariant; on failure panics naming the condition, the place and the reason.
#define TORO_ASSERT(cond, why)                                                                               \
    do {                                                                                                     \
        if (!(cond)) [[unlikely]]                                                                            \
            ::toro::panic("assertion failed: " #cond " (" __FILE__ ":" TORO_STRINGIFY(__LINE__) "): " why);  \
    } while (0)
