// platform: the CPUs and interrupt controllers the firmware reports, for SMP bring-up.
// Sources, in order of preference: the ACPI MADT (found through the RSDP and the RSDT/XSDT), else the Intel
// MultiProcessor Specification 1.4 table. Layouts from ACPI 6.5 sections 5.2.5-5.2.12 and MP spec 1.4
// chapter 4. Every firmware byte is read through a phys_reader: a broken table is an error, never a fault.
// Nothing here allocates. platform_info is about 1.2 KiB and discover_platform's deepest path uses about
// 2 KiB of stack besides the result; keep the result in static storage.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>

#include <toro/base/expected.hpp>
#include <toro/base/string_view.hpp>
#include <toro/boot/phys_reader.hpp>

namespace toro {

struct cpu_entry {
    std::uint32_t apic_id = 0;  // xAPIC or x2APIC id: the target of INIT/SIPI
    std::uint32_t acpi_uid = 0; // ACPI processor UID; the MP table has none (0)
    bool bsp = false;           // the MP table's BP flag; ACPI does not say (false): compare APIC ids
    bool enabled = true;        // false: ACPI "online capable", i.e. may be brought online at run time only
};

struct ioapic_entry {
    std::uint8_t id = 0;
    std::uint32_t address = 0;  // physical MMIO base
    std::uint32_t gsi_base = 0; // first GSI it serves; MP tables carry none (0: read the IOAPIC instead)
};

// An ISA IRQ that is not identity-mapped onto a GSI (MADT type 2); flags are the MPS INTI flags
// (bits 0-1 polarity, bits 2-3 trigger mode; 0 = conforms to the bus).
struct irq_override {
    std::uint8_t bus_irq = 0;
    std::uint32_t gsi = 0;
    std::uint16_t flags = 0;
};

enum class platform_source : std::uint8_t { none, acpi, mp_table };

// Where the ACPI root table (RSDT or XSDT) is, once validated: what find_acpi_table walks.
struct acpi_root {
    std::uint64_t address = 0; // 0 = no ACPI
    bool is_xsdt = false;      // entries are u64 (XSDT) rather than u32 (RSDT)
};

// What firmware says. Capacities are fixed (no heap this early); what does not fit is counted, not stored.
struct platform_info {
    static constexpr std::size_t max_cpus = 64;
    static constexpr std::size_t max_ioapics = 8;
    static constexpr std::size_t max_overrides = 16;
    static constexpr std::uint64_t default_lapic_address = 0xfee00000;

    platform_source source = platform_source::none;

    std::array<cpu_entry, max_cpus> cpus{}; // enabled and online-capable processors, firmware order
    std::size_t cpu_count = 0;
    std::size_t cpus_ignored = 0; // usable processors beyond max_cpus

    std::uint64_t lapic_address = default_lapic_address;

    std::array<ioapic_entry, max_ioapics> ioapics{};
    std::size_t ioapic_count = 0;
    std::size_t ioapics_ignored = 0;

    std::array<irq_override, max_overrides> overrides{};
    std::size_t override_count = 0;
    std::size_t overrides_ignored = 0;

    bool pcat_compat = false;  // dual 8259 PICs present: mask them before using the IOAPIC
    bool imcr_present = false; // MP table: the IMCR exists and the board starts in PIC mode (MP spec 3.6.2.1)

    std::uint64_t rsdp_address = 0;  // where the RSDP was found; 0 = none (set even when the MP table won)
    acpi_root root_table;            // the validated RSDT/XSDT behind rsdp_address
    std::uint64_t table_address = 0; // the MADT or MP configuration table parsed; 0 with source none

    // Back to the defaults without building a temporary of this size.
    constexpr void reset() {
        source = platform_source::none;
        cpu_count = cpus_ignored = ioapic_count = ioapics_ignored = override_count = overrides_ignored = 0;
        lapic_address = default_lapic_address;
        pcat_compat = imcr_present = false;
        rsdp_address = 0;
        root_table = {};
        table_address = 0;
    }

    constexpr std::span<const cpu_entry> cpu_list() const { return {cpus.data(), cpu_count}; }
    constexpr std::span<const ioapic_entry> ioapic_list() const { return {ioapics.data(), ioapic_count}; }
    constexpr std::span<const irq_override> override_list() const {
        return {overrides.data(), override_count};
    }

    // A processor the firmware lists twice (a type 0 and a type 9 MADT entry for the same id, which ACPI
    // forbids but firmware does) is kept once: starting one CPU twice would reset it under its own feet.
    constexpr void add_cpu(std::uint32_t apic_id, std::uint32_t uid, bool is_bsp, bool is_enabled) {
        for (auto& c : std::span{cpus.data(), cpu_count})
            if (c.apic_id == apic_id) {
                c.bsp = c.bsp || is_bsp;
                c.enabled = c.enabled || is_enabled;
                return;
            }
        if (cpu_count == max_cpus) {
            ++cpus_ignored;
            return;
        }
        cpus[cpu_count++] = {apic_id, uid, is_bsp, is_enabled};
    }
    constexpr void add_ioapic(std::uint8_t id, std::uint32_t address, std::uint32_t gsi_base) {
        if (ioapic_count == max_ioapics) {
            ++ioapics_ignored;
            return;
        }
        ioapics[ioapic_count++] = {id, address, gsi_base};
    }
    constexpr void add_override(std::uint8_t bus_irq, std::uint32_t gsi, std::uint16_t flags) {
        if (override_count == max_overrides) {
            ++overrides_ignored;
            return;
        }
        overrides[override_count++] = {bus_irq, gsi, flags};
    }
};

namespace acpi {

// RSDP: "RSD PTR ", checksum over the first 20 bytes (ACPI 1.0); from revision 2 on, length and an
// extended checksum over `length` bytes, and the XSDT address.
inline constexpr std::size_t rsdp_v1_size = 20, rsdp_v2_size = 36;
inline constexpr std::size_t rsdp_off_revision = 15, rsdp_off_rsdt = 16, rsdp_off_length = 20,
                             rsdp_off_xsdt = 24;
// Generous for an RSDP (36 bytes today) yet keeps a garbage length from being summed.
inline constexpr std::uint32_t rsdp_max_length = 4096;

// System description table header, shared by every table.
inline constexpr std::size_t header_size = 36, header_off_length = 4;
// Real tables are at most tens of KiB (a DSDT); a larger length is garbage, not a big machine.
inline constexpr std::uint32_t max_table_length = 1024 * 1024;

// MADT: the header, u32 local APIC address, u32 flags, then variable-length entries (u8 type, u8 length).
inline constexpr std::size_t madt_off_lapic = 36, madt_off_flags = 40, madt_entries = 44;
inline constexpr std::uint32_t madt_pcat_compat = 1u << 0;
inline constexpr std::uint8_t madt_lapic = 0, madt_ioapic = 1, madt_override = 2, madt_lapic_address = 5,
                              madt_x2apic = 9;
inline constexpr std::uint32_t lapic_enabled = 1u << 0, lapic_online_capable = 1u << 1;

// Where the BIOS data area keeps the EBDA segment, and the BIOS read-only area scanned for the RSDP.
inline constexpr std::uint64_t bda_ebda_segment = 0x40e, bios_area = 0xe0000, bios_area_end = 0x100000;
inline constexpr std::uint64_t ebda_scan_length = 1024;

} // namespace acpi

namespace mp {

// Floating pointer structure: "_MP_", u32 config table address, u8 length in 16-byte units (1), u8 spec
// revision, u8 checksum, feature bytes 1-5. Feature byte 1 non-zero names a default configuration.
inline constexpr std::size_t fp_size = 16, fp_off_config = 4, fp_off_length = 8, fp_off_feature1 = 11,
                             fp_off_feature2 = 12;
inline constexpr std::uint8_t fp_imcr = 1u << 7; // feature byte 2: IMCR present, PIC mode implemented

// Configuration table header: "PCMP", u16 base table length, u8 spec revision, u8 checksum, OEM and
// product ids, u32 OEM table, u16 OEM table size, u16 entry count, u32 local APIC address, u16 extended
// table length, u8 extended checksum, reserved.
inline constexpr std::size_t config_off_length = 4, config_off_lapic = 36, config_header_size = 44;

// Entry types and their fixed sizes.
inline constexpr std::uint8_t entry_processor = 0, entry_bus = 1, entry_ioapic = 2, entry_io_interrupt = 3,
                              entry_local_interrupt = 4;
inline constexpr std::size_t processor_size = 20, other_entry_size = 8;
inline constexpr std::uint8_t cpu_enabled = 1u << 0, cpu_bsp = 1u << 1, ioapic_usable = 1u << 0;

// BIOS data area word with the base memory size in KiB; 640 KiB when it cannot be read.
inline constexpr std::uint64_t bda_base_memory_kib = 0x413;
inline constexpr std::uint16_t default_base_memory_kib = 640;
inline constexpr std::uint64_t bios_area = 0xf0000, bios_area_end = 0x100000;

} // namespace mp

namespace detail {

// [addr, addr + len) does not wrap past 2^64, so offsets from addr can be added without care.
constexpr bool no_wrap(std::uint64_t addr, std::uint64_t len) {
    return len <= std::numeric_limits<std::uint64_t>::max() - addr;
}

constexpr bool same_bytes(const std::byte* p, const char* s, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i)
        if (p[i] != static_cast<std::byte>(s[i])) return false;
    return true;
}

// Does the byte sum of [addr, addr + len) come to 0 mod 256? False too when any byte is unreadable.
// Read in small chunks: tables can be large and kernel stacks are small.
template <phys_reader R>
bool checksum_ok(R& mem, std::uint64_t addr, std::uint64_t len) {
    if (!no_wrap(addr, len)) return false;
    std::byte chunk[64];
    std::uint8_t sum = 0;
    for (std::uint64_t off = 0; off < len; off += sizeof chunk) {
        const std::size_t n = len - off < sizeof chunk ? static_cast<std::size_t>(len - off) : sizeof chunk;
        if (!mem.read(addr + off, chunk, n)) return false;
        for (std::size_t i = 0; i < n; ++i)
            sum = static_cast<std::uint8_t>(sum + static_cast<std::uint8_t>(chunk[i]));
    }
    return sum == 0;
}

// Calls candidate(addr) for every 16-byte-aligned addr in [start, end) whose bytes begin with sig, and
// returns the first addr it accepts, 0 if none (no table can live at 0 in these areas). The area is read
// in chunks; a chunk that is not readable as a whole is retried paragraph by paragraph, so a reader that
// covers only part of the area still gets that part searched.
template <phys_reader R, class Candidate>
std::uint64_t scan_paragraphs(R& mem, std::uint64_t start, std::uint64_t end, const char* sig,
                              std::size_t sig_len, Candidate&& candidate) {
    constexpr std::uint64_t paragraph = 16, chunk_size = 512;
    start = (start + paragraph - 1) & ~(paragraph - 1);
    if constexpr (phys_viewer<R>) {
        // In place: a 4-byte compare per paragraph, the rest only for a match.
        std::uint32_t head = 0;
        __builtin_memcpy(&head, sig, 4);
        if (const std::byte* p =
                end > start ? mem.view(start, static_cast<std::size_t>(end - start)) : nullptr) {
            for (std::uint64_t off = 0; off + paragraph <= end - start; off += paragraph) {
                std::uint32_t w;
                __builtin_memcpy(&w, p + off, 4);
                if (w == head && same_bytes(p + off, sig, sig_len) && candidate(start + off))
                    return start + off;
            }
            return 0;
        }
    }
    std::byte chunk[chunk_size];
    for (std::uint64_t at = start; at < end; at += chunk_size) {
        const std::uint64_t n = end - at < chunk_size ? end - at : chunk_size;
        const bool whole = mem.read(at, chunk, static_cast<std::size_t>(n));
        for (std::uint64_t off = 0; off + paragraph <= n; off += paragraph) {
            if (!whole && !mem.read(at + off, chunk + off, paragraph)) continue;
            if (same_bytes(chunk + off, sig, sig_len) && candidate(at + off)) return at + off;
        }
    }
    return 0;
}

// The EBDA's physical address from the BDA, 0 when unset or unreadable.
template <phys_reader R>
std::uint64_t ebda_address(R& mem) {
    const auto segment = read_u16(mem, acpi::bda_ebda_segment);
    return segment ? std::uint64_t{*segment} << 4 : 0;
}

// Checks the RSDP at addr: signature, the ACPI 1.0 checksum and, for revision >= 2, the length and the
// extended checksum. The error says which check failed.
template <phys_reader R>
expected<void> check_rsdp(R& mem, std::uint64_t addr) {
    std::byte r[acpi::rsdp_v2_size];
    if (!no_wrap(addr, acpi::rsdp_v1_size) || !mem.read(addr, r, acpi::rsdp_v1_size))
        return unexpected{"ACPI RSDP is unreadable at", addr};
    if (!same_bytes(r, "RSD PTR ", 8))
        return unexpected{"ACPI RSDP signature \"RSD PTR \" is missing at", addr};
    if (!checksum_ok(mem, addr, acpi::rsdp_v1_size))
        return unexpected{"ACPI RSDP checksum (first 20 bytes) is wrong at", addr};
    if (static_cast<std::uint8_t>(r[acpi::rsdp_off_revision]) < 2) return {};
    if (!no_wrap(addr, acpi::rsdp_v2_size) || !mem.read(addr, r, acpi::rsdp_v2_size))
        return unexpected{"ACPI 2.0 RSDP is unreadable at", addr};
    const auto length = load_le<std::uint32_t>(r + acpi::rsdp_off_length);
    if (length < acpi::rsdp_v2_size || length > acpi::rsdp_max_length)
        return unexpected{"ACPI 2.0 RSDP length is not between 36 and 4096; length", length};
    if (!checksum_ok(mem, addr, length))
        return unexpected{"ACPI 2.0 RSDP extended checksum is wrong at", addr};
    return {};
}

// Reads a table header at addr and checks that its signature is sig (4 bytes), its length is sane and its
// checksum is right. Returns the length, 0 for a table that is not sig or not readable, or an error for
// a sig table that is broken.
template <phys_reader R>
expected<std::uint32_t> check_table(R& mem, std::uint64_t addr, const char* sig, string_view bad_length,
                                    string_view bad_checksum) {
    std::byte h[acpi::header_size];
    if (!no_wrap(addr, acpi::header_size) || !mem.read(addr, h, sizeof h)) return std::uint32_t{0};
    if (!same_bytes(h, sig, 4)) return std::uint32_t{0};
    const auto length = load_le<std::uint32_t>(h + acpi::header_off_length);
    if (length < acpi::header_size || length > acpi::max_table_length) return unexpected{bad_length, length};
    if (!checksum_ok(mem, addr, length)) return unexpected{bad_checksum, addr};
    return length;
}

struct table_lookup {
    std::uint64_t address = 0;    // the instance asked for; 0 = not found
    std::uint64_t broken = 0;     // a table with the signature that failed its checks; 0 = none
    std::uint64_t unreadable = 0; // an entry whose header cannot be read: it might have been the one
};

// Walks the root table's entries for the instance-th valid table with signature sig. Unreadable entries,
// other signatures and broken tables are skipped; the first broken and the first unreadable one are
// remembered so the caller can tell "absent" from "present but corrupt" or "maybe beyond the map".
template <phys_reader R>
expected<table_lookup> lookup_acpi_table(R& mem, const acpi_root& root, const char* sig,
                                         std::size_t instance) {
    // The root may come from the caller: check it again rather than trust its length.
    auto length =
        check_table(mem, root.address, root.is_xsdt ? "XSDT" : "RSDT",
                    "ACPI root table length is absurd; length", "ACPI root table checksum is wrong at");
    if (!length) return unexpected{length.error()};
    if (*length == 0)
        return unexpected{"ACPI root table is unreadable or lacks its signature at", root.address};
    const std::uint64_t entry_size = root.is_xsdt ? 8 : 4;
    const std::uint64_t count = (*length - acpi::header_size) / entry_size; // validated: >= 36, no wrap
    table_lookup found;
    for (std::uint64_t i = 0; i < count; ++i) {
        std::byte e[8]{};
        if (!mem.read(root.address + acpi::header_size + i * entry_size, e, entry_size)) continue;
        const std::uint64_t addr = root.is_xsdt ? load_le<std::uint64_t>(e) : load_le<std::uint32_t>(e);
        if (addr == 0) continue;
        std::byte h[acpi::header_size];
        if (!no_wrap(addr, sizeof h) || !mem.read(addr, h, sizeof h)) {
            if (found.unreadable == 0) found.unreadable = addr;
            continue;
        }
        auto ok = check_table(mem, addr, sig, "", "");
        if (!ok) {
            if (found.broken == 0) found.broken = addr;
            continue;
        }
        if (*ok == 0) continue;
        if (instance-- == 0) {
            found.address = addr;
            return found;
        }
    }
    return found;
}

inline std::uint64_t signature_value(const char (&sig)[5]) {
    return load_le<std::uint32_t>(reinterpret_cast<const std::byte*>(sig));
}

} // namespace detail

// Finds the RSDP. A non-zero hint (the loader's rsdp, e.g. PVH's rsdp_paddr) is checked there and only
// there: a loader pointing at garbage is an error, not a reason to guess. Hint 0 scans the first KiB of the
// EBDA, then 0xE0000-0xFFFFF, on 16-byte boundaries, skipping candidates that fail their checks.
template <phys_reader R>
expected<std::uint64_t> find_rsdp(R& mem, std::uint64_t hint) {
    if (hint != 0) {
        if (auto r = detail::check_rsdp(mem, hint); !r) return unexpected{r.error()};
        return hint;
    }
    auto valid = [&mem](std::uint64_t at) { return static_cast<bool>(detail::check_rsdp(mem, at)); };
    if (const auto ebda = detail::ebda_address(mem); ebda != 0)
        if (const auto at =
                detail::scan_paragraphs(mem, ebda, ebda + acpi::ebda_scan_length, "RSD PTR ", 8, valid))
            return at;
    if (const auto at =
            detail::scan_paragraphs(mem, acpi::bios_area, acpi::bios_area_end, "RSD PTR ", 8, valid))
        return at;
    return unexpected{"no ACPI RSDP in the EBDA or in 0xE0000-0xFFFFF"};
}

// The RSDT/XSDT behind the RSDP at rsdp, both validated: the XSDT when the revision is >= 2 and its
// address is set, else the RSDT.
template <phys_reader R>
expected<acpi_root> find_acpi_root(R& mem, std::uint64_t rsdp) {
    if (auto ok = detail::check_rsdp(mem, rsdp); !ok) return unexpected{ok.error()};
    std::byte b[acpi::rsdp_v2_size];
    if (!mem.read(rsdp, b, acpi::rsdp_v1_size)) return unexpected{"ACPI RSDP is unreadable at", rsdp};
    acpi_root root{load_le<std::uint32_t>(b + acpi::rsdp_off_rsdt), false};
    // check_rsdp has read all 36 bytes when the revision is >= 2.
    if (static_cast<std::uint8_t>(b[acpi::rsdp_off_revision]) >= 2 && mem.read(rsdp, b, acpi::rsdp_v2_size))
        if (const auto xsdt = load_le<std::uint64_t>(b + acpi::rsdp_off_xsdt); xsdt != 0) root = {xsdt, true};
    if (root.address == 0)
        return unexpected{"ACPI RSDP has neither an XSDT nor an RSDT address; RSDP at", rsdp};
    auto length = root.is_xsdt
                      ? detail::check_table(mem, root.address, "XSDT", "ACPI XSDT length is absurd; length",
                                            "ACPI XSDT checksum is wrong at")
                      : detail::check_table(mem, root.address, "RSDT", "ACPI RSDT length is absurd; length",
                                            "ACPI RSDT checksum is wrong at");
    if (!length) return unexpected{length.error()};
    if (*length == 0)
        return unexpected{root.is_xsdt ? "ACPI XSDT is unreadable or lacks its signature at"
                                       : "ACPI RSDT is unreadable or lacks its signature at",
                          root.address};
    return root;
}

// The physical address of the instance-th valid ACPI table with signature sig (e.g. "MCFG"), through the
// root table in root (platform_info::root_table). Tables that fail their length or checksum are skipped.
template <phys_reader R>
expected<std::uint64_t> find_acpi_table(R& mem, const acpi_root& root, const char (&sig)[5],
                                        std::size_t instance = 0) {
    if (root.address == 0)
        return unexpected{"no ACPI root table to search for a table; signature (LE)",
                          detail::signature_value(sig)};
    auto found = detail::lookup_acpi_table(mem, root, sig, instance);
    if (!found) return unexpected{found.error()};
    if (found->address == 0 && found->unreadable != 0)
        return unexpected{"ACPI table not found, but the root table lists a table that is unreadable at",
                          found->unreadable};
    if (found->address == 0)
        return unexpected{"ACPI table not found (or it fails its checks); signature (LE)",
                          detail::signature_value(sig)};
    return found->address;
}

// Same, starting from the RSDP (which is validated again, with the RSDT/XSDT).
template <phys_reader R>
expected<std::uint64_t> find_acpi_table(R& mem, std::uint64_t rsdp, const char (&sig)[5],
                                        std::size_t instance = 0) {
    auto root = find_acpi_root(mem, rsdp);
    if (!root) return unexpected{root.error()};
    return find_acpi_table(mem, *root, sig, instance);
}

namespace detail {

// parse_madt, into info (reset first): the kernel keeps one platform_info, not a copy per stack frame.
template <phys_reader R>
expected<void> parse_madt_into(R& mem, std::uint64_t madt_addr, platform_info& info) {
    using namespace acpi;
    auto length = check_table(mem, madt_addr, "APIC", "ACPI MADT length is absurd; length",
                              "ACPI MADT checksum is wrong at");
    if (!length) return unexpected{length.error()};
    if (*length == 0)
        return unexpected{"ACPI MADT is unreadable or lacks its \"APIC\" signature at", madt_addr};
    if (*length < madt_entries)
        return unexpected{"ACPI MADT is shorter than its 44-byte fixed part; length", *length};

    info.reset();
    info.source = platform_source::acpi;
    info.table_address = madt_addr;
    std::byte fixed[8];
    if (!mem.read(madt_addr + madt_off_lapic, fixed, sizeof fixed))
        return unexpected{"ACPI MADT is unreadable at", madt_addr};
    info.lapic_address = load_le<std::uint32_t>(fixed);
    info.pcat_compat = (load_le<std::uint32_t>(fixed + 4) & madt_pcat_compat) != 0;

    for (std::uint32_t off = madt_entries; off < *length;) {
        if (*length - off < 2)
            return unexpected{"ACPI MADT entry header runs past the end of the table; entry offset", off};
        std::byte e[16]{}; // the longest entry used here (x2APIC) is 16 bytes; longer ones are read in part
        if (!mem.read(madt_addr + off, e, 2))
            return unexpected{"ACPI MADT is unreadable at", madt_addr + off};
        const auto type = static_cast<std::uint8_t>(e[0]);
        const auto len = static_cast<std::uint8_t>(e[1]);
        if (len < 2) return unexpected{"ACPI MADT entry length is below 2; entry offset", off};
        if (len > *length - off)
            return unexpected{"ACPI MADT entry runs past the end of the table; entry offset", off};
        const std::size_t n = len < sizeof e ? len : sizeof e;
        if (!mem.read(madt_addr + off, e, n))
            return unexpected{"ACPI MADT is unreadable at", madt_addr + off};

        std::size_t need = 0; // the size this entry type has in ACPI 6.5; longer entries are fine
        switch (type) {
        case madt_lapic:
            need = 8;
            break;
        case madt_ioapic:
        case madt_lapic_address:
            need = 12;
            break;
        case madt_override:
            need = 10;
            break;
        case madt_x2apic:
            need = 16;
            break;
        default:
            break;
        }
        if (len < need)
            return unexpected{"ACPI MADT entry is shorter than its type requires; entry offset", off};

        switch (type) {
        case madt_lapic: {
            const auto flags = load_le<std::uint32_t>(e + 4);
            const auto id = static_cast<std::uint8_t>(e[3]);
            // 0xff is the xAPIC broadcast id: firmware uses it for a slot with no processor behind it.
            if ((flags & (lapic_enabled | lapic_online_capable)) && id != 0xff)
                info.add_cpu(id, static_cast<std::uint8_t>(e[2]), false, (flags & lapic_enabled) != 0);
            break;
        }
        case madt_x2apic: {
            const auto id = load_le<std::uint32_t>(e + 4);
            const auto flags = load_le<std::uint32_t>(e + 8);
            if ((flags & (lapic_enabled | lapic_online_capable)) && id != 0xffffffff)
                info.add_cpu(id, load_le<std::uint32_t>(e + 12), false, (flags & lapic_enabled) != 0);
            break;
        }
        case madt_ioapic:
            info.add_ioapic(static_cast<std::uint8_t>(e[2]), load_le<std::uint32_t>(e + 4),
                            load_le<std::uint32_t>(e + 8));
            break;
        case madt_override:
            info.add_override(static_cast<std::uint8_t>(e[3]), load_le<std::uint32_t>(e + 4),
                              load_le<std::uint16_t>(e + 8));
            break;
        case madt_lapic_address:
            info.lapic_address = load_le<std::uint64_t>(e + 4);
            break;
        default:
            break;
        }
        off += len;
    }
    return {};
}

} // namespace detail

// The MADT at madt_addr -> platform_info (source acpi, table_address madt_addr; rsdp_address and
// root_table are left for the caller). The table's signature, length and checksum are checked; every
// entry must fit in the table; entry types it does not use are skipped by their length.
template <phys_reader R>
expected<platform_info> parse_madt(R& mem, std::uint64_t madt_addr) {
    platform_info info;
    if (auto r = detail::parse_madt_into(mem, madt_addr, info); !r) return unexpected{r.error()};
    return info;
}

// Finds the MP floating pointer structure: the first KiB of the EBDA, the last KiB of base memory, then
// 0xF0000-0xFFFFF (MP spec 4.1), skipping candidates whose length or checksum is wrong.
template <phys_reader R>
expected<std::uint64_t> find_mp_floating_pointer(R& mem) {
    auto valid = [&mem](std::uint64_t at) {
        std::byte fp[mp::fp_size];
        return mem.read(at, fp, sizeof fp) && static_cast<std::uint8_t>(fp[mp::fp_off_length]) == 1 &&
               detail::checksum_ok(mem, at, mp::fp_size);
    };
    if (const auto ebda = detail::ebda_address(mem); ebda != 0)
        if (const auto at = detail::scan_paragraphs(mem, ebda, ebda + 1024, "_MP_", 4, valid)) return at;
    std::uint64_t base_kib = mp::default_base_memory_kib;
    if (const auto kib = read_u16(mem, mp::bda_base_memory_kib); kib && *kib >= 1 && *kib <= 640)
        base_kib = *kib;
    if (const auto at =
            detail::scan_paragraphs(mem, (base_kib - 1) * 1024, base_kib * 1024, "_MP_", 4, valid))
        return at;
    if (const auto at = detail::scan_paragraphs(mem, mp::bios_area, mp::bios_area_end, "_MP_", 4, valid))
        return at;
    return unexpected{"no MP floating pointer in the EBDA, the last KiB of base memory or 0xF0000-0xFFFFF"};
}

namespace detail {

// parse_mp_table, into info (reset first): the kernel keeps one platform_info, not a copy per stack frame.
template <phys_reader R>
expected<void> parse_mp_table_into(R& mem, std::uint64_t fp_addr, platform_info& info) {
    using namespace mp;
    std::byte fp[fp_size];
    if (!no_wrap(fp_addr, fp_size) || !mem.read(fp_addr, fp, sizeof fp))
        return unexpected{"MP floating pointer is unreadable at", fp_addr};
    if (!same_bytes(fp, "_MP_", 4))
        return unexpected{"MP floating pointer signature \"_MP_\" is missing at", fp_addr};
    if (const auto units = static_cast<std::uint8_t>(fp[fp_off_length]); units != 1)
        return unexpected{"MP floating pointer length is not 1 (16 bytes); length", units};
    if (!checksum_ok(mem, fp_addr, fp_size))
        return unexpected{"MP floating pointer checksum is wrong at", fp_addr};
    if (const auto config = static_cast<std::uint8_t>(fp[fp_off_feature1]); config != 0)
        return unexpected{
            "MP default configurations are not supported (feature byte 1 names one); configuration", config};

    const std::uint64_t table = load_le<std::uint32_t>(fp + fp_off_config);
    if (table == 0) return unexpected{"MP floating pointer has no configuration table address; at", fp_addr};
    std::byte h[config_header_size];
    if (!mem.read(table, h, sizeof h)) return unexpected{"MP configuration table is unreadable at", table};
    if (!same_bytes(h, "PCMP", 4))
        return unexpected{"MP configuration table signature \"PCMP\" is missing at", table};
    const auto length = load_le<std::uint16_t>(h + config_off_length);
    if (length < config_header_size)
        return unexpected{"MP configuration table is shorter than its header; length", length};
    if (!checksum_ok(mem, table, length))
        return unexpected{"MP configuration table checksum is wrong at", table};

    info.reset();
    info.source = platform_source::mp_table;
    info.table_address = table;
    info.lapic_address = load_le<std::uint32_t>(h + config_off_lapic);
    info.pcat_compat = true; // the MP spec requires PC/AT compatibility, 8259s included
    info.imcr_present = (static_cast<std::uint8_t>(fp[fp_off_feature2]) & fp_imcr) != 0;

    // Entries are walked by the base table length, as Linux does, not by the entry count: qboot (the
    // firmware of QEMU microvm) leaves the count 0.
    std::array<std::uint8_t, 32> isa_bus{}; // bitmap of bus ids whose type is "ISA   "
    for (std::uint32_t off = config_header_size; off < length;) {
        std::byte e[processor_size];
        if (!mem.read(table + off, e, 1))
            return unexpected{"MP configuration table is unreadable at", table + off};
        const auto type = static_cast<std::uint8_t>(e[0]);
        // Each type has a fixed size and nothing says how long another type is: no way to step over it.
        if (type > entry_local_interrupt)
            return unexpected{"MP configuration table entry has an unknown type; entry offset", off};
        const std::uint32_t size = type == entry_processor ? processor_size : other_entry_size;
        if (length - off < size)
            return unexpected{"MP configuration table entry runs past the end of the table; entry offset",
                              off};
        if (!mem.read(table + off, e, size))
            return unexpected{"MP configuration table is unreadable at", table + off};
        const auto b1 = static_cast<std::uint8_t>(e[1]), b3 = static_cast<std::uint8_t>(e[3]);
        if (type == entry_processor) {
            if (b3 & cpu_enabled) info.add_cpu(b1, 0, (b3 & cpu_bsp) != 0, true);
        } else if (type == entry_bus) {
            if (same_bytes(e + 2, "ISA   ", 6)) isa_bus[b1 / 8] |= static_cast<std::uint8_t>(1u << (b1 % 8));
        } else if (type == entry_ioapic) {
            if (b3 & ioapic_usable) info.add_ioapic(b1, load_le<std::uint32_t>(e + 4), 0);
        } else if (type == entry_io_interrupt) {
            // An ISA IRQ wired to another pin of the first IOAPIC (GSI = pin), or with a non-default
            // polarity or trigger, is what the MADT calls an override (qboot and SeaBIOS: IRQ 0 -> pin 2).
            // Other IOAPICs' GSI bases are unknown here, so their routes are not translated.
            const auto flags = load_le<std::uint16_t>(e + 2);
            const auto bus = static_cast<std::uint8_t>(e[4]), irq = static_cast<std::uint8_t>(e[5]);
            const auto apic = static_cast<std::uint8_t>(e[6]), pin = static_cast<std::uint8_t>(e[7]);
            const bool on_isa = (isa_bus[bus / 8] >> (bus % 8)) & 1;
            if (b1 == 0 /* INT */ && on_isa && irq < 16 && info.ioapic_count != 0 &&
                apic == info.ioapics[0].id && (pin != irq || flags != 0))
                info.add_override(irq, pin, flags);
        }
        off += static_cast<std::uint32_t>(size);
    }
    return {};
}

} // namespace detail

// The MP configuration table behind the floating pointer at fp_addr -> platform_info (source mp_table).
// Usable processors and IOAPICs are listed; ISA interrupt assignments that differ from identity are
// turned into MADT-style overrides; other entries are checked for size and skipped. MP tables carry no
// ACPI UIDs and no IOAPIC GSI bases (both stay 0).
template <phys_reader R>
expected<platform_info> parse_mp_table(R& mem, std::uint64_t fp_addr) {
    platform_info info;
    if (auto r = detail::parse_mp_table_into(mem, fp_addr, info); !r) return unexpected{r.error()};
    return info;
}

// What the firmware says, ACPI first: the MADT ("APIC") when an RSDP and a MADT exist, else the MP table,
// else source none with no CPUs, which is not an error (the caller runs on its one CPU). rsdp_hint is the
// loader's RSDP address (boot_info::rsdp), 0 to scan. Anything found but broken is an error rather than a
// reason to fall back: a bad hint, RSDP, root table, MADT or MP table, or a root table entry that cannot
// be read (it may be the MADT), is an error that says what is wrong.
template <phys_reader R>
expected<void> discover_platform(R& mem, std::uint64_t rsdp_hint, platform_info& info) {
    info.reset();
    std::uint64_t rsdp = 0;
    acpi_root root;
    bool parsed = false;
    if (auto found = find_rsdp(mem, rsdp_hint)) {
        rsdp = *found;
        auto r = find_acpi_root(mem, rsdp);
        if (!r) return unexpected{r.error()};
        root = *r;
        auto madt = detail::lookup_acpi_table(mem, root, "APIC", 0);
        if (!madt) return unexpected{madt.error()};
        if (madt->address == 0 && madt->broken != 0)
            return unexpected{"ACPI MADT fails its length or checksum check at", madt->broken};
        // Firmware may put tables high (SeaBIOS: near the top of RAM below 4 GiB); one that cannot be read
        // may be the MADT, and the MP table is no stand-in (SeaBIOS lists one CPU per package there).
        if (madt->address == 0 && madt->unreadable != 0)
            return unexpected{"ACPI root table lists a table that is unreadable (not mapped?) at",
                              madt->unreadable};
        if (madt->address != 0) {
            if (auto p = detail::parse_madt_into(mem, madt->address, info); !p) return unexpected{p.error()};
            parsed = true;
        }
    } else if (rsdp_hint != 0) {
        return unexpected{found.error()};
    }
    if (!parsed)
        if (auto fp = find_mp_floating_pointer(mem))
            if (auto p = detail::parse_mp_table_into(mem, *fp, info); !p) return unexpected{p.error()};
    info.rsdp_address = rsdp;
    info.root_table = root;
    return {};
}

// The same, returning the result (1160 bytes: callers short of stack use the form above).
template <phys_reader R>
expected<platform_info> discover_platform(R& mem, std::uint64_t rsdp_hint) {
    platform_info info;
    if (auto r = discover_platform(mem, rsdp_hint, info); !r) return unexpected{r.error()};
    return info;
}

} // namespace toro
