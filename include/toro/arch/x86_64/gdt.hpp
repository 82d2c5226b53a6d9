// The kernel's GDT and TSS (64-bit), replacing the boot shim's GDT. The TSS exists for its interrupt stacks:
// #DF, NMI and #MC run on their own stacks so a kernel stack overflow still gets reported, not a triple
// fault.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace toro::arch {

inline constexpr std::uint16_t sel_code64 = 0x08;
inline constexpr std::uint16_t sel_data = 0x10;
inline constexpr std::uint16_t sel_tss = 0x18;

// Interrupt-stack-table slots (1-based, as the IDT gate's IST field counts them). One each: an #MC during an
// NMI report must not restart on the stack the NMI report is using.
inline constexpr std::uint8_t ist_double_fault = 1;
inline constexpr std::uint8_t ist_nmi = 2;
inline constexpr std::uint8_t ist_machine_check = 3;

struct [[gnu::packed]] tss64 {
    std::uint32_t reserved0;
    std::uint64_t rsp[3];
    std::uint64_t reserved1;
    std::uint64_t ist[7];
    std::uint64_t reserved2;
    std::uint16_t reserved3;
    std::uint16_t iomap_base;
};
static_assert(sizeof(tss64) == 104);

// The stacks #DF, NMI and #MC switch to: in src/boot/entry.S, each above an unmapped guard page.
struct ist_tops {
    std::uintptr_t double_fault, nmi, machine_check;
};

// One CPU's descriptor tables. The process unit will keep one per CPU.
struct alignas(16) cpu_tables {
    std::array<std::uint64_t, 5> gdt; // null, code64, data, TSS (two slots)
    tss64 tss;

    void load(const ist_tops& ist) {
        gdt[0] = 0;
        gdt[1] = 0x00af9b000000ffff; // 64-bit code, ring 0, accessed (no write-back into the table)
        gdt[2] = 0x00cf93000000ffff; // data, accessed
        tss = {};
        tss.ist[ist_double_fault - 1] = ist.double_fault;
        tss.ist[ist_nmi - 1] = ist.nmi;
        tss.ist[ist_machine_check - 1] = ist.machine_check;
        tss.iomap_base = sizeof(tss64); // no I/O permission bitmap
        auto base = reinterpret_cast<std::uint64_t>(&tss);
        std::uint64_t limit = sizeof(tss64) - 1;
        // Available 64-bit TSS (type 9), present; the base is split across both slots.
        gdt[3] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (std::uint64_t{0x89} << 40) |
                 (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
        gdt[4] = base >> 32;

        struct [[gnu::packed]] {
            std::uint16_t limit;
            std::uint64_t base;
        } ptr{sizeof(gdt) - 1, reinterpret_cast<std::uint64_t>(gdt.data())};
        // lgdt, then reload cs with a far return and the data segments, then the task register.
        asm volatile("lgdt %0\n\t"
                     "pushq %1\n\t"
                     "leaq 1f(%%rip), %%rax\n\t"
                     "pushq %%rax\n\t"
                     "lretq\n"
                     "1:\n\t"
                     "mov %2, %%ds\n\t"
                     "mov %2, %%es\n\t"
                     "mov %2, %%ss\n\t"
                     "ltr %3"
                     :
                     : "m"(ptr), "i"(sel_code64), "r"(static_cast<std::uint32_t>(sel_data)), "r"(sel_tss)
                     : "rax", "memory");
    }
};

} // namespace toro::arch
