// The virtio PCI transports (virtio 1.x, section 4.1): legacy_pci_transport<Io> (the legacy
// interface, 4.1.4.8: registers in I/O BAR0, 32 feature bits, one page frame per queue) and
// modern_pci_transport<Mmio> (4.1.4: the common, notify, ISR and device configuration structures the vendor
// capabilities place in memory BARs), both modelling virtio::transport; plus find_virtio_pci, which
// enumerates PCI, identifies a virtio function (vendor 0x1af4), sizes its BARs and assigns the ones firmware
// left at 0 (qboot leaves them all so, and the command register 0), enables decoding and bus mastering, and
// parses the virtio capabilities.
//
// Registers are reached through a virtio_reg_bus: 8, 16 and 32-bit reads and writes at an offset from a base
// (pci_port_regs: port I/O, pci_mmio_regs: an identity-mapped uncached window; mocks on the host). The spec
// asks for accesses of each field's natural width, so the transports never use a wider or narrower one.
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <utility>

#include <toro/arch/x86_64/port_io.hpp>
#include <toro/base/expected.hpp>
#include <toro/base/maybe.hpp>
#include <toro/base/string_view.hpp>
#include <toro/dev/pci/config.hpp>
#include <toro/dev/pci/pci.hpp>
#include <toro/dev/virtio/transport.hpp>
#include <toro/dev/virtio/virtqueue.hpp>

namespace toro::virtio {

// 8/16/32-bit register accesses at base + offset.
template <class T>
concept virtio_reg_bus = requires(T& b, std::uint32_t offset, std::uint8_t v8, std::uint16_t v16,
                                  std::uint32_t v32) {
    { b.read8(offset) } -> std::same_as<std::uint8_t>;
    { b.read16(offset) } -> std::same_as<std::uint16_t>;
    { b.read32(offset) } -> std::same_as<std::uint32_t>;
    { b.write8(offset, v8) } -> std::same_as<void>;
    { b.write16(offset, v16) } -> std::same_as<void>;
    { b.write32(offset, v32) } -> std::same_as<void>;
};

// Registers in I/O space from port `base`.
struct pci_port_regs {
    std::uint16_t base = 0;
    std::uint16_t port(std::uint32_t offset) const { return static_cast<std::uint16_t>(base + offset); }
    std::uint8_t read8(std::uint32_t offset) const { return arch::inb(port(offset)); }
    std::uint16_t read16(std::uint32_t offset) const { return arch::inw(port(offset)); }
    std::uint32_t read32(std::uint32_t offset) const { return arch::inl(port(offset)); }
    void write8(std::uint32_t offset, std::uint8_t v) const { arch::outb(port(offset), v); }
    void write16(std::uint32_t offset, std::uint16_t v) const { arch::outw(port(offset), v); }
    void write32(std::uint32_t offset, std::uint32_t v) const { arch::outl(port(offset), v); }
};
static_assert(virtio_reg_bus<pci_port_regs>);

// Registers in a mapped (identity, uncached) memory window.
struct pci_mmio_regs {
    volatile std::byte* base = nullptr;
    template <class U>
    volatile U* at(std::uint32_t offset) const {
        return reinterpret_cast<volatile U*>(base + offset);
    }
    std::uint8_t read8(std::uint32_t offset) const { return *at<std::uint8_t>(offset); }
    std::uint16_t read16(std::uint32_t offset) const { return *at<std::uint16_t>(offset); }
    std::uint32_t read32(std::uint32_t offset) const { return *at<std::uint32_t>(offset); }
    void write8(std::uint32_t offset, std::uint8_t v) const { *at<std::uint8_t>(offset) = v; }
    void write16(std::uint32_t offset, std::uint16_t v) const { *at<std::uint16_t>(offset) = v; }
    void write32(std::uint32_t offset, std::uint32_t v) const { *at<std::uint32_t>(offset) = v; }
};
static_assert(virtio_reg_bus<pci_mmio_regs>);

// Legacy register offsets in BAR0 (4.1.4.8).
namespace legacy_pci_reg {
inline constexpr std::uint32_t host_features = 0x00;  // 32
inline constexpr std::uint32_t guest_features = 0x04; // 32
inline constexpr std::uint32_t queue_address = 0x08;  // 32: page frame number (4096-byte pages)
inline constexpr std::uint32_t queue_size = 0x0c;     // 16, read-only
inline constexpr std::uint32_t queue_select = 0x0e;   // 16
inline constexpr std::uint32_t queue_notify = 0x10;   // 16
inline constexpr std::uint32_t device_status = 0x12;  // 8
inline constexpr std::uint32_t isr_status = 0x13;     // 8, read clears
inline constexpr std::uint32_t config = 0x14;         // device config when MSI-X is disabled
inline constexpr std::uint32_t config_msix = 0x18;    // ... and when it is enabled (two vector registers)
inline constexpr std::uint32_t config_vector = 0x14;  // 16, with MSI-X: the configuration change vector
inline constexpr std::uint32_t queue_vector = 0x16;   // 16, with MSI-X: the selected queue's vector
} // namespace legacy_pci_reg

// "No vector": what a vector register holds when unassigned, or reads back when the device refused one.
inline constexpr std::uint16_t no_msix_vector = 0xffff;

// Common configuration structure offsets (4.1.4.3).
namespace common_cfg {
inline constexpr std::uint32_t device_feature_select = 0x00; // 32
inline constexpr std::uint32_t device_feature = 0x04;        // 32
inline constexpr std::uint32_t driver_feature_select = 0x08; // 32
inline constexpr std::uint32_t driver_feature = 0x0c;        // 32
inline constexpr std::uint32_t msix_config = 0x10;           // 16
inline constexpr std::uint32_t num_queues = 0x12;            // 16
inline constexpr std::uint32_t device_status = 0x14;         // 8
inline constexpr std::uint32_t config_generation = 0x15;     // 8
inline constexpr std::uint32_t queue_select = 0x16;          // 16
inline constexpr std::uint32_t queue_size = 0x18;            // 16
inline constexpr std::uint32_t queue_msix_vector = 0x1a;     // 16
inline constexpr std::uint32_t queue_enable = 0x1c;          // 16
inline constexpr std::uint32_t queue_notify_off = 0x1e;      // 16
inline constexpr std::uint32_t queue_desc = 0x20;            // 64
inline constexpr std::uint32_t queue_driver = 0x28;          // 64
inline constexpr std::uint32_t queue_device = 0x30;          // 64
inline constexpr std::uint32_t size = 0x38;                  // the structure's length
} // namespace common_cfg

// Virtio vendor capability (virtio_pci_cap, 4.1.4) fields, from the capability's offset, and its types.
namespace pci_cap {
inline constexpr std::uint8_t cap_len = 2, cfg_type = 3, bar = 4, offset = 8, length = 12;
inline constexpr std::uint8_t notify_off_multiplier = 16; // notify capability only
inline constexpr std::uint8_t common = 1, notify = 2, isr = 3, device = 4, pci_access = 5;
} // namespace pci_cap

inline constexpr std::uint16_t pci_vendor = 0x1af4;
inline constexpr std::uint16_t pci_legacy_first = 0x1000, pci_legacy_last = 0x103f;
inline constexpr std::uint16_t pci_modern_base = 0x1040, pci_modern_last = 0x107f;
inline constexpr std::uint16_t pci_subsystem_id = 0x2e; // a transitional device's virtio device id
inline constexpr std::uint32_t pci_legacy_page = 4096;

namespace pci_error {
inline constexpr string_view bad_queue_size{"virtio-pci: queue size zero, not a power of two or above max"};
inline constexpr string_view legacy_size{
    "virtio-pci legacy: the queue size is the device's, not the driver's"};
inline constexpr string_view no_queue{"virtio-pci: the queue does not exist (size 0)"};
inline constexpr string_view not_legacy_layout{
    "virtio-pci legacy: queue not in the contiguous legacy layout (desc page-aligned, 4096 used alignment)"};
inline constexpr string_view pfn_too_high{"virtio-pci legacy: queue page frame number above 32 bits"};
inline constexpr string_view misaligned{"virtio-pci: queue addresses misaligned (desc 16, avail 2, used 4)"};
inline constexpr string_view not_found{"virtio-pci: no such virtio function on PCI; virtio device id"};
inline constexpr string_view bad_cap{"virtio-pci: a virtio capability names no memory BAR or overflows it"};
inline constexpr string_view missing_cap{"virtio-pci: modern function lacks a common/notify/ISR/device cap"};
inline constexpr string_view no_io_bar{"virtio-pci: legacy function has no I/O BAR0"};
inline constexpr string_view window_full{"virtio-pci: no room left in the BAR window for a BAR of size"};
inline constexpr string_view bar_stuck{"virtio-pci: an assigned BAR did not read back its address; BAR"};
inline constexpr string_view no_msix{
    "virtio-pci legacy: MSI-X vectors set on a transport made without MSI-X"};
inline constexpr string_view vector_refused{"virtio-pci: the device refused the MSI-X table entry; entry"};
} // namespace pci_error

namespace detail {
// Reads [offset, offset + len) of a config region with accesses of natural width: 4 where the address is
// 4-aligned and 4 bytes remain, 2 likewise, else 1.
template <virtio_reg_bus B>
void read_config_natural(B& b, std::uint32_t base, std::uint32_t offset, void* dst, std::uint32_t len) {
    auto* out = static_cast<std::byte*>(dst);
    for (std::uint32_t i = 0; i < len;) {
        const std::uint32_t at = offset + i;
        if (at % 4 == 0 && len - i >= 4) {
            const std::uint32_t w = b.read32(base + at);
            for (std::uint32_t k = 0; k < 4; ++k) out[i + k] = static_cast<std::byte>(w >> (8 * k));
            i += 4;
        } else if (at % 2 == 0 && len - i >= 2) {
            const std::uint16_t w = b.read16(base + at);
            out[i] = static_cast<std::byte>(w);
            out[i + 1] = static_cast<std::byte>(w >> 8);
            i += 2;
        } else {
            out[i++] = static_cast<std::byte>(b.read8(base + at));
        }
    }
}
inline void zero(void* dst, std::uint32_t len) {
    auto* out = static_cast<std::byte*>(dst);
    for (std::uint32_t i = 0; i < len; ++i) out[i] = std::byte{0};
}
} // namespace detail

// ---- Legacy interface (4.1.4.8) ----

template <virtio_reg_bus Io>
class legacy_pci_transport {
public:
    static constexpr std::uint32_t reset_spins = 1u << 16;

    // io: BAR0; device: the virtio device id (for a transitional function, its subsystem id); io_size: BAR0's
    // size (config reads beyond it read zeros); msix_enabled: moves the device config from 0x14 to 0x18.
    legacy_pci_transport(Io io, std::uint32_t device, std::uint32_t io_size, bool msix_enabled = false)
        : io_{std::move(io)}, device_{device}, config_{msix_enabled ? legacy_pci_reg::config_msix
                                                                    : legacy_pci_reg::config},
          config_size_{io_size > config_ ? io_size - config_ : 0} {}

    std::uint32_t device_id() const { return device_; }
    bool legacy() const { return true; }

    void reset() {
        io_.write8(legacy_pci_reg::device_status, 0);
        for (std::uint32_t i = 0; i < reset_spins && io_.read8(legacy_pci_reg::device_status) != 0; ++i)
            asm volatile("pause");
    }
    std::uint8_t status() { return io_.read8(legacy_pci_reg::device_status); }
    void set_status(std::uint8_t s) { io_.write8(legacy_pci_reg::device_status, s); }

    std::uint64_t device_features() { return io_.read32(legacy_pci_reg::host_features); }
    void set_driver_features(std::uint64_t f) {
        io_.write32(legacy_pci_reg::guest_features, static_cast<std::uint32_t>(f));
    }

    std::uint16_t max_queue_size(std::uint16_t q) {
        io_.write16(legacy_pci_reg::queue_select, q);
        const std::uint16_t m = io_.read16(legacy_pci_reg::queue_size);
        return m > 32768 ? 32768 : m;
    }

    // The legacy queue size is fixed by the device: `size` must be it. The addresses must be where
    // virtqueue_memory::legacy(base, size) puts them, page-aligned; all checked before the PFN is written.
    expected<void> setup_queue(std::uint16_t q, std::uint16_t size, const queue_addresses& a) {
        if (size == 0 || (size & (size - 1)) != 0) return unexpected{pci_error::bad_queue_size, size};
        const ring_layout l = legacy_layout(size, pci_legacy_page);
        if (a.desc % pci_legacy_page != 0 || a.avail != a.desc + l.avail_offset ||
            a.used != a.desc + l.used_offset)
            return unexpected{pci_error::not_legacy_layout, a.desc};
        const std::uint64_t pfn = a.desc / pci_legacy_page;
        if (pfn > 0xffffffff) return unexpected{pci_error::pfn_too_high, a.desc};
        const std::uint16_t max = max_queue_size(q); // also selects the queue
        if (max == 0) return unexpected{pci_error::no_queue, q};
        if (size != max) return unexpected{pci_error::legacy_size, max};
        if (queue_vector_ != no_msix_vector)
            if (auto ok = set_queue_vector(q, queue_vector_); !ok) return ok;
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        io_.write32(legacy_pci_reg::queue_address, static_cast<std::uint32_t>(pfn));
        return {};
    }

    // The MSI-X table entry setup_queue gives every queue before it goes live (4.1.5.1.3: vectors are part
    // of queue setup, so no interrupt of a new queue goes unsignalled). no_msix_vector: none.
    void use_queue_vector(std::uint16_t entry) { queue_vector_ = entry; }

    void notify(std::uint16_t q) {
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        io_.write16(legacy_pci_reg::queue_notify, q);
    }

    // Legacy config has no generation counter; reads beyond BAR0 give zeros.
    void read_config(std::uint32_t offset, void* dst, std::uint32_t len) {
        if (offset > config_size_ || len > config_size_ - offset) return detail::zero(dst, len);
        detail::read_config_natural(io_, config_, offset, dst, len);
    }

    // Reading the ISR acknowledges it.
    std::uint32_t interrupt_status() { return io_.read8(legacy_pci_reg::isr_status); }

    // MSI-X table entries for configuration changes and for queue q (4.1.4.8: the two registers exist only
    // while MSI-X is enabled). Read back: a device that cannot use the entry answers no_msix_vector.
    expected<void> set_config_vector(std::uint16_t entry) {
        if (config_ != legacy_pci_reg::config_msix) return unexpected{pci_error::no_msix};
        io_.write16(legacy_pci_reg::config_vector, entry);
        if (io_.read16(legacy_pci_reg::config_vector) != entry)
            return unexpected{pci_error::vector_refused, entry};
        return {};
    }
    expected<void> set_queue_vector(std::uint16_t q, std::uint16_t entry) {
        if (config_ != legacy_pci_reg::config_msix) return unexpected{pci_error::no_msix};
        if (max_queue_size(q) == 0) return unexpected{pci_error::no_queue, q}; // (selects the queue)
        io_.write16(legacy_pci_reg::queue_vector, entry);
        if (io_.read16(legacy_pci_reg::queue_vector) != entry)
            return unexpected{pci_error::vector_refused, entry};
        return {};
    }

    Io& io() { return io_; }

private:
    Io io_;
    std::uint32_t device_;
    std::uint32_t config_;
    std::uint32_t config_size_;
    std::uint16_t queue_vector_ = no_msix_vector;
};
static_assert(transport<legacy_pci_transport<pci_port_regs>>);

// ---- Modern interface (4.1.4) ----

// Where one virtio structure lives: a window (already offset to the structure) and its length.
template <virtio_reg_bus Mmio>
struct modern_pci_regions {
    Mmio common, notify, isr, device;
    std::uint32_t notify_length = 0;
    std::uint32_t device_length = 0;
    std::uint32_t notify_off_multiplier = 0;
};

template <virtio_reg_bus Mmio>
class modern_pci_transport {
public:
    static constexpr std::uint32_t reset_spins = 1u << 16;
    static constexpr std::uint32_t config_retries = 16;
    static constexpr std::uint16_t cached_queues = 8; // queue_notify_off kept for queues below this

    modern_pci_transport(modern_pci_regions<Mmio> r, std::uint32_t device)
        : r_{std::move(r)}, device_{device} {}

    std::uint32_t device_id() const { return device_; }
    bool legacy() const { return false; }

    // Done when device_status reads 0 (4.1.4.3.2).
    void reset() {
        r_.common.write8(common_cfg::device_status, 0);
        for (std::uint32_t i = 0; i < reset_spins && r_.common.read8(common_cfg::device_status) != 0; ++i)
            asm volatile("pause");
    }
    std::uint8_t status() { return r_.common.read8(common_cfg::device_status); }
    void set_status(std::uint8_t s) { r_.common.write8(common_cfg::device_status, s); }

    std::uint64_t device_features() {
        r_.common.write32(common_cfg::device_feature_select, 0);
        std::uint64_t f = r_.common.read32(common_cfg::device_feature);
        r_.common.write32(common_cfg::device_feature_select, 1);
        return f | std::uint64_t{r_.common.read32(common_cfg::device_feature)} << 32;
    }
    void set_driver_features(std::uint64_t f) {
        r_.common.write32(common_cfg::driver_feature_select, 0);
        r_.common.write32(common_cfg::driver_feature, static_cast<std::uint32_t>(f));
        r_.common.write32(common_cfg::driver_feature_select, 1);
        r_.common.write32(common_cfg::driver_feature, static_cast<std::uint32_t>(f >> 32));
    }

    // A queue number at or above num_queues does not exist (0). queue_size reads the maximum until the
    // driver writes a smaller one.
    std::uint16_t max_queue_size(std::uint16_t q) {
        if (q >= r_.common.read16(common_cfg::num_queues)) return 0;
        r_.common.write16(common_cfg::queue_select, q);
        const std::uint16_t m = r_.common.read16(common_cfg::queue_size);
        return m > 32768 ? 32768 : m;
    }

    expected<void> setup_queue(std::uint16_t q, std::uint16_t size, const queue_addresses& a) {
        if (size == 0 || (size & (size - 1)) != 0) return unexpected{pci_error::bad_queue_size, size};
        if (a.desc % desc_table_align != 0 || a.avail % avail_ring_align != 0 ||
            a.used % used_ring_align != 0)
            return unexpected{pci_error::misaligned, a.desc};
        const std::uint16_t max = max_queue_size(q); // also selects the queue
        if (max == 0) return unexpected{pci_error::no_queue, q};
        if (size > max) return unexpected{pci_error::bad_queue_size, size};
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        r_.common.write16(common_cfg::queue_size, size);
        write64(common_cfg::queue_desc, a.desc);
        write64(common_cfg::queue_driver, a.avail);
        write64(common_cfg::queue_device, a.used);
        const std::uint16_t off = r_.common.read16(common_cfg::queue_notify_off);
        if (q < cached_queues) notify_off_[q] = off;
        if (queue_vector_ != no_msix_vector) {
            r_.common.write16(common_cfg::queue_msix_vector, queue_vector_);
            if (r_.common.read16(common_cfg::queue_msix_vector) != queue_vector_)
                return unexpected{pci_error::vector_refused, queue_vector_};
        }
        r_.common.write16(common_cfg::queue_enable, 1);
        return {};
    }

    // The MSI-X table entry setup_queue gives every queue before enabling it (4.1.5.1.3). no_msix_vector:
    // none.
    void use_queue_vector(std::uint16_t entry) { queue_vector_ = entry; }

    // The doorbell at notify + queue_notify_off * notify_off_multiplier; one outside the notify structure
    // is not rung.
    void notify(std::uint16_t q) {
        std::uint16_t off = 0;
        if (q < cached_queues) {
            off = notify_off_[q];
        } else {
            r_.common.write16(common_cfg::queue_select, q);
            off = r_.common.read16(common_cfg::queue_notify_off);
        }
        const std::uint64_t at = std::uint64_t{off} * r_.notify_off_multiplier;
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (at + 2 <= r_.notify_length) r_.notify.write16(static_cast<std::uint32_t>(at), q);
    }

    // Repeated until config_generation is the same before and after (config_retries passes at most).
    void read_config(std::uint32_t offset, void* dst, std::uint32_t len) {
        if (offset > r_.device_length || len > r_.device_length - offset) return detail::zero(dst, len);
        for (std::uint32_t pass = 0; pass < config_retries; ++pass) {
            const std::uint8_t before = r_.common.read8(common_cfg::config_generation);
            detail::read_config_natural(r_.device, 0, offset, dst, len);
            if (r_.common.read8(common_cfg::config_generation) == before) return;
        }
    }

    std::uint32_t interrupt_status() { return r_.isr.read8(0); }

    // MSI-X table entries for configuration changes and for queue q (4.1.4.3: msix_config,
    // queue_msix_vector), read back: a device that cannot use the entry answers no_msix_vector. A device
    // reset forgets them: set them after start().
    expected<void> set_config_vector(std::uint16_t entry) {
        r_.common.write16(common_cfg::msix_config, entry);
        if (r_.common.read16(common_cfg::msix_config) != entry)
            return unexpected{pci_error::vector_refused, entry};
        return {};
    }
    expected<void> set_queue_vector(std::uint16_t q, std::uint16_t entry) {
        if (q >= r_.common.read16(common_cfg::num_queues)) return unexpected{pci_error::no_queue, q};
        r_.common.write16(common_cfg::queue_select, q);
        r_.common.write16(common_cfg::queue_msix_vector, entry);
        if (r_.common.read16(common_cfg::queue_msix_vector) != entry)
            return unexpected{pci_error::vector_refused, entry};
        return {};
    }

    modern_pci_regions<Mmio>& regions() { return r_; }

private:
    void write64(std::uint32_t off, std::uint64_t v) {
        r_.common.write32(off, static_cast<std::uint32_t>(v));
        r_.common.write32(off + 4, static_cast<std::uint32_t>(v >> 32));
    }

    modern_pci_regions<Mmio> r_;
    std::uint32_t device_;
    std::array<std::uint16_t, cached_queues> notify_off_{};
    std::uint16_t queue_vector_ = no_msix_vector;
};
static_assert(transport<modern_pci_transport<pci_mmio_regs>>);

// ---- Finding and setting up a virtio PCI function ----

// A bump allocator for BARs firmware left unassigned: memory BARs (64-bit ones too) in [mem_next, mem_end)
// below 4 GiB, I/O BARs in [io_next, io_end); each naturally aligned to its size.
struct pci_bar_window {
    // QEMU pc: RAM ends well below 0xe0000000 with up to 3.5 GiB; the IOAPIC is at 0xfec00000.
    std::uint64_t mem_next = 0xe0000000, mem_end = 0xfec00000;
    std::uint64_t io_next = 0xc000, io_end = 0x10000;

    expected<std::uint64_t> take(bar_kind kind, std::uint64_t size) {
        std::uint64_t& next = kind == bar_kind::io ? io_next : mem_next;
        const std::uint64_t end = kind == bar_kind::io ? io_end : mem_end;
        if (size == 0 || (size & (size - 1)) != 0) return unexpected{pci_error::window_full, size};
        const std::uint64_t at = (next + size - 1) & ~(size - 1);
        if (at < next || at > end || size > end - at) return unexpected{pci_error::window_full, size};
        next = at + size;
        return at;
    }
};

// A region of a virtio structure inside a BAR.
struct virtio_pci_region {
    std::uint8_t bar = 0xff; // 0xff: absent
    std::uint32_t offset = 0;
    std::uint32_t length = 0;
    constexpr bool present() const { return bar != 0xff; }
};

struct virtio_pci_device {
    pci_function function;
    std::uint32_t virtio_id = 0;
    bool transitional = false; // legacy device id (0x1000-0x103f): offers the legacy interface in BAR0
    bool modern = false;       // has the virtio capabilities
    bool msix_enabled = false;
    maybe<msix_info> msix; // the MSI-X capability, when the function has a usable one
    pci_bar_list bars;
    std::uint8_t assigned = 0; // BARs this probe assigned (bit per BAR)
    virtio_pci_region common, notify, isr, device;
    std::uint32_t notify_off_multiplier = 0;
};

// The virtio device id a function announces, 0 when it is not a virtio function.
template <pci_config_access A>
std::uint32_t virtio_pci_id(A& a, const pci_function& fn) {
    if (fn.vendor_id != pci_vendor) return 0;
    if (fn.device_id >= pci_modern_base && fn.device_id <= pci_modern_last)
        return fn.device_id - pci_modern_base;
    if (fn.device_id >= pci_legacy_first && fn.device_id <= pci_legacy_last)
        return pci_read16(a, fn.address, pci_subsystem_id);
    return 0;
}

// Assigns every present BAR whose address is 0 from the window, with decoding off while BARs are written,
// and checks each reads back. Then enables I/O and/or memory decoding for the BARs there are, and mastering.
// Returns the BARs it assigned (a bit each). Not virtio-specific: the e1000 binding uses it too.
template <pci_config_access A>
expected<std::uint8_t> assign_bars(A& a, pci_address addr, pci_bar_list& bars, pci_bar_window& w) {
    const auto cmd = read_command(a, addr);
    bool any_io = false, any_mem = false, off = false;
    std::uint8_t assigned = 0;
    for (std::uint8_t i = 0; i < bars.count; ++i) {
        pci_bar& b = bars.bars[i];
        if (!b.present()) continue;
        any_io |= b.is_io();
        any_mem |= b.is_memory();
        if (b.address != 0) continue;
        auto at = w.take(b.kind, b.is_memory() && b.size < 16 ? 16 : b.size);
        if (!at) return unexpected{at.error()};
        if (!off) {
            write_command(a, addr, pci_regs::command{cmd}.set_io_space(false).set_memory_space(false));
            off = true;
        }
        const auto reg = static_cast<std::uint16_t>(pci::bar0 + 4 * i);
        const std::uint32_t flags = a.read32(addr, reg) & (b.is_io() ? 0x3u : 0xfu);
        a.write32(addr, reg, static_cast<std::uint32_t>(*at) | flags);
        if (b.kind == bar_kind::mem64) a.write32(addr, static_cast<std::uint16_t>(reg + 4), 0);
        std::uint64_t back = a.read32(addr, reg) & (b.is_io() ? ~0x3u : ~0xfu);
        if (b.kind == bar_kind::mem64)
            back |= std::uint64_t{a.read32(addr, static_cast<std::uint16_t>(reg + 4))} << 32;
        if (b.is_io()) back &= 0xffff;
        if (back != *at) return unexpected{pci_error::bar_stuck, i};
        b.address = *at;
        assigned = static_cast<std::uint8_t>(assigned | 1u << i);
    }
    pci_regs::command now{cmd};
    if (any_io) now.set_io_space(true);
    if (any_mem) now.set_memory_space(true);
    now.set_bus_master(true);
    write_command(a, addr, now);
    return assigned;
}

namespace detail {

template <pci_config_access A>
expected<void> parse_virtio_caps(A& a, virtio_pci_device& d) {
    const pci_address addr = d.function.address;
    bool bad = false;
    auto walked = for_each_capability(a, addr, [&](pci_capability c) {
        if (c.id == pci::cap_msix) {
            d.msix_enabled = (a.read32(addr, c.offset) >> 31) & 1;
            // A table outside the BARs is not used (INTx remains); it is no reason to refuse the device.
            if (auto m = parse_msix(a, addr, c.offset); m && check_msix_bars(*m, d.bars)) d.msix = *m;
            return;
        }
        if (c.id != pci::cap_vendor) return;
        const std::uint32_t head = a.read32(addr, c.offset);
        const auto type = static_cast<std::uint8_t>(head >> 24);
        const auto len = static_cast<std::uint8_t>(head >> 16);
        if (type < pci_cap::common || type > pci_cap::device) return; // PCI access cap and vendor-specific
        virtio_pci_region* r = type == pci_cap::common   ? &d.common
                               : type == pci_cap::notify ? &d.notify
                               : type == pci_cap::isr    ? &d.isr
                                                         : &d.device;
        if (r->present()) return; // the first of each type is the preferred one
        const auto bar = static_cast<std::uint8_t>(a.read32(addr, static_cast<std::uint16_t>(c.offset + 4)));
        const std::uint32_t offset = a.read32(addr, static_cast<std::uint16_t>(c.offset + pci_cap::offset));
        const std::uint32_t length = a.read32(addr, static_cast<std::uint16_t>(c.offset + pci_cap::length));
        if (bar >= d.bars.count || !d.bars[bar].is_memory() || offset > d.bars[bar].size ||
            length > d.bars[bar].size - offset || len < 16 || (type == pci_cap::notify && len < 20)) {
            bad = true;
            return;
        }
        *r = {bar, offset, length};
        if (type == pci_cap::notify)
            d.notify_off_multiplier =
                a.read32(addr, static_cast<std::uint16_t>(c.offset + pci_cap::notify_off_multiplier));
    });
    if (!walked) return unexpected{walked.error()};
    if (bad) return unexpected{pci_error::bad_cap};
    d.modern = d.common.present() && d.notify.present() && d.isr.present();
    if (d.common.present() && !d.modern) return unexpected{pci_error::missing_cap};
    if (d.modern && d.common.length < common_cfg::size) return unexpected{pci_error::bad_cap};
    return {};
}

} // namespace detail

// Sets up `fn`, a function that virtio_pci_id() says is a virtio device: BARs sized (read_bars), unassigned
// ones placed in `window`, decoding and bus mastering on, capabilities parsed. Errors: a broken BAR or
// capability list, a full window.
template <pci_config_access A>
expected<virtio_pci_device> setup_virtio_pci(A& a, const pci_function& fn, pci_bar_window& window) {
    virtio_pci_device d;
    d.function = fn;
    d.virtio_id = virtio_pci_id(a, fn);
    if (d.virtio_id == 0 || fn.header_layout != pci::header_general)
        return unexpected{pci_error::not_found, d.virtio_id};
    d.transitional = d.function.device_id <= pci_legacy_last;
    auto bars = read_bars(a, d.function);
    if (!bars) return unexpected{bars.error()};
    d.bars = *bars;
    auto assigned = assign_bars(a, d.function.address, d.bars, window);
    if (!assigned) return unexpected{assigned.error()};
    d.assigned = *assigned;
    if (auto r = detail::parse_virtio_caps(a, d); !r) return unexpected{r.error()};
    if (d.transitional && !d.bars[0].is_io() && !d.modern) return unexpected{pci_error::no_io_bar};
    return d;
}

// The instance-th PCI function that is the virtio device `virtio_id`, set up as setup_virtio_pci does.
// Errors: not found, and those of setup_virtio_pci.
template <pci_config_access A>
expected<virtio_pci_device> find_virtio_pci(A& a, std::uint32_t virtio_id, pci_bar_window& window,
                                            std::size_t instance = 0) {
    pci_function found;
    bool any = false;
    for_each_function(a, [&](const pci_function& fn) {
        if (virtio_pci_id(a, fn) != virtio_id || fn.header_layout != pci::header_general) return true;
        if (instance-- != 0) return true;
        found = fn;
        any = true;
        return false;
    });
    if (!any) return unexpected{pci_error::not_found, virtio_id};
    return setup_virtio_pci(a, found, window);
}

// A legacy transport over BAR0 of a transitional device found above.
inline expected<legacy_pci_transport<pci_port_regs>> legacy_transport(const virtio_pci_device& d) {
    if (!d.transitional || !d.bars[0].is_io()) return unexpected{pci_error::no_io_bar};
    return legacy_pci_transport<pci_port_regs>{pci_port_regs{static_cast<std::uint16_t>(d.bars[0].address)},
                                               d.virtio_id, static_cast<std::uint32_t>(d.bars[0].size),
                                               d.msix_enabled};
}

// A modern transport, given map(phys, size) -> expected<void*> for the memory BARs (kernel_map.map_device).
template <class Map>
expected<modern_pci_transport<pci_mmio_regs>> modern_transport(const virtio_pci_device& d, Map&& map) {
    if (!d.modern) return unexpected{pci_error::missing_cap};
    modern_pci_regions<pci_mmio_regs> r;
    auto window = [&](const virtio_pci_region& reg, pci_mmio_regs& out) -> expected<void> {
        if (!reg.present()) return {};
        const pci_bar& b = d.bars[reg.bar];
        auto p = map(b.address + reg.offset, reg.length == 0 ? 1 : reg.length);
        if (!p) return unexpected{p.error()};
        out.base = static_cast<volatile std::byte*>(*p);
        return {};
    };
    if (auto ok = window(d.common, r.common); !ok) return unexpected{ok.error()};
    if (auto ok = window(d.notify, r.notify); !ok) return unexpected{ok.error()};
    if (auto ok = window(d.isr, r.isr); !ok) return unexpected{ok.error()};
    if (auto ok = window(d.device, r.device); !ok) return unexpected{ok.error()};
    r.notify_length = d.notify.length;
    r.device_length = d.device.present() ? d.device.length : 0;
    r.notify_off_multiplier = d.notify_off_multiplier;
    return modern_pci_transport<pci_mmio_regs>{r, d.virtio_id};
}

} // namespace toro::virtio
