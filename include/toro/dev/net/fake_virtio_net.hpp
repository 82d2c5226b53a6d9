// A fake virtio-net device and the transport that reaches it: the test oracle for net::virtio_net.
// Freestanding (no heap, no std beyond the kernel's set), so kernel self-tests can use it too.
//
// fake_virtio_net<N> is the device: its feature offer, configuration space (mac, status,
// max_virtqueue_pairs), a status register that records every write, and the receive (0) and transmit (1)
// queues of size N, each served by a virtio::fake_device that walks the shared rings as a device does.
// fake_virtio_net_transport<N> is a copyable handle to it modelling virtio::transport, as a driver takes its
// transport by value. Modern: VERSION_1 required, 12-byte header. Legacy: bits 0-31 only, no FEATURES_OK,
// queues in the contiguous layout and of exactly the device's size (as legacy PCI demands), a 10-byte header
// (12 if the driver took MRG_RXBUF, as QEMU does), and a driver that did not take ANY_LAYOUT must give the
// header a descriptor of its own (5.1.6.6).
//
// Receiving: deliver(frame) takes the next receive buffer the driver posted, writes the header (zeros;
// num_buffers 1 when 12 bytes long, 5.1.6.4) and the frame, completes it, and raises the queue interrupt
// if the driver has not suppressed it. Transmitting: transmit chains are served when the driver notifies
// (auto_tx; off: when the test calls serve_tx()): each is checked (device-readable only, a header of the
// negotiated size that is all zeros, a frame of 1..1514 bytes) and kept for take_sent(). At most N unread
// frames are kept; more wait in the ring, so a test that does not read them sees back-pressure.
// Misbehaviour on demand: the next receive used length, the next receive header's flags and gso_type, the
// next transmit used length, or any raw used element / used index through queue(q). Whatever the fake
// cannot accept (a driver bug) is counted in faults().
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <new>
#include <span>

#include <toro/base/expected.hpp>
#include <toro/base/maybe.hpp>
#include <toro/dev/net/virtio_net.hpp>
#include <toro/dev/net_device.hpp>
#include <toro/dev/virtio/fake_device.hpp>
#include <toro/dev/virtio/transport.hpp>

namespace toro::net {

// What deliver() answers when the frame could not be delivered.
namespace fake_vnet_error {
inline constexpr string_view not_running{"fake virtio-net: receive queue not set up or driver not ready"};
inline constexpr string_view no_rx_buffer{"fake virtio-net: no receive buffer posted"};
inline constexpr string_view bad_frame{"fake virtio-net: frame empty or longer than 1514 bytes"};
inline constexpr string_view bad_rx_chain{
    "fake virtio-net: receive chain unusable (driver bug); see faults()"};
} // namespace fake_vnet_error

template <std::uint16_t N>
class fake_virtio_net {
    static constexpr std::uint64_t bit(unsigned b) { return std::uint64_t{1} << b; }

public:
    // Header + frame at most (+1 to notice a longer chain).
    static constexpr std::uint16_t max_chain = N < 3 ? N : 3;
    using device = virtio::fake_device<N, virtio::identity_device_memory, max_chain>;
    using chain = typename device::chain;

    struct options {
        bool legacy = false;
        // Offered: roughly QEMU's offer, offloads included (the driver must decline them).
        std::uint64_t features =
            bit(virtio::feature_version_1) | bit(vnet::feature_mac) | bit(vnet::feature_status) |
            bit(virtio::feature_event_idx) | bit(vnet::feature_any_layout) | bit(vnet::feature_mrg_rxbuf) |
            bit(vnet::feature_csum) | bit(vnet::feature_guest_csum) | bit(vnet::feature_ctrl_vq);
        std::uint32_t device_id = virtio::device_net;
        std::uint16_t rx_queue_max = N;
        std::uint16_t tx_queue_max = N;
        bool accept_features = true; // false: FEATURES_OK does not stick
        mac_address mac{0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
        std::uint16_t status = vnet::status_link_up;
    };

    // A frame the device took from the transmit queue.
    struct sent_frame {
        std::array<std::byte, vnet::max_frame> data{};
        std::size_t len = 0;
        std::span<const std::byte> bytes() const { return {data.data(), len}; }
    };

    explicit fake_virtio_net(options o) : opt_{o} {
        for (std::size_t i = 0; i < 6; ++i) config_[vnet::config_mac + i] = std::byte{o.mac[i]};
        put16(vnet::config_status, o.status);
        put16(vnet::config_max_pairs, 1);
    }
    fake_virtio_net(const fake_virtio_net&) = delete;
    fake_virtio_net& operator=(const fake_virtio_net&) = delete;

    // ---- The transport's side ----

    std::uint32_t device_id() const { return opt_.device_id; }
    bool legacy() const { return opt_.legacy; }
    void reset() {
        log(0);
        status_ = 0;
        driver_features_ = 0;
        has_queue_ = {false, false};
        interrupt_ = 0;
    }
    std::uint8_t status() const { return status_; }
    void set_status(std::uint8_t s) {
        log(s);
        if (!opt_.accept_features) s = static_cast<std::uint8_t>(s & ~virtio::status_features_ok);
        status_ = s;
    }
    std::uint64_t device_features() const { return opt_.legacy ? opt_.features & 0xffffffff : opt_.features; }
    void set_driver_features(std::uint64_t f) {
        driver_features_ = f;
        // As QEMU: num_buffers is there with VERSION_1, or with MRG_RXBUF on a legacy device.
        header_ = (f & (bit(virtio::feature_version_1) | bit(vnet::feature_mrg_rxbuf))) != 0
                      ? vnet::header_modern
                      : vnet::header_legacy;
    }
    std::uint16_t max_queue_size(std::uint16_t q) const {
        return q == vnet::rx_queue ? opt_.rx_queue_max : q == vnet::tx_queue ? opt_.tx_queue_max : 0;
    }
    expected<void> setup_queue(std::uint16_t q, std::uint16_t size, const virtio::queue_addresses& a) {
        if (q > vnet::tx_queue) return unexpected{"fake virtio-net: no such queue", q};
        if (opt_.legacy) {
            // Legacy PCI has no queue size register: the ring is the device's size.
            if (size != max_queue_size(q))
                return unexpected{"fake virtio-net legacy: queue size must be", max_queue_size(q)};
            const virtio::ring_layout l = virtio::legacy_layout(size);
            if (a.desc % 4096 != 0 || a.avail != a.desc + l.avail_offset || a.used != a.desc + l.used_offset)
                return unexpected{"fake virtio-net: legacy queue not in the contiguous layout"};
        } else if (size == 0 || size > max_queue_size(q)) {
            return unexpected{"fake virtio-net: queue size above the maximum", size};
        }
        if (size != N) return unexpected{"fake virtio-net: this fake's queues are of size", N};
        const bool event_idx = (driver_features_ >> virtio::feature_event_idx & 1) != 0;
        ::new (&queue_[q].value) device(a, virtio::identity_device_memory{}, event_idx);
        has_queue_[q] = true;
        return {};
    }
    void notify(std::uint16_t q) {
        if (q <= vnet::tx_queue) ++notifications_[q];
        if (q > vnet::tx_queue || !has_queue_[q] || (status_ & virtio::status_driver_ok) == 0) {
            ++faults_; // a doorbell for no queue, or before DRIVER_OK (3.1.1)
            return;
        }
        if (q == vnet::tx_queue && auto_tx) serve_tx();
    }
    void read_config(std::uint32_t off, void* dst, std::uint32_t len) {
        ++config_reads_;
        auto* d = static_cast<std::byte*>(dst);
        for (std::uint32_t i = 0; i < len; ++i)
            d[i] = off + i < config_.size() ? config_[off + i] : std::byte{0};
    }
    std::uint32_t interrupt_status() {
        const std::uint32_t isr = interrupt_;
        interrupt_ = 0;
        return isr;
    }

    // ---- The test's side ----

    bool auto_tx = true;

    // Puts `frame` into the next receive buffer posted and completes it.
    expected<void> deliver(std::span<const std::byte> frame) {
        if (!has_queue_[vnet::rx_queue] || (status_ & virtio::status_driver_ok) == 0)
            return unexpected{fake_vnet_error::not_running};
        if (frame.empty() || frame.size() > vnet::max_frame) return unexpected{fake_vnet_error::bad_frame};
        device& q = queue_[vnet::rx_queue].value;
        if (q.available() == 0) {
            ++rx_missed_;
            return unexpected{fake_vnet_error::no_rx_buffer};
        }
        auto c = q.take();
        if (!c) {
            ++faults_;
            return unexpected{c.error()};
        }
        if (!rx_chain_ok(*c, frame.size())) {
            ++faults_;
            q.complete(c->head, 0); // handed back empty: the driver must drop it
            return unexpected{fake_vnet_error::bad_rx_chain};
        }
        std::array<std::byte, vnet::header_modern + vnet::max_frame> image{};
        image[vnet::header_flags] = std::byte{rx_flags_};
        image[vnet::header_gso_type] = std::byte{rx_gso_};
        rx_flags_ = rx_gso_ = 0;
        if (header_ == vnet::header_modern) image[vnet::header_num_buffers] = std::byte{1};
        for (std::size_t i = 0; i < frame.size(); ++i) image[header_ + i] = frame[i];
        std::uint32_t len = c->write({image.data(), header_ + frame.size()});
        if (force_rx_len_) {
            len = forced_rx_len_;
            force_rx_len_ = false;
        }
        q.complete(c->head, len);
        if (q.should_interrupt()) raise(1);
        ++delivered_;
        return {};
    }

    // Serves every available transmit chain while fewer than N sent frames are unread. Returns how many.
    std::uint16_t serve_tx() {
        if (!has_queue_[vnet::tx_queue]) return 0;
        device& q = queue_[vnet::tx_queue].value;
        std::uint16_t n = 0;
        while (q.available() != 0 && sent_count_ < N) {
            auto c = q.take();
            if (!c) {
                ++faults_;
                break;
            }
            take_tx(*c);
            std::uint32_t len = 0; // nothing written into a transmit chain
            if (force_tx_len_) {
                len = forced_tx_len_;
                force_tx_len_ = false;
            }
            q.complete(c->head, len);
            ++n;
        }
        if (n != 0 && q.should_interrupt()) raise(1);
        return n;
    }

    // The oldest sent frame not yet taken.
    maybe<sent_frame> take_sent() {
        if (sent_count_ == 0) return nothing;
        const std::size_t at = sent_head_;
        sent_head_ = (sent_head_ + 1) % N;
        --sent_count_;
        return sent_[at];
    }
    std::size_t sent_waiting() const { return sent_count_; }

    // The link goes up or down: the status field changes and a configuration interrupt is raised.
    void set_link(bool up) {
        const std::uint16_t s = up ? std::uint16_t(opt_.status | vnet::status_link_up)
                                   : std::uint16_t(opt_.status & ~vnet::status_link_up);
        opt_.status = s;
        put16(vnet::config_status, s);
        raise(2);
    }

    // The next receive completion reports this used length; the next received header carries these.
    void force_rx_len(std::uint32_t len) {
        forced_rx_len_ = len;
        force_rx_len_ = true;
    }
    void force_rx_header(std::uint8_t flags, std::uint8_t gso_type) {
        rx_flags_ = flags;
        rx_gso_ = gso_type;
    }
    // The next transmit completion reports this used length (the driver must ignore it).
    void force_tx_len(std::uint32_t len) {
        forced_tx_len_ = len;
        force_tx_len_ = true;
    }

    std::span<const std::uint8_t> status_log() const { return {log_.data(), log_count_}; }
    std::uint64_t driver_features() const { return driver_features_; }
    std::size_t header_bytes() const { return header_; } // what the device uses, from the driver's features
    std::uint64_t notifications(std::uint16_t q) const { return q <= 1 ? notifications_[q] : 0; }
    std::uint64_t faults() const { return faults_; }
    std::uint64_t delivered() const { return delivered_; }
    std::uint64_t sent_total() const { return sent_total_; } // frames accepted from the transmit queue
    std::uint64_t rx_missed() const { return rx_missed_; }   // deliver() found no buffer
    std::uint64_t interrupts() const { return interrupts_; } // queue or config interrupts raised
    std::uint64_t config_reads() const { return config_reads_; }
    // Receive buffers posted and not yet used.
    std::uint16_t rx_available() const {
        return has_queue_[vnet::rx_queue] ? queue_[vnet::rx_queue].value.available() : 0;
    }
    device* queue(std::uint16_t q) { return q <= 1 && has_queue_[q] ? &queue_[q].value : nullptr; }

private:
    bool split_required() const {
        return opt_.legacy && (driver_features_ & bit(vnet::feature_any_layout)) == 0;
    }

    // Device-writable only, room for header + frame, and the header alone first when it must be.
    bool rx_chain_ok(const chain& c, std::size_t frame) const {
        for (const virtio::segment& s : c.all())
            if (!s.writable) return false;
        if (split_required() && c.all()[0].len != header_) return false;
        return c.writable_bytes() >= header_ + frame;
    }

    // Checks a transmit chain and keeps its frame; a bad one is counted and not kept.
    void take_tx(const chain& c) {
        const auto segs = c.all();
        bool ok = c.writable_bytes() == 0 && c.readable_bytes() > header_ &&
                  c.readable_bytes() <= header_ + vnet::max_frame;
        if (ok && split_required()) ok = segs[0].len == header_;
        std::array<std::byte, vnet::header_modern + vnet::max_frame> image{};
        if (ok) {
            const std::size_t n = c.read(image);
            for (std::size_t i = 0; i < header_; ++i) ok = ok && image[i] == std::byte{0};
            if (ok) {
                sent_frame& f = sent_[(sent_head_ + sent_count_) % N];
                f.len = n - header_;
                for (std::size_t i = 0; i < f.len; ++i) f.data[i] = image[header_ + i];
                ++sent_count_;
                ++sent_total_;
            }
        }
        if (!ok) ++faults_;
    }

    void raise(std::uint32_t bits) {
        interrupt_ |= bits;
        ++interrupts_;
    }
    void put16(std::uint32_t off, std::uint16_t v) {
        config_[off] = std::byte(v & 0xff);
        config_[off + 1] = std::byte(v >> 8);
    }
    void log(std::uint8_t s) {
        if (log_count_ < log_.size()) log_[log_count_++] = s;
    }

    options opt_;
    std::array<std::byte, 32> config_{};
    std::array<std::uint8_t, 32> log_{};
    std::size_t log_count_ = 0;
    std::uint8_t status_ = 0;
    std::uint64_t driver_features_ = 0;
    std::size_t header_ = vnet::header_modern;
    std::uint32_t interrupt_ = 0;
    union queue_slot { // no destructor anywhere: usable as a static in a kernel without atexit
        constexpr queue_slot() : none{0} {}
        char none;
        device value;
    };
    std::array<queue_slot, 2> queue_{};
    std::array<bool, 2> has_queue_{};
    std::array<sent_frame, N> sent_{};
    std::size_t sent_head_ = 0, sent_count_ = 0;
    std::uint32_t forced_rx_len_ = 0, forced_tx_len_ = 0;
    bool force_rx_len_ = false, force_tx_len_ = false;
    std::uint8_t rx_flags_ = 0, rx_gso_ = 0;
    std::array<std::uint64_t, 2> notifications_{};
    std::uint64_t faults_ = 0, delivered_ = 0, sent_total_ = 0, rx_missed_ = 0, interrupts_ = 0;
    std::uint64_t config_reads_ = 0;
};

// What the driver holds: a pointer to the device, copied freely.
template <std::uint16_t N>
using fake_virtio_net_transport = virtio::fake_transport<fake_virtio_net<N>>;
static_assert(virtio::transport<fake_virtio_net_transport<8>>);

} // namespace toro::net
