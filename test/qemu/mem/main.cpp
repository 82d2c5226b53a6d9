// mem: a test appliance for the memory unit. Command line:
//   exhaust     allocate 1 MiB blocks until get_mem fails, free them all, do it again: the same count
//   small       many small blocks of every size class, written and checked, then freed
//   new         operator new / delete[] on objects with constructors
//   new-huge    operator new of 1 TiB: the panic names the size
//   double-free free_mem twice on one block: the heap reports it
#include <toro/kernel.hpp>
#include <toro/mem/memory_unit.hpp>

using mem_os = toro::appliance<toro::memory>;

namespace {

struct counted {
    static inline int live = 0;
    std::uint64_t value;
    counted() : value{0x5eed} { ++live; }
    ~counted() { --live; }
};

int exhaust() {
    std::size_t counts[2] = {};
    for (int round = 0; round < 2; ++round) {
        void* head = nullptr;
        toro::string_view why;
        for (;;) {
            auto p = toro::get_mem(1 << 20);
            if (!p) {
                why = p.error().what;
                break;
            }
            *static_cast<void**>(*p) = head; // a list through the blocks: no other memory needed
            head = *p;
            ++counts[round];
        }
        toro::print("mem: round {}: {} blocks of 1 MiB, then: {}\n", round, counts[round], why);
        while (head != nullptr) {
            void* next = *static_cast<void**>(head);
            toro::free_mem(head);
            head = next;
        }
    }
    toro::print("mem: recovered after out of memory: {}\n", counts[0] == counts[1] && counts[0] > 0);
    return counts[0] == counts[1] && counts[0] > 0 ? 0 : 1;
}

int small() {
    constexpr int n = 2000;
    static std::uint8_t* blocks[n];
    for (int i = 0; i < n; ++i) {
        std::size_t size = 1 + (i * 37) % 2100;
        auto p = toro::get_mem(size);
        if (!p) return 1;
        blocks[i] = static_cast<std::uint8_t*>(*p);
        for (std::size_t j = 0; j < size; ++j) blocks[i][j] = static_cast<std::uint8_t>(i + j);
    }
    int bad = 0;
    for (int i = 0; i < n; ++i) {
        std::size_t size = 1 + (i * 37) % 2100;
        for (std::size_t j = 0; j < size; ++j) bad += blocks[i][j] != static_cast<std::uint8_t>(i + j);
        toro::free_mem(blocks[i]);
    }
    toro::print("mem: {} small blocks written and checked, {} bad bytes\n", n, bad);
    return bad == 0 ? 0 : 1;
}

} // namespace

int app_main(mem_os& os) {
    toro::string_view what = os.boot.cmdline();
    toro::print("mem: {} bytes usable, {} free\n", os.usable_bytes(), os.free_bytes());
    if (what == "exhaust") return exhaust();
    if (what == "small") return small();
    if (what == "new") {
        auto* a = new counted[100];
        bool ok = counted::live == 100 && a[99].value == 0x5eed;
        delete[] a;
        auto* one = new counted;
        delete one;
        toro::print("mem: new/delete: constructed {}, live after delete {}\n", ok, counted::live);
        return ok && counted::live == 0 ? 0 : 1;
    }
    if (what == "new-huge") {
        volatile std::size_t huge = std::size_t{1} << 40;
        char* p = new char[huge];
        p[0] = 1;
        return 1;
    }
    if (what == "double-free") {
        auto p = toro::get_mem(32);
        if (!p) return 1;
        toro::free_mem(*p);
        toro::free_mem(*p);
        return 1;
    }
    return 0;
}

TORO_APPLIANCE(mem_os, app_main)
