// HOST-ONLY. Test doubles for the e1000 driver (toro/dev/net/e1000.hpp):
//
//   mock_e1000_bus  a scripted register transcript (toro::testing::transcript): every MMIO access the driver
//                   makes is matched, in order, against what the test expects, with register names in the
//                   messages ("access 3: expected write 0xffffffff to +0x00d8 (IMC), got read of +0x00c0
//                   (ICR)").
//   offset_dma      a driver -> device address translation that is not the identity (device address = host
//                   address + offset), so a pointer programmed untranslated points nowhere the fake accepts.
//   fake_e1000      a behavioural 82540EM: a register file with the side effects the driver relies on (reset,
//                   read-to-clear ICR, IMS/IMC, EERD, RAL/RAH), and DMA over the driver's rings through the
//                   inverse of offset_dma, confined to the memory the test attaches (the driver object).
//                   Writing TDT sends what the driver queued (frames recorded, DD written back); inject()
//                   puts a frame on the wire for the driver to receive. It misbehaves on demand (rx
//                   descriptors with bad lengths, no EOP, error bits, DD on a descriptor the driver kept;
//                   tx without DD, or held back) and records the driver's own mistakes in violations.
//
// Uses <vector>/<string>/<span>: never include it from kernel code.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include <toro/arch/x86_64/lapic.hpp>
#include <toro/base/transcript.hpp>
#include <toro/dev/net/e1000_regs.hpp>
#include <toro/dev/net_device.hpp>

namespace toro::testing {

inline std::string e1000_register_name(std::uint32_t offset) {
    namespace o = toro::net::e1000_regs::offset;
    if (offset >= o::mta && offset < o::mta_entry(o::mta_entries))
        return "MTA[" + std::to_string((offset - o::mta) / 4) + "]";
    switch (offset) {
    case o::ctrl:
        return "CTRL";
    case o::status:
        return "STATUS";
    case o::eecd:
        return "EECD";
    case o::eerd:
        return "EERD";
    case o::icr:
        return "ICR";
    case o::itr:
        return "ITR";
    case o::ics:
        return "ICS";
    case o::ims:
        return "IMS";
    case o::imc:
        return "IMC";
    case o::rctl:
        return "RCTL";
    case o::tctl:
        return "TCTL";
    case o::tipg:
        return "TIPG";
    case o::rdbal:
        return "RDBAL";
    case o::rdbah:
        return "RDBAH";
    case o::rdlen:
        return "RDLEN";
    case o::rdh:
        return "RDH";
    case o::rdt:
        return "RDT";
    case o::rdtr:
        return "RDTR";
    case o::tdbal:
        return "TDBAL";
    case o::tdbah:
        return "TDBAH";
    case o::tdlen:
        return "TDLEN";
    case o::tdh:
        return "TDH";
    case o::tdt:
        return "TDT";
    case o::mpc:
        return "MPC";
    case o::ral0:
        return "RAL0";
    case o::rah0:
        return "RAH0";
    default:
        return "";
    }
}

namespace detail {
enum class e1000_access_kind { read, write };
struct e1000_step {
    e1000_access_kind k;
    std::uint32_t offset;
    std::uint32_t value;
    std::size_t times;
};
} // namespace detail

class mock_e1000_bus : public transcript<detail::e1000_step, mock_e1000_bus> {
public:
    using kind = detail::e1000_access_kind;
    using step = detail::e1000_step;

    // A copyable handle: what the driver holds.
    struct ref {
        mock_e1000_bus* bus;
        std::uint32_t read32(std::uint32_t offset) const { return bus->read32(offset); }
        void write32(std::uint32_t offset, std::uint32_t v) const { bus->write32(offset, v); }
    };
    ref handle() { return {this}; }

    mock_e1000_bus& expect_write(std::uint32_t offset, std::uint32_t value) {
        add({kind::write, offset, value, 1});
        return *this;
    }
    // `times` reads of the same register, each answered with `value`.
    mock_e1000_bus& expect_read(std::uint32_t offset, std::uint32_t value, std::size_t times = 1) {
        add({kind::read, offset, value, times});
        return *this;
    }
    // The same value written to `count` consecutive 32-bit registers (a table such as the MTA).
    mock_e1000_bus& expect_write_each(std::uint32_t first, std::size_t count, std::uint32_t value) {
        for (std::size_t i = 0; i < count; ++i)
            expect_write(static_cast<std::uint32_t>(first + 4 * i), value);
        return *this;
    }

    std::uint32_t read32(std::uint32_t offset) {
        const step* s = next();
        const bool ok = s != nullptr && s->k == kind::read && s->offset == offset;
        check({kind::read, offset, 0, 1}, ok);
        consume();
        return ok ? s->value : 0xffffffff; // a floating bus reads all ones
    }
    void write32(std::uint32_t offset, std::uint32_t v) {
        const step* s = next();
        check({kind::write, offset, v, 1},
              s != nullptr && s->k == kind::write && s->offset == offset && s->value == v);
        consume();
    }

    std::string describe(const step& s) const {
        char buf[96];
        if (s.k == kind::write)
            std::snprintf(buf, sizeof buf, "write 0x%08x to +0x%04x", static_cast<unsigned>(s.value),
                          s.offset);
        else if (s.times > 1)
            std::snprintf(buf, sizeof buf, "%zu reads of +0x%04x", s.times, s.offset);
        else
            std::snprintf(buf, sizeof buf, "read of +0x%04x", s.offset);
        std::string out = buf;
        const std::string name = e1000_register_name(s.offset);
        if (!name.empty()) out += " (" + name + ")";
        return out;
    }
};
static_assert(toro::arch::mmio32_bus<mock_e1000_bus::ref>);

// Device address = host address + offset. The offset keeps 4 KiB alignment and sets high bits, so the
// 64-bit base registers get a non-zero high half and an untranslated pointer is never a valid device address.
struct offset_dma {
    static constexpr std::uint64_t offset = 0x1000'0000'0000'0000;
    std::uint64_t to_device(const void* p) const { return reinterpret_cast<std::uintptr_t>(p) + offset; }
};

struct fake_e1000_options {
    toro::mac_address mac{0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
    bool mac_in_ral = true;    // reset loads RAL0/RAH0 (with AV), as QEMU does; false: only the EEPROM has it
    bool reset_sticks = false; // CTRL.RST never clears
    bool eeprom_stuck = false; // EERD never reports DONE
    bool link_up = true;
    bool filter = true; // destination filter: unicast to RA0 (AV) or UPE, broadcast with BAM, multicast MPE
};

// How fake_e1000::inject() lies in the descriptor it writes.
struct fake_rx_fault {
    bool no_eop = false;      // DD without EOP
    std::uint8_t errors = 0;  // the errors byte
    std::int64_t length = -1; // the length field, when >= 0 (the bytes copied are the frame's)
    bool unowned = false;     // write the descriptor at RDT, which the driver has not given us
};

class fake_e1000 {
public:
    using options = fake_e1000_options;
    using rx_fault = fake_rx_fault;

    struct bus {
        fake_e1000* dev;
        std::uint32_t read32(std::uint32_t offset) const { return dev->read32(offset); }
        void write32(std::uint32_t offset, std::uint32_t v) const { dev->write32(offset, v); }
    };
    static_assert(toro::arch::mmio32_bus<bus>);

    explicit fake_e1000(options o = {}) : opt_{o}, regs_(register_space / 4) {
        for (unsigned k = 0; k < 3; ++k)
            eeprom_[k] = static_cast<std::uint16_t>(o.mac[2 * k] | o.mac[2 * k + 1] << 8);
        reset();
        resets_ = 0;
    }
    fake_e1000(const fake_e1000&) = delete;
    fake_e1000& operator=(const fake_e1000&) = delete;

    bus handle() { return {this}; }
    // The only host memory the device may DMA to or from (the driver object).
    void attach_memory(const void* base, std::size_t size) {
        mem_ = static_cast<const std::byte*>(base);
        mem_size_ = size;
    }

    // --- the wire ---------------------------------------------------------------------------------------

    // Puts one frame into the next descriptor the driver made available (or, with fault.unowned, into the
    // one it kept). False when the receiver is off, the link down, the filter says no, the frame is too
    // long, or no descriptor is free (then counted in missed() and ICR.RXO raised, as the 82540EM does).
    bool inject(std::span<const std::byte> frame, rx_fault fault = {}) {
        if (!receiving() || !passes_filter(frame)) return false;
        if (frame.size() > (rctl().lpe() ? 16384u : 1522u)) return false;
        const std::uint32_t n = rx_ring_size();
        std::uint32_t at;
        if (fault.unowned) {
            at = reg(off::rdt);
            if (at >= n) return false;
        } else {
            if (rx_free() == 0) return overrun();
            at = reg(off::rdh);
        }
        if (!write_rx(at, frame, !fault.no_eop, fault.errors, fault.length)) return false;
        if (!fault.unowned) set_reg(off::rdh, (at + 1) % n);
        received_done();
        return true;
    }

    // A frame spread over descriptors of `chunk` bytes, EOP on the last one only: what a device with long
    // packets on (or a hostile one) does. False, and nothing written, when too few descriptors are free.
    bool inject_split(std::span<const std::byte> frame, std::size_t chunk) {
        if (!receiving() || chunk == 0) return false;
        const std::size_t parts = (frame.size() + chunk - 1) / chunk;
        if (parts > rx_free()) return overrun();
        const std::uint32_t n = rx_ring_size();
        for (std::size_t p = 0; p < parts; ++p) {
            const std::uint32_t at = reg(off::rdh);
            const auto piece = frame.subspan(p * chunk, std::min(chunk, frame.size() - p * chunk));
            if (!write_rx(at, piece, p + 1 == parts, 0, -1)) return false;
            set_reg(off::rdh, (at + 1) % n);
        }
        received_done();
        return true;
    }

    // Frames the driver sent, in order, and the command byte of each one's last descriptor.
    std::vector<std::vector<std::byte>> sent;
    std::vector<std::uint8_t> sent_cmd;
    bool hold_tx = false;    // leave queued descriptors alone until process_tx()
    bool tx_skip_dd = false; // send, but never write DD back

    // Sends every descriptor between TDH and TDT.
    void process_tx() {
        if (!tctl().en()) return;
        const std::uint32_t n = tx_ring_size();
        if (n == 0) return;
        while (reg(off::tdh) != reg(off::tdt)) {
            const std::uint32_t h = reg(off::tdh);
            if (h >= n || reg(off::tdt) >= n) return violation("TDH/TDT outside the transmit ring");
            std::byte* d = dma(ring_base(off::tdbal) + std::uint64_t{h} * 16, 16);
            if (d == nullptr) return;
            std::uint64_t addr;
            std::uint16_t len;
            std::memcpy(&addr, d, 8);
            std::memcpy(&len, d + 8, 2);
            const std::uint8_t cmd = static_cast<std::uint8_t>(d[11]);
            if ((cmd & 0x20) != 0) violation("transmit descriptor with DEXT set (not a legacy descriptor)");
            if (len != 0) {
                const std::byte* b = dma(addr, len);
                if (b == nullptr) return;
                tx_frame_.insert(tx_frame_.end(), b, b + len);
            }
            if ((cmd & 0x01) != 0) { // EOP
                sent.push_back(std::move(tx_frame_));
                sent_cmd.push_back(cmd);
                tx_frame_.clear();
            }
            if ((cmd & 0x08) != 0 && !tx_skip_dd)
                d[12] = static_cast<std::byte>(static_cast<std::uint8_t>(d[12]) | 1);
            set_reg(off::tdh, (h + 1) % n);
            raise(toro::net::e1000_regs::interrupts{}.set_txdw(true));
        }
    }

    // STATUS.LU, and ICR.LSC when it changes.
    void set_link(bool up) {
        if (up != opt_.link_up) raise(toro::net::e1000_regs::interrupts{}.set_lsc(true));
        opt_.link_up = up;
        set_reg(off::status, toro::net::e1000_regs::status::from_value(reg(off::status)).set_lu(up).value());
    }

    // --- state for assertions --------------------------------------------------------------------------

    std::uint32_t reg(std::uint32_t offset) const { return regs_.at(offset / 4); } // no side effects
    bool irq() const { return (reg(off::icr) & reg(off::ims)) != 0; }              // the interrupt line
    std::uint64_t missed() const { return missed_; }
    std::uint32_t resets() const { return resets_; }
    std::uint32_t rx_ring_size() const { return reg(off::rdlen) / 16; }
    std::uint32_t tx_ring_size() const { return reg(off::tdlen) / 16; }
    // Receive descriptors the driver has made available and we have not filled (RDH up to RDT).
    std::uint32_t rx_free() const {
        const std::uint32_t n = rx_ring_size();
        if (n == 0 || reg(off::rdh) >= n || reg(off::rdt) >= n) return 0;
        return (reg(off::rdt) + n - reg(off::rdh)) % n;
    }
    std::vector<std::string> violations; // the driver's mistakes, as the device sees them
    std::uint16_t eeprom_[64] = {};      // words 0..2: the MAC; the rest reads 0
    std::uint32_t eerd_reads = 0;        // EERD reads, to check the driver polls

    std::uint32_t read32(std::uint32_t offset) {
        check_offset(offset);
        const std::uint32_t v = reg(offset);
        if (offset == off::icr) set_reg(off::icr, 0); // read clears
        if (offset == off::mpc) set_reg(off::mpc, 0);
        if (offset == off::eerd) ++eerd_reads;
        return v;
    }

    void write32(std::uint32_t offset, std::uint32_t v) {
        namespace r = toro::net::e1000_regs;
        check_offset(offset);
        switch (offset) {
        case off::ctrl:
            if (r::ctrl::from_value(v).rst()) {
                reset();
                set_reg(off::ctrl, opt_.reset_sticks ? reg(off::ctrl) | r::ctrl{}.set_rst(true).value()
                                                     : reg(off::ctrl));
                return;
            }
            set_reg(off::ctrl, v);
            return;
        case off::status:
            return; // read-only
        case off::icr:
            set_reg(off::icr, reg(off::icr) & ~v); // write 1 to clear
            return;
        case off::ics:
            raise(r::interrupts::from_value(v));
            return;
        case off::ims:
            set_reg(off::ims, reg(off::ims) | v);
            return;
        case off::imc:
            set_reg(off::ims, reg(off::ims) & ~v);
            return;
        case off::eerd: {
            const auto e = r::eerd::from_value(v);
            if (!e.start()) return set_reg(off::eerd, v);
            const std::uint32_t word = e.address();
            auto out = r::eerd{}.set_address(word);
            if (!opt_.eeprom_stuck) out.set_data(word < 64 ? eeprom_[word] : 0xffff).set_done(true);
            set_reg(off::eerd, out.value());
            return;
        }
        case off::rdbal:
        case off::tdbal:
            if (v % 16 != 0) violation("descriptor ring base not 16-byte aligned");
            break;
        case off::rdlen:
        case off::tdlen:
            if (v == 0 || v % 128 != 0) violation("descriptor ring length not a non-zero multiple of 128");
            break;
        case off::rdt:
            if (v >= rx_ring_size()) violation("RDT outside the receive ring");
            break;
        case off::tdt:
            if (v >= tx_ring_size()) violation("TDT outside the transmit ring");
            set_reg(off::tdt, v);
            if (!hold_tx) process_tx();
            return;
        default:
            break;
        }
        set_reg(offset, v);
    }

private:
    static constexpr std::uint32_t register_space = 0x20000; // the 82540EM's 128 KiB memory BAR

public:
    // Register offsets, spelled as numbers from the SDM's register summary rather than taken from the
    // driver's header: a wrong offset there makes the fake and the driver disagree.
    struct off {
        static constexpr std::uint32_t ctrl = 0x0000, status = 0x0008, eerd = 0x0014, icr = 0x00c0,
                                       ics = 0x00c8, ims = 0x00d0, imc = 0x00d8, rctl = 0x0100, tctl = 0x0400,
                                       rdbal = 0x2800, rdbah = 0x2804, rdlen = 0x2808, rdh = 0x2810,
                                       rdt = 0x2818, tdbal = 0x3800, tdbah = 0x3804, tdlen = 0x3808,
                                       tdh = 0x3810, tdt = 0x3818, mpc = 0x4010, ral0 = 0x5400, rah0 = 0x5404;
    };

private:
    void set_reg(std::uint32_t offset, std::uint32_t v) { regs_.at(offset / 4) = v; }

    void check_offset(std::uint32_t offset) {
        if (offset % 4 != 0 || offset >= register_space)
            violation("register access outside the BAR or unaligned");
    }

    void violation(const std::string& what) { violations.push_back(what); }

    // Power-on values (as QEMU's e1000 has them), and the receive address loaded from the EEPROM.
    void reset() {
        namespace r = toro::net::e1000_regs;
        std::fill(regs_.begin(), regs_.end(), 0);
        set_reg(off::ctrl, 0x00140240); // SWDPIN0/2, speed 1000, SLU
        set_reg(off::status, r::status{}.set_fd(true).set_lu(opt_.link_up).set_speed(2).value());
        if (opt_.mac_in_ral) {
            const auto& m = opt_.mac;
            set_reg(off::ral0, static_cast<std::uint32_t>(m[0] | m[1] << 8 | m[2] << 16) |
                                   static_cast<std::uint32_t>(m[3]) << 24);
            set_reg(
                off::rah0,
                r::rah{}.set_address_high(static_cast<std::uint32_t>(m[4] | m[5] << 8)).set_av(true).value());
        }
        tx_frame_.clear();
        ++resets_;
    }

    toro::net::e1000_regs::rctl rctl() const {
        return toro::net::e1000_regs::rctl::from_value(reg(off::rctl));
    }
    toro::net::e1000_regs::tctl tctl() const {
        return toro::net::e1000_regs::tctl::from_value(reg(off::tctl));
    }
    bool receiving() const { return rctl().en() && opt_.link_up && rx_ring_size() != 0; }

    std::uint64_t ring_base(std::uint32_t bal) const {
        return reg(bal) | static_cast<std::uint64_t>(reg(bal + 4)) << 32;
    }

    // Device address -> host pointer, only inside the attached memory.
    std::byte* dma(std::uint64_t addr, std::size_t len) {
        const std::uint64_t host = addr - offset_dma::offset;
        const auto base = reinterpret_cast<std::uintptr_t>(mem_);
        if (mem_ == nullptr || addr < offset_dma::offset || host < base || host - base > mem_size_ ||
            len > mem_size_ - (host - base)) {
            char buf[96];
            std::snprintf(buf, sizeof buf, "DMA outside the driver's memory: 0x%016llx, %zu bytes",
                          static_cast<unsigned long long>(addr), len);
            violation(buf);
            return nullptr;
        }
        return reinterpret_cast<std::byte*>(static_cast<std::uintptr_t>(host));
    }

    bool write_rx(std::uint32_t at, std::span<const std::byte> frame, bool eop, std::uint8_t errors,
                  std::int64_t length) {
        std::byte* d = dma(ring_base(off::rdbal) + std::uint64_t{at} * 16, 16);
        if (d == nullptr) return false;
        std::uint64_t addr;
        std::memcpy(&addr, d, 8);
        // With SECRC clear the device stores the 4-byte CRC too (here zeros) and counts it in the length.
        const std::size_t fcs = rctl().secrc() ? 0 : 4;
        const std::size_t stored = std::min<std::size_t>(frame.size() + fcs, rx_buffer_bytes());
        std::byte* b = dma(addr, stored);
        if (b == nullptr) return false;
        const std::size_t data = std::min(frame.size(), stored);
        if (data != 0) std::memcpy(b, frame.data(), data);
        std::memset(b + data, 0, stored - data);
        const auto len = static_cast<std::uint16_t>(length >= 0 ? length : static_cast<std::int64_t>(stored));
        std::memcpy(d + 8, &len, 2);
        d[10] = d[11] = std::byte{0}; // checksum
        d[13] = static_cast<std::byte>(errors);
        d[14] = d[15] = std::byte{0};
        // Status last: DD is what tells the driver the rest is there.
        d[12] = static_cast<std::byte>(eop ? 0x03 : 0x01);
        return true;
    }

    std::size_t rx_buffer_bytes() const {
        static constexpr std::size_t sizes[4] = {2048, 1024, 512, 256};
        const auto r = rctl();
        return sizes[r.bsize()] * (r.bsex() ? 16 : 1);
    }

    bool passes_filter(std::span<const std::byte> frame) const {
        if (!opt_.filter || frame.size() < 6) return true;
        const auto r = rctl();
        bool broadcast = true;
        for (std::size_t i = 0; i < 6; ++i) broadcast = broadcast && frame[i] == std::byte{0xff};
        if (broadcast) return r.bam() || r.mpe();
        if ((static_cast<std::uint8_t>(frame[0]) & 1) != 0) return r.mpe();
        if (r.upe()) return true;
        const auto high = toro::net::e1000_regs::rah::from_value(reg(off::rah0));
        if (!high.av()) return false;
        std::uint8_t ra[6];
        const std::uint32_t low = reg(off::ral0);
        for (unsigned k = 0; k < 4; ++k) ra[k] = static_cast<std::uint8_t>(low >> (8 * k));
        ra[4] = static_cast<std::uint8_t>(high.address_high());
        ra[5] = static_cast<std::uint8_t>(high.address_high() >> 8);
        for (std::size_t i = 0; i < 6; ++i)
            if (static_cast<std::uint8_t>(frame[i]) != ra[i]) return false;
        return true;
    }

    bool overrun() {
        ++missed_;
        set_reg(off::mpc, reg(off::mpc) + 1);
        raise(toro::net::e1000_regs::interrupts{}.set_rxo(true));
        return false;
    }

    void received_done() {
        auto cause = toro::net::e1000_regs::interrupts{}.set_rxt0(true);
        // RCTL.RDMTS 0: RXDMT0 when half the ring or less is left free.
        if (rx_free() <= rx_ring_size() / 2) cause.set_rxdmt0(true);
        raise(cause);
    }

    void raise(toro::net::e1000_regs::interrupts cause) { set_reg(off::icr, reg(off::icr) | cause.value()); }

    options opt_;
    std::vector<std::uint32_t> regs_;
    const std::byte* mem_ = nullptr;
    std::size_t mem_size_ = 0;
    std::vector<std::byte> tx_frame_; // descriptors of a frame not yet ended by EOP
    std::uint64_t missed_ = 0;
    std::uint32_t resets_ = 0;
};

} // namespace toro::testing
