// Host tests for virtio-mmio discovery from ACPI (dev/virtio/acpi_mmio.hpp): AML built here by small
// encoders that follow QEMU's aml-build.c output (minimal PkgLengths, aml_int's shortest integer, resource
// templates ending in 79 00), walked through find_virtio_mmio_aml; then the whole RSDP -> XSDT/RSDT -> FADT
// -> DSDT (-> SSDT) path through a fake physical memory.
#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include <toro/dev/virtio/acpi_mmio.hpp>

namespace {

namespace acpi_error = toro::virtio::acpi_error;
using toro::virtio::aml_scan_notes;
using toro::virtio::mmio_device_list;
using bytes = std::vector<std::uint8_t>;

std::string str(toro::string_view s) {
    return {s.data(), s.size()};
}

bytes cat(std::initializer_list<bytes> parts) {
    bytes out;
    for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
}

bytes le(std::uint64_t v, int width) {
    bytes out;
    for (int i = 0; i < width; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
    return out;
}

// ---- AML encoders ---------------------------------------------------------------------------------------

// PkgLength for `payload` bytes that follow it, in `width` bytes (0: the shortest, as QEMU picks it).
bytes pkg_length(std::size_t payload, int width = 0) {
    if (width == 0) width = payload + 1 < 64 ? 1 : payload + 2 < 4096 ? 2 : payload + 3 < (1u << 20) ? 3 : 4;
    const std::size_t total = payload + static_cast<std::size_t>(width);
    if (width == 1) {
        REQUIRE(total < 64);
        return {static_cast<std::uint8_t>(total)};
    }
    bytes out{static_cast<std::uint8_t>(((width - 1) << 6) | (total & 0x0f))};
    for (int i = 1; i < width; ++i) out.push_back(static_cast<std::uint8_t>(total >> (4 + 8 * (i - 1))));
    return out;
}

// A NameString from "VR00", "\\_SB", "^FOO", "\\_SB.PCI0", "A.B.C" (short segments padded with '_').
bytes name(const std::string& path) {
    bytes out;
    std::size_t i = 0;
    while (i < path.size() && (path[i] == '\\' || path[i] == '^'))
        out.push_back(static_cast<std::uint8_t>(path[i++]));
    std::vector<std::string> segs;
    for (std::size_t start = i; start <= path.size();) {
        const std::size_t dot = path.find('.', start);
        segs.push_back(path.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
        if (dot == std::string::npos) break;
        start = dot + 1;
    }
    if (segs.size() == 1 && segs[0].empty()) {
        out.push_back(0x00);
        return out;
    }
    if (segs.size() == 2) out.push_back(0x2e);
    if (segs.size() > 2) {
        out.push_back(0x2f);
        out.push_back(static_cast<std::uint8_t>(segs.size()));
    }
    for (auto s : segs) {
        REQUIRE(s.size() <= 4);
        s.resize(4, '_');
        out.insert(out.end(), s.begin(), s.end());
    }
    return out;
}

bytes op_pkg(bytes op, const bytes& payload, int width = 0) {
    return cat({op, pkg_length(payload.size(), width), payload});
}
bytes scope(const std::string& path, const bytes& body, int width = 0) {
    return op_pkg({0x10}, cat({name(path), body}), width);
}
bytes device(const std::string& path, const bytes& body, int width = 0) {
    return op_pkg({0x5b, 0x82}, cat({name(path), body}), width);
}
bytes name_decl(const std::string& n, const bytes& value) {
    return cat({{0x08}, name(n), value});
}
bytes method(const std::string& n, std::uint8_t flags, const bytes& body) {
    return op_pkg({0x14}, cat({name(n), {flags}, body}));
}

// aml_int: ZeroOp, OneOp, then the shortest prefixed constant.
bytes integer(std::uint64_t v) {
    if (v == 0) return {0x00};
    if (v == 1) return {0x01};
    if (v <= 0xff) return cat({{0x0a}, le(v, 1)});
    if (v <= 0xffff) return cat({{0x0b}, le(v, 2)});
    if (v <= 0xffffffff) return cat({{0x0c}, le(v, 4)});
    return cat({{0x0e}, le(v, 8)});
}
bytes string(const std::string& s) {
    bytes out{0x0d};
    out.insert(out.end(), s.begin(), s.end());
    out.push_back(0);
    return out;
}
// EisaId("PNP0501"): three 5-bit letters and four hex digits, big-endian in a DWordConst.
bytes eisa_id(const std::string& s) {
    auto hex = [](char c) { return static_cast<std::uint32_t>(c >= 'A' ? c - 'A' + 10 : c - '0'); };
    const std::uint32_t id = static_cast<std::uint32_t>(s[0] - 0x40) << 26 |
                             static_cast<std::uint32_t>(s[1] - 0x40) << 21 |
                             static_cast<std::uint32_t>(s[2] - 0x40) << 16 | hex(s[3]) << 12 |
                             hex(s[4]) << 8 | hex(s[5]) << 4 | hex(s[6]);
    return {0x0c, static_cast<std::uint8_t>(id >> 24), static_cast<std::uint8_t>(id >> 16),
            static_cast<std::uint8_t>(id >> 8), static_cast<std::uint8_t>(id)};
}
// Buffer (size) { contents }: BufferSize is aml_int of `size` (default: the contents' length).
bytes buffer(const bytes& contents, std::optional<std::uint64_t> size = {}) {
    const bytes sz = integer(size ? *size : contents.size());
    return op_pkg({0x11}, cat({sz, contents}));
}
// ResourceTemplate () { descriptors }: a buffer ending in the end tag, checksum 0.
bytes resources(const bytes& descriptors) {
    return buffer(cat({descriptors, {0x79, 0x00}}));
}
bytes memory32_fixed(std::uint32_t base, std::uint32_t size) {
    return cat({{0x86, 0x09, 0x00, 0x01}, le(base, 4), le(size, 4)});
}
bytes interrupt(std::initializer_list<std::uint32_t> irqs, std::uint8_t flags = 0x01) {
    bytes out = cat({{0x89}, le(2 + 4 * irqs.size(), 2), {flags, static_cast<std::uint8_t>(irqs.size())}});
    for (auto i : irqs) out = cat({out, le(i, 4)});
    return out;
}
bytes irq_no_flags(unsigned irq) {
    return cat({{0x22}, le(1u << irq, 2)});
}
bytes io(std::uint16_t base, std::uint8_t len) {
    return cat({{0x47, 0x01}, le(base, 2), le(base, 2), {0x01, len}});
}

// What QEMU's virtio_acpi_dsdt_add (and microvm's older acpi_dsdt_add_virtio) emits for one transport.
bytes virtio_device(unsigned index, std::uint32_t base, std::uint32_t irq, std::uint32_t size = 512) {
    char n[5];
    std::snprintf(n, sizeof n, "VR%02u", index);
    return device(n,
                  cat({name_decl("_HID", string("LNRO0005")), name_decl("_UID", integer(index)),
                       name_decl("_CCA", integer(1)),
                       name_decl("_CRS", resources(cat({memory32_fixed(base, size), interrupt({irq})})))}));
}

// QEMU microvm's DSDT body with acpi=on (hw/i386/acpi-microvm.c build_dsdt_microvm): fw_cfg, the ISA
// serial port, the GED with its region, field and _EVT method, the power button, the virtio transports
// with a device behind them, and \_S5.
bytes microvm_dsdt(const bytes& virtio) {
    const bytes fwcf =
        device("FWCF", cat({name_decl("_HID", string("QEMU0002")), name_decl("_STA", integer(0x0b)),
                            name_decl("_CRS", resources(io(0x510, 0x0c)))}));
    const bytes com1 =
        device("COM1", cat({name_decl("_HID", eisa_id("PNP0501")), name_decl("_UID", integer(1)),
                            name_decl("_STA", integer(0x0f)),
                            name_decl("_CRS", resources(cat({io(0x3f8, 8), irq_no_flags(4)})))}));
    const bytes ged_region = cat({{0x5b, 0x80}, name("EREG"), {0x00}, integer(0xfea00000), integer(4)});
    const bytes ged_field = op_pkg({0x5b, 0x81}, cat({name("EREG"), {0x43}, name("ESEL"), {0x20}}));
    // Method (_EVT, 1, Serialized) { Local0 = ESEL  If ((Local0 & 2) == 2) { Notify (PWRB, 0x80) } }
    const bytes evt = method("_EVT", 0x09,
                             cat({{0x70},
                                  name("ESEL"),
                                  {0x60},
                                  op_pkg({0xa0}, cat({{0x93, 0x7b, 0x60, 0x0a, 0x02, 0x00, 0x0a, 0x02, 0x86},
                                                      name("PWRB"),
                                                      {0x0a, 0x80}}))}));
    const bytes ged =
        device("GED", cat({name_decl("_HID", string("ACPI0013")), name_decl("_UID", string("GED")),
                           name_decl("_CRS", resources(interrupt({9}))), ged_region, ged_field, evt}));
    const bytes pwrb =
        device("PWRB", cat({name_decl("_HID", string("PNP0C0C")), name_decl("_UID", integer(0))}));
    const bytes s5 =
        name_decl("_S5", op_pkg({0x12}, cat({{0x04}, integer(5), integer(0), integer(0), integer(0)})));
    return cat({scope("_SB", cat({fwcf, com1, ged, pwrb, virtio})), scope("\\", s5)});
}

toro::expected<mmio_device_list> scan(const bytes& aml, aml_scan_notes* notes = nullptr) {
    return toro::virtio::find_virtio_mmio_aml(
        std::span<const std::byte>{reinterpret_cast<const std::byte*>(aml.data()), aml.size()}, notes);
}

// The error's message and value, for CHECKs that show both on failure.
std::string failure(const toro::expected<mmio_device_list>& r) {
    if (r) return "no error (" + std::to_string(r->count) + " devices)";
    return str(r.error().what) + " " + std::to_string(r.error().value);
}
std::string expect_error(toro::string_view what, std::uint64_t value) {
    return str(what) + " " + std::to_string(value);
}

} // namespace

TEST_CASE("QEMU microvm's DSDT with two virtio-mmio transports", "[virtio-acpi]") {
    // acpi=on gives microvm a second IOAPIC: transports use GSIs 24-47; devices fill the last ones first.
    const bytes aml =
        microvm_dsdt(cat({virtio_device(22, 0xfeb02c00, 46), virtio_device(23, 0xfeb02e00, 47)}));
    aml_scan_notes notes;
    auto r = scan(aml, &notes);
    REQUIRE(r);
    REQUIRE(r->count == 2);
    CHECK(r->devices[0].base == 0xfeb02c00);
    CHECK(r->devices[0].size == 512);
    CHECK(r->devices[0].irq == 46);
    CHECK(r->devices[0].id == 22);
    CHECK(r->devices[1].base == 0xfeb02e00);
    CHECK(r->devices[1].irq == 47);
    CHECK(r->devices[1].id == 23);
    CHECK(notes.devices == 6); // FWCF, COM1, GED, PWRB and the two transports
    CHECK(notes.matched == 2);
    CHECK(notes.unusable == 0);
    CHECK(notes.dropped == 0);
    CHECK(notes.abandoned == 0);

    SECTION("without transports: an empty list, not an error") {
        auto none = scan(microvm_dsdt({}), &notes);
        REQUIRE(none);
        CHECK(none->count == 0);
        CHECK(notes.devices == 4);
    }
    SECTION("a body cut anywhere is an error, except right after Scope (_SB), where it is whole") {
        std::size_t whole = 0;
        for (std::size_t cut = 1; cut < aml.size(); ++cut) {
            INFO("body cut to " << cut << " of " << aml.size() << " bytes");
            const bytes part(aml.begin(), aml.begin() + static_cast<std::ptrdiff_t>(cut));
            if (auto p = scan(part)) {
                ++whole;
                CHECK(p->count == 2);
                CHECK(aml[cut] == 0x10); // Scope (\) starts here
            }
        }
        CHECK(whole == 1);
    }
}

TEST_CASE("PkgLength encodings of 1, 2, 3 and 4 bytes", "[virtio-acpi]") {
    const bytes inner =
        cat({name_decl("_HID", string("LNRO0005")),
             name_decl("_CRS", resources(cat({memory32_fixed(0x1000, 0x200), interrupt({5})})))});
    for (int width = 1; width <= 4; ++width) {
        INFO("device PkgLength width " << width);
        auto r = scan(scope("_SB", device("VR00", inner, width), width));
        REQUIRE(r);
        REQUIRE(r->count == 1);
        CHECK(r->devices[0].base == 0x1000);
        CHECK(r->devices[0].irq == 5);
    }
    SECTION("minimal 2- and 3-byte lengths: a device holding a big buffer") {
        for (std::size_t filler : {100u, 5000u}) {
            INFO("filler " << filler);
            const bytes dev = device("VR00", cat({name_decl("BLOB", buffer(bytes(filler, 0xaa))), inner}));
            CHECK((dev[2] >> 6) == (filler < 4000 ? 1 : 2)); // after 5B 82: the lead byte's count
            auto r = scan(scope("_SB", dev));
            REQUIRE(r);
            CHECK(r->count == 1);
        }
    }
    SECTION("reserved bits 4-5 of a multi-byte lead byte are ignored") {
        for (std::size_t filler = 0; filler < 64; filler += 7) { // lengths whose second byte varies
            INFO("filler " << filler);
            bytes dev = device("VR00", cat({name_decl("BLOB", buffer(bytes(filler, 0))), inner}), 2);
            dev[2] |= 0x30;
            auto r = scan(dev);
            REQUIRE(r);
            CHECK(r->count == 1);
        }
    }
}

TEST_CASE("devices nested in scopes and devices, and names with paths", "[virtio-acpi]") {
    const bytes body =
        cat({name_decl("_HID", string("LNRO0005")), name_decl("_UID", integer(7)),
             name_decl("_CRS", resources(cat({memory32_fixed(0xd0000000, 0x1000), interrupt({40})})))});
    const bytes aml = cat({scope("\\", scope("_SB", device("BUS0", device("VIRT", body)))),
                           scope("\\_SB.PCI0", scope("^^_SB", device("VR01", body))),
                           scope("\\_SB.A.B", device("V", body)), device("\\_SB.VR02", body)});
    aml_scan_notes notes;
    auto r = scan(aml, &notes);
    REQUIRE(r);
    CHECK(r->count == 4);
    CHECK(notes.devices == 5);
    CHECK(notes.matched == 4);
    for (std::size_t i = 0; i < r->count; ++i) {
        CHECK(r->devices[i].base == 0xd0000000);
        CHECK(r->devices[i].irq == 40);
        CHECK(r->devices[i].id == 7);
    }

    SECTION("a Name with a path or a prefix names something else, not this device's _HID") {
        for (const char* path : {"\\_SB._HID", "\\_HID", "^_HID", "^^_HID"}) {
            INFO("Name (" << path << ", \"LNRO0005\")");
            auto other =
                scan(device("VR00",
                            cat({name_decl(path, string("LNRO0005")),
                                 name_decl("_CRS", resources(cat({memory32_fixed(1, 1), interrupt({1})})))})),
                     &notes);
            REQUIRE(other);
            CHECK(other->count == 0);
            CHECK(notes.matched == 0);
        }
    }
    SECTION("a child's names do not leak into its parent") {
        auto other = scan(
            device("OUTR", cat({device("INNR", name_decl("_HID", string("LNRO0005"))),
                                name_decl("_CRS", resources(cat({memory32_fixed(1, 1), interrupt({1})})))})),
            &notes);
        REQUIRE(other);
        CHECK(other->count == 0);
        CHECK(notes.matched == 1);
        CHECK(notes.unusable == 1); // INNR: no _CRS of its own
    }
    SECTION("16 levels are fine, 17 too deep") {
        bytes deep = device("VR00", body);
        for (int i = 0; i < 15; ++i) deep = scope("S", deep);
        auto ok = scan(deep);
        REQUIRE(ok);
        CHECK(ok->count == 1);
        deep = scope("S", deep);
        auto too = scan(deep);
        REQUIRE_FALSE(too);
        CHECK(too.error().what == acpi_error::too_deep);
    }
}

TEST_CASE("other objects are stepped over, not searched", "[virtio-acpi]") {
    const bytes virt = virtio_device(0, 0xfeb00000, 24);
    // A method whose body holds a whole virtio device's bytes: a byte-pattern search would find it.
    const bytes decoy = method("DCOY", 0, virtio_device(9, 0xbad00000, 9));
    const bytes others = cat({
        decoy,
        op_pkg({0xa0}, cat({{0x01}, virtio_device(8, 0xbad00000, 8)})),          // If (One) { Device }
        op_pkg({0xa1}, virtio_device(7, 0xbad00000, 7)),                         // Else { Device }
        op_pkg({0x5b, 0x81}, cat({name("EREG"), {0x01}, name("FLD0"), {0x08}})), // Field
        op_pkg({0x5b, 0x86}, cat({name("IDX0"), name("DAT0"), {0x01}, name("F"), {0x08}})), // IndexField
        op_pkg({0x5b, 0x83}, cat({name("CPU0"), {0x00}, le(0, 4), {0x00}})),                // Processor
        op_pkg({0x5b, 0x84}, cat({name("PWR0"), {0x00}, le(0, 2)})),                        // PowerResource
        op_pkg({0x5b, 0x85}, name("TZ0")),                                                  // ThermalZone
        cat({{0x5b, 0x01}, name("MTX0"), {0x00}}),                                          // Mutex
        cat({{0x5b, 0x02}, name("EVT0")}),                                                  // Event
        cat({{0x15}, name("\\_SB.EXT0"), {0x06, 0x00}}),                                    // External
        cat({{0x06}, name("MTX0"), name("MTX1")}),                                          // Alias
        cat({{0x5b, 0x80}, name("REG0"), {0x01}, integer(0x510), integer(0x0c)}),           // OperationRegion
        {0xa3},                                                                             // Noop
        name_decl("PKG0", op_pkg({0x12}, cat({{0x02}, string("LNRO0005"), integer(3)}))),
        name_decl("VPK0", op_pkg({0x13}, cat({integer(2), integer(1), integer(2)}))),
        name_decl("QW00", integer(0x123456789)),
        name_decl("REV0", {0x5b, 0x30}),
        name_decl("ONES", {0xff}),
        name_decl("BUF0", buffer({1, 2, 3}, 16)), // a size larger than the initializer: zero-padded
        device("COM1", cat({name_decl("_HID", eisa_id("PNP0501")),
                            name_decl("_CRS", resources(cat({io(0x3f8, 8), irq_no_flags(4)})))})),
    });
    aml_scan_notes notes;
    auto r = scan(scope("_SB", cat({others, virt})), &notes);
    REQUIRE(r);
    REQUIRE(r->count == 1);
    CHECK(r->devices[0].base == 0xfeb00000);
    CHECK(notes.devices == 2);
    CHECK(notes.abandoned == 0);
}

TEST_CASE("an expression ends the walk of its scope only", "[virtio-acpi]") {
    // Store (One, Local0) inside Scope (_SB.A): its extent is unknown, so the rest of that scope is skipped.
    const bytes aml = cat({scope("\\_SB.A", cat({{0x70, 0x01, 0x60}, virtio_device(0, 0xfeb00000, 24)})),
                           virtio_device(1, 0xfeb00200, 25)});
    aml_scan_notes notes;
    auto r = scan(aml, &notes);
    REQUIRE(r);
    REQUIRE(r->count == 1);
    CHECK(r->devices[0].base == 0xfeb00200);
    CHECK(notes.abandoned == 1);

    SECTION("in a device, after its names: the device is kept") {
        const bytes dev = device(
            "VR00", cat({name_decl("_HID", string("LNRO0005")),
                         name_decl("_CRS", resources(cat({memory32_fixed(0x2000, 0x200), interrupt({5})}))),
                         {0x70, 0x01, 0x60},
                         name_decl("_STA", integer(0))}));
        auto d = scan(dev, &notes);
        REQUIRE(d);
        CHECK(d->count == 1); // the _STA of 0 after the expression is not seen
        CHECK(notes.abandoned == 1);
    }
    SECTION("a Name whose value is a name reference") {
        auto d = scan(cat({scope("X", cat({name_decl("FOO_", name("BAR")), virtio_device(0, 0x1000, 5)})),
                           virtio_device(1, 0x2000, 6)}),
                      &notes);
        REQUIRE(d);
        REQUIRE(d->count == 1);
        CHECK(d->devices[0].base == 0x2000);
    }
    SECTION("an OperationRegion with a computed offset") {
        auto d = scan(scope("X", cat({{0x5b, 0x80},
                                      name("REG0"),
                                      {0x00},
                                      name("BASE"),
                                      integer(4),
                                      virtio_device(0, 0x1000, 5)})),
                      &notes);
        REQUIRE(d);
        CHECK(d->count == 0);
        CHECK(notes.abandoned == 1);
    }
}

TEST_CASE("which devices match", "[virtio-acpi]") {
    const bytes crs = name_decl("_CRS", resources(cat({memory32_fixed(0x3000, 0x200), interrupt({5})})));
    aml_scan_notes notes;
    SECTION("other ids do not") {
        for (const char* hid : {"LNRO0006", "LNRO000", "LNRO00055", "lnro0005", ""}) {
            INFO("_HID " << hid);
            auto r = scan(device("VR00", cat({name_decl("_HID", string(hid)), crs})), &notes);
            REQUIRE(r);
            CHECK(r->count == 0);
            CHECK(notes.devices == 1);
            CHECK(notes.matched == 0);
        }
        auto r = scan(device("VR00", cat({name_decl("_HID", eisa_id("PNP0C0C")), crs})));
        REQUIRE(r);
        CHECK(r->count == 0);
    }
    SECTION("_CID, and _HID after _CRS") {
        auto r = scan(cat({device("VR00", cat({name_decl("_HID", string("VNDR0001")),
                                               name_decl("_CID", string("LNRO0005")), crs})),
                           device("VR01", cat({crs, name_decl("_HID", string("LNRO0005"))}))}));
        REQUIRE(r);
        CHECK(r->count == 2);
    }
    SECTION("an EISA id, looked up by its text") {
        const bytes hpet =
            device("HPET", cat({name_decl("_HID", eisa_id("PNP0103")), name_decl("_UID", integer(0)),
                                name_decl("_CRS", resources(cat({irq_no_flags(2), irq_no_flags(8),
                                                                 memory32_fixed(0xfed00000, 0x400)})))}));
        auto r = toro::virtio::find_acpi_mmio_devices(
            std::span<const std::byte>{reinterpret_cast<const std::byte*>(hpet.data()), hpet.size()},
            "PNP0103");
        REQUIRE(r);
        REQUIRE(r->count == 1);
        CHECK(r->devices[0].base == 0xfed00000);
        CHECK(r->devices[0].size == 0x400);
        CHECK(r->devices[0].irq == 2); // the first interrupt descriptor
        CHECK(r->devices[0].id == 0);
        CHECK(toro::virtio::detail::eisa_id_is(0x0105d041, "PNP0501")); // EisaId ("PNP0501") as iasl emits it
        CHECK_FALSE(toro::virtio::detail::eisa_id_is(0x0105d041, "PNP0502"));
    }
    SECTION("_STA says absent") {
        auto r = scan(
            device("VR00", cat({name_decl("_HID", string("LNRO0005")), name_decl("_STA", integer(0)), crs})),
            &notes);
        REQUIRE(r);
        CHECK(r->count == 0);
        CHECK(notes.absent == 1);
        auto on = scan(device(
            "VR00", cat({name_decl("_HID", string("LNRO0005")), name_decl("_STA", integer(0x0f)), crs})));
        REQUIRE(on);
        CHECK(on->count == 1);
    }
    SECTION("a method _CRS, no memory, no interrupt, a computed buffer size: unusable, not errors") {
        const bytes hid = name_decl("_HID", string("LNRO0005"));
        auto r = scan(
            cat({device("A", cat({hid, method("_CRS", 0, cat({{0xa4}, resources(memory32_fixed(1, 1))}))})),
                 device("B", cat({hid, name_decl("_CRS", resources(interrupt({5})))})),
                 device("C", cat({hid, name_decl("_CRS", resources(memory32_fixed(0x1000, 0x200)))})),
                 device("D", cat({hid, name_decl("_CRS", resources(cat({memory32_fixed(0x1000, 0),
                                                                        interrupt({5})})))})),
                 device("E", cat({hid, name_decl("_CRS", op_pkg({0x11}, cat({{0x60},
                                                                             memory32_fixed(1, 1),
                                                                             interrupt({1}),
                                                                             {0x79, 0}})))})),
                 device("F", cat({hid, name_decl("_CRS", integer(0))}))}),
            &notes);
        REQUIRE(r);
        CHECK(r->count == 0);
        CHECK(notes.matched == 6);
        CHECK(notes.unusable == 6);
    }
    SECTION("IRQNoFlags and the 3-byte IRQ form; descriptors the walker skips") {
        const bytes hid = name_decl("_HID", string("LNRO0005"));
        auto r = scan(cat(
            {device("A", cat({hid, name_decl("_CRS", resources(cat({io(0x10, 4), irq_no_flags(11),
                                                                    memory32_fixed(0x4000, 0x200)})))})),
             device("B", cat({hid, name_decl("_CRS", resources(cat({{0x23, 0x00, 0x40, 0x01},
                                                                    memory32_fixed(0x5000, 0x200)})))}))}));
        REQUIRE(r);
        REQUIRE(r->count == 2);
        CHECK(r->devices[0].base == 0x4000);
        CHECK(r->devices[0].irq == 11);
        CHECK(r->devices[0].id == -1);
        CHECK(r->devices[1].irq == 14);
    }
    SECTION("the first memory range and the first interrupt are the device's") {
        auto r = scan(device(
            "VR00",
            cat({name_decl("_HID", string("LNRO0005")),
                 name_decl("_CRS", resources(cat({memory32_fixed(0x6000, 0x200), interrupt({7, 8}),
                                                  memory32_fixed(0x7000, 0x200), interrupt({9})})))})));
        REQUIRE(r);
        REQUIRE(r->count == 1);
        CHECK(r->devices[0].base == 0x6000);
        CHECK(r->devices[0].irq == 7);
    }
}

TEST_CASE("more devices than the list keeps: the first ones, the others counted", "[virtio-acpi]") {
    static_assert(mmio_device_list::capacity == 8);
    bytes many;
    for (unsigned i = 0; i < 8; ++i) many = cat({many, virtio_device(i, 0xfeb00000 + 512 * i, 24 + i)});
    aml_scan_notes notes;
    auto eight = scan(many, &notes);
    REQUIRE(eight);
    CHECK(eight->count == 8);
    CHECK(eight->devices[7].irq == 31);
    CHECK(notes.dropped == 0);
    for (unsigned extra : {1u, 3u}) {
        INFO(8 + extra << " devices");
        bytes more = many;
        for (unsigned i = 8; i < 8 + extra; ++i)
            more = cat({more, virtio_device(i, 0xfeb00000 + 512 * i, 24 + i)});
        auto r = scan(scope("_SB", more), &notes);
        REQUIRE(r);
        REQUIRE(r->count == 8);
        for (unsigned i = 0; i < 8; ++i) {
            CHECK(r->devices[i].id == static_cast<int>(i)); // table order: the first eight
            CHECK(r->devices[i].irq == 24 + i);
        }
        CHECK(notes.matched == 8 + extra);
        CHECK(notes.dropped == extra);
        CHECK(notes.unusable == 0);
    }
    SECTION("an unusable or absent device is not dropped, and does not take a place") {
        const bytes absent =
            device("VRAB",
                   cat({name_decl("_HID", string("LNRO0005")), name_decl("_STA", integer(0)),
                        name_decl("_CRS", resources(cat({memory32_fixed(0x1000, 0x200), interrupt({5})})))}));
        const bytes unusable = device("VRUN", cat({name_decl("_HID", string("LNRO0005")),
                                                   name_decl("_CRS", resources(interrupt({5})))}));
        auto r = scan(cat({absent, unusable, many, absent, unusable}), &notes);
        REQUIRE(r);
        CHECK(r->count == 8);
        CHECK(notes.dropped == 0);
        CHECK(notes.absent == 2);
        CHECK(notes.unusable == 2);
    }
}

TEST_CASE("a device whose _CRS cannot be used is skipped; the walk goes on", "[virtio-acpi]") {
    const bytes hid = name_decl("_HID", string("LNRO0005"));
    auto bad = [&](const bytes& crs) { return device("VRBD", cat({hid, name_decl("_CRS", crs)})); };
    bytes mem_past = memory32_fixed(1, 0x200);
    mem_past[1] = 0x20; // length 32 > what is left
    bytes irq_none = interrupt({5});
    irq_none[4] = 0; // count 0
    bytes irq_two = interrupt({5});
    irq_two[4] = 2; // two interrupts in room for one
    const struct {
        const char* what;
        bytes crs;
    } cases[] = {
        {"no end tag", buffer(cat({memory32_fixed(1, 0x200), interrupt({5})}))},
        {"an empty buffer", buffer({})},
        {"an end tag without its checksum byte",
         buffer(cat({memory32_fixed(1, 0x200), interrupt({5}), {0x79}}))},
        {"a descriptor past the buffer", resources(cat({mem_past, interrupt({5})}))},
        {"a Memory32Fixed shorter than its type",
         resources({0x86, 0x05, 0x00, 0x01, 0x00, 0x10, 0x00, 0x00})},
        {"an Extended Interrupt of 0 interrupts", resources(cat({memory32_fixed(1, 2), irq_none}))},
        {"two interrupts in room for one", resources(cat({memory32_fixed(1, 2), irq_two}))},
        {"an IRQ descriptor cut by the buffer", buffer({0x22, 0x10})},
        {"a large item's length cut by the buffer", buffer({0x86, 0x09})},
        {"an IRQ descriptor of 1 byte", resources(cat({memory32_fixed(1, 2), {0x21, 0x10}}))},
        {"no interrupt", resources(memory32_fixed(0x1000, 0x200))},
        {"no memory range", resources(interrupt({5}))},
    };
    for (const auto& c : cases) {
        INFO("the middle device's _CRS: " << c.what);
        aml_scan_notes notes;
        auto r =
            scan(scope("_SB",
                       cat({virtio_device(0, 0xfeb00000, 24), bad(c.crs), virtio_device(2, 0xfeb00400, 26)})),
                 &notes);
        REQUIRE(r);
        REQUIRE(r->count == 2);
        CHECK(r->devices[0].base == 0xfeb00000);
        CHECK(r->devices[0].id == 0);
        CHECK(r->devices[1].base == 0xfeb00400);
        CHECK(r->devices[1].id == 2);
        CHECK(notes.matched == 3);
        CHECK(notes.unusable == 1);
    }
    SECTION("a _CRS of a device that does not match is not parsed") {
        aml_scan_notes notes;
        auto r = scan(
            device("VR00", cat({name_decl("_HID", string("OTHR0001")), name_decl("_CRS", buffer({0x86}))})),
            &notes);
        REQUIRE(r);
        CHECK(r->count == 0);
        CHECK(notes.matched == 0);
        CHECK(notes.unusable == 0);
    }
}

TEST_CASE("BufferSize and the initializer's length (ACPI 6.5 19.6.10)", "[virtio-acpi]") {
    const bytes hid = name_decl("_HID", string("LNRO0005"));
    const bytes tmpl = cat({memory32_fixed(0x8000, 0x200), interrupt({12}), {0x79, 0x00}}); // 23 bytes
    auto one = [&](const bytes& crs) { return device("VR00", cat({hid, name_decl("_CRS", crs)})); };
    SECTION("a BufferSize larger than the initializer: zero-padded, the template read from the initializer") {
        for (std::uint64_t size : {24ull, 64ull, 0x10000ull, 0x10004ull, 0xffffffffull, ~0ull}) {
            INFO("BufferSize " << size);
            aml_scan_notes notes;
            auto r = scan(cat({one(buffer(tmpl, size)), virtio_device(1, 0x9000, 13)}), &notes);
            REQUIRE(r);
            REQUIRE(r->count == 2);
            CHECK(r->devices[0].base == 0x8000);
            CHECK(r->devices[0].size == 0x200);
            CHECK(r->devices[0].irq == 12);
            CHECK(r->devices[1].base == 0x9000);
            CHECK(notes.unusable == 0);
        }
    }
    SECTION("a BufferSize smaller than the initializer: the buffer is the initializer's length") {
        for (std::uint64_t size : {0ull, 1ull, 12ull, 22ull}) {
            INFO("BufferSize " << size);
            auto r = scan(one(buffer(tmpl, size)));
            REQUIRE(r);
            REQUIRE(r->count == 1);
            CHECK(r->devices[0].irq == 12);
        }
    }
    SECTION("the end tag's checksum byte may be padding") {
        const bytes cut(tmpl.begin(), tmpl.end() - 1); // ends in 79
        aml_scan_notes notes;
        auto exact = scan(one(buffer(cut)), &notes);
        REQUIRE(exact);
        CHECK(exact->count == 0); // 22 bytes: the end tag runs past the buffer
        CHECK(notes.unusable == 1);
        auto padded = scan(one(buffer(cut, 23)), &notes);
        REQUIRE(padded);
        CHECK(padded->count == 1);
        CHECK(notes.unusable == 0);
    }
    SECTION("padding holds no end tag: a template cut before it stays unusable however large the buffer") {
        const bytes cut(tmpl.begin(), tmpl.end() - 2);
        aml_scan_notes notes;
        auto r = scan(one(buffer(cut, 4096)), &notes);
        REQUIRE(r);
        CHECK(r->count == 0);
        CHECK(notes.unusable == 1);
    }
}

TEST_CASE("malformed AML is an error", "[virtio-acpi]") {
    const bytes hid = name_decl("_HID", string("LNRO0005"));
    SECTION("PkgLength past the end of the table, and past its enclosing package") {
        bytes dev = virtio_device(0, 0x1000, 5);
        const bytes body(dev.begin() + 3, dev.end()); // after 5B 82 and the 1-byte PkgLength
        auto r = scan(cat({{0x5b, 0x82}, pkg_length(body.size() + 1), body}));
        CHECK(failure(r) == expect_error(acpi_error::truncated, 2));
        auto inner = scan(cat({{0x10}, pkg_length(5), name("_SB"), dev}));
        CHECK(failure(inner) == expect_error(acpi_error::truncated, 7));
    }
    SECTION("PkgLength shorter than its own encoding") {
        auto r = scan(cat({{0x10, 0x40, 0x00}, name("_SB")}));
        CHECK(failure(r) == expect_error(acpi_error::bad_pkg_length, 1));
        auto zero = scan({0x14, 0x00});
        CHECK(failure(zero) == expect_error(acpi_error::bad_pkg_length, 1));
    }
    SECTION("a _CRS buffer whose PkgLength runs past its device: the tables, not the device, are wrong") {
        const bytes crs = resources(cat({memory32_fixed(0x1000, 0x200), interrupt({5})}));
        bytes dev = device("VR00", cat({hid, name_decl("_CRS", crs)}));
        const std::size_t at = dev.size() - crs.size() + 1; // the buffer's 1-byte PkgLength
        REQUIRE(dev[at - 1] == 0x11);
        dev[at] = static_cast<std::uint8_t>(dev[at] + 1);
        auto r = scan(cat({virtio_device(0, 0xfeb00000, 24), dev}));
        CHECK(failure(r) ==
              expect_error(acpi_error::truncated, virtio_device(0, 0xfeb00000, 24).size() + at));
    }
    SECTION("a PkgLength cut short by the end of the table") {
        auto r = scan({0x10, 0xc0, 0x10});
        CHECK(failure(r) == expect_error(acpi_error::truncated, 2));
    }
    SECTION("a string without its NUL, a bad NameSeg, a MultiNamePath of 0 segments") {
        auto s = scan(device("VR00", bytes{0x08, '_', 'H', 'I', 'D', 0x0d, 'L', 'N', 'R', 'O'}));
        CHECK(failure(s) == expect_error(acpi_error::bad_string, 12));
        auto n = scan(device("vr00", hid));
        CHECK(failure(n) == expect_error(acpi_error::bad_name, 3));
        auto digit = scan(device("0R00", hid));
        CHECK(failure(digit) == expect_error(acpi_error::bad_name, 3));
        auto m = scan(cat({{0x10, 0x03, 0x2f, 0x00}}));
        CHECK(failure(m) == expect_error(acpi_error::bad_name, 2));
    }
    SECTION("an integer cut by the end of its package") {
        auto r = scan(device("VR00", bytes{0x08, '_', 'U', 'I', 'D', 0x0c, 0x01, 0x02}));
        CHECK(failure(r) == expect_error(acpi_error::truncated, 13));
    }
    SECTION("a block larger than any table") {
        bytes huge(toro::acpi::max_table_length + 1, 0xa3); // Noops
        auto r = scan(huge);
        CHECK(failure(r) == expect_error(acpi_error::too_big, huge.size()));
        huge.pop_back();
        auto fits = scan(huge);
        REQUIRE(fits);
        CHECK(fits->count == 0);
    }
    SECTION("ExtOpPrefix at the very end") {
        auto r = scan({0x5b});
        CHECK(failure(r) == expect_error(acpi_error::truncated, 1));
    }
}

// ---- the whole path through physical memory ------------------------------------------------------------

namespace {

// Fake physical memory: 1 MiB at 0, tables written byte by byte with their checksums fixed.
struct fw_memory {
    std::vector<std::byte> mem = std::vector<std::byte>(0x100000);

    void put(std::uint64_t at, const bytes& b) {
        REQUIRE(at + b.size() <= mem.size());
        for (std::size_t i = 0; i < b.size(); ++i) mem[at + i] = static_cast<std::byte>(b[i]);
    }
    std::uint8_t get(std::uint64_t at) const { return static_cast<std::uint8_t>(mem.at(at)); }
    void fix_checksum(std::uint64_t at, std::size_t len, std::size_t slot) {
        mem[at + slot] = std::byte{0};
        std::uint8_t sum = 0;
        for (std::size_t i = 0; i < len; ++i) sum = static_cast<std::uint8_t>(sum + get(at + i));
        mem[at + slot] = static_cast<std::byte>(-sum);
    }
    void table(std::uint64_t at, const char* sig, const bytes& body, std::uint8_t revision = 2) {
        const bytes header = cat({bytes(sig, sig + 4),
                                  le(36 + body.size(), 4),
                                  {revision, 0},
                                  {'T', 'O', 'R', 'O', 'F', 'W'},
                                  le(0, 8),
                                  le(1, 4),
                                  le(0, 4),
                                  le(1, 4)});
        REQUIRE(header.size() == 36);
        put(at, cat({header, body}));
        fix_checksum(at, 36 + body.size(), 9);
    }
    void rsdp(std::uint64_t at, std::uint32_t rsdt, std::uint64_t xsdt) {
        put(at, cat({{'R', 'S', 'D', ' ', 'P', 'T', 'R', ' ', 0, 'T', 'O', 'R', 'O', 'F', 'W'},
                     {static_cast<std::uint8_t>(xsdt != 0 ? 2 : 0)},
                     le(rsdt, 4),
                     le(36, 4),
                     le(xsdt, 8),
                     le(0, 4)}));
        fix_checksum(at, 20, 8);
        if (xsdt != 0) fix_checksum(at, 36, 32);
    }
    void root(std::uint64_t at, bool xsdt, std::initializer_list<std::uint64_t> entries) {
        bytes body;
        for (auto e : entries) body = cat({body, le(e, xsdt ? 8 : 4)});
        table(at, xsdt ? "XSDT" : "RSDT", body);
    }
    // A FADT `length` bytes long with DSDT at 40 and, when it fits, X_DSDT at 140.
    void fadt(std::uint64_t at, std::size_t length, std::uint32_t dsdt, std::uint64_t x_dsdt) {
        bytes body(length - 36, 0);
        for (int i = 0; i < 4; ++i) body[40 - 36 + i] = static_cast<std::uint8_t>(dsdt >> (8 * i));
        if (length >= 148)
            for (int i = 0; i < 8; ++i) body[140 - 36 + i] = static_cast<std::uint8_t>(x_dsdt >> (8 * i));
        table(at, "FACP", body, length >= 244 ? 5 : 1);
    }
    toro::span_phys_reader reader() const { return {mem, 0}; }
};

// Only read(): the walk goes through table_reader instead of one view of the table.
struct copy_only_reader {
    toro::span_phys_reader inner;
    bool read(std::uint64_t addr, void* dst, std::size_t len) const { return inner.read(addr, dst, len); }
};
static_assert(!toro::phys_viewer<copy_only_reader>);

constexpr std::uint64_t rsdp_at = 0xf5000, xsdt_at = 0x80000, rsdt_at = 0x80100, fadt_at = 0x81000,
                        madt_at = 0x82000, dsdt_at = 0x83000, ssdt_at = 0x88000;

// As QEMU microvm lays it out: RSDP revision 2 -> XSDT -> FADT revision 5 (276 bytes, both DSDT fields
// set), MADT; the DSDT with two transports.
fw_memory microvm_tables() {
    fw_memory fw;
    fw.table(dsdt_at, "DSDT",
             microvm_dsdt(cat({virtio_device(22, 0xfeb02c00, 46), virtio_device(23, 0xfeb02e00, 47)})));
    fw.fadt(fadt_at, 276, dsdt_at, dsdt_at);
    fw.table(madt_at, "APIC", cat({le(0xfee00000, 4), le(1, 4)}));
    fw.root(xsdt_at, true, {fadt_at, madt_at});
    fw.rsdp(rsdp_at, 0, xsdt_at);
    return fw;
}

template <class Reader>
toro::expected<mmio_device_list> find(Reader& r, std::uint64_t rsdp = rsdp_at,
                                      aml_scan_notes* notes = nullptr) {
    return toro::virtio::find_virtio_mmio_acpi(r, rsdp, notes);
}

} // namespace

TEST_CASE("RSDP -> XSDT -> FADT -> DSDT, as on QEMU microvm", "[virtio-acpi]") {
    fw_memory fw = microvm_tables();
    auto reader = fw.reader();
    aml_scan_notes notes;
    auto r = find(reader, rsdp_at, &notes);
    REQUIRE(r);
    REQUIRE(r->count == 2);
    CHECK(r->devices[0].base == 0xfeb02c00);
    CHECK(r->devices[1].base == 0xfeb02e00);
    CHECK(r->devices[1].irq == 47);
    CHECK(notes.tables == 1);

    SECTION("the same through a reader without view()") {
        copy_only_reader copy{fw.reader()};
        auto c = find(copy);
        REQUIRE(c);
        CHECK(c->count == 2);
        CHECK(c->devices[1].irq == 47);
    }
    SECTION("no hint: the RSDP is found in the BIOS area") {
        auto s = find(reader, 0);
        REQUIRE(s);
        CHECK(s->count == 2);
    }
    SECTION("an SSDT's devices follow the DSDT's") {
        fw.table(ssdt_at, "SSDT", scope("\\_SB", virtio_device(5, 0xd0000000, 10)));
        fw.root(xsdt_at, true, {fadt_at, madt_at, ssdt_at});
        fw.rsdp(rsdp_at, 0, xsdt_at);
        auto s = find(reader, rsdp_at, &notes);
        REQUIRE(s);
        REQUIRE(s->count == 3);
        CHECK(s->devices[2].base == 0xd0000000);
        CHECK(notes.tables == 2);
    }
    SECTION("an unusable device in the DSDT, more devices in an SSDT than the list keeps") {
        const bytes unusable = device("VRBD", cat({name_decl("_HID", string("LNRO0005")),
                                                   name_decl("_CRS", resources(memory32_fixed(1, 2)))}));
        bytes seven;
        for (unsigned i = 0; i < 7; ++i) seven = cat({seven, virtio_device(i, 0xd0000000 + 512 * i, 10 + i)});
        fw.table(dsdt_at, "DSDT", scope("_SB", cat({unusable, seven})));
        fw.table(ssdt_at, "SSDT",
                 scope("\\_SB", cat({virtio_device(7, 0xd1000000, 20), virtio_device(8, 0xd2000000, 21),
                                     virtio_device(9, 0xd3000000, 22)})));
        fw.root(xsdt_at, true, {fadt_at, madt_at, ssdt_at});
        fw.rsdp(rsdp_at, 0, xsdt_at);
        auto s = find(reader, rsdp_at, &notes);
        REQUIRE(s);
        REQUIRE(s->count == 8);
        CHECK(s->devices[6].base == 0xd0000000 + 512 * 6);
        CHECK(s->devices[7].base == 0xd1000000);
        CHECK(notes.tables == 2);
        CHECK(notes.matched == 11);
        CHECK(notes.unusable == 1);
        CHECK(notes.dropped == 2);
    }
    SECTION("a wrong DSDT checksum") {
        fw.mem[dsdt_at + 9] ^= std::byte{1};
        auto e = find(reader);
        CHECK(failure(e) == expect_error(acpi_error::dsdt_checksum, dsdt_at));
    }
    SECTION("a DSDT cut short: its length runs into unreadable memory") {
        fw.put(dsdt_at + 4, le(0x100000 - dsdt_at + 1, 4));
        auto e = find(reader);
        CHECK(failure(e) == expect_error(acpi_error::dsdt_checksum, dsdt_at));
    }
    SECTION("the FADT points at something else") {
        fw.fadt(fadt_at, 276, madt_at, madt_at);
        auto e = find(reader);
        CHECK(failure(e) == expect_error(acpi_error::bad_dsdt, madt_at));
    }
    SECTION("a broken FADT") {
        fw.mem[fadt_at + 50] ^= std::byte{1};
        auto e = find(reader);
        CHECK(failure(e) == expect_error(acpi_error::broken_fadt, fadt_at));
    }
    SECTION("no FADT") {
        fw.root(xsdt_at, true, {madt_at});
        fw.rsdp(rsdp_at, 0, xsdt_at);
        auto e = find(reader);
        CHECK(failure(e) == expect_error(acpi_error::no_fadt, 0));
    }
    SECTION("a FADT too short for the DSDT field") {
        fw.table(fadt_at, "FACP", bytes(6, 0));
        auto e = find(reader);
        CHECK(failure(e) == expect_error(acpi_error::short_fadt, 42));
    }
    SECTION("both DSDT fields 0") {
        fw.fadt(fadt_at, 276, 0, 0);
        auto e = find(reader);
        CHECK(failure(e) == expect_error(acpi_error::no_dsdt, fadt_at));
    }
    SECTION("malformed AML in the DSDT: the error's offset counts the header") {
        fw.table(dsdt_at, "DSDT", {0x10, 0x3f});
        auto e = find(reader);
        CHECK(failure(e) == expect_error(acpi_error::truncated, 37));
    }
    SECTION("a bad RSDP hint") {
        auto e = find(reader, rsdp_at + 16);
        REQUIRE_FALSE(e);
    }
}

TEST_CASE("which DSDT field the FADT's length selects", "[virtio-acpi]") {
    fw_memory fw = microvm_tables();
    fw.table(0x84000, "DSDT", virtio_device(0, 0x11110000, 11));
    auto reader = fw.reader();
    SECTION("X_DSDT wins when it is there and non-zero") {
        fw.fadt(fadt_at, 148, 0x84000, dsdt_at);
        auto r = find(reader);
        REQUIRE(r);
        CHECK(r->count == 2);
    }
    SECTION("X_DSDT 0: DSDT") {
        fw.fadt(fadt_at, 276, 0x84000, 0);
        auto r = find(reader);
        REQUIRE(r);
        REQUIRE(r->count == 1);
        CHECK(r->devices[0].base == 0x11110000);
    }
    SECTION("an ACPI 1.0 FADT (116 bytes) through an RSDT: DSDT, whatever lies at 140") {
        fw.fadt(fadt_at, 116, 0x84000, 0);
        fw.put(fadt_at + 140, le(dsdt_at, 8)); // beyond the table: not X_DSDT
        fw.root(rsdt_at, false, {fadt_at});
        fw.rsdp(rsdp_at, rsdt_at, 0);
        auto r = find(reader);
        REQUIRE(r);
        REQUIRE(r->count == 1);
        CHECK(r->devices[0].base == 0x11110000);
    }
    SECTION("147 bytes: X_DSDT does not fit") {
        fw.fadt(fadt_at, 147, 0x84000, 0);
        fw.put(fadt_at + 140, le(dsdt_at, 7));
        fw.fix_checksum(fadt_at, 147, 9);
        auto r = find(reader);
        REQUIRE(r);
        REQUIRE(r->count == 1);
        CHECK(r->devices[0].base == 0x11110000);
    }
}
