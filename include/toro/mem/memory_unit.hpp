// toro::memory: the memory unit an appliance names (toro::appliance<toro::memory, ...>) to get a heap.
// It hands the boot memory map, minus low memory, the kernel image and what the boot map does not cover, to
// physical_memory, and puts one heap per CPU over it. Toro's GetMem/FreeMem are toro::get_mem/free_mem;
// operator new/delete use them and panic, naming the size, when memory runs out.
//
// Still to come (issue 4): mapping RAM beyond the boot shim's map, W^X, per-CPU ids from the process unit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>

#include <toro/base/expected.hpp>
#include <toro/boot/boot_info.hpp>
#include <toro/console/console.hpp>
#include <toro/mem/heap.hpp>
#include <toro/mem/physical.hpp>
#include <toro/panic.hpp>

extern "C" {
extern char __kernel_start[], __kernel_end[]; // src/boot/kernel.ld: code, data, BSS, stacks, page tables
extern std::uint64_t toro_boot_mapped_limit;  // src/boot/entry.S: the identity map covers [0, this)
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

class memory {
public:
    static constexpr string_view name = "memory";

    expected<void> start(const boot_info& boot) {
        const phys_range reserved[] = {
            {0, 0x100000}, // real-mode memory: BIOS data, EBDA, option ROMs, the loaders' boot structures
            {reinterpret_cast<std::uintptr_t>(__kernel_start),
             reinterpret_cast<std::uintptr_t>(__kernel_end)},
            {toro_boot_mapped_limit, ~std::uint64_t{0}}, // not mapped yet
        };
        if (auto r = kernel_pages.init(boot.memory, reserved); !r) return r;
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
