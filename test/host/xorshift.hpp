// A tiny deterministic generator for host tests (xorshift64), so randomized tests reproduce from their seed.
#pragma once

#include <cstdint>

struct xorshift {
    std::uint64_t s;
    std::uint64_t next() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        return s;
    }
    std::uint64_t below(std::uint64_t n) { return next() % n; }
};
