// The x86-64 context switch, run on the host: a new context starts in its entry with the argument and an
// ABI-aligned stack, callee-saved state survives switches both ways, and contexts interleave as asked.
#include <catch2/catch.hpp>

#include <cstdint>
#include <memory>
#include <vector>

#include <toro/proc/context.hpp>

namespace {

struct pingpong {
    std::uintptr_t main_sp = 0, ctx_sp = 0;
    std::vector<int> trace;
    std::uintptr_t frame_alignment = 1;
    void* seen_arg = nullptr;
};
pingpong* pp = nullptr;

[[gnu::noinline]] void entry(void* arg) {
    pp->seen_arg = arg;
    pp->frame_alignment = reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0)) % 16;
    volatile std::uint64_t local = 0x1234'5678'9abc'def0; // lives across the switches below
    for (int i = 0; i < 3; ++i) {
        pp->trace.push_back(100 + i);
        toro::x86_64_context::switch_to(&pp->ctx_sp, pp->main_sp);
    }
    pp->trace.push_back(local == 0x1234'5678'9abc'def0 ? 200 : -1);
    toro::x86_64_context::switch_to(&pp->ctx_sp, pp->main_sp); // never resumed
}

} // namespace

TEST_CASE("a new context runs its entry with the argument on an aligned stack and switches back and forth") {
    pingpong state;
    pp = &state;
    constexpr std::size_t size = 64 * 1024;
    std::unique_ptr<std::byte[]> stack{new std::byte[size + 16]};
    // Deliberately misaligned top: prepare must align it.
    std::byte* top = stack.get() + size + 8;
    int marker = 42;
    state.ctx_sp = toro::x86_64_context::prepare(top, &entry, &marker);
    REQUIRE(state.ctx_sp % 16 == 8); // six saved registers and the start address below an aligned top
    REQUIRE(state.ctx_sp >= reinterpret_cast<std::uintptr_t>(stack.get()));

    volatile std::uint64_t mine = 0xfeed'f00d;
    for (int i = 0; i < 4; ++i) {
        state.trace.push_back(i);
        toro::x86_64_context::switch_to(&state.main_sp, state.ctx_sp);
    }
    CHECK(state.seen_arg == &marker);
    CHECK(state.frame_alignment == 0); // rbp of the entry's frame: 16-byte aligned as the ABI promises
    CHECK(state.trace == std::vector<int>{0, 100, 1, 101, 2, 102, 3, 200});
    CHECK(mine == 0xfeed'f00d);
}

TEST_CASE("prepare lays out the start frame: rbx holds the entry, r12 the argument, rbp ends the chain") {
    alignas(16) std::byte stack[256];
    int arg = 0;
    const std::uintptr_t sp = toro::x86_64_context::prepare(stack + sizeof stack, &entry, &arg);
    const auto* words = reinterpret_cast<const std::uintptr_t*>(sp);
    // Pop order of toro_context_switch: r15, r14, r13, r12, rbx, rbp, then ret.
    CHECK(words[3] == reinterpret_cast<std::uintptr_t>(&arg));
    CHECK(words[4] == reinterpret_cast<std::uintptr_t>(&entry));
    CHECK(words[5] == 0);
    CHECK(words[6] == reinterpret_cast<std::uintptr_t>(&toro::toro_context_start));
    CHECK(sp + 7 * 8 == reinterpret_cast<std::uintptr_t>(stack + sizeof stack));
}
