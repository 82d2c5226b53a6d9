// HOST-ONLY. fake_pci_bus: a configuration space of several PCI functions, modelled the way hardware
// behaves, as the oracle for the PCI tests; and mock_port_io32, a scripted port_io32 for the 0xCF8/0xCFC
// mechanism. Uses <map>/<vector>/<string>/<cstdio>: never include it from kernel code.
//
// The model: each function has 256 bytes of configuration space plus a per-byte mask of writable bits and
// one of write-one-to-clear bits; everything else is read-only. So a BAR keeps its type bits whatever is
// written and, written with all ones, reads back its size mask, as on real hardware. Absent functions read
// all ones and ignore writes. The fake counts what a careless driver gets wrong: BAR writes while the
// function decodes I/O or memory (a BAR holding all ones would claim addresses it does not own).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

#include <toro/base/transcript.hpp>
#include <toro/dev/pci/config.hpp>
#include <toro/dev/pci/pci.hpp>

namespace toro::testing {

// What a fake BAR decodes. For mem64 the next BAR slot is its upper half.
struct fake_bar {
    bar_kind kind = bar_kind::none;
    std::uint64_t size = 0; // a power of two: 4+ bytes for I/O, 16+ for memory
    std::uint64_t address = 0;
    bool prefetchable = false;
    bool io_16bit = false; // I/O decoder whose upper 16 address bits are hardwired to 0

    static fake_bar io(std::uint64_t size, std::uint64_t address, bool io_16bit = false) {
        return {bar_kind::io, size, address, false, io_16bit};
    }
    static fake_bar mem32(std::uint64_t size, std::uint64_t address, bool prefetchable = false) {
        return {bar_kind::mem32, size, address, prefetchable};
    }
    static fake_bar mem64(std::uint64_t size, std::uint64_t address, bool prefetchable = false) {
        return {bar_kind::mem64, size, address, prefetchable};
    }
};

// Identity and header fields of a fake function.
struct fake_function_spec {
    std::uint16_t vendor = 0x1af4;
    std::uint16_t device = 0x1000;
    std::uint8_t class_code = 0x02;
    std::uint8_t subclass = 0x00;
    std::uint8_t prog_if = 0x00;
    std::uint8_t revision = 0x00;
    std::uint8_t header_layout = pci::header_general;
    bool multi_function = false;
    std::uint8_t interrupt_pin = 1;
    std::uint8_t interrupt_line = 11;
    std::uint16_t command = 0x0007; // I/O + memory decoding + bus master, as firmware leaves it
};

class fake_pci_function {
public:
    explicit fake_pci_function(pci_address addr, const fake_function_spec& s) : address_{addr} {
        set16(pci::vendor_id, s.vendor);
        set16(pci::device_id, s.device);
        set8(pci::revision, s.revision);
        set8(pci::prog_if, s.prog_if);
        set8(pci::subclass, s.subclass);
        set8(pci::class_code, s.class_code);
        set8(pci::header_type, static_cast<std::uint8_t>(s.header_layout | (s.multi_function ? 0x80 : 0)));
        set8(pci::interrupt_line, s.interrupt_line);
        set8(pci::interrupt_pin, s.interrupt_pin);
        set16(pci::command, s.command);
        set_status(0x0000);
        // Writable: command bits I/O, memory, master, parity, SERR, INTx disable; status error bits RW1C;
        // the interrupt line (a scratch byte for firmware).
        mask(writable_, pci::command, 0x0547, 2);
        mask(w1c_, pci::status, 0xf900, 2);
        mask(writable_, pci::interrupt_line, 0xff, 1);
        if (s.header_layout == pci::header_bridge) mask(writable_, pci::primary_bus, 0xffffff, 3);
    }

    pci_address address() const { return address_; }

    // Raw stores that bypass the masks: for building the function and for corrupting it in tests.
    void set8(std::uint16_t off, std::uint8_t v) { config_.at(off) = v; }
    void set16(std::uint16_t off, std::uint16_t v) {
        set8(off, static_cast<std::uint8_t>(v));
        set8(static_cast<std::uint16_t>(off + 1), static_cast<std::uint8_t>(v >> 8));
    }
    void set32(std::uint16_t off, std::uint32_t v) {
        set16(off, static_cast<std::uint16_t>(v));
        set16(static_cast<std::uint16_t>(off + 2), static_cast<std::uint16_t>(v >> 16));
    }
    std::uint8_t get8(std::uint16_t off) const { return config_.at(off); }
    std::uint16_t get16(std::uint16_t off) const {
        return static_cast<std::uint16_t>(get8(off) | get8(static_cast<std::uint16_t>(off + 1)) << 8);
    }
    std::uint32_t get32(std::uint16_t off) const {
        return get16(off) | std::uint32_t{get16(static_cast<std::uint16_t>(off + 2))} << 16;
    }
    void set_status(std::uint16_t v) {
        set16(pci::status, static_cast<std::uint16_t>(v | (first_cap_ ? 0x10 : 0)));
    }

    // Installs BAR `index` with its writable address bits (size mask) and read-only type bits.
    fake_pci_function& bar(std::uint8_t index, const fake_bar& b) {
        const auto off = static_cast<std::uint16_t>(pci::bar0 + 4 * index);
        const std::uint64_t size_mask = ~(b.size - 1);
        if (b.kind == bar_kind::io) {
            const std::uint32_t top = b.io_16bit ? 0xffff : 0xffffffff;
            set32(off, static_cast<std::uint32_t>((b.address & top & ~0x3u) | 1));
            mask(writable_, off, static_cast<std::uint32_t>(size_mask) & top & ~0x3u, 4);
        } else {
            const std::uint32_t flags =
                (b.kind == bar_kind::mem64 ? 0x4u : 0u) | (b.prefetchable ? 0x8u : 0u);
            set32(off, static_cast<std::uint32_t>(b.address & ~0xfull) | flags);
            mask(writable_, off, static_cast<std::uint32_t>(size_mask) & ~0xfu, 4);
            if (b.kind == bar_kind::mem64) {
                set32(static_cast<std::uint16_t>(off + 4), static_cast<std::uint32_t>(b.address >> 32));
                mask(writable_, static_cast<std::uint16_t>(off + 4),
                     static_cast<std::uint32_t>(size_mask >> 32), 4);
            }
        }
        return *this;
    }

    // A bridge's bus numbers (header layout 1).
    fake_pci_function& bridge_buses(std::uint8_t primary, std::uint8_t secondary, std::uint8_t subordinate) {
        set8(pci::primary_bus, primary);
        set8(pci::secondary_bus, secondary);
        set8(pci::subordinate_bus, subordinate);
        return *this;
    }

    // Appends a capability (ID, next pointer, then `body`) at the next free dword from 0x40 (or at `at`),
    // links it at the end of the list and returns its offset.
    std::uint8_t add_capability(std::uint8_t id, const std::vector<std::uint8_t>& body, std::uint8_t at = 0) {
        if (at == 0) at = next_free_;
        set8(at, id);
        set8(static_cast<std::uint16_t>(at + 1), 0);
        for (std::size_t i = 0; i < body.size(); ++i) set8(static_cast<std::uint16_t>(at + 2 + i), body[i]);
        if (last_cap_ != 0)
            set8(static_cast<std::uint16_t>(last_cap_ + 1), at);
        else
            set8(pci::capability_pointer, at);
        first_cap_ = first_cap_ ? first_cap_ : at;
        last_cap_ = at;
        next_free_ = static_cast<std::uint8_t>((at + 2 + body.size() + 3) & ~3u);
        set_status(get16(pci::status));
        return at;
    }

    // MSI-X: table of `vectors` entries at table_bir:table_offset, PBA at pba_bir:pba_offset. The enable
    // and function-mask bits are writable.
    std::uint8_t add_msix(std::uint16_t vectors, std::uint8_t table_bir, std::uint32_t table_offset,
                          std::uint8_t pba_bir, std::uint32_t pba_offset) {
        const auto ctl = static_cast<std::uint16_t>(vectors - 1);
        const std::uint32_t table = table_offset | table_bir, pba = pba_offset | pba_bir;
        const std::uint8_t at = add_capability(pci::cap_msix, cat({le(ctl, 2), le(table, 4), le(pba, 4)}));
        mask(writable_, static_cast<std::uint16_t>(at + 2), 0xc000, 2);
        return at;
    }

    // MSI asking for 2^log2_vectors vectors; the layout follows the 64-bit and per-vector-masking flags.
    std::uint8_t add_msi(std::uint8_t log2_vectors, bool address_64bit, bool per_vector_masking) {
        const auto ctl = static_cast<std::uint16_t>(log2_vectors << 1 | (address_64bit ? 0x80 : 0) |
                                                    (per_vector_masking ? 0x100 : 0));
        std::size_t size = 2 + 4 + (address_64bit ? 4 : 0) + 4 + (per_vector_masking ? 8 : 0);
        const std::uint8_t at = add_capability(pci::cap_msi, std::vector<std::uint8_t>(size, 0));
        set16(static_cast<std::uint16_t>(at + 2), ctl);
        mask(writable_, static_cast<std::uint16_t>(at + 2), 0x0071, 2);
        return at;
    }

    // A virtio 1.0 vendor capability (virtio_pci_cap): cfg_type, bar, offset, length.
    std::uint8_t add_virtio_cap(std::uint8_t cfg_type, std::uint8_t bar_index, std::uint32_t offset,
                                std::uint32_t length) {
        return add_capability(pci::cap_vendor, cat({le(16, 1), le(cfg_type, 1), le(bar_index, 1), le(0, 3),
                                                    le(offset, 4), le(length, 4)}));
    }

    std::uint32_t read32(std::uint16_t off) const { return get32(off & 0xfc); }

    void write32(std::uint16_t off, std::uint32_t v) {
        off &= 0xfc;
        ++writes;
        if (off == pci::command) ++command_writes;
        const std::uint16_t cmd = get16(pci::command);
        if (is_bar(off) && (cmd & 0x3) != 0) ++bar_writes_while_decoding;
        for (unsigned i = 0; i < 4; ++i) {
            const auto o = static_cast<std::uint16_t>(off + i);
            const auto b = static_cast<std::uint8_t>(v >> (8 * i));
            std::uint8_t cur = config_[o];
            cur = static_cast<std::uint8_t>((cur & ~writable_[o]) | (b & writable_[o]));
            cur = static_cast<std::uint8_t>(cur & ~(b & w1c_[o]));
            config_[o] = cur;
        }
    }

    std::size_t writes = 0;
    std::size_t command_writes = 0;
    std::size_t bar_writes_while_decoding = 0;

private:
    static std::vector<std::uint8_t> le(std::uint64_t v, int n) {
        std::vector<std::uint8_t> out;
        for (int i = 0; i < n; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
        return out;
    }
    static std::vector<std::uint8_t> cat(std::initializer_list<std::vector<std::uint8_t>> parts) {
        std::vector<std::uint8_t> out;
        for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
        return out;
    }
    static void mask(std::array<std::uint8_t, 256>& m, std::uint16_t off, std::uint32_t bits, int n) {
        for (int i = 0; i < n; ++i) m.at(off + i) = static_cast<std::uint8_t>(bits >> (8 * i));
    }
    bool is_bar(std::uint16_t off) const {
        const std::uint8_t layout = get8(pci::header_type) & 0x7f;
        const std::uint16_t end = layout == pci::header_general  ? 0x28
                                  : layout == pci::header_bridge ? 0x18
                                                                 : 0x14;
        return off >= pci::bar0 && off < end;
    }

    pci_address address_;
    std::array<std::uint8_t, 256> config_{};
    std::array<std::uint8_t, 256> writable_{};
    std::array<std::uint8_t, 256> w1c_{};
    std::uint8_t first_cap_ = 0, last_cap_ = 0, next_free_ = pci::cap_first;
};

// Segment 0's configuration space: models pci_config_access.
class fake_pci_bus {
public:
    fake_pci_function& add(pci_address addr, const fake_function_spec& spec = {}) {
        auto [it, inserted] = functions_.insert_or_assign(key(addr), fake_pci_function{addr, spec});
        return it->second;
    }
    fake_pci_function* find(pci_address addr) {
        auto it = functions_.find(key(addr));
        return it == functions_.end() ? nullptr : &it->second;
    }
    fake_pci_function& at(pci_address addr) { return functions_.at(key(addr)); }

    std::uint32_t read32(pci_address addr, std::uint16_t offset) {
        ++reads;
        if (offset >= 256) return 0xffffffff;
        auto* f = find(addr);
        return f ? f->read32(offset) : 0xffffffff;
    }
    void write32(pci_address addr, std::uint16_t offset, std::uint32_t value) {
        if (offset >= 256) return;
        if (auto* f = find(addr)) f->write32(offset, value);
    }

    std::size_t reads = 0;

private:
    static std::uint32_t key(pci_address a) { return a.bdf(); }
    std::map<std::uint32_t, fake_pci_function> functions_; // ordered by BDF: the scan order on one bus
};
static_assert(pci_config_access<fake_pci_bus>);

// ---- mock_port_io32: scripted 32-bit port accesses ----

namespace detail {
struct port_step {
    bool write;
    std::uint16_t port;
    std::uint32_t value;
    std::size_t times;
};
} // namespace detail

// Like mock_io, for port_io32: each in32/out32 is matched against the next scripted access.
class mock_port_io32 : public transcript<detail::port_step, mock_port_io32> {
public:
    using step = detail::port_step;

    mock_port_io32& expect_out32(std::uint16_t port, std::uint32_t value) {
        add({true, port, value, 1});
        return *this;
    }
    mock_port_io32& expect_in32(std::uint16_t port, std::uint32_t value) {
        add({false, port, value, 1});
        return *this;
    }

    std::uint32_t in32(std::uint16_t port) {
        const step* s = next();
        check({false, port, 0, 1}, s != nullptr && !s->write && s->port == port);
        const std::uint32_t v = s != nullptr && !s->write ? s->value : 0xffffffff;
        consume();
        return v;
    }
    void out32(std::uint16_t port, std::uint32_t value) {
        const step* s = next();
        check({true, port, value, 1}, s != nullptr && s->write && s->port == port && s->value == value);
        consume();
    }

    std::string describe(const step& s) const {
        char buf[64];
        if (s.write)
            std::snprintf(buf, sizeof buf, "out32 0x%08x to port 0x%x", unsigned{s.value}, unsigned{s.port});
        else
            std::snprintf(buf, sizeof buf, "in32 from port 0x%x", unsigned{s.port});
        return buf;
    }
};
static_assert(port_io32<mock_port_io32>);

} // namespace toro::testing
