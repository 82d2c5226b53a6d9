// fault: a test appliance that does what its command line asks, to check the kernel's failure reports:
//   de  divide by zero (#DE)            pf      write to the NULL page (#PF)
//   ud  invalid opcode (#UD)            pfhigh  read an unmapped address above the identity map (#PF)
//   panic / assert                      a software panic, a failed TORO_ASSERT
//   overflow                            recurse until the boot stack's guard page (#DF, stack overflow)
//   maplimit                            read just below the boot map's end (fine), then at it (#PF)
//   writetext / execdata                write to the kernel's code, jump into data: W^X faults (#PF)
//   exit=N                              return N from the app
#include <toro/kernel.hpp>

using fault_os = toro::appliance<>;

namespace {

// Kept out of line so the backtrace has a frame of ours to show.
[[gnu::noinline]] void divide_by_zero() {
    asm volatile("xor %%ecx, %%ecx\n\tmov $1, %%eax\n\txor %%edx, %%edx\n\tdiv %%ecx" ::
                     : "rax", "rcx", "rdx");
}
[[gnu::noinline]] void write_null() {
    asm volatile("movq $0x2a, (%0)" ::"r"(std::uintptr_t{0}) : "memory");
}
[[gnu::noinline]] void read_unmapped() {
    std::uint64_t v;
    asm volatile("movq (%1), %0" : "=r"(v) : "r"(std::uintptr_t{1} << 46) : "memory");
}

// Each frame keeps a live buffer, so the recursion cannot be turned into a loop.
// (The depth bound is never reached: the 16 KiB boot stack overflows long before.)
[[gnu::noinline]] int recurse(int depth) {
    volatile char frame[512];
    frame[0] = static_cast<char>(depth);
    if (depth > 1'000'000) return frame[0];
    return recurse(depth + 1) + frame[0];
}

[[gnu::noinline]] std::uint64_t read_at(std::uint64_t addr) {
    std::uint64_t v;
    asm volatile("movq (%1), %0" : "=r"(v) : "r"(addr) : "memory");
    return v;
}

int parse_int(toro::string_view s) {
    int v = 0;
    for (char c : s) v = v * 10 + (c - '0');
    return v;
}

} // namespace

int app_main(fault_os& os) {
    toro::string_view what = os.boot.cmdline();
    toro::print("fault test: {}\n", what);
    if (what == "de") divide_by_zero();
    if (what == "pf") write_null();
    if (what == "pfhigh") read_unmapped();
    if (what == "ud") asm volatile("ud2");
    if (what == "overflow") return recurse(0);
    if (what == "writetext") asm volatile("movb $0x90, (%0)" ::"r"(&divide_by_zero) : "memory");
    if (what == "execdata") {
        static std::uint8_t ret_instruction[16] = {0xc3}; // ret, in a data page
        reinterpret_cast<void (*)()>(ret_instruction)();
    }
    if (what == "maplimit") {
        toro::print("fault test: mapped limit {:#x}\n", toro_boot_mapped_limit);
        (void)read_at(toro_boot_mapped_limit - 8);
        toro::print("fault test: read below the limit: ok\n");
        (void)read_at(toro_boot_mapped_limit);
    }
    if (what == "panic") toro::panic("the fault test asked for a panic");
    if (what == "assert") TORO_ASSERT(what.size() == 0, "the command line must be empty");
    if (what.starts_with("exit=")) return parse_int(what.substr(5));
    toro::print("fault test: nothing to do for '{}'\n", what);
    return 3;
}

TORO_APPLIANCE(fault_os, app_main)
