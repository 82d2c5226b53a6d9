// libFuzzer target for virtio-mmio discovery from ACPI (dev/virtio/acpi_mmio.hpp): the AML walk over a
// DSDT body, and the RSDP -> XSDT/RSDT -> FADT -> DSDT (-> SSDT) path around it.
//
// Input layout:
//   byte 0     flags: bit 0 leaves the DSDT checksum wrong, bit 1 uses an RSDT (RSDP revision 0) instead of
//              an XSDT, bit 2 zeroes the FADT's X_DSDT, bit 3 zeroes its DSDT, bit 4 adds the body again as
//              an SSDT
//   byte 1     the FADT's length minus 36 (so 36-291 bytes: short FADTs, ACPI 1.0's 116, 5.0's 268+)
//   the rest   the DSDT's AML body (at most 64 KiB are used)
// The body is walked alone (find_virtio_mmio_aml, and looking for an EISA id) and inside the table set, once
// through a reader with view() and once through one without. Any violated invariant calls
// __builtin_trap, which libFuzzer reports as a crash.
//
// Build and run:
//   clang++ -std=c++20 -g -O1 -Iinclude -fsanitize=fuzzer,address,undefined test/fuzz/fuzz_dsdt.cpp -o
//   /tmp/fd /tmp/fd -max_total_time=30 test/fuzz/corpus/dsdt
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include <toro/dev/virtio/acpi_mmio.hpp>

namespace {

namespace acpi_error = toro::virtio::acpi_error;
using toro::virtio::aml_scan_notes;
using toro::virtio::mmio_device_list;

constexpr std::size_t max_body = 64 * 1024;
constexpr std::uint64_t xsdt_at = 0x1000, rsdt_at = 0x1100, fadt_at = 0x2000, dsdt_at = 0x10000,
                        ssdt_at = 0x30000, rsdp_at = 0x48000, memory_size = 0x50000;

std::uint8_t memory[memory_size];

void check(bool ok) {
    if (!ok) __builtin_trap();
}

void put(std::uint64_t at, std::uint64_t v, int width) {
    for (int i = 0; i < width; ++i)
        memory[at + static_cast<std::uint64_t>(i)] = static_cast<std::uint8_t>(v >> (8 * i));
}

void fix(std::uint64_t at, std::size_t len, std::size_t slot) {
    memory[at + slot] = 0;
    std::uint8_t sum = 0;
    for (std::size_t i = 0; i < len; ++i) sum = static_cast<std::uint8_t>(sum + memory[at + i]);
    memory[at + slot] = static_cast<std::uint8_t>(-sum);
}

void header(std::uint64_t at, const char* sig, std::size_t length) {
    std::memcpy(memory + at, sig, 4);
    put(at + 4, length, 4);
    put(at + 8, 2, 1);
    std::memcpy(memory + at + 10, "TOROFW", 6);
}

struct view_reader {
    bool read(std::uint64_t addr, void* dst, std::size_t len) const {
        if (addr > memory_size || len > memory_size - addr) return false;
        std::memcpy(dst, memory + addr, len);
        return true;
    }
    const std::byte* view(std::uint64_t addr, std::size_t len) const {
        if (addr > memory_size || len > memory_size - addr) return nullptr;
        return reinterpret_cast<const std::byte*>(memory + addr);
    }
};
struct copy_reader {
    bool read(std::uint64_t addr, void* dst, std::size_t len) const {
        return view_reader{}.read(addr, dst, len);
    }
};

// What every result must satisfy.
void check_result(const toro::expected<mmio_device_list>& r, const aml_scan_notes& notes) {
    if (!r) {
        check(!r.error().what.empty());
        return;
    }
    check(r->count <= mmio_device_list::capacity);
    // Every matching device is returned, absent, unusable (its _CRS), or dropped (the list was full).
    check(notes.matched == r->count + notes.absent + notes.unusable + notes.dropped);
    check(notes.dropped == 0 || r->count == mmio_device_list::capacity);
    check(notes.matched <= notes.devices);
    for (std::size_t i = 0; i < r->count; ++i) {
        const auto& d = r->devices[i];
        check(d.size != 0 && d.size <= 0xffffffff && d.base <= 0xffffffff); // Memory32Fixed
        check(d.id >= -1);
    }
}

bool same_notes(const aml_scan_notes& a, const aml_scan_notes& b) {
    return a.devices == b.devices && a.matched == b.matched && a.absent == b.absent &&
           a.unusable == b.unusable && a.dropped == b.dropped && a.abandoned == b.abandoned;
}

bool same(const mmio_device_list& a, const mmio_device_list& b) {
    if (a.count != b.count) return false;
    for (std::size_t i = 0; i < a.count; ++i) {
        const auto &x = a.devices[i], &y = b.devices[i];
        if (x.base != y.base || x.size != y.size || x.irq != y.irq || x.id != y.id) return false;
    }
    return true;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    const std::uint8_t flags = data[0];
    const std::size_t fadt_length = 36 + std::size_t{data[1]};
    const std::size_t body_size = size - 2 < max_body ? size - 2 : max_body;
    const std::span<const std::byte> body{reinterpret_cast<const std::byte*>(data + 2), body_size};

    // The body alone.
    aml_scan_notes notes;
    auto alone = toro::virtio::find_virtio_mmio_aml(body, &notes);
    check_result(alone, notes);
    check(notes.tables == 1);
    aml_scan_notes eisa_notes;
    auto eisa = toro::virtio::find_acpi_mmio_devices(body, "PNP0103", &eisa_notes);
    check_result(eisa, eisa_notes);
    if (alone && eisa) check(eisa_notes.devices == notes.devices); // the walk does not depend on the id

    // The table set around it.
    std::memset(memory, 0, sizeof memory);
    header(dsdt_at, "DSDT", 36 + body_size);
    if (body_size != 0) std::memcpy(memory + dsdt_at + 36, body.data(), body_size);
    if (!(flags & 1)) fix(dsdt_at, 36 + body_size, 9);
    const bool ssdt = (flags & 16) != 0;
    if (ssdt) {
        header(ssdt_at, "SSDT", 36 + body_size);
        if (body_size != 0) std::memcpy(memory + ssdt_at + 36, body.data(), body_size);
        fix(ssdt_at, 36 + body_size, 9);
    }
    header(fadt_at, "FACP", fadt_length);
    if (fadt_length >= 44 && !(flags & 8)) put(fadt_at + 40, dsdt_at, 4);
    if (fadt_length >= 148 && !(flags & 4)) put(fadt_at + 140, dsdt_at, 8);
    fix(fadt_at, fadt_length, 9);
    const bool rsdt = (flags & 2) != 0;
    header(rsdt ? rsdt_at : xsdt_at, rsdt ? "RSDT" : "XSDT", 36 + (ssdt ? 2 : 1) * (rsdt ? 4 : 8));
    put((rsdt ? rsdt_at : xsdt_at) + 36, fadt_at, rsdt ? 4 : 8);
    if (ssdt) put((rsdt ? rsdt_at : xsdt_at) + 36 + (rsdt ? 4 : 8), ssdt_at, rsdt ? 4 : 8);
    fix(rsdt ? rsdt_at : xsdt_at, 36 + (ssdt ? 2 : 1) * (rsdt ? 4 : 8), 9);
    std::memcpy(memory + rsdp_at, "RSD PTR ", 8);
    put(rsdp_at + 15, rsdt ? 0 : 2, 1);
    put(rsdp_at + 16, rsdt ? rsdt_at : 0, 4);
    put(rsdp_at + 20, 36, 4);
    put(rsdp_at + 24, rsdt ? 0 : xsdt_at, 8);
    fix(rsdp_at, 20, 8);
    fix(rsdp_at, 36, 32);

    view_reader viewer;
    aml_scan_notes table_notes;
    auto tables = toro::virtio::find_virtio_mmio_acpi(viewer, rsdp_at, &table_notes);
    check_result(tables, table_notes);
    copy_reader copier;
    aml_scan_notes copy_notes;
    auto copied = toro::virtio::find_virtio_mmio_acpi(copier, rsdp_at, &copy_notes);
    check_result(copied, copy_notes);
    // Reading the table through view() or through copies must not change anything.
    check(static_cast<bool>(tables) == static_cast<bool>(copied));
    if (tables) check(same(*tables, *copied) && same_notes(table_notes, copy_notes));
    if (!tables)
        check(tables.error().what == copied.error().what && tables.error().value == copied.error().value);

    // A well-formed table set must give what the body alone gives, errors 36 bytes further in.
    const bool clean =
        !(flags & 1) && !ssdt && fadt_length >= 44 && !((flags & 8) && (fadt_length < 148 || (flags & 4)));
    if (clean) {
        check(static_cast<bool>(tables) == static_cast<bool>(alone));
        if (tables) {
            check(same(*tables, *alone) && same_notes(table_notes, notes));
        } else {
            check(tables.error().what == alone.error().what);
            if (alone.error().has_value) check(tables.error().value == alone.error().value + 36);
        }
    }
    // The SSDT repeats the DSDT's devices: twice the usable ones, the first `capacity` kept.
    if (ssdt && tables) {
        check(alone && table_notes.tables == 2);
        const std::size_t usable = 2 * (alone->count + notes.dropped);
        const std::size_t kept = usable < mmio_device_list::capacity ? usable : mmio_device_list::capacity;
        check(tables->count == kept && table_notes.dropped == usable - kept);
        check(table_notes.unusable == 2 * notes.unusable && table_notes.matched == 2 * notes.matched);
        for (std::size_t i = 0; i < tables->count; ++i) {
            const auto &t = tables->devices[i], &a = alone->devices[i % alone->count];
            check(t.base == a.base && t.size == a.size && t.irq == a.irq && t.id == a.id);
        }
    }
    return 0;
}
