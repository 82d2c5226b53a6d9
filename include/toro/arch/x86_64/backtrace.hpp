// Frame-pointer backtraces. The kernel is built with -fno-omit-frame-pointer, so every frame starts with
// [saved rbp][return address]. The walk trusts nothing: each frame must lie inside the stack being walked,
// be 8-byte aligned and sit above the previous one, so a corrupt chain ends the walk instead of faulting.
#pragma once

#include <cstddef>
#include <cstdint>

namespace toro::arch {

struct stack_range {
    std::uintptr_t low = 0;  // lowest usable address
    std::uintptr_t high = 0; // one past the highest
    constexpr bool contains(std::uintptr_t a, std::size_t len) const {
        return a >= low && a <= high && len <= high - a;
    }
};

inline constexpr std::size_t max_backtrace_frames = 32;

// Calls visit(return_address) for each frame, starting at frame pointer `rbp` on `stack`.
// Returns the number of frames visited.
template <class Visit>
std::size_t walk_frames(std::uintptr_t rbp, stack_range stack, Visit&& visit) {
    std::size_t n = 0;
    while (n < max_backtrace_frames && rbp % 8 == 0 && stack.contains(rbp, 16)) {
        auto* frame = reinterpret_cast<const std::uintptr_t*>(rbp);
        std::uintptr_t next = frame[0], ret = frame[1];
        if (ret == 0) break;
        visit(ret);
        ++n;
        if (next <= rbp) break; // the chain must climb towards the stack's top
        rbp = next;
    }
    return n;
}

} // namespace toro::arch
