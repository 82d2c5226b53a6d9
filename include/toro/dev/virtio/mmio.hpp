// The virtio-mmio transport (virtio 1.x, section 4.2): mmio_transport<Mmio> models virtio::transport over
// a device's register window, version 1 (legacy: one page frame per queue, 32 feature bits) and version 2
// (modern: three 64-bit queue addresses, 64 feature bits, ConfigGeneration). Plus the parser of the Linux
// command-line syntax that announces such devices, virtio_mmio.device=<size>@<base>:<irq>[:<id>], which
// QEMU microvm (with acpi=off) and Firecracker append: MMIO devices cannot be enumerated.
//
// The window is reached through an arch::mmio32_bus (arch::mmio_window over the identity-mapped, uncached
// registers in the kernel; a scripted mock on the host), so every access is a 32-bit one: the spec allows
// them everywhere, config space included.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>

#include <toro/arch/x86_64/lapic.hpp>
#include <toro/base/expected.hpp>
#include <toro/base/string_view.hpp>
#include <toro/dev/virtio/transport.hpp>
#include <toro/dev/virtio/virtqueue.hpp>

namespace toro::virtio {

// Register offsets (4.2.2 for version 2, 4.2.4 for the legacy version 1). The feature registers sit at the
// same offsets in both, named Host/Guest features in version 1.
namespace mmio_reg {
inline constexpr std::uint32_t magic_value = 0x000;
inline constexpr std::uint32_t version = 0x004;
inline constexpr std::uint32_t device_id = 0x008;
inline constexpr std::uint32_t vendor_id = 0x00c;
inline constexpr std::uint32_t device_features = 0x010;
inline constexpr std::uint32_t device_features_sel = 0x014;
inline constexpr std::uint32_t driver_features = 0x020;
inline constexpr std::uint32_t driver_features_sel = 0x024;
inline constexpr std::uint32_t guest_page_size = 0x028; // version 1 only
inline constexpr std::uint32_t queue_sel = 0x030;
inline constexpr std::uint32_t queue_num_max = 0x034;
inline constexpr std::uint32_t queue_num = 0x038;
inline constexpr std::uint32_t queue_align = 0x03c; // version 1 only
inline constexpr std::uint32_t queue_pfn = 0x040;   // version 1 only
inline constexpr std::uint32_t queue_ready = 0x044; // version 2 only
inline constexpr std::uint32_t queue_notify = 0x050;
inline constexpr std::uint32_t interrupt_status = 0x060;
inline constexpr std::uint32_t interrupt_ack = 0x064;
inline constexpr std::uint32_t status = 0x070;
inline constexpr std::uint32_t queue_desc_low = 0x080; // version 2 only, to queue_device_high
inline constexpr std::uint32_t queue_desc_high = 0x084;
inline constexpr std::uint32_t queue_driver_low = 0x090;
inline constexpr std::uint32_t queue_driver_high = 0x094;
inline constexpr std::uint32_t queue_device_low = 0x0a0;
inline constexpr std::uint32_t queue_device_high = 0x0a4;
inline constexpr std::uint32_t config_generation = 0x0fc; // version 2 only
inline constexpr std::uint32_t config = 0x100;
} // namespace mmio_reg

inline constexpr std::uint32_t mmio_magic = 0x74726976; // "virt", little-endian
// The page size a version 1 device is told, and the used ring's alignment in its layout.
inline constexpr std::uint32_t mmio_legacy_page = 4096;
// Device-specific configuration space: from 0x100 to the end of a 4 KiB register page at most.
inline constexpr std::uint32_t mmio_config_limit = 4096 - mmio_reg::config;

// The errors, so callers can tell them apart (error.what == mmio_error::...).
namespace mmio_error {
inline constexpr string_view bad_magic{"virtio-mmio: no \"virt\" magic value at the window"};
inline constexpr string_view bad_version{"virtio-mmio: unsupported version (1 and 2 are)"};
// Not a failure as such: the window exists but holds no device (QEMU microvm has 8 empty slots).
inline constexpr string_view no_device{"virtio-mmio: device id 0, no device behind the window"};
inline constexpr string_view bad_queue_size{"virtio-mmio: queue size zero, not a power of two or above max"};
inline constexpr string_view no_queue{"virtio-mmio: the queue does not exist (QueueNumMax 0)"};
inline constexpr string_view not_legacy_layout{
    "virtio-mmio v1: queue not in the contiguous legacy layout (desc page-aligned, 4096 used alignment)"};
inline constexpr string_view pfn_too_high{"virtio-mmio v1: queue page frame number above 32 bits"};
inline constexpr string_view misaligned{"virtio-mmio: queue addresses misaligned (desc 16, avail 2, used 4)"};
inline constexpr string_view bad_cmdline{"virtio_mmio.device=: malformed, want <size>@<base>:<irq>[:<id>]"};
inline constexpr string_view too_many{"virtio_mmio.device=: more devices than the parser keeps (8)"};
} // namespace mmio_error

template <arch::mmio32_bus Mmio>
class mmio_transport {
public:
    // Reads of Status after a reset before giving up waiting for it to read 0 (devices do at once).
    static constexpr std::uint32_t reset_spins = 1u << 16;
    // Config-space passes before settling for the last one when ConfigGeneration keeps changing.
    static constexpr std::uint32_t config_retries = 16;

    // Identifies the device behind the window; touches nothing but the four identification registers.
    static expected<mmio_transport> probe(Mmio mmio) {
        const std::uint32_t magic = mmio.read32(mmio_reg::magic_value);
        if (magic != mmio_magic) return unexpected{mmio_error::bad_magic, magic};
        const std::uint32_t version = mmio.read32(mmio_reg::version);
        if (version != 1 && version != 2) return unexpected{mmio_error::bad_version, version};
        const std::uint32_t device = mmio.read32(mmio_reg::device_id);
        if (device == 0) return unexpected{mmio_error::no_device};
        const std::uint32_t vendor = mmio.read32(mmio_reg::vendor_id);
        return mmio_transport{std::move(mmio), version, device, vendor};
    }

    std::uint32_t version() const { return version_; }
    std::uint32_t vendor_id() const { return vendor_; }
    std::uint32_t device_id() const { return device_; }
    bool legacy() const { return version_ == 1; }

    // Writing 0 resets the device. Version 2: it is done when Status reads 0. Version 1: the page size is
    // (re)written here, before any queue is set up, so a device that forgot it on reset is told again.
    void reset() {
        mmio_.write32(mmio_reg::status, 0);
        if (legacy()) {
            mmio_.write32(mmio_reg::guest_page_size, mmio_legacy_page);
            return;
        }
        for (std::uint32_t i = 0; i < reset_spins && mmio_.read32(mmio_reg::status) != 0; ++i)
            asm volatile("pause");
    }
    std::uint8_t status() { return static_cast<std::uint8_t>(mmio_.read32(mmio_reg::status)); }
    void set_status(std::uint8_t s) { mmio_.write32(mmio_reg::status, s); }

    // Version 1 has only bits 0-31 (a legacy device reads 0 for any other selector).
    std::uint64_t device_features() {
        mmio_.write32(mmio_reg::device_features_sel, 0);
        std::uint64_t f = mmio_.read32(mmio_reg::device_features);
        if (legacy()) return f;
        mmio_.write32(mmio_reg::device_features_sel, 1);
        return f | std::uint64_t{mmio_.read32(mmio_reg::device_features)} << 32;
    }
    void set_driver_features(std::uint64_t f) {
        mmio_.write32(mmio_reg::driver_features_sel, 0);
        mmio_.write32(mmio_reg::driver_features, static_cast<std::uint32_t>(f));
        if (legacy()) return;
        mmio_.write32(mmio_reg::driver_features_sel, 1);
        mmio_.write32(mmio_reg::driver_features, static_cast<std::uint32_t>(f >> 32));
    }

    // Capped at the split ring's 32768 (a device may advertise more in a 32-bit register).
    std::uint16_t max_queue_size(std::uint16_t q) {
        mmio_.write32(mmio_reg::queue_sel, q);
        const std::uint32_t m = mmio_.read32(mmio_reg::queue_num_max);
        return static_cast<std::uint16_t>(m > 32768 ? 32768 : m);
    }

    // The addresses are checked before any register is written, so a refused queue leaves the device as it
    // was. Version 1 takes one page frame: the parts must be where virtqueue_memory::legacy(base, size)
    // puts them, page-aligned.
    expected<void> setup_queue(std::uint16_t q, std::uint16_t size, const queue_addresses& a) {
        if (size == 0 || (size & (size - 1)) != 0) return unexpected{mmio_error::bad_queue_size, size};
        std::uint64_t pfn = 0;
        if (legacy()) {
            const ring_layout l = legacy_layout(size, mmio_legacy_page);
            if (a.desc % mmio_legacy_page != 0 || a.avail != a.desc + l.avail_offset ||
                a.used != a.desc + l.used_offset)
                return unexpected{mmio_error::not_legacy_layout, a.desc};
            pfn = a.desc / mmio_legacy_page;
            if (pfn > 0xffffffff) return unexpected{mmio_error::pfn_too_high, a.desc};
        } else if (a.desc % desc_table_align != 0 || a.avail % avail_ring_align != 0 ||
                   a.used % used_ring_align != 0) {
            return unexpected{mmio_error::misaligned, a.desc};
        }
        const std::uint16_t max = max_queue_size(q); // also selects the queue
        if (max == 0) return unexpected{mmio_error::no_queue, q};
        if (size > max) return unexpected{mmio_error::bad_queue_size, size};
        // The ring memory (zeroed by virtqueue::attach) must be written before the device may look at it.
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        mmio_.write32(mmio_reg::queue_num, size);
        if (legacy()) {
            mmio_.write32(mmio_reg::queue_align, mmio_legacy_page);
            mmio_.write32(mmio_reg::queue_pfn, static_cast<std::uint32_t>(pfn));
            return {};
        }
        write64(mmio_reg::queue_desc_low, a.desc);
        write64(mmio_reg::queue_driver_low, a.avail);
        write64(mmio_reg::queue_device_low, a.used);
        mmio_.write32(mmio_reg::queue_ready, 1);
        return {};
    }

    void notify(std::uint16_t q) {
        // The ring stores before the doorbell (x86 keeps stores in order; the compiler must too).
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        mmio_.write32(mmio_reg::queue_notify, q);
    }

    // Aligned 32-bit reads covering [offset, offset + len). Version 2: repeated until ConfigGeneration is
    // the same before and after, so a multi-byte field is not torn by a concurrent device update; after
    // config_retries passes the last one stands. A range outside the config space reads as zeros.
    void read_config(std::uint32_t offset, void* dst, std::uint32_t len) {
        auto* out = static_cast<std::byte*>(dst);
        if (offset > mmio_config_limit || len > mmio_config_limit - offset) {
            for (std::uint32_t i = 0; i < len; ++i) out[i] = std::byte{0};
            return;
        }
        for (std::uint32_t pass = 0; pass < config_retries; ++pass) {
            const std::uint32_t before = legacy() ? 0 : mmio_.read32(mmio_reg::config_generation);
            for (std::uint32_t at = offset & ~3u; at < offset + len; at += 4) {
                const std::uint32_t w = mmio_.read32(mmio_reg::config + at);
                for (std::uint32_t b = 0; b < 4; ++b)
                    if (at + b >= offset && at + b < offset + len)
                        out[at + b - offset] = static_cast<std::byte>(w >> (8 * b));
            }
            if (legacy() || mmio_.read32(mmio_reg::config_generation) == before) return;
        }
    }

    // Reads InterruptStatus and acknowledges what it says (an ack of 0 is skipped: nothing to clear).
    std::uint32_t interrupt_status() {
        const std::uint32_t s = mmio_.read32(mmio_reg::interrupt_status);
        if (s != 0) mmio_.write32(mmio_reg::interrupt_ack, s);
        return s;
    }

private:
    mmio_transport(Mmio mmio, std::uint32_t version, std::uint32_t device, std::uint32_t vendor)
        : mmio_{std::move(mmio)}, version_{version}, device_{device}, vendor_{vendor} {}

    void write64(std::uint32_t low, std::uint64_t v) {
        mmio_.write32(low, static_cast<std::uint32_t>(v));
        mmio_.write32(low + 4, static_cast<std::uint32_t>(v >> 32));
    }

    Mmio mmio_;
    std::uint32_t version_;
    std::uint32_t device_;
    std::uint32_t vendor_;
};

static_assert(transport<mmio_transport<arch::mmio_window>>);

// ---- virtio_mmio.device= --------------------------------------------------------------------------------

// One device the command line announces. `id` is Linux's platform-device id (the optional :<id>), not the
// virtio device id: that one is read from the window.
struct mmio_device_desc {
    std::uint64_t base = 0;
    std::uint64_t size = 0;
    std::uint32_t irq = 0;
    std::int32_t id = -1; // -1: not given
};

struct mmio_device_list {
    static constexpr std::size_t capacity = 8;
    std::array<mmio_device_desc, capacity> devices{};
    std::size_t count = 0;
};

namespace detail {

constexpr int mmio_digit(char c, unsigned base) {
    int d = -1;
    if (c >= '0' && c <= '9')
        d = c - '0';
    else if (c >= 'a' && c <= 'f')
        d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
        d = c - 'A' + 10;
    return d >= 0 && static_cast<unsigned>(d) < base ? d : -1;
}

// An unsigned number at s[i...] in `base`, or base 0 as Linux's %lli/simple_strtoull: 0x hex, a leading 0
// octal, else decimal. Advances i; false on no digits or overflow.
constexpr bool mmio_parse_number(string_view s, std::size_t& i, unsigned base, std::uint64_t& out) {
    if (base == 0) {
        base = 10;
        if (i < s.size() && s[i] == '0') {
            base = 8;
            if (i + 2 < s.size() && (s[i + 1] == 'x' || s[i + 1] == 'X') && mmio_digit(s[i + 2], 16) >= 0) {
                base = 16;
                i += 2;
            }
        }
    }
    std::uint64_t v = 0;
    const std::size_t start = i;
    for (; i < s.size(); ++i) {
        const int d = mmio_digit(s[i], base);
        if (d < 0) break;
        if (v > (~std::uint64_t{0} - static_cast<unsigned>(d)) / base) return false;
        v = v * base + static_cast<unsigned>(d);
    }
    out = v;
    return i != start;
}

// <size>@<base>:<irq>[:<id>]: size with an optional K/M/G/T suffix (either case, Linux's memparse), base
// as %lli, irq decimal and non-zero, id decimal. Nothing may follow.
constexpr bool mmio_parse_device(string_view s, mmio_device_desc& d) {
    std::size_t i = 0;
    std::uint64_t size = 0, base = 0, irq = 0, id = 0;
    if (!mmio_parse_number(s, i, 0, size)) return false;
    if (i < s.size()) {
        unsigned shift = 0;
        switch (s[i]) {
        case 'K':
        case 'k':
            shift = 10;
            break;
        case 'M':
        case 'm':
            shift = 20;
            break;
        case 'G':
        case 'g':
            shift = 30;
            break;
        case 'T':
        case 't':
            shift = 40;
            break;
        default:
            break;
        }
        if (shift != 0) {
            if (size > (~std::uint64_t{0} >> shift)) return false;
            size <<= shift;
            ++i;
        }
    }
    if (i >= s.size() || s[i++] != '@' || !mmio_parse_number(s, i, 0, base)) return false;
    if (i >= s.size() || s[i++] != ':' || !mmio_parse_number(s, i, 10, irq)) return false;
    d.id = -1;
    if (i < s.size()) {
        if (s[i++] != ':' || !mmio_parse_number(s, i, 10, id) || id > 0x7fffffff) return false;
        d.id = static_cast<std::int32_t>(id);
    }
    if (i != s.size() || size == 0 || base + size < base || irq == 0 || irq > 0xffffffff) return false;
    d.base = base;
    d.size = size;
    d.irq = static_cast<std::uint32_t>(irq);
    return true;
}

} // namespace detail

// Every virtio_mmio.device= word of the command line, in order; other words are ignored. A malformed entry
// is an error (value: its byte offset in the command line) rather than a skipped device, so a typo is seen.
inline expected<mmio_device_list> parse_virtio_mmio_cmdline(string_view cmdline) {
    constexpr string_view key{"virtio_mmio.device="};
    mmio_device_list list;
    std::size_t i = 0;
    while (i < cmdline.size()) {
        while (i < cmdline.size() && (cmdline[i] == ' ' || cmdline[i] == '\t' || cmdline[i] == '\n')) ++i;
        const std::size_t start = i;
        while (i < cmdline.size() && cmdline[i] != ' ' && cmdline[i] != '\t' && cmdline[i] != '\n') ++i;
        const string_view word = cmdline.substr(start, i - start);
        if (!word.starts_with(key)) continue;
        if (list.count == mmio_device_list::capacity) return unexpected{mmio_error::too_many, start};
        if (!detail::mmio_parse_device(word.substr(key.size()), list.devices[list.count]))
            return unexpected{mmio_error::bad_cmdline, start};
        ++list.count;
    }
    return list;
}

} // namespace toro::virtio
