// virtio-mmio devices from ACPI. QEMU microvm with acpi=on (hw/i386/acpi-microvm.c, hw/virtio/virtio-acpi.c)
// and Firecracker describe each transport with a device in the DSDT, and QEMU then leaves them off the
// kernel command line (microvm only appends virtio_mmio.device= when ACPI is off):
//
//   Device (VR00) { Name (_HID, "LNRO0005")  Name (_UID, 0)  Name (_CCA, One)
//                   Name (_CRS, ResourceTemplate () { Memory32Fixed (ReadWrite, 0xfeb00000, 0x200)
//                                                     Interrupt (ResourceConsumer, Level, ActiveHigh,
//                                                                Exclusive) { 24 } }) }
//
// There is no AML interpreter here: RSDP -> RSDT/XSDT (platform.hpp) -> FADT -> DSDT (then every SSDT), and a
// bounded walk over the definition blocks' static structure (ACPI 6.5 chapter 20): Scope and Device are
// entered, Name objects read (_HID, _CID, _UID, _STA, _CRS), everything with a PkgLength that is not needed
// (methods, fields, If, packages, other devices' bodies) stepped over by it. A term the walker cannot size
// (an expression at the top of a scope) ends the walk of that scope only: its PkgLength says where the
// scope ends. Whatever the walker cannot evaluate (a method _CRS or _STA) is counted, not guessed.
// Every length is checked against the enclosing package and the table; AML whose structure is malformed
// (a PkgLength past its parent, a bad NameString, nesting too deep) makes the table untrustworthy and is an
// error value. What is wrong inside one device only (a _CRS whose resource descriptors are malformed or give
// no memory range or no interrupt) skips that device: it is counted in aml_scan_notes::unusable and the walk
// goes on. Devices beyond the list's capacity are counted in aml_scan_notes::dropped, not an error.
// Nothing here allocates; the walk's state is a fixed-depth array of about 0.7 KiB.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include <toro/base/expected.hpp>
#include <toro/base/string_view.hpp>
#include <toro/boot/phys_reader.hpp>
#include <toro/boot/platform.hpp>
#include <toro/dev/virtio/mmio.hpp>

namespace toro::virtio {

// The _HID Linux's virtio-mmio driver matches (drivers/virtio/virtio_mmio.c), as QEMU and Firecracker set it.
inline constexpr string_view acpi_virtio_mmio_hid{"LNRO0005"};

// The errors, so callers can tell them apart (error.what == acpi_error::...). AML errors carry the offset
// of the offending byte in its table (header included, so it matches a dump of the table).
namespace acpi_error {
inline constexpr string_view no_fadt{"acpi: the root table lists no FADT (\"FACP\")"};
inline constexpr string_view broken_fadt{"acpi: the FADT fails its length or checksum check at"};
inline constexpr string_view unreadable_fadt{
    "acpi: no valid FADT; the root table lists an unreadable table at"};
inline constexpr string_view short_fadt{"acpi: the FADT is too short to hold the DSDT address; length"};
inline constexpr string_view no_dsdt{"acpi: the FADT gives no DSDT address (DSDT and X_DSDT are 0); FADT at"};
inline constexpr string_view bad_dsdt{"acpi: the DSDT is unreadable or lacks its \"DSDT\" signature at"};
inline constexpr string_view dsdt_length{"acpi: the DSDT length is absurd; length"};
inline constexpr string_view dsdt_checksum{"acpi: the DSDT checksum is wrong at"};
inline constexpr string_view ssdt_length{"acpi: an SSDT length is absurd; length"};
inline constexpr string_view ssdt_checksum{"acpi: an SSDT checksum is wrong at"};
inline constexpr string_view too_big{"acpi: AML block larger than 1 MiB; size"};
inline constexpr string_view unreadable{"acpi: AML unreadable at table offset"};
inline constexpr string_view truncated{"acpi: AML object runs past its enclosing package or table; offset"};
inline constexpr string_view bad_pkg_length{"acpi: AML PkgLength shorter than its own encoding; offset"};
inline constexpr string_view bad_name{"acpi: AML NameString malformed; offset"};
inline constexpr string_view bad_string{"acpi: AML string has no terminating NUL in its package; offset"};
inline constexpr string_view too_deep{"acpi: AML scopes and devices nested deeper than 16; offset"};
} // namespace acpi_error

// What the walk saw besides the devices it returns: why a device may be missing.
struct aml_scan_notes {
    std::uint32_t tables = 0;  // definition blocks walked (the DSDT, then SSDTs)
    std::uint32_t devices = 0; // Device objects entered, any _HID
    std::uint32_t matched = 0; // devices whose _HID or _CID is the one looked for
    std::uint32_t absent = 0;  // ... whose Name (_STA) says "not present": skipped
    std::uint32_t unusable =
        0; // ... without a static, well-formed _CRS holding a memory range and an interrupt
    std::uint32_t dropped = 0;   // ... usable, but found when the list was full (mmio_device_list::capacity)
    std::uint32_t abandoned = 0; // scopes whose walk stopped at a term it cannot size (the rest unseen)
};

namespace acpi_layout {
// FADT (ACPI 6.5 5.2.9): u32 DSDT at 40; u64 X_DSDT at 140, present when the table is at least 148 long.
inline constexpr std::uint32_t fadt_off_dsdt = 40, fadt_off_x_dsdt = 140;
inline constexpr std::uint32_t fadt_min_length = fadt_off_dsdt + 4, fadt_x_dsdt_length = fadt_off_x_dsdt + 8;
// SSDTs looked at after the DSDT; a root table never lists this many.
inline constexpr std::size_t max_ssdts = 64;
} // namespace acpi_layout

namespace detail {

// AML encodings (ACPI 6.5 20.2) the walker knows.
namespace aml {
inline constexpr std::uint8_t zero_op = 0x00, one_op = 0x01, alias_op = 0x06, name_op = 0x08,
                              byte_prefix = 0x0a, word_prefix = 0x0b, dword_prefix = 0x0c,
                              string_prefix = 0x0d, qword_prefix = 0x0e, scope_op = 0x10, buffer_op = 0x11,
                              package_op = 0x12, var_package_op = 0x13, method_op = 0x14, external_op = 0x15,
                              dual_name_prefix = 0x2e, multi_name_prefix = 0x2f, ext_op_prefix = 0x5b,
                              root_char = 0x5c, parent_prefix = 0x5e, if_op = 0xa0, else_op = 0xa1,
                              while_op = 0xa2, noop_op = 0xa3, ones_op = 0xff;
// After ExtOpPrefix.
inline constexpr std::uint8_t mutex_op = 0x01, event_op = 0x02, revision_op = 0x30, op_region_op = 0x80,
                              field_op = 0x81, device_op = 0x82, processor_op = 0x83, power_res_op = 0x84,
                              thermal_zone_op = 0x85, index_field_op = 0x86, bank_field_op = 0x87;
// Resource descriptors (ACPI 6.5 6.4): small items are tag (type << 3 | length); large items tag, u16 length.
inline constexpr std::uint8_t small_irq = 0x04, small_end = 0x0f, large_memory32_fixed = 0x06,
                              large_extended_irq = 0x09;
} // namespace aml

inline constexpr std::size_t aml_max_depth = 17; // the table's own term list, then 16 levels

// A NameString, reduced to what the walker compares: its last NameSeg and whether it is that seg alone.
struct aml_name {
    std::array<char, 4> last{};
    bool single = false; // one NameSeg, no root or parent prefix: a name in the current scope

    constexpr bool is(const char (&seg)[5]) const {
        return single && last[0] == seg[0] && last[1] == seg[1] && last[2] == seg[2] && last[3] == seg[3];
    }
};

// A data object after Name (...): what it is and what the walker keeps of it.
struct aml_data {
    enum class kind : std::uint8_t { integer, string, buffer, package, unknown } type = kind::unknown;
    std::uint64_t integer = 0;
    std::array<char, 16> text{}; // a string's first 16 characters
    std::uint32_t text_length = 0;
    bool size_known = false;              // buffer: BufferSize is a constant, so the initializer is located
    std::uint64_t buffer_size = 0;        // buffer: BufferSize
    std::uint32_t data = 0, data_end = 0; // buffer: its initializer bytes [data, data_end)
};

// What a Device's own Name objects said, gathered until the device's package ends.
struct aml_device {
    bool hid_match = false;
    bool present = true;
    bool crs = false, crs_size_known = false;
    std::uint64_t crs_size = 0;              // BufferSize
    std::uint32_t crs_data = 0, crs_end = 0; // the initializer's bytes
    std::int32_t uid = -1;
};

struct aml_frame {
    std::uint32_t end = 0;
    bool device = false;
    aml_device dev;
};

constexpr char hex_upper(unsigned v) {
    return static_cast<char>(v < 10 ? '0' + v : 'A' + (v - 10));
}

// An integer _HID/_CID is a compressed EISA id (ACPI 6.5 6.1.5: three 5-bit letters, four hex digits,
// stored big-endian in the dword): "PNP0501" and the like.
constexpr bool eisa_id_is(std::uint64_t value, string_view hid) {
    if (value > 0xffffffff || hid.size() != 7) return false;
    const auto v = static_cast<std::uint32_t>(value);
    const std::uint32_t id = (v >> 24) | ((v >> 8) & 0xff00) | ((v << 8) & 0xff0000) | (v << 24);
    const char text[7] = {static_cast<char>(((id >> 26) & 0x1f) + 0x40),
                          static_cast<char>(((id >> 21) & 0x1f) + 0x40),
                          static_cast<char>(((id >> 16) & 0x1f) + 0x40),
                          hex_upper((id >> 12) & 0xf),
                          hex_upper((id >> 8) & 0xf),
                          hex_upper((id >> 4) & 0xf),
                          hex_upper(id & 0xf)};
    for (std::size_t i = 0; i < 7; ++i)
        if (text[i] != hid[i]) return false;
    return true;
}

constexpr bool aml_id_is(const aml_data& d, string_view hid) {
    if (d.type == aml_data::kind::integer) return eisa_id_is(d.integer, hid);
    if (d.type != aml_data::kind::string || d.text_length != hid.size() || hid.size() > d.text.size())
        return false;
    for (std::size_t i = 0; i < hid.size(); ++i)
        if (d.text[i] != hid[i]) return false;
    return true;
}

constexpr bool name_char(std::uint8_t c, bool lead) {
    return (c >= 'A' && c <= 'Z') || c == '_' || (!lead && c >= '0' && c <= '9');
}

// The walk over one definition block, read through Src (a phys_reader whose addresses are table offsets).
// Every read names the limit it must stay under: the innermost enclosing package's end.
template <phys_reader Src>
class aml_walker {
public:
    aml_walker(Src& src, string_view hid, mmio_device_list& list, aml_scan_notes& notes)
        : src_{src}, hid_{hid}, list_{list}, notes_{notes} {}

    // Walks the term list [begin, end).
    expected<void> walk(std::uint32_t begin, std::uint32_t end) {
        std::array<aml_frame, aml_max_depth> frames{};
        std::size_t depth = 1;
        frames[0].end = end;
        std::uint32_t pos = begin;
        for (;;) {
            while (pos >= frames[depth - 1].end) { // every step stays inside its frame: pos == end here
                if (frames[depth - 1].device)
                    if (auto r = finish_device(frames[depth - 1].dev); !r) return r;
                if (--depth == 0) return {};
            }
            const std::uint32_t limit = frames[depth - 1].end;
            aml_device* dev = frames[depth - 1].device ? &frames[depth - 1].dev : nullptr;
            auto op = byte(pos, limit);
            if (!op) return unexpected{op.error()};

            // Scope and Device open a frame; everything else moves pos past itself, or gives up the frame.
            bool opens = false, is_device = false;
            std::uint32_t next = 0, frame_end = 0;
            switch (*op) {
            case aml::scope_op:
            case aml::ext_op_prefix: {
                std::uint32_t at = pos + 1;
                if (*op == aml::ext_op_prefix) {
                    auto op2 = byte(pos + 1, limit);
                    if (!op2) return unexpected{op2.error()};
                    at = pos + 2;
                    if (*op2 != aml::device_op) {
                        auto r = ext_term(pos, *op2, limit);
                        if (!r) return unexpected{r.error()};
                        next = *r;
                        break;
                    }
                    is_device = true;
                }
                std::uint32_t body = 0;
                auto e = pkg_length(at, limit, body);
                if (!e) return unexpected{e.error()};
                aml_name name;
                auto n = name_string(body, *e, name);
                if (!n) return unexpected{n.error()};
                opens = true;
                frame_end = *e;
                next = *n;
                break;
            }
            case aml::name_op: {
                aml_name name;
                auto n = name_string(pos + 1, limit, name);
                if (!n) return unexpected{n.error()};
                aml_data d;
                auto v = data_object(*n, limit, d);
                if (!v) return unexpected{v.error()};
                if (d.type == aml_data::kind::unknown) {
                    next = 0; // not a data object the walker can size
                    break;
                }
                if (dev != nullptr) note_name(*dev, name, d);
                next = *v;
                break;
            }
            case aml::method_op:
            case aml::if_op:
            case aml::else_op:
            case aml::while_op: {
                std::uint32_t body = 0;
                auto e = pkg_length(pos + 1, limit, body);
                if (!e) return unexpected{e.error()};
                next = *e;
                break;
            }
            case aml::external_op:
            case aml::alias_op: {
                aml_name name;
                auto n = name_string(pos + 1, limit, name);
                if (!n) return unexpected{n.error()};
                if (*op == aml::alias_op) {
                    auto n2 = name_string(*n, limit, name);
                    if (!n2) return unexpected{n2.error()};
                    next = *n2;
                } else {
                    next = *n + 2; // ObjectType, ArgumentCount
                    if (next > limit) return unexpected{acpi_error::truncated, pos};
                }
                break;
            }
            case aml::noop_op:
                next = pos + 1;
                break;
            default:
                break; // an expression or a method call: its extent is unknown
            }

            if (opens) {
                if (depth == aml_max_depth) return unexpected{acpi_error::too_deep, pos};
                frames[depth] = aml_frame{};
                frames[depth].end = frame_end;
                frames[depth].device = is_device;
                ++depth;
                if (is_device) ++notes_.devices;
                pos = next;
            } else if (next == 0) {
                ++notes_.abandoned;
                pos = limit;
            } else {
                pos = next;
            }
        }
    }

private:
    expected<std::uint8_t> byte(std::uint32_t at, std::uint32_t limit) {
        if (at >= limit) return unexpected{acpi_error::truncated, at};
        std::uint8_t b = 0;
        if (!src_.read(at, &b, 1)) return unexpected{acpi_error::unreadable, at};
        return b;
    }

    // Little-endian, n <= 8 bytes at [at, at + n), inside limit.
    expected<std::uint64_t> le(std::uint32_t at, std::uint32_t n, std::uint32_t limit) {
        if (at > limit || n > limit - at) return unexpected{acpi_error::truncated, at};
        std::byte b[8]{};
        if (!src_.read(at, b, n)) return unexpected{acpi_error::unreadable, at};
        std::uint64_t v = 0;
        for (std::uint32_t i = 0; i < n; ++i) v |= static_cast<std::uint64_t>(b[i]) << (8 * i);
        return v;
    }

    // PkgLength at `at` (1-4 bytes, counting itself); returns the package's end, sets body past the encoding.
    // Bits 4-5 of a multi-byte lead byte are reserved and ignored, as ACPICA does.
    expected<std::uint32_t> pkg_length(std::uint32_t at, std::uint32_t limit, std::uint32_t& body) {
        auto lead = byte(at, limit);
        if (!lead) return unexpected{lead.error()};
        const std::uint32_t extra = *lead >> 6;
        std::uint32_t length = *lead & 0x3f;
        if (extra != 0) {
            auto rest = le(at + 1, extra, limit);
            if (!rest) return unexpected{rest.error()};
            length = (*lead & 0x0fu) | static_cast<std::uint32_t>(*rest << 4);
        }
        if (length < extra + 1) return unexpected{acpi_error::bad_pkg_length, at};
        if (length > limit - at) return unexpected{acpi_error::truncated, at};
        body = at + extra + 1;
        return at + length;
    }

    // NameString := [\ | ^*] (NameSeg | DualNamePrefix 2 segs | MultiNamePrefix count segs | NullName).
    expected<std::uint32_t> name_string(std::uint32_t at, std::uint32_t limit, aml_name& out) {
        const std::uint32_t start = at;
        bool prefixed = false, rooted = false;
        std::uint8_t b = 0;
        for (;; ++at) { // one root char, or any number of parent prefixes
            auto c = byte(at, limit);
            if (!c) return unexpected{c.error()};
            b = *c;
            if (b == aml::root_char && at == start) {
                prefixed = rooted = true;
            } else if (b == aml::parent_prefix && !rooted) {
                prefixed = true;
            } else {
                break;
            }
        }
        std::uint32_t segs = 1;
        if (b == aml::zero_op) {
            out = aml_name{};
            return at + 1;
        }
        if (b == aml::dual_name_prefix) {
            segs = 2;
            ++at;
        } else if (b == aml::multi_name_prefix) {
            auto count = byte(at + 1, limit);
            if (!count) return unexpected{count.error()};
            if (*count == 0) return unexpected{acpi_error::bad_name, start};
            segs = *count;
            at += 2;
        }
        if (segs * 4 > limit - at) return unexpected{acpi_error::truncated, start};
        for (std::uint32_t s = 0; s < segs; ++s, at += 4) {
            std::uint8_t seg[4];
            if (!src_.read(at, seg, 4)) return unexpected{acpi_error::unreadable, at};
            for (std::size_t i = 0; i < 4; ++i) {
                if (!name_char(seg[i], i == 0)) return unexpected{acpi_error::bad_name, start};
                out.last[i] = static_cast<char>(seg[i]);
            }
        }
        out.single = !prefixed && segs == 1;
        return at;
    }

    // A constant integer: ZeroOp, OneOp, OnesOp, Byte/Word/DWord/QWordConst, Revision. Anything else leaves
    // out.type unknown and returns at.
    expected<std::uint32_t> integer_const(std::uint32_t at, std::uint32_t limit, aml_data& out) {
        out = aml_data{};
        auto op = byte(at, limit);
        if (!op) return unexpected{op.error()};
        std::uint32_t width = 0;
        switch (*op) {
        case aml::zero_op:
        case aml::one_op:
        case aml::ones_op:
            out.type = aml_data::kind::integer;
            out.integer = *op == aml::ones_op ? ~std::uint64_t{0} : *op;
            return at + 1;
        case aml::byte_prefix:
            width = 1;
            break;
        case aml::word_prefix:
            width = 2;
            break;
        case aml::dword_prefix:
            width = 4;
            break;
        case aml::qword_prefix:
            width = 8;
            break;
        case aml::ext_op_prefix: {
            auto op2 = byte(at + 1, limit);
            if (!op2) return unexpected{op2.error()};
            if (*op2 != aml::revision_op) return at;
            out.type = aml_data::kind::integer;
            out.integer = 2; // the AML interpreter revision; only its type matters here
            return at + 2;
        }
        default:
            return at;
        }
        auto v = le(at + 1, width, limit);
        if (!v) return unexpected{v.error()};
        out.type = aml_data::kind::integer;
        out.integer = *v;
        return at + 1 + width;
    }

    // A DataRefObject after Name: integer constants, strings, buffers and packages. Anything else is kind
    // unknown: the caller cannot step over it. Not recursive: a buffer's size must be an integer constant
    // to be known, and packages are stepped over whole.
    expected<std::uint32_t> data_object(std::uint32_t at, std::uint32_t limit, aml_data& out) {
        out = aml_data{};
        auto op = byte(at, limit);
        if (!op) return unexpected{op.error()};
        switch (*op) {
        case aml::string_prefix:
            for (std::uint32_t i = at + 1;; ++i) {
                if (i >= limit) return unexpected{acpi_error::bad_string, at};
                auto c = byte(i, limit);
                if (!c) return unexpected{c.error()};
                if (*c == 0) {
                    out.type = aml_data::kind::string;
                    return i + 1;
                }
                if (out.text_length < out.text.size()) out.text[out.text_length] = static_cast<char>(*c);
                ++out.text_length;
            }
        case aml::buffer_op: { // PkgLength BufferSize ByteList
            std::uint32_t body = 0;
            auto end = pkg_length(at + 1, limit, body);
            if (!end) return unexpected{end.error()};
            aml_data size;
            if (body < *end) {
                auto after = integer_const(body, *end, size);
                if (!after) return unexpected{after.error()};
                if (size.type == aml_data::kind::integer) {
                    out.size_known = true;
                    out.buffer_size = size.integer;
                    out.data = *after;
                    out.data_end = *end;
                }
            }
            out.type = aml_data::kind::buffer;
            return *end;
        }
        case aml::package_op:
        case aml::var_package_op: {
            std::uint32_t body = 0;
            auto end = pkg_length(at + 1, limit, body);
            if (!end) return unexpected{end.error()};
            out.type = aml_data::kind::package;
            return *end;
        }
        default:
            return integer_const(at, limit, out);
        }
    }

    // ExtOpPrefix terms other than Device: returns where the next term starts, 0 when it cannot tell.
    expected<std::uint32_t> ext_term(std::uint32_t pos, std::uint8_t op2, std::uint32_t limit) {
        aml_name name;
        switch (op2) {
        case aml::field_op:
        case aml::processor_op:
        case aml::power_res_op:
        case aml::thermal_zone_op:
        case aml::index_field_op:
        case aml::bank_field_op: {
            std::uint32_t body = 0;
            return pkg_length(pos + 2, limit, body);
        }
        case aml::mutex_op:
        case aml::event_op: {
            auto n = name_string(pos + 2, limit, name);
            if (!n) return unexpected{n.error()};
            const std::uint32_t next = *n + (op2 == aml::mutex_op ? 1 : 0); // SyncFlags
            if (next > limit) return unexpected{acpi_error::truncated, pos};
            return next;
        }
        case aml::op_region_op: { // NameString RegionSpace RegionOffset RegionLen: constants in practice
            auto n = name_string(pos + 2, limit, name);
            if (!n) return unexpected{n.error()};
            std::uint32_t at = *n + 1;
            for (int i = 0; i < 2; ++i) {
                aml_data d;
                auto v = integer_const(at, limit, d);
                if (!v) return unexpected{v.error()};
                if (d.type != aml_data::kind::integer) return std::uint32_t{0};
                at = *v;
            }
            return at;
        }
        default:
            return std::uint32_t{0};
        }
    }

    void note_name(aml_device& dev, const aml_name& name, const aml_data& d) {
        if (name.is("_HID") || name.is("_CID")) {
            dev.hid_match = dev.hid_match || aml_id_is(d, hid_);
        } else if (name.is("_UID")) {
            if (d.type == aml_data::kind::integer && d.integer <= 0x7fffffff)
                dev.uid = static_cast<std::int32_t>(d.integer);
        } else if (name.is("_STA")) {
            if (d.type == aml_data::kind::integer) dev.present = (d.integer & 1) != 0;
        } else if (name.is("_CRS") && d.type == aml_data::kind::buffer && !dev.crs) {
            dev.crs = true;
            dev.crs_size_known = d.size_known;
            dev.crs_size = d.buffer_size;
            dev.crs_data = d.data;
            dev.crs_end = d.data_end;
        }
    }

    // The resources a _CRS gives the walker: the first memory range and the first interrupt.
    struct crs_resources {
        bool have_memory = false, have_irq = false;
        std::uint64_t base = 0, size = 0;
        std::uint32_t irq = 0;
    };

    // Little-endian, n <= 8 bytes of a _CRS buffer at `at`: bytes of the initializer [.., present) are read,
    // those past it are the zeros the buffer is padded with up to BufferSize (the caller bounds at + n).
    expected<std::uint64_t> crs_le(std::uint64_t at, std::uint32_t n, std::uint32_t present) {
        std::byte b[8]{};
        const std::uint64_t have = at >= present ? 0 : present - at < n ? present - at : n;
        if (have != 0 && !src_.read(at, b, static_cast<std::size_t>(have)))
            return unexpected{acpi_error::unreadable, at};
        std::uint64_t v = 0;
        for (std::uint32_t i = 0; i < n; ++i) v |= static_cast<std::uint64_t>(b[i]) << (8 * i);
        return v;
    }

    // The resource template of a _CRS buffer whose initializer is [data, present) and whose BufferSize is
    // buffer_size. ACPI 6.5 19.6.10: the buffer is as long as the larger of the two, a BufferSize past the
    // initializer padding it with zeros. Descriptors are read from the initializer only: they start inside
    // it (past it, the zeros hold no end tag), and only their tail may lie in the padding (an end tag's
    // checksum byte, in practice). Returns false when the template is malformed (a descriptor past the
    // buffer, shorter than its type requires, no end tag): the device is unusable, the tables are fine.
    expected<bool> parse_crs(std::uint32_t data, std::uint32_t present, std::uint64_t buffer_size,
                             crs_resources& out) {
        const std::uint32_t initializer = present - data;
        // No descriptor is longer than a large item's 3 + 0xffff bytes: padding further on is never read.
        constexpr std::uint64_t max_padding = 3 + 0xffff;
        const std::uint64_t padding = buffer_size > initializer ? buffer_size - initializer : 0;
        const std::uint64_t end = present + (padding < max_padding ? padding : max_padding);
        for (std::uint64_t p = data;;) {
            if (p >= present) return false; // no end tag
            auto tag = crs_le(p, 1, present);
            if (!tag) return unexpected{tag.error()};
            if (*tag & 0x80) { // large item: tag, u16 length, data
                if (end - p < 3) return false;
                auto len = crs_le(p + 1, 2, present);
                if (!len) return unexpected{len.error()};
                const std::uint64_t d = p + 3;
                if (*len > end - d) return false;
                const auto type = static_cast<std::uint8_t>(*tag & 0x7f);
                if (type == aml::large_memory32_fixed) { // info, u32 base, u32 length
                    if (*len < 9) return false;
                    auto b = crs_le(d + 1, 4, present);
                    if (!b) return unexpected{b.error()};
                    auto s = crs_le(d + 5, 4, present);
                    if (!s) return unexpected{s.error()};
                    if (!out.have_memory && *s != 0) {
                        out.have_memory = true;
                        out.base = *b;
                        out.size = *s;
                    }
                } else if (type == aml::large_extended_irq) { // flags, u8 count, count u32 interrupts
                    if (*len < 6) return false;
                    auto count = crs_le(d + 1, 1, present);
                    if (!count) return unexpected{count.error()};
                    if (*count == 0 || *count * 4 > *len - 2) return false;
                    auto i = crs_le(d + 2, 4, present);
                    if (!i) return unexpected{i.error()};
                    if (!out.have_irq) {
                        out.have_irq = true;
                        out.irq = static_cast<std::uint32_t>(*i);
                    }
                }
                p = d + *len;
                continue;
            }
            const std::uint32_t len = *tag & 0x07; // small item: tag (type << 3 | length), data
            const auto type = static_cast<std::uint8_t>((*tag >> 3) & 0x0f);
            if (len > end - p - 1) return false;
            if (type == aml::small_end) return true;
            if (type == aml::small_irq) { // u16 mask, [flags]
                if (len < 2) return false;
                auto mask = crs_le(p + 1, 2, present);
                if (!mask) return unexpected{mask.error()};
                if (!out.have_irq && *mask != 0) {
                    out.have_irq = true;
                    out.irq = static_cast<std::uint32_t>(__builtin_ctzll(*mask));
                }
            }
            p += 1 + len;
        }
    }

    // A device's package has ended: keep it if it is one of ours, present, and its _CRS is a well-formed
    // resource template giving a memory range and an interrupt (the first of each; QEMU and Firecracker give
    // one of each). Anything less makes this device unusable, not the tables wrong. Only a source that
    // cannot be read is an error.
    expected<void> finish_device(const aml_device& dev) {
        if (!dev.hid_match) return {};
        ++notes_.matched;
        if (!dev.present) {
            ++notes_.absent;
            return {};
        }
        crs_resources res;
        if (dev.crs && dev.crs_size_known) {
            auto ok = parse_crs(dev.crs_data, dev.crs_end, dev.crs_size, res);
            if (!ok) return unexpected{ok.error()};
            if (!*ok) res = crs_resources{};
        }
        if (!res.have_memory || !res.have_irq) {
            ++notes_.unusable;
            return {};
        }
        if (list_.count == mmio_device_list::capacity) {
            ++notes_.dropped;
            return {};
        }
        list_.devices[list_.count++] = mmio_device_desc{res.base, res.size, res.irq, dev.uid};
        return {};
    }

    Src& src_;
    string_view hid_;
    mmio_device_list& list_;
    aml_scan_notes& notes_;
};

// Reads a table by offset through a physical reader.
template <phys_reader R>
struct table_reader {
    R& mem;
    std::uint64_t base;
    bool read(std::uint64_t off, void* dst, std::size_t len) { return mem.read(base + off, dst, len); }
};

// Validates the definition block at addr (signature, length, checksum) and walks its AML into list.
template <phys_reader R>
expected<void> scan_definition_block(R& mem, std::uint64_t addr, bool dsdt, string_view hid,
                                     mmio_device_list& list, aml_scan_notes& notes) {
    auto length = dsdt ? toro::detail::check_table(mem, addr, "DSDT", acpi_error::dsdt_length,
                                                   acpi_error::dsdt_checksum)
                       : toro::detail::check_table(mem, addr, "SSDT", acpi_error::ssdt_length,
                                                   acpi_error::ssdt_checksum);
    if (!length) return unexpected{length.error()};
    if (*length == 0) return unexpected{acpi_error::bad_dsdt, addr};
    ++notes.tables;
    if constexpr (phys_viewer<R>) { // one view for the whole table: each byte is then a load
        if (const std::byte* p = mem.view(addr, *length)) {
            span_phys_reader src{std::span<const std::byte>{p, *length}, 0};
            return aml_walker<span_phys_reader>{src, hid, list, notes}.walk(acpi::header_size, *length);
        }
    }
    table_reader<R> src{mem, addr};
    return aml_walker<table_reader<R>>{src, hid, list, notes}.walk(acpi::header_size, *length);
}

} // namespace detail

// Devices with _HID (or _CID) `hid` that the AML in `aml` (a definition block's body, after its 36-byte
// header) declares with a static _CRS holding a memory range and an interrupt, in table order: the first
// mmio_device_list::capacity of them, the others counted in notes->dropped. `hid` is a string id
// ("LNRO0005") or a 7-character EISA id ("PNP0103"), which also matches the compressed integer form.
// Malformed AML is an error, whose value is an offset in `aml`; a matching device whose _CRS cannot be used
// is skipped and counted in notes->unusable. notes, when given, is filled in even on error.
inline expected<mmio_device_list> find_acpi_mmio_devices(std::span<const std::byte> aml, string_view hid,
                                                         aml_scan_notes* notes = nullptr) {
    aml_scan_notes local;
    aml_scan_notes& n = notes != nullptr ? *notes : local;
    n = aml_scan_notes{};
    if (aml.size() > acpi::max_table_length) return unexpected{acpi_error::too_big, aml.size()};
    mmio_device_list list;
    span_phys_reader src{aml, 0};
    n.tables = 1;
    auto r = detail::aml_walker<span_phys_reader>{src, hid, list, n}.walk(
        0, static_cast<std::uint32_t>(aml.size()));
    if (!r) return unexpected{r.error()};
    return list;
}

// The virtio-mmio transports ("LNRO0005") in a definition block's body.
inline expected<mmio_device_list> find_virtio_mmio_aml(std::span<const std::byte> aml,
                                                       aml_scan_notes* notes = nullptr) {
    return find_acpi_mmio_devices(aml, acpi_virtio_mmio_hid, notes);
}

// The DSDT's address, from the FADT ("FACP") the root table lists: X_DSDT when the FADT is long enough to
// hold it and it is non-zero, else DSDT. The DSDT itself is not checked here.
template <phys_reader R>
expected<std::uint64_t> find_dsdt(R& mem, const acpi_root& root) {
    auto found = toro::detail::lookup_acpi_table(mem, root, "FACP", 0);
    if (!found) return unexpected{found.error()};
    if (found->address == 0) {
        if (found->broken != 0) return unexpected{acpi_error::broken_fadt, found->broken};
        if (found->unreadable != 0) return unexpected{acpi_error::unreadable_fadt, found->unreadable};
        return unexpected{acpi_error::no_fadt};
    }
    const std::uint64_t fadt = found->address;
    auto length = read_u32(mem, fadt + acpi::header_off_length); // validated by the lookup
    if (!length) return unexpected{length.error()};
    if (*length < acpi_layout::fadt_min_length) return unexpected{acpi_error::short_fadt, *length};
    std::uint64_t dsdt = 0;
    if (*length >= acpi_layout::fadt_x_dsdt_length) {
        auto x = read_u64(mem, fadt + acpi_layout::fadt_off_x_dsdt);
        if (!x) return unexpected{x.error()};
        dsdt = *x;
    }
    if (dsdt == 0) {
        auto d = read_u32(mem, fadt + acpi_layout::fadt_off_dsdt);
        if (!d) return unexpected{d.error()};
        dsdt = *d;
    }
    if (dsdt == 0) return unexpected{acpi_error::no_dsdt, fadt};
    return dsdt;
}

// Devices with _HID/_CID `hid` in the DSDT and then every valid SSDT, found from the RSDP at rsdp (the
// loader's boot_info::rsdp; 0 scans the EBDA and the BIOS area). An RSDP, root table, FADT or DSDT that is
// missing or broken is an error, as is malformed AML; SSDTs that fail their checks are skipped, as
// platform.hpp's lookup does. Devices with an unusable _CRS, and those past the list's capacity (counted
// over all the tables), are counted in notes as the single-block form does.
template <phys_reader R>
expected<mmio_device_list> find_acpi_mmio_devices(R& mem, std::uint64_t rsdp, string_view hid,
                                                  aml_scan_notes* notes = nullptr) {
    aml_scan_notes local;
    aml_scan_notes& n = notes != nullptr ? *notes : local;
    n = aml_scan_notes{};
    auto at = find_rsdp(mem, rsdp);
    if (!at) return unexpected{at.error()};
    auto root = find_acpi_root(mem, *at);
    if (!root) return unexpected{root.error()};
    auto dsdt = find_dsdt(mem, *root);
    if (!dsdt) return unexpected{dsdt.error()};
    mmio_device_list list;
    if (auto r = detail::scan_definition_block(mem, *dsdt, true, hid, list, n); !r)
        return unexpected{r.error()};
    for (std::size_t i = 0; i < acpi_layout::max_ssdts; ++i) {
        auto ssdt = toro::detail::lookup_acpi_table(mem, *root, "SSDT", i);
        if (!ssdt) return unexpected{ssdt.error()};
        if (ssdt->address == 0) break;
        if (auto r = detail::scan_definition_block(mem, ssdt->address, false, hid, list, n); !r)
            return unexpected{r.error()};
    }
    return list;
}

// The virtio-mmio transports ACPI describes (QEMU microvm with acpi=on, Firecracker), as
// parse_virtio_mmio_cmdline returns those of the command line; `id` is the device's _UID (-1 if none).
template <phys_reader R>
expected<mmio_device_list> find_virtio_mmio_acpi(R& mem, std::uint64_t rsdp,
                                                 aml_scan_notes* notes = nullptr) {
    return find_acpi_mmio_devices(mem, rsdp, acpi_virtio_mmio_hid, notes);
}

} // namespace toro::virtio
