// Register definitions of the Intel 8254x gigabit controllers as the e1000 driver uses them (82540EM: QEMU's
// `-device e1000`, PCI 8086:100e): register offsets, typed register values with named bit fields
// (toro::reg_value), and the legacy receive and transmit descriptors. Section names refer to the "PCI/PCI-X
// Family of Gigabit Ethernet Controllers Software Developer's Manual" (8254x SDM): the "Register
// Descriptions" chapter, and "Receive and Transmit Description" for the descriptors. Only what the driver
// touches is named; reserved bits are left out.
#pragma once

#include <cstdint>

#include <toro/base/bitfield.hpp>

namespace toro::net::e1000_regs {

inline constexpr std::uint16_t pci_vendor_intel = 0x8086;
inline constexpr std::uint16_t pci_device_82540em = 0x100e;

// Register offsets in the memory BAR (8254x SDM "Register Summary").
namespace offset {
inline constexpr std::uint32_t ctrl = 0x0000;   // Device Control
inline constexpr std::uint32_t status = 0x0008; // Device Status (read-only)
inline constexpr std::uint32_t eecd = 0x0010;   // EEPROM/Flash Control
inline constexpr std::uint32_t eerd = 0x0014;   // EEPROM Read
inline constexpr std::uint32_t icr = 0x00c0;    // Interrupt Cause Read (read clears)
inline constexpr std::uint32_t itr = 0x00c4;    // Interrupt Throttling
inline constexpr std::uint32_t ics = 0x00c8;    // Interrupt Cause Set
inline constexpr std::uint32_t ims = 0x00d0;    // Interrupt Mask Set/Read
inline constexpr std::uint32_t imc = 0x00d8;    // Interrupt Mask Clear
inline constexpr std::uint32_t rctl = 0x0100;   // Receive Control
inline constexpr std::uint32_t tctl = 0x0400;   // Transmit Control
inline constexpr std::uint32_t tipg = 0x0410;   // Transmit Inter Packet Gap
inline constexpr std::uint32_t rdbal = 0x2800;  // Receive Descriptor Base Address Low
inline constexpr std::uint32_t rdbah = 0x2804;  // ... High
inline constexpr std::uint32_t rdlen = 0x2808;  // Receive Descriptor Length (bytes, multiple of 128)
inline constexpr std::uint32_t rdh = 0x2810;    // Receive Descriptor Head
inline constexpr std::uint32_t rdt = 0x2818;    // Receive Descriptor Tail
inline constexpr std::uint32_t rdtr = 0x2820;   // Receive Delay Timer
inline constexpr std::uint32_t tdbal = 0x3800;  // Transmit Descriptor Base Address Low
inline constexpr std::uint32_t tdbah = 0x3804;  // ... High
inline constexpr std::uint32_t tdlen = 0x3808;  // Transmit Descriptor Length (bytes, multiple of 128)
inline constexpr std::uint32_t tdh = 0x3810;    // Transmit Descriptor Head
inline constexpr std::uint32_t tdt = 0x3818;    // Transmit Descriptor Tail
inline constexpr std::uint32_t mpc = 0x4010;    // Missed Packets Count (statistics, read clears)
inline constexpr std::uint32_t mta = 0x5200;    // Multicast Table Array: mta_entries 32-bit words
inline constexpr std::uint32_t ral0 = 0x5400;   // Receive Address Low, entry 0 (bytes 0..3 of the MAC)
inline constexpr std::uint32_t rah0 = 0x5404;   // Receive Address High, entry 0 (bytes 4..5, AV)

inline constexpr unsigned mta_entries = 128;
constexpr std::uint32_t mta_entry(unsigned i) {
    return mta + 4 * i;
}
} // namespace offset

// CTRL ("Device Control Register").
struct ctrl : reg_value<ctrl, std::uint32_t> {
    constexpr bool fd() const { return get_bit<0>(); } // full duplex (ignored while ASDE/autoneg decide)
    constexpr ctrl& set_fd(bool on) { return set_bit<0>(on); }
    constexpr bool lrst() const { return get_bit<3>(); } // link reset: holds the link down while set
    constexpr ctrl& set_lrst(bool on) { return set_bit<3>(on); }
    constexpr bool asde() const { return get_bit<5>(); } // auto-speed detection
    constexpr ctrl& set_asde(bool on) { return set_bit<5>(on); }
    constexpr bool slu() const { return get_bit<6>(); } // set link up
    constexpr ctrl& set_slu(bool on) { return set_bit<6>(on); }
    constexpr bool ilos() const { return get_bit<7>(); } // invert loss-of-signal
    constexpr ctrl& set_ilos(bool on) { return set_bit<7>(on); }
    constexpr std::uint32_t speed() const { return get_field<9, 8>(); }
    constexpr bool frcspd() const { return get_bit<11>(); }
    constexpr bool frcdplx() const { return get_bit<12>(); }
    constexpr bool rst() const { return get_bit<26>(); } // global device reset, self-clearing
    constexpr ctrl& set_rst(bool on) { return set_bit<26>(on); }
    constexpr bool rfce() const { return get_bit<27>(); }
    constexpr bool tfce() const { return get_bit<28>(); }
    constexpr bool vme() const { return get_bit<30>(); } // VLAN mode
    constexpr ctrl& set_vme(bool on) { return set_bit<30>(on); }
    constexpr bool phy_rst() const { return get_bit<31>(); } // PHY reset
    constexpr ctrl& set_phy_rst(bool on) { return set_bit<31>(on); }
};

// STATUS ("Device Status Register").
struct status : reg_value<status, std::uint32_t> {
    constexpr bool fd() const { return get_bit<0>(); }
    constexpr status& set_fd(bool on) { return set_bit<0>(on); }
    constexpr bool lu() const { return get_bit<1>(); } // link up
    constexpr status& set_lu(bool on) { return set_bit<1>(on); }
    constexpr bool txoff() const { return get_bit<4>(); }
    constexpr std::uint32_t speed() const { return get_field<7, 6>(); } // 0: 10, 1: 100, 2/3: 1000 Mb/s
    constexpr status& set_speed(std::uint32_t v) { return set_field<7, 6>(v); }
};

// EERD ("EEPROM Read Register"), in the 82540EM's layout: START bit 0, DONE bit 4, address 15:8,
// data 31:16. (Later parts moved DONE to bit 1 and the address to 15:2; not this one.)
struct eerd : reg_value<eerd, std::uint32_t> {
    constexpr bool start() const { return get_bit<0>(); }
    constexpr eerd& set_start(bool on) { return set_bit<0>(on); }
    constexpr bool done() const { return get_bit<4>(); }
    constexpr eerd& set_done(bool on) { return set_bit<4>(on); }
    constexpr std::uint32_t address() const { return get_field<15, 8>(); }
    constexpr eerd& set_address(std::uint32_t v) { return set_field<15, 8>(v); }
    constexpr std::uint16_t data() const { return static_cast<std::uint16_t>(get_field<31, 16>()); }
    constexpr eerd& set_data(std::uint32_t v) { return set_field<31, 16>(v); }
};

// The interrupt causes: one layout for ICR, ICS, IMS and IMC ("Interrupt Cause Read Register" and the three
// after it).
struct interrupts : reg_value<interrupts, std::uint32_t> {
    constexpr bool txdw() const { return get_bit<0>(); } // a transmit descriptor was written back
    constexpr interrupts& set_txdw(bool on) { return set_bit<0>(on); }
    constexpr bool txqe() const { return get_bit<1>(); } // transmit queue empty
    constexpr interrupts& set_txqe(bool on) { return set_bit<1>(on); }
    constexpr bool lsc() const { return get_bit<2>(); } // link status change
    constexpr interrupts& set_lsc(bool on) { return set_bit<2>(on); }
    constexpr bool rxseq() const { return get_bit<3>(); }
    constexpr interrupts& set_rxseq(bool on) { return set_bit<3>(on); }
    constexpr bool rxdmt0() const { return get_bit<4>(); } // free receive descriptors below the threshold
    constexpr interrupts& set_rxdmt0(bool on) { return set_bit<4>(on); }
    constexpr bool rxo() const { return get_bit<6>(); } // receiver overrun: a frame found no descriptor
    constexpr interrupts& set_rxo(bool on) { return set_bit<6>(on); }
    constexpr bool rxt0() const { return get_bit<7>(); } // receiver timer: a frame was received
    constexpr interrupts& set_rxt0(bool on) { return set_bit<7>(on); }
    constexpr bool mdac() const { return get_bit<9>(); }
    constexpr bool rxcfg() const { return get_bit<10>(); }
    constexpr bool phyint() const { return get_bit<12>(); }
    constexpr bool txd_low() const { return get_bit<15>(); }
    constexpr bool srpd() const { return get_bit<16>(); }
};

// RCTL ("Receive Control Register").
struct rctl : reg_value<rctl, std::uint32_t> {
    // BSIZE with BSEX clear: 0 = 2048, 1 = 1024, 2 = 512, 3 = 256 bytes per receive buffer.
    static constexpr std::uint32_t bsize_2048 = 0;

    constexpr bool en() const { return get_bit<1>(); }
    constexpr rctl& set_en(bool on) { return set_bit<1>(on); }
    constexpr bool sbp() const { return get_bit<2>(); } // store bad packets
    constexpr rctl& set_sbp(bool on) { return set_bit<2>(on); }
    constexpr bool upe() const { return get_bit<3>(); } // unicast promiscuous
    constexpr rctl& set_upe(bool on) { return set_bit<3>(on); }
    constexpr bool mpe() const { return get_bit<4>(); } // multicast promiscuous
    constexpr rctl& set_mpe(bool on) { return set_bit<4>(on); }
    constexpr bool lpe() const { return get_bit<5>(); } // long packets (> 1522 bytes)
    constexpr rctl& set_lpe(bool on) { return set_bit<5>(on); }
    constexpr std::uint32_t lbm() const { return get_field<7, 6>(); } // loopback mode
    constexpr rctl& set_lbm(std::uint32_t v) { return set_field<7, 6>(v); }
    constexpr std::uint32_t rdmts() const { return get_field<9, 8>(); } // RXDMT0 threshold: 1/2, 1/4, 1/8
    constexpr rctl& set_rdmts(std::uint32_t v) { return set_field<9, 8>(v); }
    constexpr std::uint32_t mo() const { return get_field<13, 12>(); } // multicast offset
    constexpr bool bam() const { return get_bit<15>(); }               // broadcast accept
    constexpr rctl& set_bam(bool on) { return set_bit<15>(on); }
    constexpr std::uint32_t bsize() const { return get_field<17, 16>(); }
    constexpr rctl& set_bsize(std::uint32_t v) { return set_field<17, 16>(v); }
    constexpr bool vfe() const { return get_bit<18>(); } // VLAN filter
    constexpr bool dpf() const { return get_bit<22>(); } // discard pause frames
    constexpr bool pmcf() const { return get_bit<23>(); }
    constexpr bool bsex() const { return get_bit<25>(); } // buffer size extension (x16)
    constexpr rctl& set_bsex(bool on) { return set_bit<25>(on); }
    constexpr bool secrc() const { return get_bit<26>(); } // strip the Ethernet CRC
    constexpr rctl& set_secrc(bool on) { return set_bit<26>(on); }
};

// TCTL ("Transmit Control Register").
struct tctl : reg_value<tctl, std::uint32_t> {
    constexpr bool en() const { return get_bit<1>(); }
    constexpr tctl& set_en(bool on) { return set_bit<1>(on); }
    constexpr bool psp() const { return get_bit<3>(); } // pad short packets to 64 bytes
    constexpr tctl& set_psp(bool on) { return set_bit<3>(on); }
    constexpr std::uint32_t ct() const { return get_field<11, 4>(); } // collision threshold
    constexpr tctl& set_ct(std::uint32_t v) { return set_field<11, 4>(v); }
    constexpr std::uint32_t cold() const { return get_field<21, 12>(); } // collision distance
    constexpr tctl& set_cold(std::uint32_t v) { return set_field<21, 12>(v); }
    constexpr bool swxoff() const { return get_bit<22>(); }
    constexpr bool rtlc() const { return get_bit<24>(); }
};

// TIPG ("Transmit IPG Register").
struct tipg : reg_value<tipg, std::uint32_t> {
    constexpr std::uint32_t ipgt() const { return get_field<9, 0>(); }
    constexpr tipg& set_ipgt(std::uint32_t v) { return set_field<9, 0>(v); }
    constexpr std::uint32_t ipgr1() const { return get_field<19, 10>(); }
    constexpr tipg& set_ipgr1(std::uint32_t v) { return set_field<19, 10>(v); }
    constexpr std::uint32_t ipgr2() const { return get_field<29, 20>(); }
    constexpr tipg& set_ipgr2(std::uint32_t v) { return set_field<29, 20>(v); }
};

// RAH ("Receive Address High"): the MAC's last two bytes, and AV (the entry filters frames).
struct rah : reg_value<rah, std::uint32_t> {
    constexpr std::uint32_t address_high() const { return get_field<15, 0>(); }
    constexpr rah& set_address_high(std::uint32_t v) { return set_field<15, 0>(v); }
    constexpr std::uint32_t as() const { return get_field<17, 16>(); } // 0: match destination address
    constexpr bool av() const { return get_bit<31>(); }
    constexpr rah& set_av(bool on) { return set_bit<31>(on); }
};

// Legacy receive descriptor ("Receive Descriptor Format"): 16 bytes, the driver writes the buffer
// address, the device the rest.
struct rx_desc {
    std::uint64_t addr;
    std::uint16_t length; // bytes stored in the buffer (CRC excluded with RCTL.SECRC)
    std::uint16_t checksum;
    std::uint8_t status;
    std::uint8_t errors;
    std::uint16_t special;
};
static_assert(sizeof(rx_desc) == 16);

// Receive descriptor status ("Receive Descriptor Status Field").
struct rx_status : reg_value<rx_status, std::uint8_t> {
    constexpr bool dd() const { return get_bit<0>(); } // descriptor done
    constexpr rx_status& set_dd(bool on) { return set_bit<0>(on); }
    constexpr bool eop() const { return get_bit<1>(); } // end of packet
    constexpr rx_status& set_eop(bool on) { return set_bit<1>(on); }
    constexpr bool ixsm() const { return get_bit<2>(); }
    constexpr bool vp() const { return get_bit<3>(); }
    constexpr bool tcpcs() const { return get_bit<5>(); }
    constexpr bool ipcs() const { return get_bit<6>(); }
    constexpr bool pif() const { return get_bit<7>(); }
};

// Receive descriptor errors ("Receive Descriptor Errors Field"). TCPE/IPE are checksum-offload verdicts, not
// frame errors.
struct rx_errors : reg_value<rx_errors, std::uint8_t> {
    constexpr bool ce() const { return get_bit<0>(); } // CRC or alignment error
    constexpr rx_errors& set_ce(bool on) { return set_bit<0>(on); }
    constexpr bool se() const { return get_bit<1>(); } // symbol error (TBI)
    constexpr rx_errors& set_se(bool on) { return set_bit<1>(on); }
    constexpr bool seq() const { return get_bit<2>(); } // sequence error (TBI)
    constexpr rx_errors& set_seq(bool on) { return set_bit<2>(on); }
    constexpr bool cxe() const { return get_bit<4>(); } // carrier extension error
    constexpr rx_errors& set_cxe(bool on) { return set_bit<4>(on); }
    constexpr bool tcpe() const { return get_bit<5>(); }
    constexpr rx_errors& set_tcpe(bool on) { return set_bit<5>(on); }
    constexpr bool ipe() const { return get_bit<6>(); }
    constexpr rx_errors& set_ipe(bool on) { return set_bit<6>(on); }
    constexpr bool rxe() const { return get_bit<7>(); } // receive data error
    constexpr rx_errors& set_rxe(bool on) { return set_bit<7>(on); }
    // Any error that makes the frame's bytes untrustworthy.
    constexpr bool frame_error() const { return ce() || se() || seq() || cxe() || rxe(); }
};

// Legacy transmit descriptor ("Legacy Transmit Descriptor Format"): 16 bytes, the driver writes
// everything but status, which the device writes back (DD) when CMD.RS asks it to.
struct tx_desc {
    std::uint64_t addr;
    std::uint16_t length;
    std::uint8_t cso;
    std::uint8_t cmd;
    std::uint8_t status;
    std::uint8_t css;
    std::uint16_t special;
};
static_assert(sizeof(tx_desc) == 16);

// Transmit descriptor command ("Transmit Descriptor Command Field Format").
struct tx_cmd : reg_value<tx_cmd, std::uint8_t> {
    constexpr bool eop() const { return get_bit<0>(); } // last descriptor of the frame
    constexpr tx_cmd& set_eop(bool on) { return set_bit<0>(on); }
    constexpr bool ifcs() const { return get_bit<1>(); } // the device appends the CRC
    constexpr tx_cmd& set_ifcs(bool on) { return set_bit<1>(on); }
    constexpr bool ic() const { return get_bit<2>(); } // insert checksum (cso/css)
    constexpr tx_cmd& set_ic(bool on) { return set_bit<2>(on); }
    constexpr bool rs() const { return get_bit<3>(); } // report status: write DD back
    constexpr tx_cmd& set_rs(bool on) { return set_bit<3>(on); }
    constexpr bool dext() const { return get_bit<5>(); } // extended descriptor (0: legacy)
    constexpr tx_cmd& set_dext(bool on) { return set_bit<5>(on); }
    constexpr bool vle() const { return get_bit<6>(); }
    constexpr bool ide() const { return get_bit<7>(); }
};

// Transmit descriptor status ("Transmit Descriptor Status Field Format").
struct tx_status : reg_value<tx_status, std::uint8_t> {
    constexpr bool dd() const { return get_bit<0>(); } // descriptor done
    constexpr tx_status& set_dd(bool on) { return set_bit<0>(on); }
    constexpr bool ec() const { return get_bit<1>(); } // excess collisions
    constexpr bool lc() const { return get_bit<2>(); } // late collision
    constexpr bool tu() const { return get_bit<3>(); } // transmit underrun
};

} // namespace toro::net::e1000_regs
