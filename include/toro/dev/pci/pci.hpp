// PCI functions over any pci_config_access: enumeration (through bridges, or brute force), the function
// descriptor, BAR decoding and sizing, the capability list, MSI-X and MSI capability parsing, and the
// command register helpers. Layouts: PCI Local Bus 3.0 chapter 6, PCI-to-PCI Bridge 1.2 chapter 3.
//
// Nothing here trusts the device: a BAR whose size mask has holes, a capability list that loops or points
// into the header, an MSI-X table in a BAR that does not exist are errors that say so. Interrupt routing
// and drivers live elsewhere; this is configuration space only.
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <toro/base/bitfield.hpp>
#include <toro/base/expected.hpp>
#include <toro/dev/pci/config.hpp>

namespace toro {

namespace pci {

// Type 0 (and common) header offsets.
inline constexpr std::uint16_t vendor_id = 0x00, device_id = 0x02, command = 0x04, status = 0x06,
                               revision = 0x08, prog_if = 0x09, subclass = 0x0a, class_code = 0x0b,
                               header_type = 0x0e, bar0 = 0x10, capability_pointer = 0x34,
                               interrupt_line = 0x3c, interrupt_pin = 0x3d;
// Type 1 (PCI-to-PCI bridge) bus numbers.
inline constexpr std::uint16_t primary_bus = 0x18, secondary_bus = 0x19, subordinate_bus = 0x1a;

inline constexpr std::uint16_t no_vendor = 0xffff; // what an absent function reads
inline constexpr std::uint8_t max_devices = 32, max_functions = 8;

// Header layouts (header type bits 6:0).
inline constexpr std::uint8_t header_general = 0, header_bridge = 1, header_cardbus = 2;

// Classes the enumerator cares about.
inline constexpr std::uint8_t class_bridge = 0x06, subclass_host_bridge = 0x00, subclass_pci_bridge = 0x04;

// Capability IDs.
inline constexpr std::uint8_t cap_msi = 0x05, cap_vendor = 0x09, cap_pcie = 0x10, cap_msix = 0x11;

// Capabilities live after the 64-byte header, dword-aligned, in the first 256 bytes: at most 48 of them.
inline constexpr std::uint16_t cap_first = 0x40, cap_end = 0x100;
inline constexpr std::size_t max_capabilities = (cap_end - cap_first) / 4;

} // namespace pci

namespace pci_regs {

// Command register (offset 0x04).
struct command : reg_value<command, std::uint16_t> {
    static constexpr std::uint16_t offset = pci::command;
    constexpr bool io_space() const { return get_bit<0>(); }
    constexpr command& set_io_space(bool on) { return set_bit<0>(on); }
    constexpr bool memory_space() const { return get_bit<1>(); }
    constexpr command& set_memory_space(bool on) { return set_bit<1>(on); }
    constexpr bool bus_master() const { return get_bit<2>(); }
    constexpr command& set_bus_master(bool on) { return set_bit<2>(on); }
    constexpr bool parity_error_response() const { return get_bit<6>(); }
    constexpr command& set_parity_error_response(bool on) { return set_bit<6>(on); }
    constexpr bool serr_enable() const { return get_bit<8>(); }
    constexpr command& set_serr_enable(bool on) { return set_bit<8>(on); }
    // Masks the function's INTx pin (MSI/MSI-X users set it).
    constexpr bool interrupt_disable() const { return get_bit<10>(); }
    constexpr command& set_interrupt_disable(bool on) { return set_bit<10>(on); }
};

// Status register (offset 0x06). Bits 8 and 11-15 are write-one-to-clear.
struct status : reg_value<status, std::uint16_t> {
    static constexpr std::uint16_t offset = pci::status;
    constexpr bool interrupt_status() const { return get_bit<3>(); }
    constexpr bool capabilities_list() const { return get_bit<4>(); }
    constexpr bool capable_66mhz() const { return get_bit<5>(); }
    constexpr bool master_data_parity_error() const { return get_bit<8>(); }
    constexpr std::uint16_t devsel_timing() const { return get_field<10, 9>(); }
    constexpr bool signaled_target_abort() const { return get_bit<11>(); }
    constexpr bool received_target_abort() const { return get_bit<12>(); }
    constexpr bool received_master_abort() const { return get_bit<13>(); }
    constexpr bool signaled_system_error() const { return get_bit<14>(); }
    constexpr bool detected_parity_error() const { return get_bit<15>(); }
};

// Header type (offset 0x0E).
struct header_type : reg_value<header_type, std::uint8_t> {
    static constexpr std::uint16_t offset = pci::header_type;
    constexpr std::uint8_t layout() const { return get_field<6, 0>(); }
    constexpr bool multi_function() const { return get_bit<7>(); }
};

// A base address register's low dword. Bit 0 says I/O or memory; the rest depends on it.
struct bar : reg_value<bar, std::uint32_t> {
    constexpr bool io() const { return get_bit<0>(); }
    // Memory: 0 = 32-bit, 1 = below 1 MiB (legacy, decoded as 32-bit), 2 = 64-bit, 3 = reserved.
    constexpr std::uint32_t memory_type() const { return get_field<2, 1>(); }
    constexpr bool prefetchable() const { return get_bit<3>(); }
    constexpr std::uint32_t address_bits() const { return value() & (io() ? ~0x3u : ~0xfu); }
};

// MSI-X message control (capability + 2).
struct msix_control : reg_value<msix_control, std::uint16_t> {
    constexpr std::uint16_t table_size_minus_1() const { return get_field<10, 0>(); }
    constexpr bool function_mask() const { return get_bit<14>(); }
    constexpr msix_control& set_function_mask(bool on) { return set_bit<14>(on); }
    constexpr bool enable() const { return get_bit<15>(); }
    constexpr msix_control& set_enable(bool on) { return set_bit<15>(on); }
};

// MSI-X table / PBA location (capability + 4 and + 8): BAR indicator 2:0, offset 31:3 (8-byte aligned).
struct msix_location : reg_value<msix_location, std::uint32_t> {
    constexpr std::uint8_t bir() const { return static_cast<std::uint8_t>(get_field<2, 0>()); }
    constexpr std::uint32_t offset() const { return value() & ~0x7u; }
};

// MSI message control (capability + 2).
struct msi_control : reg_value<msi_control, std::uint16_t> {
    constexpr bool enable() const { return get_bit<0>(); }
    constexpr msi_control& set_enable(bool on) { return set_bit<0>(on); }
    // log2 of the vectors the function asks for (0..5); 6 and 7 are reserved.
    constexpr std::uint16_t multiple_message_capable() const { return get_field<3, 1>(); }
    constexpr std::uint16_t multiple_message_enable() const { return get_field<6, 4>(); }
    constexpr msi_control& set_multiple_message_enable(std::uint16_t log2) { return set_field<6, 4>(log2); }
    constexpr bool address_64bit() const { return get_bit<7>(); }
    constexpr bool per_vector_masking() const { return get_bit<8>(); }
};

} // namespace pci_regs

// What enumeration reports of one function.
struct pci_function {
    pci_address address;
    std::uint16_t vendor_id = pci::no_vendor;
    std::uint16_t device_id = 0xffff;
    std::uint8_t class_code = 0;
    std::uint8_t subclass = 0;
    std::uint8_t prog_if = 0;
    std::uint8_t revision = 0;
    std::uint8_t header_layout = 0; // pci::header_general, header_bridge, header_cardbus
    bool multi_function = false;    // function 0's header says other functions may exist
    std::uint8_t interrupt_pin = 0; // 0 none, 1..4 INTA#..INTD#
    std::uint8_t interrupt_line = 0xff;

    constexpr bool is_bridge() const {
        return header_layout == pci::header_bridge && class_code == pci::class_bridge;
    }
    constexpr bool is_host_bridge() const {
        return class_code == pci::class_bridge && subclass == pci::subclass_host_bridge;
    }
};

// The function at addr, or an error naming its BDF when nothing answers there.
template <pci_config_access A>
expected<pci_function> read_function(A& a, pci_address addr) {
    const std::uint32_t id = a.read32(addr, pci::vendor_id);
    if ((id & 0xffff) == pci::no_vendor) return unexpected{"no PCI function at BDF", addr.bdf()};
    const std::uint32_t cls = a.read32(addr, pci::revision);
    const auto hdr = pci_regs::header_type::from_value(pci_read8(a, addr, pci::header_type));
    const std::uint32_t irq = a.read32(addr, pci::interrupt_line);
    pci_function f;
    f.address = addr;
    f.vendor_id = static_cast<std::uint16_t>(id);
    f.device_id = static_cast<std::uint16_t>(id >> 16);
    f.revision = static_cast<std::uint8_t>(cls);
    f.prog_if = static_cast<std::uint8_t>(cls >> 8);
    f.subclass = static_cast<std::uint8_t>(cls >> 16);
    f.class_code = static_cast<std::uint8_t>(cls >> 24);
    f.header_layout = hdr.layout();
    f.multi_function = hdr.multi_function();
    f.interrupt_line = static_cast<std::uint8_t>(irq);
    f.interrupt_pin = static_cast<std::uint8_t>(irq >> 8);
    return f;
}

// ---- Enumeration ----

struct pci_scan_options {
    enum class mode : std::uint8_t {
        bridges,     // bus 0 (and the root buses of a multi-function host bridge), then behind bridges
        brute_force, // every bus in [0, last_bus], for firmware that left bridges unconfigured
    };
    mode how = mode::bridges;
    std::uint8_t last_bus = 255; // no bus above this is scanned, in either mode
};

struct pci_scan_result {
    std::size_t functions = 0;       // functions reported to the callback
    std::size_t buses = 0;           // buses scanned
    std::size_t bridges_skipped = 0; // bridges with no secondary bus, one already reached, or > last_bus
    bool stopped = false;            // the callback asked to stop
};

namespace detail {

struct bus_set {
    std::array<std::uint64_t, 4> bits{};
    constexpr bool has(unsigned b) const { return (bits[b / 64] >> (b % 64)) & 1; }
    constexpr void add(unsigned b) { bits[b / 64] |= std::uint64_t{1} << (b % 64); }
    constexpr void remove(unsigned b) { bits[b / 64] &= ~(std::uint64_t{1} << (b % 64)); }
    // The lowest member, or -1 when empty.
    constexpr int lowest() const {
        for (unsigned w = 0; w < bits.size(); ++w)
            if (bits[w] != 0)
                return static_cast<int>(w * 64 + static_cast<unsigned>(std::countr_zero(bits[w])));
        return -1;
    }
};

// f(fn) may return void, or bool: false stops the scan.
template <class F>
bool pci_call(F& f, const pci_function& fn) {
    if constexpr (std::is_same_v<std::invoke_result_t<F&, const pci_function&>, bool>)
        return f(fn);
    else {
        f(fn);
        return true;
    }
}

} // namespace detail

// Calls f(const pci_function&) for every function found, bus by bus (lowest pending bus first), device by
// device, function by function. A device is there when function 0 answers (vendor != 0xFFFF); functions
// 1-7 are probed only when function 0's header type has bit 7 set. In bridges mode each PCI-to-PCI bridge's
// secondary bus is queued; a bus is never scanned twice, so a bridge that points back (misconfigured, or
// not configured: secondary 0) cannot make the scan loop. The work list is a 256-bit set, not recursion:
// the stack stays small however deep the bridges nest.
template <pci_config_access A, class F>
pci_scan_result for_each_function(A& a, F&& f, pci_scan_options opt = {}) {
    pci_scan_result result;
    detail::bus_set pending, scanned;
    if (opt.how == pci_scan_options::mode::brute_force) {
        for (unsigned b = 0; b <= opt.last_bus; ++b) pending.add(b);
    } else {
        pending.add(0);
    }
    bool first_bus = true;
    for (int bus = pending.lowest(); bus >= 0; bus = pending.lowest()) {
        pending.remove(static_cast<unsigned>(bus));
        scanned.add(static_cast<unsigned>(bus));
        ++result.buses;
        for (std::uint8_t dev = 0; dev < pci::max_devices; ++dev) {
            auto fn0 = read_function(a, {static_cast<std::uint8_t>(bus), dev, 0});
            if (!fn0) continue;
            const std::uint8_t functions = fn0->multi_function ? pci::max_functions : 1;
            for (std::uint8_t fn = 0; fn < functions; ++fn) {
                auto found = fn == 0 ? *fn0 : read_function(a, {static_cast<std::uint8_t>(bus), dev, fn});
                if (!found) continue;
                ++result.functions;
                if (!detail::pci_call(f, *found)) {
                    result.stopped = true;
                    return result;
                }
                if (opt.how != pci_scan_options::mode::bridges) continue;
                // A multi-function host bridge at 00:00: function N is the host bridge of root bus N.
                if (first_bus && dev == 0 && fn != 0 && found->is_host_bridge() && fn <= opt.last_bus &&
                    !scanned.has(fn))
                    pending.add(fn);
                if (found->is_bridge()) {
                    const std::uint8_t secondary = pci_read8(a, found->address, pci::secondary_bus);
                    if (secondary == 0 || secondary > opt.last_bus || scanned.has(secondary) ||
                        pending.has(secondary))
                        ++result.bridges_skipped;
                    else
                        pending.add(secondary);
                }
            }
        }
        first_bus = false;
    }
    return result;
}

// ---- Command register ----

template <pci_config_access A>
pci_regs::command read_command(A& a, pci_address addr) {
    return pci_regs::command::from_value(pci_read16(a, addr, pci::command));
}
template <pci_config_access A>
pci_regs::status read_status(A& a, pci_address addr) {
    return pci_regs::status::from_value(pci_read16(a, addr, pci::status));
}
// Writes the command register alone: the status half of the dword gets zeros, which clear nothing.
template <pci_config_access A>
void write_command(A& a, pci_address addr, pci_regs::command cmd) {
    a.write32(addr, pci::command, cmd.value());
}

// Turn on one kind of decoding or mastering; each returns the command register as it was before.
template <pci_config_access A>
pci_regs::command enable_bus_master(A& a, pci_address addr) {
    const auto old = read_command(a, addr);
    if (!old.bus_master()) write_command(a, addr, pci_regs::command{old}.set_bus_master(true));
    return old;
}
template <pci_config_access A>
pci_regs::command enable_memory(A& a, pci_address addr) {
    const auto old = read_command(a, addr);
    if (!old.memory_space()) write_command(a, addr, pci_regs::command{old}.set_memory_space(true));
    return old;
}
template <pci_config_access A>
pci_regs::command enable_io(A& a, pci_address addr) {
    const auto old = read_command(a, addr);
    if (!old.io_space()) write_command(a, addr, pci_regs::command{old}.set_io_space(true));
    return old;
}

// ---- Base address registers ----

enum class bar_kind : std::uint8_t {
    none,       // not implemented (reads back 0 after writing all ones)
    io,         // I/O ports
    mem32,      // 32-bit memory (including the legacy below-1-MiB type)
    mem64,      // 64-bit memory: this BAR and the next one
    upper_half, // the high dword of the mem64 BAR before it
};

struct pci_bar {
    std::uint8_t index = 0;
    bar_kind kind = bar_kind::none;
    bool prefetchable = false;
    std::uint64_t address = 0; // as firmware programmed it (0: unassigned)
    std::uint64_t size = 0;    // bytes decoded; a power of two

    constexpr bool is_memory() const { return kind == bar_kind::mem32 || kind == bar_kind::mem64; }
    constexpr bool is_io() const { return kind == bar_kind::io; }
    constexpr bool present() const { return is_memory() || is_io(); }
};

struct pci_bar_list {
    std::array<pci_bar, 6> bars{};
    std::uint8_t count = 0; // BAR slots in this header layout: 6 (general), 2 (bridge), 1 (CardBus)

    constexpr const pci_bar& operator[](std::size_t i) const { return bars[i]; }
    constexpr const pci_bar* begin() const { return bars.data(); }
    constexpr const pci_bar* end() const { return bars.data() + count; }
};

namespace detail {

constexpr std::uint8_t bar_slots(std::uint8_t layout) {
    return layout == pci::header_general   ? 6
           : layout == pci::header_bridge  ? 2
           : layout == pci::header_cardbus ? 1
                                           : 0;
}

// Writes all ones to the BAR dword, reads what sticks, writes the original back.
template <pci_config_access A>
std::uint32_t probe_bar_dword(A& a, pci_address addr, std::uint16_t offset, std::uint32_t original) {
    a.write32(addr, offset, 0xffffffff);
    const std::uint32_t mask = a.read32(addr, offset);
    a.write32(addr, offset, original);
    return mask;
}

// The size a BAR's writable address bits describe: their lowest set bit, provided every bit above it up to
// the top of the decoder (`top`, all ones) is writable too; anything else is a device reporting nonsense.
inline expected<std::uint64_t> size_from_mask(std::uint64_t mask, std::uint64_t top, std::uint8_t index) {
    const std::uint64_t size = mask & (~mask + 1);
    if ((mask | (size - 1)) != top)
        return unexpected{"PCI BAR size mask has holes (size is not a power of two); BAR", index};
    return size;
}

// Sizes BAR `index` (and `index + 1` for a 64-bit one) with decoding already off. Every dword probed is
// restored before anything is decoded, so an error leaves the BARs as they were.
template <pci_config_access A>
expected<pci_bar> size_bar(A& a, pci_address addr, std::uint8_t index, std::uint8_t slots) {
    const auto offset = static_cast<std::uint16_t>(pci::bar0 + 4 * index);
    const auto low = pci_regs::bar::from_value(a.read32(addr, offset));
    const std::uint32_t low_mask = probe_bar_dword(a, addr, offset, low.value());
    pci_bar bar;
    bar.index = index;
    if (low.io()) {
        const std::uint32_t bits = low_mask & ~0x3u;
        if (bits == 0) return bar;
        // The upper 16 bits may be hardwired to 0 (a 64 KiB I/O space decoder).
        const std::uint64_t top = (bits >> 16) == 0 ? 0xffff : 0xffffffff;
        auto size = size_from_mask(bits & top, top, index);
        if (!size) return unexpected{size.error()};
        bar.kind = bar_kind::io;
        bar.address = low.address_bits() & top;
        bar.size = *size;
        return bar;
    }
    if (low.memory_type() == 3) return unexpected{"PCI BAR has the reserved memory type 3; BAR", index};
    bar.prefetchable = low.prefetchable();
    if (low.memory_type() != 2) {
        const std::uint32_t bits = low_mask & ~0xfu;
        if (bits == 0) return pci_bar{.index = index};
        auto size = size_from_mask(bits, 0xffffffff, index);
        if (!size) return unexpected{size.error()};
        bar.kind = bar_kind::mem32;
        bar.address = low.address_bits();
        bar.size = *size;
        return bar;
    }
    if (index + 1 >= slots) return unexpected{"PCI 64-bit BAR has no slot for its upper half; BAR", index};
    const auto high_offset = static_cast<std::uint16_t>(offset + 4);
    const std::uint32_t high = a.read32(addr, high_offset);
    const std::uint32_t high_mask = probe_bar_dword(a, addr, high_offset, high);
    const std::uint64_t bits = std::uint64_t{high_mask} << 32 | (low_mask & ~0xfu);
    if (bits == 0) return pci_bar{.index = index};
    auto size = size_from_mask(bits, ~std::uint64_t{0}, index);
    if (!size) return unexpected{size.error()};
    bar.kind = bar_kind::mem64;
    bar.address = std::uint64_t{high} << 32 | low.address_bits();
    bar.size = *size;
    return bar;
}

// Runs probe() with I/O and memory decoding off: while a BAR holds all ones the function would claim
// addresses it does not own. Host bridges are left alone (as Linux does): turning off a host bridge's
// memory decoding may cut the CPU off from RAM.
template <pci_config_access A, class Probe>
auto with_decoding_off(A& a, const pci_function& fn, Probe&& probe) {
    const auto cmd = read_command(a, fn.address);
    const bool toggle = !fn.is_host_bridge() && (cmd.io_space() || cmd.memory_space());
    if (toggle)
        write_command(a, fn.address, pci_regs::command{cmd}.set_io_space(false).set_memory_space(false));
    auto result = probe();
    if (toggle) write_command(a, fn.address, cmd);
    return result;
}

} // namespace detail

// Decodes and sizes BAR `index` of fn (for a 64-bit BAR, index and index + 1). Decoding is turned off while
// the BAR is probed and the command register restored after. Calling it on the upper half of a 64-bit BAR
// gives nonsense: use read_bars to walk them all.
template <pci_config_access A>
expected<pci_bar> read_bar(A& a, const pci_function& fn, std::uint8_t index) {
    const std::uint8_t slots = detail::bar_slots(fn.header_layout);
    if (index >= slots) return unexpected{"PCI BAR index is beyond this header layout's BARs; index", index};
    return detail::with_decoding_off(a, fn, [&] { return detail::size_bar(a, fn.address, index, slots); });
}

// Every BAR of fn, sized, with decoding off once for all of them.
template <pci_config_access A>
expected<pci_bar_list> read_bars(A& a, const pci_function& fn) {
    return detail::with_decoding_off(a, fn, [&]() -> expected<pci_bar_list> {
        pci_bar_list list;
        list.count = detail::bar_slots(fn.header_layout);
        for (std::uint8_t i = 0; i < list.count; ++i) {
            auto bar = detail::size_bar(a, fn.address, i, list.count);
            if (!bar) return unexpected{bar.error()};
            list.bars[i] = *bar;
            if (bar->kind == bar_kind::mem64) {
                ++i;
                list.bars[i] = {.index = i, .kind = bar_kind::upper_half};
            }
        }
        return list;
    });
}

// ---- Capabilities ----

struct pci_capability {
    std::uint8_t id = 0;
    std::uint8_t offset = 0; // in configuration space
};

// Calls f(pci_capability) for each entry of the capability list (f may return bool: false stops) and
// returns how many were visited. No list (status bit 4 clear) is 0, not an error. A pointer into the
// header (below 0x40), a misaligned pointer (the spec reserves the low two bits; a device setting them is
// not trusted) or a pointer to an entry already visited is an error: the list would otherwise be read
// forever or from the wrong place. Each entry costs one dword read (ID and next pointer together).
template <pci_config_access A, class F>
expected<std::size_t> for_each_capability(A& a, pci_address addr, F&& f) {
    if (!read_status(a, addr).capabilities_list()) return std::size_t{0};
    std::uint8_t at = pci_read8(a, addr, pci::capability_pointer);
    std::uint64_t seen = 0; // one bit per dword in [0x40, 0x100)
    std::size_t count = 0;
    while (at != 0) {
        if (at < pci::cap_first)
            return unexpected{"PCI capability pointer points into the header; pointer", at};
        if (at % 4 != 0) return unexpected{"PCI capability pointer is not dword-aligned; pointer", at};
        const unsigned slot = (at - pci::cap_first) / 4;
        if ((seen >> slot) & 1) return unexpected{"PCI capability list loops back to offset", at};
        seen |= std::uint64_t{1} << slot;
        if (++count > pci::max_capabilities) // unreachable with the bitmap; kept as the stated bound
            return unexpected{"PCI capability list is longer than 48 entries; BDF", addr.bdf()};
        const std::uint32_t head = a.read32(addr, at);
        const pci_capability cap{static_cast<std::uint8_t>(head), at};
        if constexpr (std::is_same_v<std::invoke_result_t<F&, pci_capability>, bool>) {
            if (!f(cap)) return count;
        } else {
            f(cap);
        }
        at = static_cast<std::uint8_t>(head >> 8);
    }
    return count;
}

// The offset of the instance-th capability with this ID, 0 when there is none, an error for a broken list.
template <pci_config_access A>
expected<std::uint8_t> find_capability(A& a, pci_address addr, std::uint8_t id, std::size_t instance = 0) {
    std::uint8_t found = 0;
    auto walked = for_each_capability(a, addr, [&](pci_capability c) {
        if (c.id == id && instance-- == 0) {
            found = c.offset;
            return false;
        }
        return true;
    });
    if (!walked) return unexpected{walked.error()};
    return found;
}

// ---- MSI-X and MSI ----

struct msix_info {
    std::uint8_t cap_offset = 0;
    std::uint16_t table_size = 0; // vectors (1..2048)
    std::uint8_t table_bir = 0;   // BAR holding the table (16-byte entries)
    std::uint32_t table_offset = 0;
    std::uint8_t pba_bir = 0; // BAR holding the pending bit array
    std::uint32_t pba_offset = 0;
    bool enabled = false;
    bool function_masked = false;
};

// Parses the MSI-X capability at cap_offset. A BIR above 5 names no BAR and is an error.
template <pci_config_access A>
expected<msix_info> parse_msix(A& a, pci_address addr, std::uint8_t cap_offset) {
    const std::uint32_t head = a.read32(addr, cap_offset);
    if (static_cast<std::uint8_t>(head) != pci::cap_msix)
        return unexpected{"PCI capability is not MSI-X; offset", cap_offset};
    const auto ctl = pci_regs::msix_control::from_value(static_cast<std::uint16_t>(head >> 16));
    const auto table =
        pci_regs::msix_location::from_value(a.read32(addr, static_cast<std::uint16_t>(cap_offset + 4)));
    const auto pba =
        pci_regs::msix_location::from_value(a.read32(addr, static_cast<std::uint16_t>(cap_offset + 8)));
    if (table.bir() > 5) return unexpected{"PCI MSI-X table BIR names no BAR; BIR", table.bir()};
    if (pba.bir() > 5) return unexpected{"PCI MSI-X PBA BIR names no BAR; BIR", pba.bir()};
    return msix_info{cap_offset,   static_cast<std::uint16_t>(ctl.table_size_minus_1() + 1),
                     table.bir(),  table.offset(),
                     pba.bir(),    pba.offset(),
                     ctl.enable(), ctl.function_mask()};
}

// The table and PBA must lie inside memory BARs that exist (sized by read_bars).
constexpr expected<void> check_msix_bars(const msix_info& m, const pci_bar_list& bars) {
    auto inside = [&](std::uint8_t bir, std::uint64_t offset, std::uint64_t bytes) {
        return bir < bars.count && bars[bir].is_memory() && offset <= bars[bir].size &&
               bytes <= bars[bir].size - offset;
    };
    if (!inside(m.table_bir, m.table_offset, std::uint64_t{m.table_size} * 16))
        return unexpected{"PCI MSI-X table does not fit in a memory BAR; BIR", m.table_bir};
    if (!inside(m.pba_bir, m.pba_offset, (std::uint64_t{m.table_size} + 63) / 64 * 8))
        return unexpected{"PCI MSI-X pending bit array does not fit in a memory BAR; BIR", m.pba_bir};
    return {};
}

struct msi_info {
    std::uint8_t cap_offset = 0;
    bool address_64bit = false;
    bool per_vector_masking = false;
    bool enabled = false;
    std::uint8_t vectors = 1; // vectors the function can use (1, 2, 4, ... 32)
    // Register offsets from the capability, which depend on the two flags above (0: not present).
    std::uint8_t data_offset = 0;
    std::uint8_t mask_offset = 0;
    std::uint8_t pending_offset = 0;
};

// Parses the MSI capability at cap_offset. A vector count field of 6 or 7 (reserved) is an error.
template <pci_config_access A>
expected<msi_info> parse_msi(A& a, pci_address addr, std::uint8_t cap_offset) {
    const std::uint32_t head = a.read32(addr, cap_offset);
    if (static_cast<std::uint8_t>(head) != pci::cap_msi)
        return unexpected{"PCI capability is not MSI; offset", cap_offset};
    const auto ctl = pci_regs::msi_control::from_value(static_cast<std::uint16_t>(head >> 16));
    if (ctl.multiple_message_capable() > 5)
        return unexpected{"PCI MSI asks for a reserved vector count; field", ctl.multiple_message_capable()};
    msi_info m;
    m.cap_offset = cap_offset;
    m.address_64bit = ctl.address_64bit();
    m.per_vector_masking = ctl.per_vector_masking();
    m.enabled = ctl.enable();
    m.vectors = static_cast<std::uint8_t>(1u << ctl.multiple_message_capable());
    m.data_offset = m.address_64bit ? 0x0c : 0x08;
    if (m.per_vector_masking) {
        m.mask_offset = static_cast<std::uint8_t>(m.data_offset + 4);
        m.pending_offset = static_cast<std::uint8_t>(m.data_offset + 8);
    }
    return m;
}

// ---- INTx ----

inline constexpr std::uint32_t piix3_isa_id = 0x70008086; // device << 16 | vendor
inline constexpr std::uint16_t piix3_pirq_route = 0x60;   // PIRQA..D route control, a byte each

// The ISA IRQ a PCI function's INTx pin reaches. On QEMU's i440FX (PIIX3 at 00:01.0, 8086:7000) it is read
// from the chipset rather than trusted from the interrupt line register: QEMU wires pin p of the device in
// slot d on bus 0 to PIRQ ((d - 1) + (p - 1)) mod 4 (hw/isa/piix.c), whose ISA IRQ is PIIX3 register
// 0x60 + PIRQ (bit 7: not routed); qboot writes the line as if the sum had no "- 1" (one PIRQ off), SeaBIOS
// writes it right. Elsewhere the interrupt line firmware wrote is all there is.
template <pci_config_access A>
expected<std::uint8_t> intx_isa_irq(A& a, const pci_function& fn) {
    if (fn.interrupt_pin < 1 || fn.interrupt_pin > 4)
        return unexpected{"PCI function has no interrupt pin; BDF", fn.address.bdf()};
    const pci_address isa{0, 1, 0};
    if (fn.address.bus == 0 && fn.address.device >= 1 && a.read32(isa, pci::vendor_id) == piix3_isa_id) {
        const unsigned pirq = (fn.address.device - 1u + fn.interrupt_pin - 1u) & 3;
        const auto route = static_cast<std::uint8_t>(a.read32(isa, piix3_pirq_route) >> (8 * pirq));
        if ((route & 0x80) != 0 || (route & 0x0f) < 3)
            return unexpected{"PIIX3: the PCI interrupt link is not routed; PIRQ", pirq};
        return static_cast<std::uint8_t>(route & 0x0f);
    }
    if (fn.interrupt_line == 0 || fn.interrupt_line >= 16)
        return unexpected{"firmware routed no IRQ to the PCI function's pin; interrupt line",
                          fn.interrupt_line};
    return fn.interrupt_line;
}

// ---- Programming MSI-X and MSI ----

// A message a function writes to raise an interrupt on x86 (Intel SDM vol. 3, 11.11): the address selects
// the local APIC (physical destination mode, no redirection hint), the data the vector (fixed delivery,
// edge-triggered). Destinations above 255 would need x2APIC's extended destination ID: refused.
struct msi_message {
    std::uint64_t address = 0;
    std::uint32_t data = 0;
};
inline constexpr std::uint64_t msi_address_base = 0xfee00000;

inline expected<msi_message> x86_msi_message(std::uint32_t apic_id, std::uint8_t vector) {
    if (apic_id > 0xff) return unexpected{"MSI: destination APIC ID above 255; ID", apic_id};
    if (vector < 0x10) return unexpected{"MSI: vector below 16 is reserved; vector", vector};
    return msi_message{msi_address_base | std::uint64_t{apic_id} << 12, vector};
}

// MSI-X table entry layout (PCI 3.0 6.8.2.6): 16 bytes per entry.
namespace msix_entry {
inline constexpr std::uint32_t size = 16;
inline constexpr std::uint32_t address_low = 0, address_high = 4, data = 8, vector_control = 12;
inline constexpr std::uint32_t masked = 1; // vector control bit 0
} // namespace msix_entry

// The MSI-X table of one function, in its BAR (mapped uncached by the caller). Table entries are 32-bit
// registers; Mmio is any mmio32_bus-like window (read32/write32 at byte offsets from the table's start).
template <class Mmio>
class msix_table {
public:
    msix_table(Mmio mmio, std::uint16_t entries) : mmio_{mmio}, entries_{entries} {}

    // Programs entry i and unmasks it. The entry is masked while it is written, so the function never
    // sends half an update (6.8.3.5); vector control's other bits are preserved (6.8.2.9: reserved, and PCIe
    // keeps its steering tag there).
    expected<void> set(std::uint16_t i, msi_message m) {
        if (i >= entries_) return unexpected{"MSI-X: no such table entry; entry", i};
        const std::uint32_t at = std::uint32_t{i} * msix_entry::size;
        mask(i, true);
        mmio_.write32(at + msix_entry::address_low, static_cast<std::uint32_t>(m.address));
        mmio_.write32(at + msix_entry::address_high, static_cast<std::uint32_t>(m.address >> 32));
        mmio_.write32(at + msix_entry::data, m.data);
        mask(i, false);
        return {};
    }
    void mask(std::uint16_t i, bool on) {
        if (i >= entries_) return;
        const std::uint32_t reg = std::uint32_t{i} * msix_entry::size + msix_entry::vector_control;
        const std::uint32_t v = mmio_.read32(reg);
        mmio_.write32(reg, on ? v | msix_entry::masked : v & ~msix_entry::masked);
    }
    std::uint16_t entries() const { return entries_; }
    Mmio& mmio() { return mmio_; }

private:
    Mmio mmio_;
    std::uint16_t entries_;
};

// Turns MSI-X on for the function (function mask off) and its INTx pin off: from now on it signals through
// the table only. Entries stay masked until set() (the reset state of every entry is masked).
template <pci_config_access A>
void enable_msix(A& a, pci_address addr, const msix_info& m) {
    write_command(a, addr, read_command(a, addr).set_interrupt_disable(true));
    const auto reg = static_cast<std::uint16_t>(m.cap_offset);
    const std::uint32_t head = a.read32(addr, reg);
    const auto ctl = pci_regs::msix_control::from_value(static_cast<std::uint16_t>(head >> 16))
                         .set_enable(true)
                         .set_function_mask(false);
    a.write32(addr, reg, (head & 0xffff) | std::uint32_t{ctl.value()} << 16);
}

// Turns MSI-X off (the function falls back to INTx, if its pin is enabled).
template <pci_config_access A>
void disable_msix(A& a, pci_address addr, const msix_info& m) {
    const auto reg = static_cast<std::uint16_t>(m.cap_offset);
    const std::uint32_t head = a.read32(addr, reg);
    const auto ctl =
        pci_regs::msix_control::from_value(static_cast<std::uint16_t>(head >> 16)).set_enable(false);
    a.write32(addr, reg, (head & 0xffff) | std::uint32_t{ctl.value()} << 16);
}

// MSI with a single vector (the function's first), INTx off. A function asking for several gets one: the
// data's low bits would otherwise select vectors the kernel did not register.
template <pci_config_access A>
void enable_msi(A& a, pci_address addr, const msi_info& m, msi_message msg) {
    const auto cap = static_cast<std::uint16_t>(m.cap_offset);
    a.write32(addr, static_cast<std::uint16_t>(cap + 4), static_cast<std::uint32_t>(msg.address));
    if (m.address_64bit)
        a.write32(addr, static_cast<std::uint16_t>(cap + 8), static_cast<std::uint32_t>(msg.address >> 32));
    const auto data_reg = static_cast<std::uint16_t>(cap + m.data_offset);
    a.write32(addr, data_reg, (a.read32(addr, data_reg) & 0xffff0000u) | (msg.data & 0xffff));
    if (m.per_vector_masking) a.write32(addr, static_cast<std::uint16_t>(cap + m.mask_offset), 0);
    write_command(a, addr, read_command(a, addr).set_interrupt_disable(true));
    const std::uint32_t head = a.read32(addr, cap);
    const auto ctl = pci_regs::msi_control::from_value(static_cast<std::uint16_t>(head >> 16))
                         .set_multiple_message_enable(0)
                         .set_enable(true);
    a.write32(addr, cap, (head & 0xffff) | std::uint32_t{ctl.value()} << 16);
}

} // namespace toro
