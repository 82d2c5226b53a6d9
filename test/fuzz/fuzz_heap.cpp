// libFuzzer target for toro::heap: the input is a sequence of operations on a two-CPU heap_group over a
// 1 MiB buffer_page_source, checked against a model of the live blocks.
//
// Each operation is an opcode byte, then its operands (missing bytes read as 0):
//   op % 8 = 0-2  get_mem           size: 2 bytes
//            3    get_aligned_mem   size: 2 bytes, alignment: 1 byte (1 << (b % 13))
//            4-5  free_mem          index of a live block: 1 byte
//            6    realloc_mem       index: 1 byte, size: 2 bytes
//            7    control           1 byte: bit 0 switches CPU (frees go remote), bits 1-2: 1 drain_remote,
//                                   2 trim, 3 fault injection (the page source fails after bits 3-7 more
//                                   pages)
// Sizes: a 2-byte value below 0xe000 is a size up to 2100; above, a multiple of 1000 up to 63000.
// Invariants: blocks aligned as asked and never overlapping, contents kept (realloc included), errors only as
// "out of memory" values, no corruption report, and after freeing everything every page back in the source.
// Any violation is __builtin_trap, which libFuzzer reports as a crash.
#include <cstddef>
#include <cstdint>

#include <toro/mem/heap.hpp>
#include <toro/mem/page_source.hpp>

namespace {

std::uint32_t current_cpu = 0;

[[noreturn]] void fail() {
    __builtin_trap();
}
void check(bool ok) {
    if (!ok) fail();
}

struct fuzz_policy {
    static std::uint32_t current_cpu() { return ::current_cpu; }
    static void corruption(const toro::heap_corruption&) { fail(); } // valid operations only: never
};

constexpr std::size_t arena_pages = 256;
alignas(4096) std::byte arena[arena_pages * toro::page_size];

struct live_block {
    std::byte* p;
    std::size_t size, usable;
    std::uint8_t fill;
};
constexpr std::size_t max_live = 128;

class input {
public:
    input(const std::uint8_t* data, std::size_t size) : data_{data}, size_{size} {}
    bool done() const { return at_ >= size_; }
    std::uint8_t byte() { return at_ < size_ ? data_[at_++] : 0; }
    std::size_t size_operand() {
        const std::size_t v = byte() | std::size_t{byte()} << 8;
        return v < 0xe000 ? v % 2101 : (v % 64) * 1000;
    }

private:
    const std::uint8_t* data_;
    std::size_t size_;
    std::size_t at_ = 0;
};

void fill(std::byte* p, std::size_t n, std::uint8_t v) {
    __builtin_memset(p, v, n);
}
bool intact(const std::byte* p, std::size_t n, std::uint8_t v) {
    for (std::size_t i = 0; i < n; ++i)
        if (p[i] != std::byte{v}) return false;
    return true;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    toro::buffer_page_source src{arena};
    const std::size_t initial = src.free_bytes();
    toro::heap_group<toro::buffer_page_source, fuzz_policy, 2> group;
    check(group.init(src, 2).has_value());
    current_cpu = 0;

    live_block live[max_live];
    std::size_t n = 0;
    std::uint8_t next_fill = 1;

    // Checks a fresh block against alignment and every other live block, fills it and records it.
    auto add = [&](void* vp, std::size_t want, std::size_t align) {
        auto* p = static_cast<std::byte*>(vp);
        check(reinterpret_cast<std::uintptr_t>(p) % align == 0);
        const std::size_t usable = group.usable_size(p);
        check(usable >= (want == 0 ? 1 : want));
        for (std::size_t i = 0; i < n; ++i) check(p + usable <= live[i].p || live[i].p + live[i].usable <= p);
        live[n] = {p, want, usable, next_fill};
        fill(p, want, next_fill++);
        ++n;
    };
    auto expect_oom = [&](const toro::error& e) {
        check(e.what == toro::string_view{"out of memory; bytes requested"});
    };

    input in{data, size};
    while (!in.done()) {
        const std::uint8_t op = in.byte() % 8;
        if (op <= 3) {
            const std::size_t want = in.size_operand();
            const std::size_t align = op == 3 ? std::size_t{1} << (in.byte() % 13) : 16;
            if (n == max_live) continue;
            auto r = op == 3 ? group.get_aligned_mem(want, align) : group.get_mem(want);
            if (r)
                add(*r, want, align);
            else
                expect_oom(r.error());
        } else if (op <= 5) {
            const std::uint8_t i = in.byte();
            if (n == 0) continue;
            live_block& b = live[i % n];
            check(intact(b.p, b.size, b.fill));
            group.free_mem(b.p);
            b = live[--n];
        } else if (op == 6) {
            const std::uint8_t i = in.byte();
            const std::size_t want = in.size_operand();
            if (n == 0) continue;
            const std::size_t k = i % n;
            const live_block b = live[k];
            check(intact(b.p, b.size, b.fill));
            auto r = group.realloc_mem(b.p, want);
            if (!r) {
                expect_oom(r.error());
                check(want > b.usable);
                check(intact(b.p, b.size, b.fill)); // untouched
                continue;
            }
            auto* q = static_cast<std::byte*>(*r);
            check(intact(q, b.size < want ? b.size : want, b.fill));
            live[k] = live[--n];
            add(q, want, 16);
        } else {
            const std::uint8_t c = in.byte();
            if (c & 1) current_cpu ^= 1;
            switch ((c >> 1) & 3) {
            case 1:
                group.local().drain_remote();
                break;
            case 2:
                group.local().trim();
                break;
            case 3:
                src.fail_after(c >> 3);
                break;
            default:
                break;
            }
        }
    }
    // Everything back: free the rest (from whichever CPU is current), then each owner drains and trims.
    src.fail_after(toro::buffer_page_source::no_limit);
    for (std::size_t i = 0; i < n; ++i) {
        check(intact(live[i].p, live[i].size, live[i].fill));
        group.free_mem(live[i].p);
    }
    for (std::uint32_t cpu = 0; cpu < 2; ++cpu) {
        current_cpu = cpu;
        group.local().trim();
        const toro::heap_stats& s = group.local().stats();
        check(s.live_blocks == 0 && s.live_bytes == 0 && s.slab_pages == 0 && s.large_pages == 0);
    }
    check(src.free_bytes() == initial);
    check(src.invalid_frees() == 0);
    return 0;
}
