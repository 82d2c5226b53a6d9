// Frame-pointer walking over a fake stack: well-formed chains, and chains that leave the stack, loop or go
// down, which must end the walk rather than read wild memory.
#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#include <toro/arch/x86_64/backtrace.hpp>

using toro::arch::stack_range;
using toro::arch::walk_frames;

namespace {

struct fake_stack {
    alignas(16) std::uintptr_t words[64] = {};
    stack_range range() const {
        return {reinterpret_cast<std::uintptr_t>(words), reinterpret_cast<std::uintptr_t>(words + 64)};
    }
    std::uintptr_t at(int i) const { return reinterpret_cast<std::uintptr_t>(&words[i]); }
    // A frame at word i: [saved rbp][return address].
    void frame(int i, std::uintptr_t next, std::uintptr_t ret) {
        words[i] = next;
        words[i + 1] = ret;
    }
};

std::vector<std::uintptr_t> walk(std::uintptr_t rbp, stack_range r) {
    std::vector<std::uintptr_t> out;
    walk_frames(rbp, r, [&](std::uintptr_t a) { out.push_back(a); });
    return out;
}

} // namespace

TEST_CASE("a well-formed chain is walked to its zero return address") {
    fake_stack s;
    s.frame(4, s.at(10), 0x1111);
    s.frame(10, s.at(20), 0x2222);
    s.frame(20, 0, 0x3333);
    CHECK(walk(s.at(4), s.range()) == std::vector<std::uintptr_t>{0x1111, 0x2222, 0x3333});
}

TEST_CASE("the chain must climb: a loop or a step down ends the walk") {
    fake_stack s;
    s.frame(10, s.at(4), 0x1111); // points down
    s.frame(4, s.at(10), 0x2222);
    CHECK(walk(s.at(10), s.range()) == std::vector<std::uintptr_t>{0x1111});
    fake_stack t;
    t.frame(8, t.at(8), 0x4444); // points at itself
    CHECK(walk(t.at(8), t.range()) == std::vector<std::uintptr_t>{0x4444});
}

TEST_CASE("frames outside the stack or misaligned are never read") {
    fake_stack s;
    s.frame(4, 0xdead0000, 0x1111); // next frame is outside the stack
    CHECK(walk(s.at(4), s.range()) == std::vector<std::uintptr_t>{0x1111});
    CHECK(walk(s.at(4) + 4, s.range()).empty()); // misaligned start
    CHECK(walk(0, s.range()).empty());
    CHECK(walk(s.at(63), s.range()).empty()); // a frame needs 16 bytes inside the stack
}

TEST_CASE("the walk stops after max_backtrace_frames") {
    // A valid chain longer than the cap: without the cap the walk would visit every frame.
    struct big_stack {
        alignas(16) std::uintptr_t words[2 * 48] = {};
    } s;
    auto at = [&](int i) { return reinterpret_cast<std::uintptr_t>(&s.words[i]); };
    for (int i = 0; i < 2 * 47; i += 2) {
        s.words[i] = at(i + 2);
        s.words[i + 1] = 0x1000 + i;
    }
    s.words[2 * 47] = 0;
    s.words[2 * 47 + 1] = 0x9999;
    stack_range r{at(0), at(0) + sizeof s.words};
    static_assert(toro::arch::max_backtrace_frames < 48);
    CHECK(walk(at(0), r).size() == toro::arch::max_backtrace_frames);
}
