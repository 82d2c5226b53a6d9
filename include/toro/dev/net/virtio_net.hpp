// The virtio-net driver (virtio 1.x, section 5.1) over any virtio::transport, modelling toro::net_device.
//
// One receive queue (0) and one transmit queue (1), no control queue, no offloads. The features taken are
// MAC, STATUS, EVENT_IDX, VERSION_1 (modern transports) and ANY_LAYOUT (legacy ones); never MRG_RXBUF, CSUM
// or GSO, so every frame travels whole in one buffer behind a struct virtio_net_hdr, all zeros on transmit.
// The header is 12 bytes with VERSION_1 (num_buffers is always there) and 10 bytes for a legacy device
// without MRG_RXBUF (5.1.6, "Legacy Interface: Device Operation").
//
// Buffers. The driver owns QueueSize receive and QueueSize transmit buffers of 2048 bytes (header, then a
// frame of up to 1514 bytes), so nothing is allocated or copied: an rx token hands the stack the frame
// where the device wrote it, and gives the buffer back to the device once consumed; a tx token lets the
// stack write its frame in place, behind the header. A buffer is one descriptor, except for a legacy
// device that did not take ANY_LAYOUT: it gets the header in a descriptor of its own (5.1.6.6, "Legacy
// Interface: Message Framing"), so only half as many buffers fit in its rings. Every receive buffer is
// posted at start() and re-posted once its frame is consumed or dropped. Sent buffers are reclaimed lazily,
// by transmit() and tx tokens, so transmit interrupts start disabled.
//
// Trust. The virtqueue validates used elements (index, id, length within the chain's writable bytes); the
// driver then drops a received chain shorter than header + Ethernet header, or whose header announces a
// partial checksum or a GSO frame it never negotiated (5.1.6.4), counts it (rx_dropped()) and re-posts the
// buffer. An element naming no chain in flight is skipped and counted (bogus_completions()). A used index
// that runs ahead makes the device unusable: it is reset (so it stops writing into our buffers), receive()
// and transmit() answer nothing and tokens go stale until start() is called again. The used length of a
// transmit chain is ignored: the device writes nothing there, and legacy devices are known to report it
// carelessly (2.7.8.2). Frames are zero copy: a device that writes into a buffer it returned can change a
// frame under the stack; without an IOMMU nothing stops it.
//
// Interrupts and waiting. has_frame() (a used rx chain or a frame waits) and can_transmit() (a tx buffer is
// free or a sent one can be reclaimed) are what an interrupt-driven wait policy polls; interrupt_status()
// reads and acknowledges the ISR (bit 1: the link status may have changed); the *_interrupts() calls are the
// virtqueue's interrupt suppression. wait_frame() and wait_transmit() block through Wait::wait(ready)
// (poll_wait spins); a policy may return with ready() still false to give up, and nothing is broken then:
// the device only holds empty receive buffers and frames it will send.
//
// Not thread-safe: one owner (or the owner's lock) calls everything, tokens included.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <new>
#include <span>
#include <type_traits>
#include <utility>

#include <toro/base/expected.hpp>
#include <toro/base/maybe.hpp>
#include <toro/dev/net_device.hpp>
#include <toro/dev/virtio/transport.hpp>
#include <toro/dev/virtio/virtqueue.hpp>

namespace toro::net {

// What the virtio-net spec defines, and the driver's sizes.
namespace vnet {
// Feature bits (5.1.3). Only mac, status and (legacy) any_layout are taken; the others are named so tests
// can offer them and check they are declined.
inline constexpr unsigned feature_csum = 0;
inline constexpr unsigned feature_guest_csum = 1;
inline constexpr unsigned feature_mtu = 3;
inline constexpr unsigned feature_mac = 5;
inline constexpr unsigned feature_guest_tso4 = 7;
inline constexpr unsigned feature_host_tso4 = 11;
inline constexpr unsigned feature_mrg_rxbuf = 15;
inline constexpr unsigned feature_status = 16;
inline constexpr unsigned feature_ctrl_vq = 17;
inline constexpr unsigned feature_mq = 22;
inline constexpr unsigned feature_any_layout = 27; // VIRTIO_F_ANY_LAYOUT: legacy only, implied by VERSION_1

// Configuration space (5.1.4): mac[6], le16 status, le16 max_virtqueue_pairs, ...
inline constexpr std::uint32_t config_mac = 0;
inline constexpr std::uint32_t config_status = 6;
inline constexpr std::uint32_t config_max_pairs = 8;
inline constexpr std::uint16_t status_link_up = 1;
inline constexpr std::uint16_t status_announce = 2;

// Queues (5.1.2): receiveq1, transmitq1.
inline constexpr std::uint16_t rx_queue = 0;
inline constexpr std::uint16_t tx_queue = 1;

// struct virtio_net_hdr (5.1.6): flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, then
// num_buffers with VERSION_1 or MRG_RXBUF.
inline constexpr std::size_t header_legacy = 10;
inline constexpr std::size_t header_modern = 12;
inline constexpr std::size_t header_flags = 0; // byte offsets in the header
inline constexpr std::size_t header_gso_type = 1;
inline constexpr std::size_t header_num_buffers = 10;
inline constexpr std::uint8_t hdr_f_needs_csum = 1; // partial checksum: only with GUEST_CSUM
inline constexpr std::uint8_t hdr_f_data_valid = 2; // checksum verified: allowed without GUEST_CSUM
inline constexpr std::uint8_t gso_none = 0;

// Frames: an Ethernet header (14) up to 1514 bytes, no FCS.
inline constexpr std::size_t min_frame = 14;
inline constexpr std::size_t max_frame = 1514;
// One buffer: the header and a whole frame (1526 bytes at most, 5.1.6.3.1) rounded up, so buffers stay
// naturally aligned and none straddles a page.
inline constexpr std::size_t buffer_bytes = 2048;

// The station address when the device gives none (no VIRTIO_NET_F_MAC; Firecracker without guest_mac):
// locally administered (bit 1 of the first octet), unicast, and "toro" in the middle so it is recognisable
// in a capture. The spec suggests a random local address; there is no entropy source here, so start()
// takes one from the caller instead, defaulting to this.
inline constexpr mac_address fallback_mac{0x02, 0x74, 0x6f, 0x72, 0x6f, 0x01};

using virtio::poll_wait;
} // namespace vnet

// The errors, so callers can tell them apart (error.what == vnet_error::...).
namespace vnet_error {
inline constexpr string_view not_started{"virtio-net: not started"};
inline constexpr string_view broken{"virtio-net: device misbehaved and was reset; start it again"};
inline constexpr string_view no_tx_buffer{"virtio-net: no transmit buffer free"};
inline constexpr string_view token_used{"virtio-net: transmit token already used"};
inline constexpr string_view nested_tx{"virtio-net: transmit token consumed inside another's callback"};
// Start-up. value: the device's maximum size of that queue (0: the queue does not exist).
inline constexpr string_view no_rx_queue{"virtio-net: receive queue missing or smaller than the driver's"};
inline constexpr string_view no_tx_queue{"virtio-net: transmit queue missing or smaller than the driver's"};
} // namespace vnet_error

template <virtio::transport T, std::uint16_t QueueSize = 64, class Wait = vnet::poll_wait>
class virtio_net {
    static_assert(QueueSize >= 2, "a legacy device without ANY_LAYOUT takes two descriptors per buffer");
    // Drivers live in static storage, and a kernel has no atexit: nothing here may need a destructor.
    static_assert(std::is_trivially_destructible_v<T> && std::is_trivially_destructible_v<Wait>,
                  "transports and wait policies are handles (port, address, event pointer)");

    static constexpr std::uint16_t none = 0xffff;
    static constexpr std::uint64_t bit(unsigned b) { return std::uint64_t{1} << b; }

public:
    static constexpr std::uint16_t queue_size = QueueSize;
    // VERSION_1 is added by virtio::negotiate for modern transports, ANY_LAYOUT by start() for legacy ones.
    static constexpr std::uint64_t wanted_features =
        bit(vnet::feature_mac) | bit(vnet::feature_status) | bit(virtio::feature_event_idx);

    // The frame that is waiting (receive() hands one out at a time); stale once that frame is taken or the
    // device is restarted or broken: then consume calls f with an empty span.
    class rx_token {
    public:
        rx_token(rx_token&&) = default;
        rx_token(const rx_token&) = delete;
        rx_token& operator=(const rx_token&) = delete;

        template <class F>
        rx_result_t<F> consume(F&& f) && {
            virtio_net& d = *dev_;
            if (!d.frame_is(seq_)) return f(std::span<const std::byte>{});
            d.reading_ = true;
            struct give_back_on_exit { // after f returns, whatever it returns (void included)
                virtio_net& d;
                std::uint64_t seq;
                ~give_back_on_exit() {
                    d.reading_ = false;
                    d.finish_rx(seq);
                }
            } give_back{d, seq_};
            return f(d.pending_frame());
        }

    private:
        friend virtio_net;
        rx_token(virtio_net* d, std::uint64_t seq) : dev_{d}, seq_{seq} {}
        virtio_net* dev_;
        std::uint64_t seq_; // the frame this token may take
    };

    // A right to send one frame. It reserves nothing: the buffer is taken at consume, which fails with
    // vnet_error::no_tx_buffer when none is free by then.
    class tx_token {
    public:
        tx_token(tx_token&& o) : dev_{std::exchange(o.dev_, nullptr)} {}
        tx_token(const tx_token&) = delete;
        tx_token& operator=(const tx_token&) = delete;

        template <class F>
        tx_fn_result_t<F> consume(std::size_t len, F&& f) && {
            virtio_net* const d = std::exchange(dev_, nullptr);
            if (d == nullptr) return unexpected{vnet_error::token_used};
            if (auto ok = check_tx_length(len, vnet::max_frame); !ok) return unexpected{ok.error()};
            auto buf = d->claim_tx();
            if (!buf) return unexpected{buf.error()};
            struct send_on_exit { // the frame goes whatever f returns
                virtio_net& d;
                std::uint16_t buf;
                std::size_t len;
                ~send_on_exit() { d.send_tx(buf, len); }
            } send{*d, *buf, len};
            return invoke_tx(f, std::span<std::byte>{d->tx_buf_[*buf].bytes.data() + d->hdr_, len});
        }

    private:
        friend virtio_net;
        explicit tx_token(virtio_net* d) : dev_{d} {}
        virtio_net* dev_;
    };

    explicit virtio_net(Wait w = {}) : wait_{std::move(w)} {}
    virtio_net(const virtio_net&) = delete;
    virtio_net& operator=(const virtio_net&) = delete;

    // Negotiates, reads the station address (or takes `fallback` when the device offers none), sets up both
    // queues, posts every receive buffer and lets the device run. Any earlier state is forgotten (tokens go
    // stale): the device is reset first. Fails when a queue is missing or smaller than QueueSize; a legacy
    // transport also refuses a QueueSize that is not the device's own size (its setup_queue says so).
    expected<void> start(T transport, mac_address fallback = vnet::fallback_mac) {
        started_ = broken_ = reading_ = writing_ = false;
        pending_ = none;
        for (auto& b : rx_of_token_) b = none;
        for (auto& b : tx_of_token_) b = none;
        ::new (&t_.value) T(std::move(transport)); // trivially destructible: nothing to end first
        have_transport_ = true;
        T& t = t_.value;

        // ANY_LAYOUT only means something to a legacy device; VERSION_1 implies it (5.1.6.6).
        const std::uint64_t wanted = wanted_features | (t.legacy() ? bit(vnet::feature_any_layout) : 0);
        auto f = virtio::negotiate(t, virtio::device_net, wanted);
        if (!f) return unexpected{f.error()};
        features_ = *f;
        const bool modern = has(virtio::feature_version_1);
        hdr_ = modern ? vnet::header_modern : vnet::header_legacy;
        split_ = !modern && !has(vnet::feature_any_layout);
        buffers_ = static_cast<std::uint16_t>(split_ ? QueueSize / 2 : QueueSize);
        mac_from_device_ = has(vnet::feature_mac);
        mac_ = mac_from_device_ ? read_mac() : fallback;

        const std::uint16_t rx_max = t.max_queue_size(vnet::rx_queue);
        if (rx_max < QueueSize) return fail(unexpected{vnet_error::no_rx_queue, rx_max});
        const std::uint16_t tx_max = t.max_queue_size(vnet::tx_queue);
        if (tx_max < QueueSize) return fail(unexpected{vnet_error::no_tx_queue, tx_max});
        virtio::virtqueue_options opt;
        opt.event_idx = has(virtio::feature_event_idx);
        if (auto ok = rx_vq_.attach(rx_rings_.memory(), opt); !ok) return fail(unexpected{ok.error()});
        if (auto ok = t.setup_queue(vnet::rx_queue, QueueSize, rx_vq_.addresses()); !ok)
            return fail(unexpected{ok.error()});
        opt.no_interrupt = true; // sent buffers are reclaimed when the next frame goes (see the top)
        if (auto ok = tx_vq_.attach(tx_rings_.memory(), opt); !ok) return fail(unexpected{ok.error()});
        if (auto ok = t.setup_queue(vnet::tx_queue, QueueSize, tx_vq_.addresses()); !ok)
            return fail(unexpected{ok.error()});

        // Populating the queues belongs before DRIVER_OK (3.1.1 step 7); notifying only after it.
        for (std::uint16_t i = 0; i < buffers_; ++i) {
            post_rx(i);
            tx_free_[i] = static_cast<std::uint16_t>(buffers_ - 1 - i); // popped from the end: 0 first
        }
        tx_free_count_ = buffers_;
        rx_vq_.publish();
        virtio::driver_ok(t);
        started_ = true;
        if (rx_vq_.should_notify()) t.notify(vnet::rx_queue);
        return {};
    }

    // net_device. receive(): the waiting frame's tokens (the same frame again when its last token was dropped
    // unconsumed), or nothing. transmit(): a tx token when a buffer is free after reclaiming sent ones.
    maybe<received<rx_token, tx_token>> receive() {
        if (!started_ || broken_) return nothing;
        if (pending_ == none && !pull_rx()) return nothing;
        return received<rx_token, tx_token>{rx_token{this, rx_seq_}, tx_token{this}};
    }
    maybe<tx_token> transmit() {
        if (!started_ || broken_) return nothing;
        reap_tx();
        if (broken_ || tx_free_count_ == 0) return nothing;
        return tx_token{this};
    }
    mac_address mac() const { return mac_; }
    std::size_t mtu() const { return vnet::max_frame; }

    // The link status from the config space when STATUS was negotiated, else up (5.1.4.2). Read afresh each
    // call: a config-change interrupt (ISR bit 1) says it may have changed.
    bool link_up() {
        if (!started_) return false;
        if (!has(vnet::feature_status)) return true;
        std::uint16_t s = 0;
        t_.value.read_config(vnet::config_status, &s, sizeof s);
        return (s & vnet::status_link_up) != 0;
    }

    // For a wait policy: a received chain or a frame waits (it may still be dropped as bad: receive() can
    // answer nothing after has_frame() said true), and a transmit buffer is or is about to be free.
    bool has_frame() const {
        if (!started_ || broken_) return false;
        return pending_ != none || rx_vq_.has_used();
    }
    bool can_transmit() const {
        if (!started_ || broken_) return false;
        return tx_free_count_ != 0 || tx_vq_.has_used();
    }

    // Reads and acknowledges the device's interrupt status: bit 0 a used buffer, bit 1 a config change.
    std::uint32_t interrupt_status() { return have_transport_ ? t_.value.interrupt_status() : 0; }

    // Interrupt suppression per queue (2.7.7), a hint the device may ignore. enable_* returns true when work
    // is already waiting, so the caller handles it instead of sleeping.
    void disable_rx_interrupts() { rx_vq_.disable_interrupts(); }
    bool enable_rx_interrupts() { return rx_vq_.enable_interrupts() || has_frame(); }
    void disable_tx_interrupts() { tx_vq_.disable_interrupts(); }
    bool enable_tx_interrupts() { return tx_vq_.enable_interrupts() || can_transmit(); }

    // Blocking helpers through the Wait policy. True once a frame waits / a transmit can go; false when the
    // policy gave up or the device is not usable.
    bool wait_frame() {
        if (!has_frame() && started_ && !broken_) wait_.wait([this] { return has_frame(); });
        return has_frame();
    }
    bool wait_transmit() {
        if (!can_transmit() && started_ && !broken_) wait_.wait([this] { return can_transmit(); });
        return can_transmit();
    }

    bool started() const { return started_; }
    bool broken() const { return broken_; }
    bool has(unsigned feature) const { return (features_ >> feature & 1) != 0; }
    std::uint64_t features() const { return features_; }
    bool mac_from_device() const { return mac_from_device_; } // false: mac() is start()'s fallback
    std::size_t header_bytes() const { return hdr_; }         // 12 modern, 10 legacy
    bool split_header() const { return split_; }              // legacy without ANY_LAYOUT
    std::uint16_t buffers() const { return buffers_; }        // receive buffers, and transmit buffers
    std::uint16_t rx_posted() const { return rx_vq_.chains_in_flight(); } // receive buffers the device holds
    std::uint16_t tx_free() const { return tx_free_count_; }              // as of the last reclaim
    std::uint64_t frames_received() const { return received_; }           // handed to the stack
    std::uint64_t frames_sent() const { return sent_; }                   // handed to the device
    std::uint64_t rx_dropped() const { return dropped_; }                 // bad lengths or headers
    std::uint64_t bogus_completions() const { return bogus_; } // used elements naming no chain in flight
    T& transport() { return t_.value; }                        // valid after start()

private:
    struct alignas(vnet::buffer_bytes) frame_buffer {
        std::array<std::byte, vnet::buffer_bytes> bytes;
    };

    expected<void> fail(unexpected e) {
        t_.value.set_status(virtio::status_failed);
        return e;
    }

    // Legacy config space has no generation counter, and the mac is one of the fields the spec names as
    // torn by a concurrent update (2.4.4): read until two reads agree. Modern transports' reads are
    // generation-checked already; the second read costs nothing that matters at start-up.
    mac_address read_mac() {
        mac_address a{}, b{};
        for (int pass = 0; pass < 4; ++pass) {
            t_.value.read_config(vnet::config_mac, a.data(), 6);
            t_.value.read_config(vnet::config_mac, b.data(), 6);
            bool same = true;
            for (std::size_t i = 0; i < 6; ++i) same = same && a[i] == b[i];
            if (same) break;
        }
        return b;
    }

    // ---- receive ----

    // Offers receive buffer `buf` to the device: header + a whole frame, device-writable; header apart for
    // a split (legacy, no ANY_LAYOUT) device. Published by kick_rx().
    void post_rx(std::uint16_t buf) {
        std::byte* p = rx_buf_[buf].bytes.data();
        const auto hdr = static_cast<std::uint32_t>(hdr_);
        std::array<virtio::buffer, 2> in{};
        std::size_t n = 1;
        if (split_) {
            in = {{{p, hdr}, {p + hdr, static_cast<std::uint32_t>(vnet::max_frame)}}};
            n = 2;
        } else {
            in[0] = {p, static_cast<std::uint32_t>(hdr + vnet::max_frame)};
        }
        // Cannot fail: buffers_ chains of (QueueSize / buffers_) descriptors fit in the ring, and a buffer
        // is posted only once the virtqueue has reclaimed its previous chain.
        auto token = rx_vq_.add({}, std::span<const virtio::buffer>{in.data(), n});
        if (token) rx_of_token_[*token] = buf;
    }

    void kick_rx() {
        rx_vq_.publish();
        if (rx_vq_.should_notify()) t_.value.notify(vnet::rx_queue);
    }

    std::uint16_t take_rx(std::uint16_t token) { return std::exchange(rx_of_token_[token], none); }

    // Pops used receive chains until a good frame becomes the pending one, or none is left. Bad ones are
    // dropped and their buffers offered again. Bounded: a device completing re-posted buffers as fast as we
    // post them cannot keep us here.
    bool pull_rx() {
        bool reposted = false, found = false;
        for (unsigned n = 0; n < 2u * QueueSize && !found; ++n) {
            auto c = rx_vq_.pop_used();
            if (!c) {
                const error e = c.error();
                if (e.what == virtio::vq_error::bad_used_id) {
                    ++bogus_;
                    continue;
                }
                if (e.what == virtio::vq_error::bad_used_len && e.value < QueueSize &&
                    rx_of_token_[e.value] != none) { // longer than the buffer: reclaimed, dropped
                    ++dropped_;
                    post_rx(take_rx(static_cast<std::uint16_t>(e.value)));
                    reposted = true;
                    continue;
                }
                break_device(); // the used index ran ahead: nothing from this device is believable
                return false;
            }
            if (!c->ready) break;
            const std::uint16_t buf = take_rx(c->token);
            if (buf == none) { // cannot happen: the virtqueue checked the chain was in flight
                ++bogus_;
                continue;
            }
            if (!frame_ok(buf, c->len)) {
                ++dropped_;
                post_rx(buf);
                reposted = true;
                continue;
            }
            pending_ = buf;
            pending_len_ = c->len - static_cast<std::uint32_t>(hdr_);
            ++rx_seq_;
            ++received_;
            found = true;
        }
        if (reposted) kick_rx();
        return found;
    }

    // The length the device wrote (already <= header + 1514) must hold a header and an Ethernet header.
    // Without GUEST_CSUM / GUEST_TSO*, NEEDS_CSUM and a GSO type are forbidden (5.1.6.4.1): the frame's
    // checksum would be partial, or the frame not one frame. DATA_VALID is fine; num_buffers is not checked
    // (vhost-net left it 0 for years where the spec says 1).
    bool frame_ok(std::uint16_t buf, std::uint32_t len) const {
        if (len < hdr_ + vnet::min_frame) return false;
        const std::byte* h = rx_buf_[buf].bytes.data();
        const auto flags = static_cast<std::uint8_t>(h[vnet::header_flags]);
        const auto gso = static_cast<std::uint8_t>(h[vnet::header_gso_type]);
        return (flags & vnet::hdr_f_needs_csum) == 0 && gso == vnet::gso_none;
    }

    bool frame_is(std::uint64_t seq) const {
        return started_ && !broken_ && !reading_ && pending_ != none && rx_seq_ == seq;
    }
    std::span<const std::byte> pending_frame() const {
        return {rx_buf_[pending_].bytes.data() + hdr_, pending_len_};
    }

    // After an rx token's f: the buffer goes back to the device (unless it was reset meanwhile, or f
    // restarted the driver and the frame is gone).
    void finish_rx(std::uint64_t seq) {
        if (pending_ == none || rx_seq_ != seq) return;
        const std::uint16_t buf = std::exchange(pending_, none);
        if (!started_ || broken_) return;
        post_rx(buf);
        kick_rx();
    }

    // ---- transmit ----

    std::uint16_t take_tx(std::uint16_t token) { return std::exchange(tx_of_token_[token], none); }
    void release_tx(std::uint16_t buf) { tx_free_[tx_free_count_++] = buf; }

    // Reclaims every transmit chain the device has finished with (bounded, as pull_rx).
    void reap_tx() {
        for (unsigned n = 0; n < 2u * QueueSize && started_ && !broken_; ++n) {
            auto c = tx_vq_.pop_used();
            if (!c) {
                const error e = c.error();
                if (e.what == virtio::vq_error::bad_used_id) {
                    ++bogus_;
                    continue;
                }
                if (e.what == virtio::vq_error::bad_used_len && e.value < QueueSize &&
                    tx_of_token_[e.value] != none) { // a length on a read-only chain: ignored (see the top)
                    release_tx(take_tx(static_cast<std::uint16_t>(e.value)));
                    continue;
                }
                break_device();
                return;
            }
            if (!c->ready) return;
            const std::uint16_t buf = take_tx(c->token);
            if (buf == none) {
                ++bogus_;
                continue;
            }
            release_tx(buf);
        }
    }

    // A free transmit buffer for a tx token, its header zeroed (no offloads: 5.1.6.2 with nothing
    // negotiated). Rewritten every time: the device could have scribbled on it.
    expected<std::uint16_t> claim_tx() {
        if (!started_) return unexpected{vnet_error::not_started};
        if (broken_) return unexpected{vnet_error::broken};
        if (writing_) return unexpected{vnet_error::nested_tx};
        reap_tx();
        if (broken_) return unexpected{vnet_error::broken};
        if (tx_free_count_ == 0) return unexpected{vnet_error::no_tx_buffer};
        const std::uint16_t buf = tx_free_[--tx_free_count_];
        __builtin_memset(tx_buf_[buf].bytes.data(), 0, hdr_);
        writing_ = true;
        return buf;
    }

    // After a tx token's f: header + frame to the device, device-readable, and the doorbell if it wants it.
    void send_tx(std::uint16_t buf, std::size_t len) {
        writing_ = false;
        if (!started_ || broken_) { // the device was reset while f ran: nothing to send to
            release_tx(buf);
            return;
        }
        const std::byte* p = tx_buf_[buf].bytes.data();
        const auto hdr = static_cast<std::uint32_t>(hdr_);
        const auto n = static_cast<std::uint32_t>(len);
        std::array<virtio::buffer, 2> out{};
        std::size_t count = 1;
        if (split_) {
            out = {{{p, hdr}, {p + hdr, n}}};
            count = 2;
        } else {
            out[0] = {p, hdr + n};
        }
        auto token = tx_vq_.add(std::span<const virtio::buffer>{out.data(), count}, {});
        if (!token) { // cannot happen (as post_rx); the buffer is kept rather than lost
            release_tx(buf);
            return;
        }
        tx_of_token_[*token] = buf;
        tx_vq_.publish();
        if (tx_vq_.should_notify()) t_.value.notify(vnet::tx_queue);
        ++sent_;
    }

    // Stops the device (a reset ends its access to our memory); the pending frame is gone, tokens stale.
    void break_device() {
        broken_ = true;
        pending_ = none;
        t_.value.reset();
        t_.value.set_status(virtio::status_failed);
    }

    // The rings first: page-aligned members, so the object is; then the buffers, 2048-aligned.
    virtio::legacy_ring_storage<QueueSize> rx_rings_;
    virtio::legacy_ring_storage<QueueSize> tx_rings_;
    std::array<frame_buffer, QueueSize> rx_buf_;
    std::array<frame_buffer, QueueSize> tx_buf_;
    virtio::virtqueue<QueueSize> rx_vq_;
    virtio::virtqueue<QueueSize> tx_vq_;
    std::array<std::uint16_t, QueueSize> rx_of_token_{}; // head descriptor -> buffer, none when idle
    std::array<std::uint16_t, QueueSize> tx_of_token_{};
    std::array<std::uint16_t, QueueSize> tx_free_{}; // a stack of free transmit buffers
    union transport_slot {
        constexpr transport_slot() : none{0} {}
        char none;
        T value; // constructed by start()
    } t_;
    Wait wait_;
    std::uint64_t features_ = 0;
    std::uint64_t rx_seq_ = 0; // bumped per frame made pending: names it for tokens, across restarts too
    std::uint64_t received_ = 0, sent_ = 0, dropped_ = 0, bogus_ = 0;
    std::size_t hdr_ = vnet::header_modern;
    std::uint32_t pending_len_ = 0;
    std::uint16_t pending_ = none; // the buffer holding the frame receive() hands out
    std::uint16_t buffers_ = 0;
    std::uint16_t tx_free_count_ = 0;
    mac_address mac_{};
    bool have_transport_ = false;
    bool started_ = false;
    bool broken_ = false;
    bool split_ = false;
    bool mac_from_device_ = false;
    bool reading_ = false; // an rx token's f is running
    bool writing_ = false; // a tx token's f is running
};

static_assert(net_device<virtio_net<virtio::transport_archetype>>);
static_assert(std::is_trivially_destructible_v<virtio_net<virtio::transport_archetype>>);

} // namespace toro::net
