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
#include <toro/arch/x86_64/cpu_local.hpp>
#include <toro/arch/x86_64/exceptions.hpp>
#include <toro/base/expected.hpp>
#include <toro/boot/boot_info.hpp>
#include <toro/boot/phys_reader.hpp>
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

// The kernel's heap policy: the calling CPU's heap (per-CPU data through GS); misuse is a panic.
struct kernel_heap_policy {
    static std::uint32_t current_cpu() { return arch::this_cpu_index(); }
    [[noreturn]] static void corruption(const heap_corruption& r) {
        print("\ntoro: heap: {} (pointer {}, CPU {})\n", r.what, r.pointer, r.cpu);
        panic("heap misuse or corruption");
    }
};

inline physical_memory kernel_pages;
inline heap_group<physical_memory, kernel_heap_policy, max_cpus> kernel_heap;

// The kernel's page map after boot: the boot shim's identity map, extended and edited only here, under one
// lock. It maps RAM beyond the boot map on first touch (page directories of 2 MiB pages, one per GiB, set
// aside at start below the boot map's limit, so writing them cannot fault), maps device windows (uncached),
// and unmaps single 4 KiB pages (thread stack guards), splitting a large page into a table first. Entries go
// from not present to present without a TLB flush (no stale entry can exist for them); the few edits of live
// entries (a split, a guard page) flush this CPU's TLB entry. Other CPUs may keep a stale translation of a
// page that became a guard: it only means an overflow there is caught a little later, never that memory is
// reused, because identity mappings never change their target.
class kernel_page_map {
public:
    static constexpr std::uint64_t gib = std::uint64_t{1} << 30;
    static constexpr std::uint64_t two_mib = std::uint64_t{2} << 20;
    static constexpr std::uint64_t reach = 512 * gib; // one PDPT
    static constexpr std::uint64_t present = 1, writable = 2, pwt = 8, pcd = 0x10, large = 0x80;
    static constexpr std::uint64_t address_mask = 0x000ffffffffff000;

    expected<void> init(physical_memory& pages, std::uint64_t ram_end) {
        pages_ = &pages;
        first_gib_ = toro_boot_mapped_limit / gib;
        const std::uint64_t end_gib = ((ram_end < reach ? ram_end : reach) + gib - 1) / gib;
        count_ = end_gib > first_gib_ ? end_gib - first_gib_ : 0;
        nx_ = (arch::cpuid(0x80000001).edx >> 20 & 1) != 0 ? std::uint64_t{1} << 63 : 0;
        if (count_ == 0) return {};
        auto pd = pages.allocate_pages(count_);
        if (!pd) return unexpected{pd.error()};
        if (reinterpret_cast<std::uintptr_t>(*pd) + count_ * page_size > toro_boot_mapped_limit)
            return unexpected{"no room below the boot map for the page directories of RAM above it", count_};
        directories_ = reinterpret_cast<std::uint64_t*>(*pd);
        return {};
    }

    // The page-fault handler's part: true when `addr` is RAM the map did not cover yet and now does.
    bool map_ram(std::uint64_t addr, const physical_memory& ram) {
        if (!is_ram(addr, ram, 1)) return false;
        detail::lock_guard g{lock_};
        std::uint64_t* e = pd_entry(addr, true);
        if (e == nullptr) return false;
        if ((*e & present) != 0) return true; // another CPU mapped it meanwhile: retry the access
        // The whole GiB's RAM at once: one fault per GiB, not one per 2 MiB.
        std::uint64_t* pd = e - (addr / two_mib) % 512;
        const std::uint64_t base = addr & ~(gib - 1);
        for (std::uint64_t i = 0; i < 512; ++i)
            if ((pd[i] & present) == 0 && is_ram(base + i * two_mib, ram, two_mib))
                pd[i] = (base + i * two_mib) | present | writable | large | nx_;
        ++mapped_;
        return true;
    }
    std::uint64_t mapped_gib() const { return mapped_; }

    // Identity-maps [phys, phys + size) no-execute: uncached for device registers, write-back (`cached`) for
    // firmware tables in RAM the heap does not own. Already-mapped 2 MiB pieces are left as they are
    // (RAM-typed: the MTRRs keep device windows uncached).
    expected<void*> map_device(std::uint64_t phys, std::uint64_t size, bool cached = false) {
        if (size == 0 || phys + size < phys || phys + size > reach)
            return unexpected{"device window outside the mappable 512 GiB; base", phys};
        detail::lock_guard g{lock_};
        for (std::uint64_t a = phys & ~(two_mib - 1); a < phys + size; a += two_mib) {
            std::uint64_t* e = pd_entry(a, true);
            if (e == nullptr) return unexpected{"no memory for a page directory of a device window", a};
            if ((*e & present) == 0) *e = a | present | writable | large | (cached ? 0 : pcd | pwt) | nx_;
        }
        return reinterpret_cast<void*>(phys);
    }

    // Maps or unmaps one 4 KiB page of the identity map (stack guards). The page must be mapped already
    // (RAM: touch it first, or it is mapped on demand here).
    expected<void> set_page_present(std::uint64_t page, bool on) {
        detail::lock_guard g{lock_};
        std::uint64_t* pte = pt_entry(page);
        if (pte == nullptr) return unexpected{"cannot reach the page table entry of page", page};
        if (on) {
            *pte |= present;
        } else {
            *pte &= ~present;
            invlpg(page);
        }
        return {};
    }

    // Executable or not (the AP start-up page must be, briefly).
    expected<void> set_page_executable(std::uint64_t page, bool on) {
        detail::lock_guard g{lock_};
        std::uint64_t* pte = pt_entry(page);
        if (pte == nullptr) return unexpected{"cannot reach the page table entry of page", page};
        *pte = on ? *pte & ~nx_ : *pte | nx_;
        invlpg(page);
        return {};
    }

private:
    // Does [addr, addr + len) overlap usable RAM?
    static bool is_ram(std::uint64_t addr, const physical_memory& ram, std::uint64_t len) {
        for (std::size_t i = 0; i < ram.region_count(); ++i)
            if (addr + len > ram.region(i).base && addr < ram.region(i).end) return true;
        return false;
    }
    static void invlpg(std::uint64_t a) { asm volatile("invlpg (%0)" ::"r"(a) : "memory"); }
    static std::uint64_t* table(std::uint64_t entry) {
        return reinterpret_cast<std::uint64_t*>(entry & address_mask);
    }

    // A page for a new table. It must lie in the boot map (writing it must not fault while the lock is
    // held); one beyond it goes back.
    std::uint64_t* table_page() {
        auto pg = pages_->allocate_pages(1);
        if (!pg) return nullptr;
        if (reinterpret_cast<std::uintptr_t>(*pg) + page_size > toro_boot_mapped_limit) {
            pages_->free_pages(*pg, 1);
            return nullptr;
        }
        return reinterpret_cast<std::uint64_t*>(*pg);
    }

    // A fresh, fully written table whose 512 entries map what the large entry `e` mapped, `step` apart.
    std::uint64_t* split(std::uint64_t e, std::uint64_t step, bool to_ptes) {
        std::uint64_t* t = table_page();
        if (t == nullptr) return nullptr;
        // Bit 7 is PS in a directory entry and PAT in a page table entry; the large page's PAT bit (12) is
        // never set by this kernel, so the 4 KiB entries need no PAT bit either.
        const std::uint64_t flags = (e & ~address_mask & ~(to_ptes ? large : 0)) | (e & nx_);
        const std::uint64_t base = e & address_mask & ~(step * 512 - 1);
        for (std::uint64_t i = 0; i < 512; ++i) t[i] = (base + i * step) | flags;
        return t;
    }

    // The PD entry of `addr`'s 2 MiB piece; with `create`, a missing PD comes from the set-aside directories
    // (RAM GiBs) or a new page (device GiBs), and a 1 GiB page is split into 2 MiB ones.
    std::uint64_t* pd_entry(std::uint64_t addr, bool create) {
        const std::uint64_t gi = addr / gib;
        if (gi >= 512) return nullptr;
        std::uint64_t& pdpte = toro_boot_pdpt[gi];
        if ((pdpte & present) == 0) {
            if (!create) return nullptr;
            std::uint64_t* pd = nullptr;
            if (gi >= first_gib_ && gi < first_gib_ + count_) {
                pd = directories_ + (gi - first_gib_) * 512;
            } else {
                pd = table_page();
                if (pd == nullptr) return nullptr;
            }
            for (std::uint64_t i = 0; i < 512; ++i) pd[i] = 0;
            __atomic_store_n(&pdpte, reinterpret_cast<std::uint64_t>(pd) | present | writable,
                             __ATOMIC_RELEASE);
        } else if ((pdpte & large) != 0) {
            std::uint64_t* pd = split(pdpte, two_mib, false);
            if (pd == nullptr) return nullptr;
            __atomic_store_n(&pdpte, reinterpret_cast<std::uint64_t>(pd) | present | writable,
                             __ATOMIC_RELEASE);
            invlpg(addr);
        }
        return table(pdpte) + (addr / two_mib) % 512;
    }

    std::uint64_t* pt_entry(std::uint64_t page) {
        std::uint64_t* pde = pd_entry(page, false);
        if (pde == nullptr || (*pde & present) == 0) return nullptr;
        if ((*pde & large) != 0) {
            std::uint64_t* pt = split(*pde, page_size, true);
            if (pt == nullptr) return nullptr;
            __atomic_store_n(pde, reinterpret_cast<std::uint64_t>(pt) | present | writable, __ATOMIC_RELEASE);
            invlpg(page);
        }
        return table(*pde) + (page / page_size) % 512;
    }

    physical_memory* pages_ = nullptr;
    std::uint64_t* directories_ = nullptr;
    std::uint64_t first_gib_ = 0, count_ = 0, mapped_ = 0, nx_ = 0;
    detail::spin_lock lock_;
};

inline kernel_page_map kernel_map;

// Reads firmware tables (ACPI, MP) wherever they are, mapping them first (write-back: they are RAM; ACPI
// tables may lie beyond the boot map). Models phys_viewer. The parsers read field by field: the last 2 MiB
// piece known mapped is remembered, so most reads are a compare and a copy.
struct firmware_reader {
    std::uint64_t mapped_base = 0, mapped_end = 0;

    const std::byte* view(std::uint64_t phys, std::size_t len) {
        if (phys < 4096 || len == 0 || phys + len < phys) return nullptr;
        if (phys < mapped_base || phys + len > mapped_end) {
            if (!kernel_map.map_device(phys, len, true)) return nullptr;
            mapped_base = phys & ~(kernel_page_map::two_mib - 1);
            mapped_end = (phys + len + kernel_page_map::two_mib - 1) & ~(kernel_page_map::two_mib - 1);
        }
        return reinterpret_cast<const std::byte*>(phys);
    }
    bool read(std::uint64_t phys, void* dst, std::size_t len) {
        const std::byte* p = view(phys, len);
        if (p != nullptr) __builtin_memcpy(dst, p, len);
        return p != nullptr;
    }
};
static_assert(phys_viewer<firmware_reader>);

// A thread stack: `size` usable bytes above one unmapped guard page, so an overflow faults instead of running
// into whatever lies below. Stacks come from whole pages (not the heap): the guard must be a page of its own.
struct guarded_stack {
    std::byte* guard = nullptr; // the unmapped page; the stack is [guard + page_size, top)
    std::size_t size = 0;
    std::byte* bottom() const { return guard + page_size; }
    std::byte* top() const { return guard + page_size + size; }
    bool contains_guard(std::uint64_t addr) const {
        return addr >= reinterpret_cast<std::uintptr_t>(guard) &&
               addr < reinterpret_cast<std::uintptr_t>(guard) + page_size;
    }
};

inline expected<guarded_stack> allocate_stack(std::size_t size) {
    size = (size + page_size - 1) & ~(page_size - 1);
    if (size == 0) return unexpected{"a thread stack needs at least one page", 0};
    auto run = kernel_pages.allocate_pages(size / page_size + 1);
    if (!run) return unexpected{run.error()};
    const auto guard = reinterpret_cast<std::uintptr_t>(*run);
    // Touch the guard first: RAM beyond the boot map gets its 2 MiB mapping now, not inside the split.
    *reinterpret_cast<volatile std::uint8_t*>(guard) = 0;
    if (auto r = kernel_map.set_page_present(guard, false); !r) {
        kernel_pages.free_pages(*run, size / page_size + 1);
        return unexpected{r.error()};
    }
    return guarded_stack{*run, size};
}

inline void free_stack(const guarded_stack& s) {
    if (s.guard == nullptr) return;
    (void)kernel_map.set_page_present(reinterpret_cast<std::uintptr_t>(s.guard), true);
    kernel_pages.free_pages(s.guard, s.size / page_size + 1);
}

class memory {
public:
    static constexpr string_view name = "memory";

    expected<void> start(const boot_info& boot) {
        const phys_range reserved[] = {
            {0, 0x100000}, // real-mode memory: BIOS data, EBDA, option ROMs, the loaders' boot structures
            {reinterpret_cast<std::uintptr_t>(__kernel_start),
             reinterpret_cast<std::uintptr_t>(__kernel_end)},
            {kernel_page_map::reach, ~std::uint64_t{0}}, // beyond one PDPT: not mapped
        };
        if (auto r = kernel_pages.init(boot.memory, reserved); !r) return r;
        std::uint64_t ram_end = 0;
        for (const memory_region& r : boot.memory.regions())
            if (r.type == memory_type::usable) ram_end = r.end();
        if (auto r = kernel_map.init(kernel_pages, ram_end); !r) return r;
        arch::page_fault_handler = [](const arch::fault_frame& f) {
            // Not-present faults (error code bit 0 clear) on RAM the boot map does not cover.
            return (f.error_code & 1) == 0 && kernel_map.map_ram(arch::read_cr2(), kernel_pages);
        };
        return kernel_heap.init(kernel_pages, max_cpus); // one heap per possible CPU: attaching costs nothing
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
