// PCI configuration space access: the pci_config_access concept, the two kernel mechanisms (ports
// 0xCF8/0xCFC and ECAM), 8/16-bit helpers built on 32-bit accesses, and the ACPI MCFG parser that says
// where ECAM lives. Layouts: PCI Local Bus 3.0 section 3.2.2.3.2, PCI Firmware 3.2 section 4.1.2.
//
// Every access is a whole aligned dword: both mechanisms can do that, and it is all a fake has to model.
// Reads of a function that does not exist return 0xFFFFFFFF, as the hardware does; config accesses cannot
// fail in any other way, so read32 returns a plain value and only the MCFG parser returns errors.
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>

#include <toro/arch/x86_64/port_io.hpp>
#include <toro/base/expected.hpp>
#include <toro/boot/phys_reader.hpp>
#include <toro/boot/platform.hpp>

namespace toro {

// Bus, device (slot) and function of one PCI function, within segment 0.
struct pci_address {
    std::uint8_t bus = 0;
    std::uint8_t device = 0;   // 0..31
    std::uint8_t function = 0; // 0..7

    // The conventional 16-bit "BDF" (bus << 8 | device << 3 | function): a compact number for errors.
    constexpr std::uint16_t bdf() const {
        return static_cast<std::uint16_t>(bus << 8 | (device & 0x1f) << 3 | (function & 7));
    }
    friend constexpr bool operator==(const pci_address&, const pci_address&) = default;
};

// Configuration space of one function through dword accesses. `offset` is a byte offset that the caller
// keeps 4-aligned (implementations drop the low two bits); an offset the mechanism cannot reach reads
// 0xFFFFFFFF and ignores writes.
template <class T>
concept pci_config_access = requires(T& a, pci_address addr, std::uint16_t offset, std::uint32_t value) {
    { a.read32(addr, offset) } -> std::same_as<std::uint32_t>;
    { a.write32(addr, offset, value) } -> std::same_as<void>;
};

// Models pci_config_access and nothing more (not copyable, no const access): the PCI code instantiates
// with it so that it provably asks for no more.
struct pci_config_access_archetype {
    pci_config_access_archetype() = default;
    pci_config_access_archetype(const pci_config_access_archetype&) = delete;
    pci_config_access_archetype& operator=(const pci_config_access_archetype&) = delete;
    std::uint32_t read32(pci_address, std::uint16_t) { return 0xffffffff; }
    void write32(pci_address, std::uint16_t, std::uint32_t) {}
};
static_assert(pci_config_access<pci_config_access_archetype>);

// The standard header's command/status dword: status bits are write-one-to-clear.
inline constexpr std::uint16_t pci_command_status_dword = 0x04;

// 8- and 16-bit accesses as dword accesses. Sub-dword writes read, merge and write back the dword, which
// writes the neighbouring bytes back unchanged, except for the status register next to the command
// register: its error bits are write-one-to-clear, so writing back what was read would clear them.
// Zeros are written there instead, which change nothing. (Other RW1C registers, e.g. PCIe Device Status,
// must be written with pci_write32 by their owners.)
template <pci_config_access A>
std::uint8_t pci_read8(A& a, pci_address addr, std::uint16_t offset) {
    return static_cast<std::uint8_t>(a.read32(addr, offset & 0xffc) >> (8 * (offset & 3)));
}
template <pci_config_access A>
std::uint16_t pci_read16(A& a, pci_address addr, std::uint16_t offset) {
    return static_cast<std::uint16_t>(a.read32(addr, offset & 0xffc) >> (8 * (offset & 2)));
}
template <pci_config_access A>
std::uint32_t pci_read32(A& a, pci_address addr, std::uint16_t offset) {
    return a.read32(addr, offset & 0xffc);
}

namespace detail {
template <pci_config_access A>
void pci_merge_write(A& a, pci_address addr, std::uint16_t offset, std::uint32_t value, std::uint32_t mask) {
    const auto aligned = static_cast<std::uint16_t>(offset & 0xffc);
    const unsigned shift = 8 * (offset & 3);
    std::uint32_t keep = a.read32(addr, aligned) & ~(mask << shift);
    if (aligned == pci_command_status_dword) keep &= 0x0000ffff; // zeros into RW1C status bits
    a.write32(addr, aligned, keep | (value & mask) << shift);
}
} // namespace detail

template <pci_config_access A>
void pci_write8(A& a, pci_address addr, std::uint16_t offset, std::uint8_t value) {
    detail::pci_merge_write(a, addr, offset, value, 0xff);
}
template <pci_config_access A>
void pci_write16(A& a, pci_address addr, std::uint16_t offset, std::uint16_t value) {
    detail::pci_merge_write(a, addr, static_cast<std::uint16_t>(offset & ~1u), value, 0xffff);
}
template <pci_config_access A>
void pci_write32(A& a, pci_address addr, std::uint16_t offset, std::uint32_t value) {
    a.write32(addr, offset & 0xffc, value);
}

// ---- Configuration mechanism #1: I/O ports 0xCF8 (address) and 0xCFC (data) ----

// 32-bit port I/O at absolute port numbers: what port_config_access needs, small enough to mock.
template <class T>
concept port_io32 = requires(T& io, std::uint16_t port, std::uint32_t value) {
    { io.in32(port) } -> std::same_as<std::uint32_t>;
    { io.out32(port, value) } -> std::same_as<void>;
};

// The real ports (ring 0 only).
struct x86_port_io32 {
    std::uint32_t in32(std::uint16_t port) const { return arch::inl(port); }
    void out32(std::uint16_t port, std::uint32_t value) const { arch::outl(port, value); }
};
static_assert(port_io32<x86_port_io32>);

// Reaches the first 256 bytes of every function of segment 0. An access is two port accesses that must not
// interleave with another CPU's: callers serialise (enumeration runs on the boot CPU before SMP).
template <port_io32 Io = x86_port_io32>
class port_config_access {
public:
    static constexpr std::uint16_t address_port = 0xcf8, data_port = 0xcfc;
    static constexpr std::uint16_t config_size = 256;

    constexpr port_config_access() = default;
    constexpr explicit port_config_access(Io io) : io_{io} {}

    // The CONFIG_ADDRESS word: enable (bit 31), bus 23:16, device 15:11, function 10:8, dword offset 7:2.
    static constexpr std::uint32_t config_address(pci_address a, std::uint16_t offset) {
        return 0x80000000u | std::uint32_t{a.bus} << 16 | std::uint32_t{a.device & 0x1fu} << 11 |
               std::uint32_t{a.function & 7u} << 8 | (offset & 0xfcu);
    }

    std::uint32_t read32(pci_address a, std::uint16_t offset) {
        if (offset >= config_size) return 0xffffffff; // extended space needs ECAM
        io_.out32(address_port, config_address(a, offset));
        return io_.in32(data_port);
    }
    void write32(pci_address a, std::uint16_t offset, std::uint32_t value) {
        if (offset >= config_size) return;
        io_.out32(address_port, config_address(a, offset));
        io_.out32(data_port, value);
    }

    Io& io() { return io_; }

private:
    Io io_{};
};
static_assert(pci_config_access<port_config_access<>>);

// ---- ECAM: memory-mapped configuration space (PCIe enhanced configuration access mechanism) ----

// Byte offset of (bus, device, function, offset) from an ECAM region's base, the address of bus 0.
constexpr std::uint64_t ecam_offset(pci_address a, std::uint16_t offset) {
    return std::uint64_t{a.bus} << 20 | std::uint64_t{a.device & 0x1fu} << 15 |
           std::uint64_t{a.function & 7u} << 12 | (offset & 0xfffu);
}

// Buses [start_bus, end_bus] of one segment's ECAM region. `window` points at the mapping of bus
// start_bus (physical base + start_bus << 20): the caller maps only the buses that exist, uncached.
class ecam_config_access {
public:
    static constexpr std::uint16_t config_size = 4096;

    constexpr ecam_config_access(volatile void* window, std::uint8_t start_bus, std::uint8_t end_bus)
        : window_{static_cast<volatile std::byte*>(window)}, start_bus_{start_bus}, end_bus_{end_bus} {}

    // Bytes the window must cover.
    constexpr std::uint64_t window_size() const { return (std::uint64_t{end_bus_} - start_bus_ + 1) << 20; }
    constexpr std::uint8_t start_bus() const { return start_bus_; }
    constexpr std::uint8_t end_bus() const { return end_bus_; }

    std::uint32_t read32(pci_address a, std::uint16_t offset) {
        volatile std::uint32_t* p = reg(a, offset);
        return p != nullptr ? *p : 0xffffffff;
    }
    void write32(pci_address a, std::uint16_t offset, std::uint32_t value) {
        if (volatile std::uint32_t* p = reg(a, offset)) *p = value;
    }

private:
    // The dword's address, nullptr outside the region (a bus MCFG does not list has no config space).
    volatile std::uint32_t* reg(pci_address a, std::uint16_t offset) const {
        if (a.bus < start_bus_ || a.bus > end_bus_ || offset >= config_size) return nullptr;
        const pci_address rel{static_cast<std::uint8_t>(a.bus - start_bus_), a.device, a.function};
        return reinterpret_cast<volatile std::uint32_t*>(window_ + ecam_offset(rel, offset & 0xffc));
    }

    volatile std::byte* window_;
    std::uint8_t start_bus_;
    std::uint8_t end_bus_;
};
static_assert(pci_config_access<ecam_config_access>);

// What the kernel uses: ECAM for the buses MCFG gives (the whole 4 KiB of each function; on machines
// whose PCI Express root has no port mechanism, the only way), ports 0xCF8/0xCFC for the others.
template <port_io32 Io = x86_port_io32>
class kernel_config_access {
public:
    kernel_config_access() = default;
    explicit kernel_config_access(Io io) : ports_{io} {}
    kernel_config_access(Io io, ecam_config_access ecam) : ports_{io}, ecam_{ecam}, has_ecam_{true} {}

    bool uses_ecam() const { return has_ecam_; }
    port_config_access<Io>& ports() { return ports_; }
    std::uint32_t read32(pci_address a, std::uint16_t offset) {
        if (on_ecam(a)) return ecam_.read32(a, offset);
        return ports_.read32(a, offset);
    }
    void write32(pci_address a, std::uint16_t offset, std::uint32_t value) {
        if (on_ecam(a))
            ecam_.write32(a, offset, value);
        else
            ports_.write32(a, offset, value);
    }

private:
    bool on_ecam(pci_address a) const {
        return has_ecam_ && a.bus >= ecam_.start_bus() && a.bus <= ecam_.end_bus();
    }

    port_config_access<Io> ports_;
    ecam_config_access ecam_{nullptr, 0, 0};
    bool has_ecam_ = false;
};
static_assert(pci_config_access<kernel_config_access<>>);

// ---- ACPI MCFG ----

// One MCFG allocation: the ECAM region of buses [start_bus, end_bus] of a segment. base_address is where
// bus 0 would be, even when start_bus is not 0.
struct mcfg_entry {
    std::uint64_t base_address = 0;
    std::uint16_t segment = 0;
    std::uint8_t start_bus = 0;
    std::uint8_t end_bus = 0;

    // Physical address of the first bus's configuration space and the size of the region.
    constexpr std::uint64_t window_address() const { return base_address + (std::uint64_t{start_bus} << 20); }
    constexpr std::uint64_t window_size() const { return (std::uint64_t{end_bus} - start_bus + 1) << 20; }
};

struct mcfg_info {
    static constexpr std::size_t max_entries = 8; // one per segment or bus range; machines have one or two

    std::array<mcfg_entry, max_entries> entries{};
    std::size_t count = 0;
    std::size_t ignored = 0; // entries beyond max_entries

    constexpr std::span<const mcfg_entry> list() const { return {entries.data(), count}; }
    // The entry for segment 0 that covers `bus`, nullptr if none.
    constexpr const mcfg_entry* find(std::uint16_t segment, std::uint8_t bus = 0) const {
        for (const auto& e : list())
            if (e.segment == segment && bus >= e.start_bus && bus <= e.end_bus) return &e;
        return nullptr;
    }
};

namespace acpi {
// MCFG: the 36-byte header, 8 reserved bytes, then 16-byte entries: u64 base, u16 segment, u8 start bus,
// u8 end bus, 4 reserved.
inline constexpr std::size_t mcfg_entries = 44, mcfg_entry_size = 16;
inline constexpr std::size_t mcfg_off_segment = 8, mcfg_off_start_bus = 10, mcfg_off_end_bus = 11;
} // namespace acpi

// The MCFG table at mcfg_address (e.g. from find_acpi_table(mem, info.root_table, "MCFG")). Errors say
// which check failed: unreadable, wrong signature, a length that is not the header plus whole entries or
// that runs into unreadable memory, a bad checksum, an entry whose bus range is backwards.
template <phys_reader R>
expected<mcfg_info> parse_mcfg(R& mem, std::uint64_t mcfg_address) {
    std::byte h[acpi::mcfg_entries];
    if (!detail::no_wrap(mcfg_address, sizeof h) || !mem.read(mcfg_address, h, acpi::header_size))
        return unexpected{"ACPI MCFG is unreadable at", mcfg_address};
    if (!detail::same_bytes(h, "MCFG", 4))
        return unexpected{"ACPI MCFG signature \"MCFG\" is missing at", mcfg_address};
    const auto length = load_le<std::uint32_t>(h + acpi::header_off_length);
    if (length < acpi::mcfg_entries || length > acpi::max_table_length)
        return unexpected{"ACPI MCFG length is shorter than its 44-byte header or absurd; length", length};
    if ((length - acpi::mcfg_entries) % acpi::mcfg_entry_size != 0)
        return unexpected{"ACPI MCFG length leaves a partial 16-byte entry; length", length};
    std::byte last;
    if (!detail::no_wrap(mcfg_address, length) || !mem.read(mcfg_address + length - 1, &last, 1))
        return unexpected{"ACPI MCFG is truncated: its length runs into unreadable memory; length", length};
    if (!detail::checksum_ok(mem, mcfg_address, length))
        return unexpected{"ACPI MCFG checksum is wrong at", mcfg_address};

    mcfg_info info;
    for (std::uint32_t off = acpi::mcfg_entries; off < length; off += acpi::mcfg_entry_size) {
        std::byte e[acpi::mcfg_entry_size];
        if (!mem.read(mcfg_address + off, e, sizeof e))
            return unexpected{"ACPI MCFG is unreadable at", mcfg_address + off};
        const mcfg_entry entry{load_le<std::uint64_t>(e), load_le<std::uint16_t>(e + acpi::mcfg_off_segment),
                               static_cast<std::uint8_t>(e[acpi::mcfg_off_start_bus]),
                               static_cast<std::uint8_t>(e[acpi::mcfg_off_end_bus])};
        if (entry.start_bus > entry.end_bus)
            return unexpected{"ACPI MCFG entry's start bus is above its end bus; entry offset", off};
        if (entry.base_address == 0)
            return unexpected{"ACPI MCFG entry has base address 0; entry offset", off};
        if (info.count == mcfg_info::max_entries)
            ++info.ignored;
        else
            info.entries[info.count++] = entry;
    }
    return info;
}

// Finds and parses the MCFG through the ACPI root table (platform_info::root_table).
template <phys_reader R>
expected<mcfg_info> find_mcfg(R& mem, const acpi_root& root) {
    auto at = find_acpi_table(mem, root, "MCFG");
    if (!at) return unexpected{at.error()};
    return parse_mcfg(mem, *at);
}

} // namespace toro
