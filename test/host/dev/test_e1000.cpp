// Host tests for the e1000 driver (toro::net::e1000): register encodings checked bit for bit against the
// 8254x SDM; the exact start() register transcript (reset and its wait, interrupt masking, link set-up, the
// station address from RAL0/RAH0 or from the EEPROM through EERD, the MTA, both rings, RCTL/TCTL/TIPG), its
// failures (a reset or an EEPROM read that never completes, a bad address), link status and the interrupt
// registers; then, against fake_e1000 (a behavioural 82540EM doing DMA through a non-identity translation):
// frames both ways byte-exact, rings wrapping over hundreds of frames, transmit back-pressure and reuse only
// after DD, refused lengths, hostile receive descriptors dropped and counted, a full receive ring, token
// rules (dropped, stale, single use, nested, across a restart) and interrupt causes.
#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include <toro/dev/net/e1000.hpp>
#include <toro/dev/net/mock_e1000.hpp>

namespace {

using namespace toro;
using net::e1000;
namespace regs = toro::net::e1000_regs;
namespace err = toro::net::e1000_error;
using testing::fake_e1000;
using testing::mock_e1000_bus;
using testing::offset_dma;
using bytes = std::vector<std::byte>;

// Small rings (8 descriptors: the minimum), so tests wrap them quickly.
using scripted = e1000<mock_e1000_bus::ref, 8, 8, offset_dma>;
using driver = e1000<fake_e1000::bus, 8, 8, offset_dma>;

static_assert(net_device<scripted>);
static_assert(net_device<driver>);
static_assert(net_device<e1000<arch::mmio_window, 256, 64>>);
static_assert(std::is_trivially_destructible_v<driver>);

std::string str(string_view s) {
    return {s.data(), s.size()};
}

constexpr mac_address qemu_mac{0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
constexpr mac_address broadcast{0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

// An Ethernet frame to `dst`, carrying `id` in bytes 12..15 (where the EtherType would start) and a pattern
// derived from id and position after it.
bytes make_frame(std::uint32_t id, std::size_t len = 60, mac_address dst = broadcast) {
    bytes f(len);
    for (std::size_t i = 0; i < len; ++i) {
        std::uint8_t b;
        if (i < 6)
            b = dst[i];
        else if (i < 12)
            b = i == 6 ? 0x02 : static_cast<std::uint8_t>(i);
        else if (i < 16)
            b = static_cast<std::uint8_t>(id >> (8 * (i - 12)));
        else
            b = static_cast<std::uint8_t>(id * 31 + i * 7 + (i >> 8));
        f[i] = static_cast<std::byte>(b);
    }
    return f;
}
std::uint32_t id_of(const bytes& f) {
    std::uint32_t id = 0;
    for (std::size_t i = 12; i < 16 && i < f.size(); ++i) id |= std::uint32_t(f[i]) << (8 * (i - 12));
    return id;
}

// Code that knows only the concept.
template <net_device D>
expected<void> send(D& nic, const bytes& frame) {
    auto t = nic.transmit();
    if (!t) return unexpected{"no transmit buffer"};
    return std::move(*t).consume(frame.size(), [&](std::span<std::byte> buf) {
        for (std::size_t i = 0; i < frame.size(); ++i) buf[i] = frame[i];
    });
}
template <net_device D>
maybe<bytes> recv(D& nic) {
    auto r = nic.receive();
    if (!r) return nothing;
    return std::move(r->rx).consume([](std::span<const std::byte> f) { return bytes(f.begin(), f.end()); });
}
template <net_device D>
std::vector<bytes> drain(D& nic) {
    std::vector<bytes> out;
    while (auto f = recv(nic)) out.push_back(std::move(*f));
    return out;
}

#define CHECK_TRANSCRIPT(bus)                                                                                \
    do {                                                                                                     \
        INFO((bus).report());                                                                                \
        CHECK((bus).done());                                                                                 \
    } while (0)

// --- the scripted start-up ------------------------------------------------------------------------------

constexpr std::uint32_t ctrl_after_reset = 0x00140240; // QEMU's: SWDPIN0/2, speed 1000, SLU

void expect_reset(mock_e1000_bus& bus, std::size_t busy_reads = 2) {
    bus.expect_read(0x0000, ctrl_after_reset)              // CTRL
        .expect_write(0x0000, ctrl_after_reset | 1u << 26) // | RST
        .expect_read(0x0000, ctrl_after_reset | 1u << 26, busy_reads)
        .expect_read(0x0000, ctrl_after_reset); // RST cleared: reset done
}

void expect_mask_and_link(mock_e1000_bus& bus) {
    bus.expect_write(0x00d8, 0xffffffff) // IMC: everything masked
        .expect_read(0x00c0, 0x00000004) // ICR read (clears)
        // CTRL with LRST (3), ILOS (7), VME (30) and PHY_RST (31) set: start clears them, sets ASDE (5) and
        // SLU (6), and keeps the rest.
        .expect_read(0x0000, ctrl_after_reset | 0xc0000088)
        .expect_write(0x0000, ctrl_after_reset | 0x20 | 0x40);
}

void expect_mac_from_ral(mock_e1000_bus& bus) {
    bus.expect_read(0x5400, 0x12005452)   // RAL0: 52:54:00:12
        .expect_read(0x5404, 0x80005634); // RAH0: 34:56, AV
}

// MTA cleared, rx ring and receiver, tx ring and transmitter.
void expect_rings(mock_e1000_bus& bus, const scripted& d) {
    const std::uint64_t rx = d.rx_ring_address(), tx = d.tx_ring_address();
    bus.expect_write_each(0x5200, 128, 0)
        .expect_write(0x2800, static_cast<std::uint32_t>(rx)) // RDBAL
        .expect_write(0x2804, static_cast<std::uint32_t>(rx >> 32))
        .expect_write(0x2808, 8 * 16)                         // RDLEN: 8 descriptors of 16 bytes
        .expect_write(0x2810, 0)                              // RDH
        .expect_write(0x2818, 7)                              // RDT: all but one descriptor to the device
        .expect_write(0x0100, 0x04008002)                     // RCTL: EN | BAM | SECRC, BSIZE 2048
        .expect_write(0x3800, static_cast<std::uint32_t>(tx)) // TDBAL
        .expect_write(0x3804, static_cast<std::uint32_t>(tx >> 32))
        .expect_write(0x3808, 8 * 16)      // TDLEN
        .expect_write(0x3810, 0)           // TDH
        .expect_write(0x3818, 0)           // TDT
        .expect_write(0x0400, 0x000400fa)  // TCTL: EN | PSP, CT 0x0f, COLD 0x40
        .expect_write(0x0410, 0x0060200a); // TIPG: 10 | 8 << 10 | 6 << 20
}

void expect_start(mock_e1000_bus& bus, const scripted& d) {
    expect_reset(bus);
    expect_mask_and_link(bus);
    expect_mac_from_ral(bus);
    expect_rings(bus, d);
}

// --- the fake device ------------------------------------------------------------------------------------

std::string joined(const std::vector<std::string>& v) {
    std::string out;
    for (const std::string& s : v) out += s + "\n";
    return out;
}

template <std::size_t Rx = 8, std::size_t Tx = 8>
struct rig {
    using nic_type = e1000<fake_e1000::bus, Rx, Tx, offset_dma>;
    fake_e1000 dev;
    std::unique_ptr<nic_type> owner = std::make_unique<nic_type>();
    nic_type& nic = *owner;

    explicit rig(fake_e1000::options o = {}, bool start = true) : dev{o} {
        dev.attach_memory(owner.get(), sizeof(nic_type));
        if (start) {
            auto ok = nic.start(dev.handle());
            INFO((ok ? std::string{} : str(ok.error().what)));
            REQUIRE(ok);
        }
    }
};

#define CHECK_DEVICE(r)                                                                                      \
    do {                                                                                                     \
        INFO(joined((r).dev.violations));                                                                    \
        CHECK((r).dev.violations.empty());                                                                   \
    } while (0)

} // namespace

// The driver compiles against the bare concept of a bus.
template class toro::net::e1000<mock_e1000_bus::ref, 8, 8, offset_dma>;

TEST_CASE("e1000: register offsets and encodings follow the 8254x SDM", "[e1000]") {
    namespace o = regs::offset;
    CHECK(o::ctrl == 0x0000);
    CHECK(o::status == 0x0008);
    CHECK(o::eerd == 0x0014);
    CHECK(o::icr == 0x00c0);
    CHECK(o::ims == 0x00d0);
    CHECK(o::imc == 0x00d8);
    CHECK(o::rctl == 0x0100);
    CHECK(o::tctl == 0x0400);
    CHECK(o::tipg == 0x0410);
    CHECK(o::rdbal == 0x2800);
    CHECK(o::rdt == 0x2818);
    CHECK(o::tdbal == 0x3800);
    CHECK(o::tdt == 0x3818);
    CHECK(o::mta_entry(127) == 0x53fc);
    CHECK(o::ral0 == 0x5400);
    CHECK(o::rah0 == 0x5404);

    CHECK(regs::ctrl{}.set_rst(true).value() == 0x04000000);
    CHECK(regs::ctrl{}.set_slu(true).set_asde(true).value() == 0x60);
    CHECK(regs::ctrl{}.set_lrst(true).set_ilos(true).set_vme(true).set_phy_rst(true).value() == 0xc0000088);
    CHECK(regs::status::from_value(0x2).lu());
    CHECK_FALSE(regs::status::from_value(0x80000081).lu());

    CHECK(scripted::rctl_value.value() == 0x04008002);
    CHECK(scripted::tctl_value.value() == 0x000400fa);
    CHECK(scripted::tipg_value.value() == 0x0060200a);
    CHECK(scripted::wanted_interrupts.value() == 0xd5); // TXDW | LSC | RXDMT0 | RXO | RXT0
    CHECK(regs::rctl{}.set_upe(true).set_mpe(true).set_lpe(true).value() == 0x38);
    CHECK(regs::rctl{}.set_bsex(true).set_bsize(3).value() == 0x02030000);

    // EERD on the 82540EM: start bit 0, done bit 4, address 15:8, data 31:16.
    CHECK(regs::eerd{}.set_address(2).set_start(true).value() == 0x00000201);
    const auto e = regs::eerd::from_value(0x56340210);
    CHECK(e.done());
    CHECK(e.address() == 2);
    CHECK(e.data() == 0x5634);
    CHECK_FALSE(regs::eerd::from_value(0x56340201).done());
    CHECK(regs::rah{}.set_address_high(0x5634).set_av(true).value() == 0x80005634);

    CHECK(regs::tx_cmd{}.set_eop(true).set_ifcs(true).set_rs(true).value() == 0x0b);
    CHECK(regs::tx_cmd{}.set_dext(true).value() == 0x20);
    CHECK(regs::tx_status::from_value(0x01).dd());
    CHECK(regs::rx_status{}.set_dd(true).set_eop(true).value() == 0x03);
    for (std::uint8_t bit : {0x01, 0x02, 0x04, 0x10, 0x80})
        CHECK(regs::rx_errors::from_value(bit).frame_error());
    CHECK_FALSE(regs::rx_errors::from_value(0x60).frame_error()); // TCPE | IPE: checksum verdicts only
    CHECK_FALSE(regs::rx_errors::from_value(0x08).frame_error()); // reserved
}

TEST_CASE("e1000: start, exact transcript, station address from RAL0/RAH0", "[e1000]") {
    mock_e1000_bus bus;
    auto d = std::make_unique<scripted>();
    expect_start(bus, *d);
    auto ok = d->start(bus.handle());
    INFO((ok ? std::string{} : str(ok.error().what)));
    REQUIRE(ok);
    CHECK_TRANSCRIPT(bus);
    CHECK(bus.accesses() == 5 + 4 + 2 + 128 + 13);
    CHECK(d->started());
    CHECK(d->mac() == qemu_mac);
    CHECK(d->mtu() == 1514);

    // The rings are inside the driver object, translated, 128-byte aligned, and apart.
    const std::uint64_t lo = reinterpret_cast<std::uintptr_t>(d.get()) + offset_dma::offset;
    for (std::uint64_t a : {d->rx_ring_address(), d->tx_ring_address()}) {
        CHECK(a >= lo);
        CHECK(a + 8 * 16 <= lo + sizeof(scripted));
        CHECK(a % 128 == 0);
        CHECK((a >> 32) != 0); // the high halves were really written (offset_dma sets high bits)
    }
    CHECK(d->tx_ring_address() >= d->rx_ring_address() + 8 * 16);
}

TEST_CASE("e1000: start reads the station address from the EEPROM when RAH0.AV is clear", "[e1000]") {
    mock_e1000_bus bus;
    auto d = std::make_unique<scripted>();
    expect_reset(bus);
    expect_mask_and_link(bus);
    bus.expect_read(0x5400, 0)
        .expect_read(0x5404, 0)           // no AV: nothing loaded
        .expect_write(0x0014, 0x00000001) // EERD: word 0, START
        .expect_read(0x0014, 0x00000000, 3)
        .expect_read(0x0014, 0x54520010) // DONE, data 0x5452: bytes 52 54
        .expect_write(0x0014, 0x00000101)
        .expect_read(0x0014, 0x12000110) // bytes 00 12
        .expect_write(0x0014, 0x00000201)
        .expect_read(0x0014, 0x56340210)   // bytes 34 56
        .expect_write(0x5400, 0x12005452)  // RAL0
        .expect_write(0x5404, 0x80005634); // RAH0 with AV: the filter now passes our unicast frames
    expect_rings(bus, *d);
    REQUIRE(d->start(bus.handle()));
    CHECK_TRANSCRIPT(bus);
    CHECK(d->mac() == qemu_mac);
}

TEST_CASE("e1000: a reset that never completes is an error, and nothing else is touched", "[e1000]") {
    mock_e1000_bus bus;
    auto d = std::make_unique<scripted>();
    bus.expect_read(0x0000, 0)
        .expect_write(0x0000, 0x04000000)
        .expect_read(0x0000, 0x04000000, scripted::reset_spins);
    auto ok = d->start(bus.handle());
    REQUIRE_FALSE(ok);
    CHECK(ok.error().what == err::reset_timeout);
    CHECK(ok.error().value == scripted::reset_spins);
    CHECK_TRANSCRIPT(bus);
    CHECK_FALSE(d->started());
    CHECK_FALSE(d->receive());
    CHECK_FALSE(d->transmit());
    CHECK_FALSE(d->has_frame());
    CHECK(bus.accesses() == 2 + scripted::reset_spins); // no access after giving up
}

TEST_CASE("e1000: an EEPROM read that never completes is an error", "[e1000]") {
    mock_e1000_bus bus;
    auto d = std::make_unique<scripted>();
    expect_reset(bus, 0);
    expect_mask_and_link(bus);
    bus.expect_read(0x5400, 0)
        .expect_read(0x5404, 0)
        .expect_write(0x0014, 0x00000001)
        .expect_read(0x0014, 0x00000000, scripted::eeprom_spins);
    auto ok = d->start(bus.handle());
    REQUIRE_FALSE(ok);
    CHECK(ok.error().what == err::eeprom_timeout);
    CHECK(ok.error().value == 0);
    CHECK_TRANSCRIPT(bus);
    CHECK_FALSE(d->started());
}

TEST_CASE("e1000: a multicast or zero station address is refused", "[e1000]") {
    SECTION("multicast bit set in RAL0") {
        mock_e1000_bus bus;
        auto d = std::make_unique<scripted>();
        expect_reset(bus, 0);
        expect_mask_and_link(bus);
        bus.expect_read(0x5400, 0x12005401).expect_read(0x5404, 0x80005634);
        auto ok = d->start(bus.handle());
        REQUIRE_FALSE(ok);
        CHECK(ok.error().what == err::bad_mac);
        CHECK(ok.error().value == 0x12005401);
        CHECK_TRANSCRIPT(bus);
    }
    SECTION("all zero from the EEPROM: not written back") {
        mock_e1000_bus bus;
        auto d = std::make_unique<scripted>();
        expect_reset(bus, 0);
        expect_mask_and_link(bus);
        bus.expect_read(0x5400, 0).expect_read(0x5404, 0);
        for (std::uint32_t w = 0; w < 3; ++w)
            bus.expect_write(0x0014, w << 8 | 1).expect_read(0x0014, w << 8 | 0x10);
        auto ok = d->start(bus.handle());
        REQUIRE_FALSE(ok);
        CHECK(ok.error().what == err::bad_mac);
        CHECK_TRANSCRIPT(bus);
        CHECK_FALSE(d->started());
    }
}

TEST_CASE("e1000: link status, interrupt causes, enable and disable", "[e1000]") {
    mock_e1000_bus bus;
    auto d = std::make_unique<scripted>();
    expect_start(bus, *d);
    REQUIRE(d->start(bus.handle()));
    bus.expect_read(0x0008, 0x80080783)   // STATUS: LU set (and QEMU's other bits)
        .expect_read(0x0008, 0x80080781)  // LU clear
        .expect_write(0x00d0, 0x000000d5) // IMS: RXT0 | RXO | RXDMT0 | LSC | TXDW
        .expect_read(0x00c0, 0x00000084)  // ICR: RXT0 | LSC
        .expect_read(0x00c0, 0x00000000)
        .expect_write(0x00d0, 0x00000080)  // IMS: RXT0 only
        .expect_write(0x00d8, 0xffffffff); // IMC: all
    CHECK(d->link_up());
    CHECK_FALSE(d->link_up());
    d->enable_interrupts();
    const auto cause = d->interrupt_cause();
    CHECK(cause.rxt0());
    CHECK(cause.lsc());
    CHECK_FALSE(cause.txdw());
    CHECK_FALSE(cause.rxo());
    CHECK(d->interrupt_cause().value() == 0);
    d->enable_interrupts(regs::interrupts{}.set_rxt0(true));
    d->disable_interrupts();
    CHECK_TRANSCRIPT(bus);
}

TEST_CASE("e1000: start against the fake leaves a working device", "[e1000]") {
    rig<> r;
    CHECK(r.nic.mac() == qemu_mac);
    CHECK(r.dev.resets() == 1);
    CHECK(r.dev.reg(0x0100) == 0x04008002);
    CHECK(r.dev.reg(0x0400) == 0x000400fa);
    CHECK(r.dev.reg(0x0410) == 0x0060200a);
    CHECK(r.dev.reg(0x00d0) == 0); // interrupts masked until asked for
    CHECK(r.dev.rx_free() == 7);
    CHECK(r.nic.link_up());
    CHECK_FALSE(r.nic.has_frame());
    CHECK_FALSE(r.nic.receive());
    CHECK(r.nic.tx_in_flight() == 0);
    CHECK_DEVICE(r);
}

TEST_CASE("e1000: an EEPROM-only address is programmed into RAL0/RAH0 so unicast frames pass", "[e1000]") {
    fake_e1000::options o;
    o.mac = {0x02, 0x11, 0x22, 0x33, 0x44, 0x55};
    o.mac_in_ral = false;
    rig<> r{o};
    CHECK(r.nic.mac() == o.mac);
    CHECK(r.dev.eerd_reads >= 3);
    CHECK(r.dev.reg(0x5400) == 0x33221102);
    CHECK(r.dev.reg(0x5404) == 0x80005544);
    CHECK(r.dev.inject(make_frame(1, 60, o.mac)));
    CHECK_FALSE(r.dev.inject(make_frame(2, 60, {0x02, 0x11, 0x22, 0x33, 0x44, 0x56}))); // not ours
    auto f = recv(r.nic);
    REQUIRE(f);
    CHECK(*f == make_frame(1, 60, o.mac));
    CHECK_DEVICE(r);
}

TEST_CASE("e1000: frames both ways, byte-exact", "[e1000]") {
    rig<> r;
    const std::size_t tx_lengths[] = {1, 14, 60, 61, 1000, 1514};
    for (std::size_t i = 0; i < std::size(tx_lengths); ++i) {
        REQUIRE(send(r.nic, make_frame(static_cast<std::uint32_t>(i), tx_lengths[i])));
        REQUIRE(r.dev.sent.size() == i + 1);
        CHECK(r.dev.sent[i] == make_frame(static_cast<std::uint32_t>(i), tx_lengths[i]));
        CHECK(r.dev.sent_cmd[i] == 0x0b); // EOP | IFCS | RS, legacy
    }
    CHECK(r.nic.tx_frames() == std::size(tx_lengths));

    // Several frames waiting at once: each descriptor has its own buffer.
    const std::size_t rx_lengths[] = {14, 60, 1514, 100, 1513};
    for (std::size_t i = 0; i < std::size(rx_lengths); ++i)
        REQUIRE(r.dev.inject(make_frame(100 + static_cast<std::uint32_t>(i), rx_lengths[i])));
    CHECK(r.nic.has_frame());
    const auto got = drain(r.nic);
    REQUIRE(got.size() == std::size(rx_lengths));
    for (std::size_t i = 0; i < got.size(); ++i)
        CHECK(got[i] == make_frame(100 + static_cast<std::uint32_t>(i), rx_lengths[i]));
    CHECK(r.nic.rx_frames() == std::size(rx_lengths));
    CHECK(r.nic.rx_dropped() == 0);
    CHECK(r.dev.rx_free() == 7); // every buffer back with the device
    CHECK_DEVICE(r);
}

TEST_CASE("e1000: both rings wrap over hundreds of frames", "[e1000]") {
    rig<> r;
    std::vector<bytes> received;
    constexpr std::uint32_t frames = 600;
    for (std::uint32_t i = 0; i < frames; ++i) {
        const std::size_t len = 14 + (i * 37) % 1501;
        REQUIRE(r.dev.inject(make_frame(i, len)));
        REQUIRE(send(r.nic, make_frame(i, len)));
        if (i % 5 == 4 || i + 1 == frames)
            for (auto& f : drain(r.nic)) received.push_back(std::move(f));
    }
    REQUIRE(received.size() == frames);
    REQUIRE(r.dev.sent.size() == frames);
    for (std::uint32_t i = 0; i < frames; ++i) {
        const std::size_t len = 14 + (i * 37) % 1501;
        CHECK(received[i] == make_frame(i, len));
        CHECK(r.dev.sent[i] == make_frame(i, len));
    }
    CHECK(r.nic.rx_frames() == frames);
    CHECK(r.nic.tx_frames() == frames);
    CHECK(r.nic.rx_dropped() == 0);
    CHECK(r.nic.tx_in_flight() == 0);
    CHECK(r.dev.reg(0x3818) == frames % 8); // TDT: one step per frame, wrapped
    CHECK_DEVICE(r);
}

TEST_CASE("e1000: transmit back-pressure at TxCount - 1 in flight, recovery once DD is written", "[e1000]") {
    rig<> r;
    r.dev.hold_tx = true;
    for (std::uint32_t i = 0; i < 6; ++i) REQUIRE(send(r.nic, make_frame(i)));
    CHECK(r.nic.tx_in_flight() == 6);
    auto a = r.nic.transmit();
    auto b = r.nic.transmit(); // both made while one descriptor is free
    REQUIRE(a);
    REQUIRE(b);
    REQUIRE(std::move(*a).consume(60, [](std::span<std::byte> buf) {
        const bytes f = make_frame(6);
        for (std::size_t i = 0; i < f.size(); ++i) buf[i] = f[i];
    }));
    CHECK(r.nic.tx_in_flight() == 7);
    CHECK_FALSE(r.nic.transmit()); // head == tail would mean "empty": the eighth descriptor stays unused
    bool called = false;
    auto full = std::move(*b).consume(60, [&](std::span<std::byte>) { called = true; });
    REQUIRE_FALSE(full);
    CHECK(full.error().what == err::tx_full);
    CHECK(full.error().value == 7);
    CHECK_FALSE(called);
    CHECK(r.dev.sent.empty());
    CHECK(r.dev.reg(0x3818) == 7); // TDT

    r.dev.process_tx(); // the device catches up and writes DD back
    REQUIRE(r.dev.sent.size() == 7);
    CHECK(r.nic.tx_in_flight() == 0);
    for (std::uint32_t i = 7; i < 14; ++i) REQUIRE(send(r.nic, make_frame(i)));
    CHECK_FALSE(r.nic.transmit());
    r.dev.process_tx();
    REQUIRE(r.dev.sent.size() == 14);
    for (std::uint32_t i = 0; i < 14; ++i) CHECK(id_of(r.dev.sent[i]) == i);
    CHECK(r.nic.tx_frames() == 14);
    CHECK_DEVICE(r);
}

TEST_CASE("e1000: a transmit descriptor is reused only after the device wrote DD", "[e1000]") {
    rig<> r;
    r.dev.tx_skip_dd = true; // the device sends, TDH catches up with TDT, but no DD comes back
    for (std::uint32_t i = 0; i < 7; ++i) REQUIRE(send(r.nic, make_frame(i)));
    CHECK(r.dev.sent.size() == 7);
    CHECK(r.dev.reg(0x3810) == r.dev.reg(0x3818)); // TDH == TDT
    CHECK_FALSE(r.nic.transmit());
    CHECK(r.nic.tx_in_flight() == 7);
    CHECK_DEVICE(r);
}

TEST_CASE("e1000: empty and oversize transmits are refused without calling f", "[e1000]") {
    rig<> r;
    bool called = false;
    auto f = [&](std::span<std::byte>) { called = true; };
    auto t0 = r.nic.transmit();
    REQUIRE(t0);
    auto empty = std::move(*t0).consume(0, f);
    REQUIRE_FALSE(empty);
    CHECK(str(empty.error().what) == "empty frame");
    auto t1 = r.nic.transmit();
    REQUIRE(t1);
    auto big = std::move(*t1).consume(1515, f);
    REQUIRE_FALSE(big);
    CHECK(big.error().value == 1515);
    CHECK_FALSE(called);
    CHECK(r.dev.sent.empty());
    CHECK(r.dev.reg(0x3818) == 0);
    CHECK(r.nic.tx_frames() == 0);

    auto t2 = r.nic.transmit();
    REQUIRE(t2);
    auto ok = std::move(*t2).consume(1514, [](std::span<std::byte> buf) { return buf.size(); });
    REQUIRE(ok);
    CHECK(*ok == 1514);
    REQUIRE(r.dev.sent.size() == 1);
    CHECK(r.dev.sent[0].size() == 1514);
    CHECK_DEVICE(r);
}

TEST_CASE("e1000: hostile receive descriptors are dropped and counted, good frames still arrive", "[e1000]") {
    rig<> r;
    using fault = fake_e1000::rx_fault;
    SECTION("error bits and bad lengths") {
        REQUIRE(r.dev.inject(make_frame(1)));
        REQUIRE(r.dev.inject(make_frame(90), fault{.errors = 0x01})); // CE
        REQUIRE(r.dev.inject(make_frame(91), fault{.errors = 0x80})); // RXE
        REQUIRE(r.dev.inject(make_frame(92), fault{.length = 0}));
        REQUIRE(r.dev.inject(make_frame(93), fault{.length = 2049})); // past the buffer
        REQUIRE(r.dev.inject(make_frame(94), fault{.length = 65535}));
        REQUIRE(r.dev.inject(make_frame(2)));
        CHECK(r.dev.rx_free() == 0);
        const auto got = drain(r.nic);
        REQUIRE(got.size() == 2);
        CHECK(got[0] == make_frame(1));
        CHECK(got[1] == make_frame(2));
        CHECK(r.nic.rx_dropped_errors() == 2);
        CHECK(r.nic.rx_dropped_length() == 3);
        CHECK(r.nic.rx_dropped_fragmented() == 0);
        CHECK(r.dev.rx_free() == 7); // dropped buffers went back too

        // Checksum verdicts are not frame errors: the stack checks checksums itself.
        REQUIRE(r.dev.inject(make_frame(3), fault{.errors = 0x60}));
        auto f = recv(r.nic);
        REQUIRE(f);
        CHECK(*f == make_frame(3));
    }
    SECTION("a frame spread over descriptors is dropped whole") {
        REQUIRE(r.dev.inject_split(make_frame(80, 3000), 2048)); // two descriptors, EOP on the second
        REQUIRE(r.dev.inject(make_frame(4)));
        const auto got = drain(r.nic);
        REQUIRE(got.size() == 1);
        CHECK(got[0] == make_frame(4));
        CHECK(r.nic.rx_dropped_fragmented() == 1);

        REQUIRE(r.dev.inject_split(make_frame(81, 5000), 1024)); // five pieces
        REQUIRE(r.dev.inject(make_frame(5)));
        const auto got2 = drain(r.nic);
        REQUIRE(got2.size() == 1);
        CHECK(got2[0] == make_frame(5));
        CHECK(r.nic.rx_dropped_fragmented() == 2);
    }
    SECTION("DD without EOP: the next descriptor is taken as the rest of that frame") {
        REQUIRE(r.dev.inject(make_frame(82), fault{.no_eop = true}));
        REQUIRE(r.dev.inject(make_frame(83))); // ends the broken frame as far as the driver can tell
        REQUIRE(r.dev.inject(make_frame(6)));
        const auto got = drain(r.nic);
        REQUIRE(got.size() == 1);
        CHECK(got[0] == make_frame(6));
        CHECK(r.nic.rx_dropped_fragmented() == 1);
    }
    SECTION("a descriptor rewritten between receive() and consume is not handed over") {
        REQUIRE(r.dev.inject(make_frame(7)));
        auto tok = r.nic.receive();
        REQUIRE(tok);
        REQUIRE(r.dev.inject(make_frame(8)));
        // The device rewrites descriptor 0 (done, its token out) with a length past the buffer.
        auto* desc0 = reinterpret_cast<regs::rx_desc*>(r.nic.rx_ring_address() - offset_dma::offset);
        desc0->length = 4000;
        std::size_t seen = 99;
        std::move(tok->rx).consume([&](std::span<const std::byte> f) { seen = f.size(); });
        CHECK(seen == 0);
        CHECK(r.nic.rx_dropped_length() == 1);
        auto f = recv(r.nic);
        REQUIRE(f);
        CHECK(*f == make_frame(8));
    }
    CHECK(r.nic.rx_frames() + r.nic.rx_dropped() > 0);
    CHECK_DEVICE(r);
}

TEST_CASE("e1000: DD on the descriptor the driver kept back is never delivered", "[e1000]") {
    rig<> r;
    // Descriptor 7 is at RDT: not the device's. A device writing it anyway must not produce a frame.
    REQUIRE(r.dev.inject(make_frame(666), fake_e1000::rx_fault{.unowned = true}));
    CHECK_FALSE(r.nic.has_frame());
    CHECK_FALSE(r.nic.receive());
    // Fill the ring, then take the frames one by one: taking frame 0 hands descriptor 7 over (re-armed).
    for (std::uint32_t i = 0; i < 7; ++i) REQUIRE(r.dev.inject(make_frame(i)));
    for (std::uint32_t i = 0; i < 7; ++i) {
        auto f = recv(r.nic);
        REQUIRE(f);
        CHECK(id_of(*f) == i);
    }
    // Descriptor 7 is next, and the device has written nothing into it since it got it.
    CHECK_FALSE(r.nic.has_frame());
    CHECK_FALSE(r.nic.receive());
    for (std::uint32_t i = 7; i < 30; ++i) {
        REQUIRE(r.dev.inject(make_frame(i)));
        auto f = recv(r.nic);
        REQUIRE(f);
        CHECK(id_of(*f) == i);
    }
    CHECK(r.nic.rx_frames() == 30);
    CHECK(r.nic.rx_dropped() == 0);
    CHECK_DEVICE(r);
}

TEST_CASE("e1000: a full receive ring stops the device until frames are taken", "[e1000]") {
    rig<> r;
    for (std::uint32_t i = 0; i < 7; ++i) REQUIRE(r.dev.inject(make_frame(i)));
    CHECK(r.dev.rx_free() == 0);
    CHECK_FALSE(r.dev.inject(make_frame(7))); // lost on the wire
    CHECK(r.dev.missed() == 1);
    CHECK(regs::interrupts::from_value(r.dev.reg(0x00c0)).rxo());
    auto f = recv(r.nic);
    REQUIRE(f);
    CHECK(id_of(*f) == 0);
    CHECK(r.dev.rx_free() == 1);
    REQUIRE(r.dev.inject(make_frame(8)));
    std::vector<std::uint32_t> ids;
    for (const auto& g : drain(r.nic)) ids.push_back(id_of(g));
    CHECK(ids == std::vector<std::uint32_t>{1, 2, 3, 4, 5, 6, 8});
    CHECK(r.dev.missed() == 1);
    CHECK_DEVICE(r);
}

TEST_CASE("e1000: token rules", "[e1000]") {
    rig<> r;
    SECTION("a dropped rx token leaves its frame; a second token for it goes stale") {
        REQUIRE(r.dev.inject(make_frame(1)));
        REQUIRE(r.dev.inject(make_frame(2)));
        {
            auto dropped = r.nic.receive();
            REQUIRE(dropped);
        }
        CHECK(r.nic.has_frame());
        auto a = r.nic.receive();
        auto b = r.nic.receive(); // the same frame
        REQUIRE(a);
        REQUIRE(b);
        auto rx = std::move(a->rx);
        CHECK(std::move(rx).consume(
                  [](std::span<const std::byte> f) { return id_of(bytes(f.begin(), f.end())); }) == 1);
        // Used again, and the other token for the same frame: stale, f sees nothing, frame 2 stays.
        CHECK(std::move(rx).consume([](std::span<const std::byte> f) { return f.size() + 1000; }) == 1000);
        CHECK(std::move(b->rx).consume([](std::span<const std::byte> f) { return f.size() + 1000; }) == 1000);
        auto f = recv(r.nic);
        REQUIRE(f);
        CHECK(id_of(*f) == 2);
        CHECK(r.nic.rx_frames() == 2);
    }
    SECTION("a tx token is single use") {
        auto t = r.nic.transmit();
        REQUIRE(t);
        auto tx = std::move(*t);
        REQUIRE(std::move(tx).consume(10, [](std::span<std::byte>) {}));
        auto again = std::move(tx).consume(10, [](std::span<std::byte>) {});
        REQUIRE_FALSE(again);
        CHECK(again.error().what == err::tx_used);
        CHECK(r.dev.sent.size() == 1);
    }
    SECTION("a transmit inside another transmit's callback is refused; the outer one is sent") {
        auto outer = r.nic.transmit();
        auto inner = r.nic.transmit();
        REQUIRE(outer);
        REQUIRE(inner);
        auto res = std::move(*outer).consume(20, [&](std::span<std::byte> buf) -> expected<int> {
            for (auto& b : buf) b = std::byte{0xab};
            auto in = std::move(*inner).consume(20, [](std::span<std::byte>) {});
            if (in) return unexpected{"inner transmit went through"};
            if (in.error().what != err::tx_nested) return unexpected{in.error()};
            return 5;
        });
        REQUIRE(res);
        CHECK(*res == 5);
        REQUIRE(r.dev.sent.size() == 1);
        CHECK(r.dev.sent[0] == bytes(20, std::byte{0xab}));
    }
    SECTION("the tx token that comes with a frame answers it, from inside the rx callback") {
        REQUIRE(r.dev.inject(make_frame(41, 80)));
        auto got = r.nic.receive();
        REQUIRE(got);
        auto tx = std::move(got->tx);
        auto echoed = std::move(got->rx).consume([&](std::span<const std::byte> f) {
            CHECK_FALSE(r.nic.receive()); // one rx token at a time: none while this frame is out
            return std::move(tx).consume(f.size(), [&](std::span<std::byte> buf) {
                for (std::size_t i = 0; i < f.size(); ++i) buf[i] = f[i];
            });
        });
        REQUIRE(echoed);
        REQUIRE(r.dev.sent.size() == 1);
        CHECK(r.dev.sent[0] == make_frame(41, 80));
    }
    SECTION("start() again resets the device and makes every earlier token stale") {
        REQUIRE(r.dev.inject(make_frame(9)));
        auto got = r.nic.receive();
        REQUIRE(got);
        auto t = r.nic.transmit();
        REQUIRE(t);
        REQUIRE(r.nic.start(r.dev.handle()));
        CHECK(r.dev.resets() == 2);
        CHECK(r.dev.rx_free() == 7);
        CHECK(std::move(got->rx).consume([](std::span<const std::byte> f) { return f.size(); }) == 0);
        auto stale = std::move(*t).consume(10, [](std::span<std::byte>) {});
        REQUIRE_FALSE(stale);
        CHECK(stale.error().what == err::tx_stale);
        CHECK_FALSE(r.nic.receive()); // the frame that waited went with the reset
        REQUIRE(r.dev.inject(make_frame(10)));
        auto f = recv(r.nic);
        REQUIRE(f);
        CHECK(id_of(*f) == 10);
        REQUIRE(send(r.nic, make_frame(11)));
        REQUIRE(r.dev.sent.size() == 1);
        CHECK(id_of(r.dev.sent[0]) == 11);
    }
    CHECK_DEVICE(r);
}

TEST_CASE("e1000: interrupt causes against the fake", "[e1000]") {
    rig<> r;
    REQUIRE(r.dev.inject(make_frame(1)));
    CHECK_FALSE(r.dev.irq()); // masked since start()
    r.nic.enable_interrupts();
    CHECK(r.dev.reg(0x00d0) == 0xd5);
    CHECK(r.dev.irq()); // the cause was pending
    auto c = r.nic.interrupt_cause();
    CHECK(c.rxt0());
    CHECK_FALSE(c.txdw());
    CHECK_FALSE(r.dev.irq()); // reading ICR acknowledged it
    REQUIRE(recv(r.nic));

    REQUIRE(send(r.nic, make_frame(2)));
    CHECK(r.dev.irq());
    c = r.nic.interrupt_cause();
    CHECK(c.txdw());
    CHECK_FALSE(c.rxt0());

    r.dev.set_link(false);
    CHECK(r.dev.irq());
    CHECK(r.nic.interrupt_cause().lsc());
    CHECK_FALSE(r.nic.link_up());
    CHECK_FALSE(r.dev.inject(make_frame(3))); // no link, no frames
    r.dev.set_link(true);
    CHECK(r.nic.link_up());

    r.nic.disable_interrupts();
    CHECK(r.dev.reg(0x00d0) == 0);
    REQUIRE(r.dev.inject(make_frame(4)));
    CHECK_FALSE(r.dev.irq());
    CHECK(r.nic.has_frame());
    CHECK_DEVICE(r);
}

TEST_CASE("e1000: start failures against the fake", "[e1000]") {
    SECTION("reset never clears") {
        fake_e1000::options o;
        o.reset_sticks = true;
        rig<> r{o, false};
        auto ok = r.nic.start(r.dev.handle());
        REQUIRE_FALSE(ok);
        CHECK(ok.error().what == err::reset_timeout);
        CHECK_FALSE(r.nic.transmit());
        CHECK_FALSE(r.dev.inject(make_frame(1))); // the receiver was never enabled
    }
    SECTION("EEPROM never answers") {
        fake_e1000::options o;
        o.mac_in_ral = false;
        o.eeprom_stuck = true;
        rig<> r{o, false};
        auto ok = r.nic.start(r.dev.handle());
        REQUIRE_FALSE(ok);
        CHECK(ok.error().what == err::eeprom_timeout);
        CHECK(r.dev.eerd_reads == scripted::eeprom_spins);
    }
}

TEST_CASE("e1000: larger rings, the kernel's default sizes", "[e1000]") {
    rig<32, 32> r;
    CHECK(r.dev.rx_free() == 31);
    CHECK(r.dev.rx_ring_size() == 32);
    CHECK(r.dev.tx_ring_size() == 32);
    for (std::uint32_t i = 0; i < 31; ++i) REQUIRE(r.dev.inject(make_frame(i, 1514)));
    CHECK_FALSE(r.dev.inject(make_frame(31)));
    const auto got = drain(r.nic);
    REQUIRE(got.size() == 31);
    for (std::uint32_t i = 0; i < 31; ++i) CHECK(got[i] == make_frame(i, 1514));
    r.dev.hold_tx = true;
    for (std::uint32_t i = 0; i < 31; ++i) REQUIRE(send(r.nic, make_frame(i)));
    CHECK_FALSE(r.nic.transmit());
    r.dev.process_tx();
    CHECK(r.dev.sent.size() == 31);
    CHECK(r.nic.transmit());
    CHECK_DEVICE(r);
}
