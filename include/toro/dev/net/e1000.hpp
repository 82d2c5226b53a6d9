// The Intel e1000 driver (82540EM: QEMU's `-device e1000`, PCI 8086:100e), modelling toro::net_device.
//
// net::e1000<Mmio, RxCount, TxCount, Translate> drives the controller through its memory BAR (Mmio, an
// arch::mmio32_bus; arch::mmio_window in the kernel) with one legacy receive ring and one legacy transmit
// ring. The rings and every packet buffer (2048 bytes each) live inside the driver object, which the kernel
// places in static storage: nothing is allocated. Translate maps a driver address to the address the device
// DMAs to (identity in the kernel, whose memory is identity-mapped; host tests use a non-identity one so a
// pointer programmed untranslated is caught). Register layouts: e1000_regs.hpp; section names below refer to
// the 8254x SDM ("PCI/PCI-X Family of Gigabit Ethernet Controllers Software Developer's Manual").
//
// Rings. Receive: the device owns the descriptors from RDH up to RDT - 1; the driver reads them in order
// from rx_next_ and keeps exactly one descriptor back (the one at RDT), so head == tail always means "no
// descriptor free" and never "all free". Taking a frame holds its descriptor back and hands the previously
// held one to the device, re-armed (buffer address rewritten, status cleared) at that moment: whatever the
// device wrote into a descriptor it did not own is forgotten. Transmit: descriptors are filled in order from
// tx_next_ and reclaimed in order once the device wrote DD back; at most TxCount - 1 are in flight, for the
// same head == tail reason.
//
// Trust (as virtio-drivers: nothing the device writes back is believed unchecked). Ring positions are the
// driver's own; RDH/TDH are never read. A receive descriptor is handed to the stack only with DD and EOP,
// no frame error (CE, SE, SEQ, CXE, RXE) and a length of 1..2048; anything else is dropped, counted and its
// buffer given back. A descriptor without EOP (a frame spanning buffers, which 2048-byte buffers and
// RCTL.LPE off rule out for a conforming device) drops everything up to and including the next EOP.
// Checksum-offload verdicts (TCPE, IPE) are ignored: the stack checks checksums itself.
//
// Waiting and interrupts. The driver only polls: has_frame() is what a wait policy tests. For an interrupt
// handler: enable_interrupts() unmasks RXT0, RXO, RXDMT0, LSC and TXDW; interrupt_cause() reads ICR, which
// acknowledges (read clears).
//
// Not thread-safe: one owner (or the owner's lock) calls everything.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <new>
#include <span>
#include <type_traits>
#include <utility>

#include <toro/arch/x86_64/lapic.hpp>
#include <toro/base/expected.hpp>
#include <toro/base/maybe.hpp>
#include <toro/dev/net/e1000_regs.hpp>
#include <toro/dev/net_device.hpp>
#include <toro/dev/virtio/virtqueue.hpp>

namespace toro::net {

// The errors, so callers can tell them apart (error.what == e1000_error::...). Frame lengths outside
// 1..mtu() are refused with check_tx_length's errors (net_device.hpp).
namespace e1000_error {
inline constexpr string_view reset_timeout{"e1000: CTRL.RST never cleared after a global reset; reads"};
inline constexpr string_view eeprom_timeout{"e1000: EEPROM read through EERD never completed; word"};
inline constexpr string_view bad_mac{"e1000: station address is zero or multicast; low 32 bits"};
inline constexpr string_view misaligned{"e1000: descriptor ring not 16-byte aligned; device address"};
inline constexpr string_view tx_full{"e1000: no transmit descriptor free; in flight"};
inline constexpr string_view tx_used{"e1000: transmit token already used"};
inline constexpr string_view tx_nested{"e1000: transmit token consumed inside another transmit's callback"};
inline constexpr string_view tx_stale{"e1000: transmit token from before the last start()"};
} // namespace e1000_error

template <arch::mmio32_bus Mmio, std::size_t RxCount = 32, std::size_t TxCount = 32,
          virtio::dma_translation Translate = virtio::identity_dma>
class e1000 {
    // "Receive Descriptor Length" / "Transmit Descriptor Length": a multiple of 128 bytes, 8 descriptors.
    static_assert(RxCount >= 8 && RxCount % 8 == 0, "RDLEN must be a multiple of 128 bytes (8 descriptors)");
    static_assert(TxCount >= 8 && TxCount % 8 == 0, "TDLEN must be a multiple of 128 bytes (8 descriptors)");
    static_assert(RxCount <= 65536 && TxCount <= 65536, "RDH/RDT and TDH/TDT are 16-bit indices");
    // Drivers live in static storage, and a kernel has no atexit: nothing here may need a destructor.
    static_assert(std::is_trivially_destructible_v<Mmio> && std::is_trivially_destructible_v<Translate>,
                  "buses and translations are handles (a base address, an offset)");

    using rx_desc = e1000_regs::rx_desc;
    using tx_desc = e1000_regs::tx_desc;

public:
    static constexpr std::size_t rx_count = RxCount;
    static constexpr std::size_t tx_count = TxCount;
    static constexpr std::size_t buffer_size = 2048; // RCTL.BSIZE 00 with BSEX clear
    static constexpr std::size_t max_frame = 1514;   // mtu(): Ethernet header + 1500, FCS excluded
    // Register reads before a reset or an EEPROM read is given up. QEMU finishes both within the access that
    // starts them; real parts take microseconds, and every read is a bus round trip.
    static constexpr std::uint32_t reset_spins = 100000;
    static constexpr std::uint32_t eeprom_spins = 100000;
    // What enable_interrupts() unmasks by default.
    static constexpr e1000_regs::interrupts wanted_interrupts =
        e1000_regs::interrupts{}.set_rxt0(true).set_rxo(true).set_rxdmt0(true).set_lsc(true).set_txdw(true);
    // The register values start() programs (the tests check them bit for bit against the SDM).
    static constexpr e1000_regs::rctl rctl_value =
        e1000_regs::rctl{}.set_en(true).set_bam(true).set_secrc(true).set_bsize(e1000_regs::rctl::bsize_2048);
    // Full duplex: collision threshold 0x0f and collision distance 0x40 ("Transmit Initialization").
    static constexpr e1000_regs::tctl tctl_value =
        e1000_regs::tctl{}.set_en(true).set_psp(true).set_ct(0x0f).set_cold(0x40);
    // The 82540EM's copper values in the "Transmit IPG Register" description: IPGT 10, IPGR1 8, IPGR2 6.
    static constexpr e1000_regs::tipg tipg_value = e1000_regs::tipg{}.set_ipgt(10).set_ipgr1(8).set_ipgr2(6);

    // std::move(t).consume(f): see net_device.hpp. The frame is the driver's receive buffer; once f returns
    // its descriptor goes back to the device.
    class rx_token {
    public:
        rx_token(rx_token&&) = default;
        rx_token(const rx_token&) = delete;
        rx_token& operator=(const rx_token&) = delete;

        template <class F>
        rx_result_t<F> consume(F&& f) && {
            e1000& n = *nic_;
            if (n.rx_reading_ || !n.started_ || epoch_ != n.epoch_ || seq_ != n.rx_seq_)
                return f(std::span<const std::byte>{});
            const std::size_t i = n.rx_next_;
            // Judged again: receive() saw this descriptor, but the device may have rewritten it since.
            const rx_verdict v = n.judge(i);
            if (v.kind != rx_verdict::good) {
                if (v.kind != rx_verdict::not_done) n.drop(v);
                return f(std::span<const std::byte>{});
            }
            n.rx_reading_ = true;
            struct give_back_on_exit { // after f returns, whatever it returns (void included)
                e1000& n;
                ~give_back_on_exit() {
                    n.rx_reading_ = false;
                    ++n.rx_frames_;
                    n.give_back();
                }
            } give{n};
            return f(std::span<const std::byte>{n.rx_buf_[i].data(), v.len});
        }

    private:
        friend e1000;
        rx_token(e1000* n, std::uint64_t epoch, std::uint64_t seq) : nic_{n}, epoch_{epoch}, seq_{seq} {}
        e1000* nic_;
        std::uint64_t epoch_; // the start() it belongs to
        std::uint64_t seq_;   // the frame it may take: rx_seq_ when it was made
    };

    // std::move(t).consume(len, f): see net_device.hpp. The buffer is the next transmit descriptor's; the
    // descriptor is claimed when consume runs, not when the token is made.
    class tx_token {
    public:
        tx_token(tx_token&& o) : nic_{std::exchange(o.nic_, nullptr)}, epoch_{o.epoch_} {}
        tx_token(const tx_token&) = delete;
        tx_token& operator=(const tx_token&) = delete;

        template <class F>
        tx_fn_result_t<F> consume(std::size_t len, F&& f) && {
            e1000* const np = std::exchange(nic_, nullptr);
            if (np == nullptr) return unexpected{e1000_error::tx_used};
            e1000& n = *np;
            if (auto ok = check_tx_length(len, n.mtu()); !ok) return unexpected{ok.error()};
            if (!n.started_ || epoch_ != n.epoch_) return unexpected{e1000_error::tx_stale};
            if (n.tx_writing_) return unexpected{e1000_error::tx_nested};
            n.reclaim_tx();
            if (n.tx_in_flight_ >= TxCount - 1) return unexpected{e1000_error::tx_full, n.tx_in_flight_};
            const std::size_t i = n.tx_next_;
            n.tx_writing_ = true;
            struct send_on_exit {
                e1000& n;
                std::size_t i, len;
                ~send_on_exit() {
                    n.tx_writing_ = false;
                    n.post_tx(i, len);
                }
            } send{n, i, len};
            return invoke_tx(f, std::span<std::byte>{n.tx_buf_[i].data(), len});
        }

    private:
        friend e1000;
        tx_token(e1000* n, std::uint64_t epoch) : nic_{n}, epoch_{epoch} {}
        e1000* nic_;
        std::uint64_t epoch_;
    };

    explicit e1000(Translate t = {}) : translate_{t} {}
    e1000(const e1000&) = delete;
    e1000& operator=(const e1000&) = delete;

    // Resets the controller and brings it up: interrupts masked, link set up, station address read, the
    // multicast table cleared, both rings programmed and enabled. Any earlier state (tokens included, which
    // go stale) is forgotten. Interrupts stay masked until enable_interrupts().
    expected<void> start(Mmio mmio) {
        started_ = false;
        ++epoch_;
        ::new (&bus_.value) Mmio(std::move(mmio)); // trivially destructible: nothing to end first
        rx_next_ = 0;
        rx_tail_ = RxCount - 1;
        rx_discarding_ = rx_reading_ = tx_writing_ = false;
        tx_next_ = tx_clean_ = tx_in_flight_ = 0;
        rx_frames_ = tx_frames_ = rx_dropped_errors_ = rx_dropped_length_ = rx_dropped_fragmented_ = 0;

        const std::uint64_t rx_base = translate_.to_device(rx_ring_.data());
        const std::uint64_t tx_base = translate_.to_device(tx_ring_.data());
        // "Receive Descriptor Base Address": the low 4 bits are ignored, so a misaligned ring would be read
        // from the wrong place.
        if (rx_base % 16 != 0) return unexpected{e1000_error::misaligned, rx_base};
        if (tx_base % 16 != 0) return unexpected{e1000_error::misaligned, tx_base};

        // Global reset ("Device Control Register", RST): the MAC and its registers return to their power-on
        // state and the device stops any DMA into our rings. The bit clears itself when the reset is done.
        using namespace e1000_regs;
        write(offset::ctrl, read<ctrl>(offset::ctrl).set_rst(true));
        if (!wait_for([&] { return !read<ctrl>(offset::ctrl).rst(); }, reset_spins))
            return unexpected{e1000_error::reset_timeout, reset_spins};

        // "Interrupt Mask Clear": mask every cause; reading ICR drops what was pending before.
        write32(offset::imc, 0xffffffff);
        (void)read32(offset::icr);

        // "General Configuration": SLU lets the MAC follow the PHY's link, ASDE lets it take the PHY's
        // speed; LRST and PHY_RST would hold the link down, ILOS inverts loss of signal (not for copper),
        // VME would make the MAC strip VLAN tags the stack expects to see.
        write(offset::ctrl, read<ctrl>(offset::ctrl)
                                .set_slu(true)
                                .set_asde(true)
                                .set_lrst(false)
                                .set_phy_rst(false)
                                .set_ilos(false)
                                .set_vme(false));

        if (auto ok = read_mac(); !ok) return ok;

        // "Receive Initialization": no multicast group joined (the MTA powers up undefined).
        for (unsigned i = 0; i < offset::mta_entries; ++i) write32(offset::mta_entry(i), 0);

        for (std::size_t i = 0; i < RxCount; ++i) arm_rx(i);
        for (tx_desc& d : tx_ring_) d = tx_desc{};
        publish(); // the descriptors are in memory before the device learns where they are

        // "Receive Initialization": ring base and length, head 0 and tail at the last descriptor (all but
        // one given to the device), then the receiver: broadcast accepted, CRC stripped (lengths are frame
        // lengths), 2048-byte buffers, no long packets, no promiscuous modes.
        write32(offset::rdbal, static_cast<std::uint32_t>(rx_base));
        write32(offset::rdbah, static_cast<std::uint32_t>(rx_base >> 32));
        write32(offset::rdlen, static_cast<std::uint32_t>(RxCount * sizeof(rx_desc)));
        write32(offset::rdh, 0);
        write32(offset::rdt, static_cast<std::uint32_t>(rx_tail_));
        write(offset::rctl, rctl_value);

        // "Transmit Initialization": ring base and length, head = tail = 0 (nothing to send), then the
        // transmitter: short frames padded, full-duplex collision settings, the copper inter-packet gap.
        write32(offset::tdbal, static_cast<std::uint32_t>(tx_base));
        write32(offset::tdbah, static_cast<std::uint32_t>(tx_base >> 32));
        write32(offset::tdlen, static_cast<std::uint32_t>(TxCount * sizeof(tx_desc)));
        write32(offset::tdh, 0);
        write32(offset::tdt, 0);
        write(offset::tctl, tctl_value);
        write(offset::tipg, tipg_value);

        started_ = true;
        return {};
    }

    // net_device.
    maybe<received<rx_token, tx_token>> receive() {
        if (!started_ || rx_reading_) return nothing;
        // Bounded: a device that keeps writing bad descriptors must not keep the caller here forever.
        for (std::size_t k = 0; k < RxCount; ++k) {
            const rx_verdict v = judge(rx_next_);
            if (v.kind == rx_verdict::not_done) return nothing;
            if (v.kind == rx_verdict::good)
                return received<rx_token, tx_token>{rx_token{this, epoch_, rx_seq_}, tx_token{this, epoch_}};
            drop(v);
        }
        return nothing;
    }

    maybe<tx_token> transmit() {
        if (!started_) return nothing;
        reclaim_tx();
        if (tx_in_flight_ >= TxCount - 1) return nothing;
        return tx_token{this, epoch_};
    }

    mac_address mac() const { return mac_; }
    std::size_t mtu() const { return max_frame; }

    // For a wait policy: the next receive descriptor is done (receive() may still drop it as bad).
    bool has_frame() const { return started_ && rx_status_of(rx_next_).dd(); }
    // Transmit descriptors handed to the device and not yet written back (reclaims first).
    std::size_t tx_in_flight() {
        if (started_) reclaim_tx();
        return tx_in_flight_;
    }

    // Interrupts. interrupt_cause() reads ICR, which also acknowledges every cause it returns.
    void enable_interrupts(e1000_regs::interrupts which = wanted_interrupts) {
        write(e1000_regs::offset::ims, which);
    }
    void disable_interrupts() { write32(e1000_regs::offset::imc, 0xffffffff); }
    e1000_regs::interrupts interrupt_cause() { return read<e1000_regs::interrupts>(e1000_regs::offset::icr); }
    bool link_up() { return read<e1000_regs::status>(e1000_regs::offset::status).lu(); }

    bool started() const { return started_; }
    std::uint64_t rx_frames() const { return rx_frames_; } // frames handed to the stack
    std::uint64_t tx_frames() const { return tx_frames_; } // frames handed to the device
    // Receive descriptors dropped: with a frame error bit; with a length of 0 or over buffer_size; frames
    // spread over several descriptors (counted once per frame).
    std::uint64_t rx_dropped_errors() const { return rx_dropped_errors_; }
    std::uint64_t rx_dropped_length() const { return rx_dropped_length_; }
    std::uint64_t rx_dropped_fragmented() const { return rx_dropped_fragmented_; }
    std::uint64_t rx_dropped() const {
        return rx_dropped_errors_ + rx_dropped_length_ + rx_dropped_fragmented_;
    }
    // Where the rings are, as device addresses (what RDBAL/RDBAH and TDBAL/TDBAH hold).
    std::uint64_t rx_ring_address() const { return translate_.to_device(rx_ring_.data()); }
    std::uint64_t tx_ring_address() const { return translate_.to_device(tx_ring_.data()); }
    Mmio& bus() { return bus_.value; } // valid after start()

private:
    struct rx_verdict {
        enum kind_t : std::uint8_t { not_done, good, error, bad_length, fragment, fragment_end } kind;
        std::size_t len = 0;
    };

    // Descriptor fields the device writes, read once each: status with acquire, so the length, errors and
    // buffer bytes read after it are the ones the device wrote before setting DD.
    e1000_regs::rx_status rx_status_of(std::size_t i) const {
        return e1000_regs::rx_status::from_value(__atomic_load_n(&rx_ring_[i].status, __ATOMIC_ACQUIRE));
    }

    rx_verdict judge(std::size_t i) const {
        const e1000_regs::rx_status st = rx_status_of(i);
        if (!st.dd()) return {rx_verdict::not_done};
        const auto err =
            e1000_regs::rx_errors::from_value(__atomic_load_n(&rx_ring_[i].errors, __ATOMIC_RELAXED));
        const std::size_t len = __atomic_load_n(&rx_ring_[i].length, __ATOMIC_RELAXED);
        if (!st.eop()) return {rx_verdict::fragment};
        if (rx_discarding_) return {rx_verdict::fragment_end};
        if (err.frame_error()) return {rx_verdict::error};
        if (len == 0 || len > buffer_size) return {rx_verdict::bad_length};
        return {rx_verdict::good, len};
    }

    // Counts a bad descriptor and gives it back.
    void drop(rx_verdict v) {
        switch (v.kind) {
        case rx_verdict::fragment:
            if (!rx_discarding_) ++rx_dropped_fragmented_;
            rx_discarding_ = true;
            break;
        case rx_verdict::fragment_end:
            rx_discarding_ = false;
            break;
        case rx_verdict::error:
            ++rx_dropped_errors_;
            break;
        case rx_verdict::bad_length:
            ++rx_dropped_length_;
            break;
        default:
            break;
        }
        give_back();
    }

    // A receive descriptor as the device must find it: our buffer, nothing written back yet.
    void arm_rx(std::size_t i) {
        rx_desc& d = rx_ring_[i];
        d.addr = translate_.to_device(rx_buf_[i].data());
        d.length = 0;
        d.checksum = 0;
        d.errors = 0;
        d.special = 0;
        __atomic_store_n(&d.status, std::uint8_t{0}, __ATOMIC_RELAXED);
    }

    // rx_next_ has been taken (or dropped): it becomes the held-back descriptor, and the one held back so far
    // goes to the device, re-armed now so nothing the device wrote while it did not own it survives.
    void give_back() {
        const std::size_t i = rx_next_;
        __atomic_store_n(&rx_ring_[i].status, std::uint8_t{0}, __ATOMIC_RELAXED);
        arm_rx(rx_tail_);
        publish();
        rx_tail_ = i;
        write32(e1000_regs::offset::rdt, static_cast<std::uint32_t>(i));
        rx_next_ = (i + 1) % RxCount;
        ++rx_seq_;
    }

    // Oldest first: the device writes DD back in ring order, and a DD out of order only delays reuse.
    void reclaim_tx() {
        while (tx_in_flight_ != 0) {
            const auto st = e1000_regs::tx_status::from_value(
                __atomic_load_n(&tx_ring_[tx_clean_].status, __ATOMIC_ACQUIRE));
            if (!st.dd()) break;
            tx_clean_ = (tx_clean_ + 1) % TxCount;
            --tx_in_flight_;
        }
    }

    // One frame per descriptor ("Legacy Transmit Descriptor Format"): EOP (the whole frame), IFCS (the
    // device appends the CRC), RS (write DD back: how reclaim_tx learns the buffer is free).
    void post_tx(std::size_t i, std::size_t len) {
        tx_desc& d = tx_ring_[i];
        d.addr = translate_.to_device(tx_buf_[i].data());
        d.length = static_cast<std::uint16_t>(len);
        d.cso = 0;
        d.cmd = e1000_regs::tx_cmd{}.set_eop(true).set_ifcs(true).set_rs(true).value();
        d.css = 0;
        d.special = 0;
        __atomic_store_n(&d.status, std::uint8_t{0}, __ATOMIC_RELAXED);
        tx_next_ = (i + 1) % TxCount;
        ++tx_in_flight_;
        ++tx_frames_;
        publish();
        write32(e1000_regs::offset::tdt, static_cast<std::uint32_t>(tx_next_));
    }

    expected<void> read_mac() {
        using namespace e1000_regs;
        std::uint32_t low = read32(offset::ral0);
        auto high = read<rah>(offset::rah0);
        const bool from_eeprom = !high.av();
        if (from_eeprom) {
            // The EEPROM's first three words hold the address, low byte first ("EEPROM Address Map").
            std::uint16_t w[3];
            for (std::uint32_t k = 0; k < 3; ++k) {
                auto v = eeprom_read(k);
                if (!v) return unexpected{v.error()};
                w[k] = *v;
            }
            low = static_cast<std::uint32_t>(w[0]) | static_cast<std::uint32_t>(w[1]) << 16;
            high = rah{}.set_address_high(w[2]).set_av(true);
        }
        for (unsigned k = 0; k < 4; ++k) mac_[k] = static_cast<std::uint8_t>(low >> (8 * k));
        mac_[4] = static_cast<std::uint8_t>(high.address_high());
        mac_[5] = static_cast<std::uint8_t>(high.address_high() >> 8);
        if ((mac_[0] & 1) != 0 || (low == 0 && high.address_high() == 0))
            return unexpected{e1000_error::bad_mac, low};
        if (from_eeprom) {
            // "Receive Address Low"/"High": without AV the filter passes no unicast frame to us (and
            // RCTL.UPE stays off).
            write32(offset::ral0, low);
            write(offset::rah0, high);
        }
        return {};
    }

    expected<std::uint16_t> eeprom_read(std::uint32_t word) {
        using namespace e1000_regs;
        write(offset::eerd, eerd{}.set_address(word).set_start(true));
        for (std::uint32_t k = 0; k < eeprom_spins; ++k) {
            const auto v = read<eerd>(offset::eerd);
            if (v.done()) return v.data();
        }
        return unexpected{e1000_error::eeprom_timeout, word};
    }

    template <class Ready>
    static bool wait_for(Ready&& ready, std::uint32_t spins) {
        for (std::uint32_t k = 0; k < spins; ++k)
            if (ready()) return true;
        return false;
    }

    // Descriptor stores are ordinary stores; this keeps the compiler from sinking them past the tail write
    // that hands them to the device (x86 keeps stores in order on the bus).
    static void publish() {
        __atomic_thread_fence(__ATOMIC_RELEASE);
        asm volatile("" ::: "memory");
    }

    std::uint32_t read32(std::uint32_t off) { return bus_.value.read32(off); }
    void write32(std::uint32_t off, std::uint32_t v) { bus_.value.write32(off, v); }
    template <class R>
    R read(std::uint32_t off) {
        return R::from_value(read32(off));
    }
    template <class R>
    void write(std::uint32_t off, R r) {
        write32(off, r.value());
    }

    // The rings first: "Receive Descriptor Length" wants a multiple of 128 bytes, and aligning each ring to
    // 128 keeps it in one run of cache lines.
    alignas(128) std::array<rx_desc, RxCount> rx_ring_{};
    alignas(128) std::array<tx_desc, TxCount> tx_ring_{};
    alignas(16) std::array<std::array<std::byte, buffer_size>, RxCount> rx_buf_{};
    alignas(16) std::array<std::array<std::byte, buffer_size>, TxCount> tx_buf_{};
    union bus_slot {
        constexpr bus_slot() : none{0} {}
        char none;
        Mmio value; // constructed by start()
    } bus_;
    Translate translate_;
    mac_address mac_{};
    std::size_t rx_next_ = 0;           // the next descriptor the device will complete
    std::size_t rx_tail_ = RxCount - 1; // the descriptor held back (what RDT holds)
    std::size_t tx_next_ = 0;           // the next descriptor to fill (what TDT holds)
    std::size_t tx_clean_ = 0;          // the oldest descriptor in flight
    std::size_t tx_in_flight_ = 0;
    std::uint64_t epoch_ = 0;  // start() count: tokens from an earlier one are stale
    std::uint64_t rx_seq_ = 0; // receive descriptors taken or dropped so far
    std::uint64_t rx_frames_ = 0, tx_frames_ = 0;
    std::uint64_t rx_dropped_errors_ = 0, rx_dropped_length_ = 0, rx_dropped_fragmented_ = 0;
    bool started_ = false;
    bool rx_discarding_ = false; // dropping the rest of a frame that spanned descriptors
    bool rx_reading_ = false;    // an rx token's f is running
    bool tx_writing_ = false;    // a tx token's f is running
};

static_assert(net_device<e1000<arch::mmio_window>>);
static_assert(std::is_trivially_destructible_v<e1000<arch::mmio_window>>);

} // namespace toro::net
