// toro::memory: the memory unit an appliance names (toro::appliance<toro::memory, ...>) to get a heap.
// It hands the boot memory map, minus low memory, the kernel image and what the boot map does not cover, to
// physical_memory, and puts one heap per CPU over it. Toro's GetMem/FreeMem are toro::get_mem/free_mem;
// operator new/delete use them and panic, naming the size, when memory runs out.
//
// RAM beyond the boot shim's map (toro_boot_mapped_limit) is mapped on first touch, a GiB at a time, by the
// page-fault handler below, so boot cost stays independent of RAM size. Per-CPU ids come with the process
// unit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>

#include <toro/arch/x86_64/cpu.hpp>
#include <toro/arch/x86_64/exceptions.hpp>
#include <toro/base/expected.hpp>
#include <toro/boot/boot_info.hpp>
#include <toro/console/console.hpp>
#include <toro/mem/heap.hpp>
#include <toro/mem/physical.hpp>
#include <toro/panic.hpp>

extern "C" {
extern char __kernel_start[], __kernel_end[]; // src/boot/kernel.ld: code, data, BSS, stacks, page tables
extern std::uint64_t toro_boot_mapped_limit;  // src/boot/entry.S: the identity map covers [0, this)
extern std::uint64_t toro_boot_pdpt[512];     // src/boot/entry.S: the map's PDPT (512 GiB)
}

namespace toro {

// The kernel's heap policy: CPU 0 until the process unit brings the others up; misuse is a panic.
struct kernel_heap_policy {
    static std::uint32_t current_cpu() { return 0; }
    [[noreturn]] static void corruption(const heap_corruption& r) {
        print("\ntoro: heap: {} (pointer {}, CPU {})\n", r.what, r.pointer, r.cpu);
        panic("heap misuse or corruption");
    }
};

inline constexpr std::uint32_t max_cpus = 8;
inline physical_memory kernel_pages;
inline heap_group<physical_memory, kernel_heap_policy, max_cpus> kernel_heap;

// Maps RAM beyond the boot map on first touch: one page directory of 2 MiB pages per GiB, set aside at start
// below the boot map's limit (so writing it cannot fault) and linked into the live PDPT, whose entry goes
// from not present to present: no stale TLB entry can exist for it.
class lazy_ram_map {
public:
    static constexpr std::uint64_t gib = std::uint64_t{1} << 30;
    static constexpr std::uint64_t reach = 512 * gib; // one PDPT

    expected<void> init(physical_memory& pages, std::uint64_t ram_end) {
        first_gib_ = toro_boot_mapped_limit / gib;
        const std::uint64_t end_gib = ((ram_end < reach ? ram_end : reach) + gib - 1) / gib;
        count_ = end_gib > first_gib_ ? end_gib - first_gib_ : 0;
        if (count_ == 0) return {};
        auto pd = pages.allocate_pages(count_);
        if (!pd) return unexpected{pd.error()};
        if (reinterpret_cast<std::uintptr_t>(*pd) + count_ * page_size > toro_boot_mapped_limit)
            return unexpected{"no room below the boot map for the page directories of RAM above it", count_};
        directories_ = reinterpret_cast<std::uint64_t*>(*pd);
        nx_ = (arch::cpuid(0x80000001).edx >> 20 & 1) != 0 ? std::uint64_t{1} << 63 : 0;
        return {};
    }

    // The page-fault handler's part: true when `addr` lies in RAM beyond the boot map and is now mapped.
    bool map(std::uint64_t addr, const physical_memory& ram) {
        const std::uint64_t g = addr / gib;
        if (g < first_gib_ || g >= first_gib_ + count_ || (toro_boot_pdpt[g] & 1) != 0 || !is_ram(addr, ram))
            return false;
        std::uint64_t* pd = directories_ + (g - first_gib_) * 512;
        for (std::uint64_t i = 0; i < 512; ++i) pd[i] = (g * gib + i * (std::uint64_t{2} << 20)) | 0x83 | nx_;
        __atomic_store_n(&toro_boot_pdpt[g], reinterpret_cast<std::uint64_t>(pd) | 0x3, __ATOMIC_RELEASE);
        ++mapped_;
        return true;
    }
    std::uint64_t mapped_gib() const { return mapped_; }

private:
    static bool is_ram(std::uint64_t addr, const physical_memory& ram) {
        for (std::size_t i = 0; i < ram.region_count(); ++i)
            if (addr >= ram.region(i).base && addr < ram.region(i).end) return true;
        return false;
    }

    std::uint64_t* directories_ = nullptr;
    std::uint64_t first_gib_ = 0, count_ = 0, mapped_ = 0, nx_ = 0;
};

inline lazy_ram_map kernel_ram_map;

class memory {
public:
    static constexpr string_view name = "memory";

    expected<void> start(const boot_info& boot) {
        const phys_range reserved[] = {
            {0, 0x100000}, // real-mode memory: BIOS data, EBDA, option ROMs, the loaders' boot structures
            {reinterpret_cast<std::uintptr_t>(__kernel_start),
             reinterpret_cast<std::uintptr_t>(__kernel_end)},
            {lazy_ram_map::reach, ~std::uint64_t{0}}, // beyond one PDPT: not mapped
        };
        if (auto r = kernel_pages.init(boot.memory, reserved); !r) return r;
        std::uint64_t ram_end = 0;
        for (const memory_region& r : boot.memory.regions())
            if (r.type == memory_type::usable) ram_end = r.end();
        if (auto r = kernel_ram_map.init(kernel_pages, ram_end); !r) return r;
        arch::page_fault_handler = [](const arch::fault_frame& f) {
            // Not-present faults (error code bit 0 clear) on RAM the boot map does not cover.
            return (f.error_code & 1) == 0 && kernel_ram_map.map(arch::read_cr2(), kernel_pages);
        };
        return kernel_heap.init(kernel_pages, 1);
    }

    std::size_t usable_bytes() const { return kernel_pages.usable_bytes(); }
    std::size_t free_bytes() const { return kernel_pages.free_bytes(); }
};

// Toro's GetMem / FreeMem, and friends.
inline expected<void*> get_mem(std::size_t size) {
    return kernel_heap.get_mem(size);
}
inline expected<void*> get_aligned_mem(std::size_t size, std::size_t alignment) {
    return kernel_heap.get_aligned_mem(size, alignment);
}
inline expected<void*> realloc_mem(void* p, std::size_t size) {
    return kernel_heap.realloc_mem(p, size);
}
inline void free_mem(void* p) {
    kernel_heap.free_mem(p);
}

[[noreturn, gnu::noinline]] inline void out_of_memory(std::size_t size, const error& why) {
    print("\ntoro: out of memory: operator new of {} bytes failed: {}\n", size, why);
    panic("operator new: out of memory");
}

} // namespace toro

// Global allocation functions, routed to the heap. Weak, so this header may be included by several
// translation units of one appliance (the replaceable functions cannot be inline).
[[gnu::weak]] void* operator new(std::size_t size) {
    auto r = toro::get_mem(size == 0 ? 1 : size);
    if (!r) toro::out_of_memory(size, r.error());
    return *r;
}
[[gnu::weak]] void* operator new[](std::size_t size) {
    return operator new(size);
}
[[gnu::weak]] void* operator new(std::size_t size, std::align_val_t align) {
    auto r = toro::get_aligned_mem(size == 0 ? 1 : size, static_cast<std::size_t>(align));
    if (!r) toro::out_of_memory(size, r.error());
    return *r;
}
[[gnu::weak]] void* operator new[](std::size_t size, std::align_val_t align) {
    return operator new(size, align);
}
[[gnu::weak]] void operator delete(void* p) noexcept {
    toro::free_mem(p);
}
[[gnu::weak]] void operator delete[](void* p) noexcept {
    toro::free_mem(p);
}
[[gnu::weak]] void operator delete(void* p, std::size_t) noexcept {
    toro::free_mem(p);
}
[[gnu::weak]] void operator delete[](void* p, std::size_t) noexcept {
    toro::free_mem(p);
}
[[gnu::weak]] void operator delete(void* p, std::align_val_t) noexcept {
    toro::free_mem(p);
}
[[gnu::weak]] void operator delete[](void* p, std::align_val_t) noexcept {
    toro::free_mem(p);
}
[[gnu::weak]] void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
    toro::free_mem(p);
}
[[gnu::weak]] void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
    toro::free_mem(p);
}
