// net_device: what the network stack asks of a NIC, shaped like smoltcp's phy::Device: frames are reached
// through single-use tokens over driver-owned buffers, so nothing is copied or allocated between the driver
// and the stack. The concept, an archetype that models exactly it, and the freestanding fakes: loopback,
// paired_nics and faulty_nic<D> (seeded drop / corrupt / duplicate / reorder). The pcap writer is host-only:
// toro/dev/pcap.hpp.
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>
#include <utility>

#include <toro/base/expected.hpp>
#include <toro/base/maybe.hpp>

namespace toro {

using mac_address = std::array<std::uint8_t, 6>;

namespace detail {
template <class R>
struct as_expected {
    using type = expected<R>;
};
template <class X>
struct as_expected<expected<X>> {
    using type = expected<X>;
};
} // namespace detail

// What tx_token::consume(len, f) returns when f returns R: expected<R>, or R itself when R already is an
// expected (the errors are flattened, not nested). The error says the frame was not sent and f not called.
template <class R>
using tx_result_t = typename detail::as_expected<R>::type;

template <class F>
using rx_result_t = std::invoke_result_t<F&, std::span<const std::byte>>;
template <class F>
using tx_fn_result_t = tx_result_t<std::invoke_result_t<F&, std::span<std::byte>>>;

// For drivers' tx tokens: calls f(buffer) and wraps what it returns as tx_result_t.
template <class F>
tx_fn_result_t<F> invoke_tx(F& f, std::span<std::byte> buffer) {
    if constexpr (std::is_void_v<std::invoke_result_t<F&, std::span<std::byte>>>) {
        f(buffer);
        return {};
    } else {
        return f(buffer);
    }
}

// The frame lengths a tx token accepts: 1..mtu. Longer frames are an error, not clamped: a silently cut
// frame is a corrupt frame on the wire.
constexpr expected<void> check_tx_length(std::size_t len, std::size_t mtu) {
    if (len == 0) return unexpected{"empty frame"};
    if (len > mtu) return unexpected{"frame longer than the NIC's MTU; bytes", len};
    return {};
}

namespace detail {
// Stand-ins for the stack's callbacks, so the concepts can check consume's result types.
struct rx_probe {
    int operator()(std::span<const std::byte>) const { return 0; }
};
struct rx_void_probe {
    void operator()(std::span<const std::byte>) const {}
};
struct tx_probe {
    int operator()(std::span<std::byte>) const { return 0; }
};
struct tx_void_probe {
    void operator()(std::span<std::byte>) const {}
};
struct tx_expected_probe {
    expected<int> operator()(std::span<std::byte>) const { return 0; }
};
} // namespace detail

// std::move(t).consume(f): calls f(frame) once, frame a driver-owned buffer valid only during the call, and
// returns what f returns; the frame is then given back to the driver. A token that has gone stale (its frame
// taken through another token) calls f with an empty span. Dropping an unconsumed token leaves the frame
// waiting for the next receive().
template <class T>
concept rx_token = std::move_constructible<T> && requires(T t, detail::rx_probe f, detail::rx_void_probe v) {
    { std::move(t).consume(f) } -> std::same_as<int>;
    { std::move(t).consume(v) } -> std::same_as<void>;
};

// std::move(t).consume(len, f): calls f(buffer) once, buffer a driver-owned span of exactly len bytes, and
// sends the buffer when f returns (whatever f returns). Returns tx_result_t<what f returns>; an error (len
// outside 1..mtu(), no transmit buffer free any more, token already used) means f was not called and nothing
// was sent.
template <class T>
concept tx_token = std::move_constructible<T> &&
    requires(T t, std::size_t len, detail::tx_probe f, detail::tx_void_probe v, detail::tx_expected_probe e) {
    { std::move(t).consume(len, f) } -> std::same_as<expected<int>>;
    { std::move(t).consume(len, v) } -> std::same_as<expected<void>>;
    { std::move(t).consume(len, e) } -> std::same_as<expected<int>>;
};

// What receive() yields: the frame that is waiting, and a way to answer it.
template <class Rx, class Tx>
struct received {
    Rx rx;
    Tx tx;
};

// receive(): a received frame's tokens, or nothing when no frame waits. transmit(): a tx token, or nothing
// when no transmit buffer is free. Tokens point into the device: they must not outlive it, and a user takes
// at most one rx token at a time (consumed or dropped before the next receive()). mac(): the station address.
// mtu(): the largest frame in bytes, Ethernet header included, FCS excluded (1514 for a standard Ethernet
// NIC).
template <class D>
concept net_device = rx_token<typename D::rx_token> && tx_token<typename D::tx_token> &&
    requires(D& d, const D& cd) {
    { d.receive() } -> std::same_as<maybe<received<typename D::rx_token, typename D::tx_token>>>;
    { d.transmit() } -> std::same_as<maybe<typename D::tx_token>>;
    { cd.mac() } -> std::same_as<mac_address>;
    { cd.mtu() } -> std::same_as<std::size_t>;
};

// Models net_device and nothing more (device not copyable or movable; tokens move-only): a NIC on which no
// frame ever arrives and no transmit buffer is ever free.
struct net_device_archetype {
    class rx_token {
    public:
        rx_token(rx_token&&) = default;
        rx_token(const rx_token&) = delete;
        rx_token& operator=(const rx_token&) = delete;
        template <class F>
        rx_result_t<F> consume(F&& f) && {
            return f(std::span<const std::byte>{});
        }

    private:
        rx_token() = default;
    };
    class tx_token {
    public:
        tx_token(tx_token&&) = default;
        tx_token(const tx_token&) = delete;
        tx_token& operator=(const tx_token&) = delete;
        template <class F>
        tx_fn_result_t<F> consume(std::size_t len, F&&) && {
            return unexpected{"frame longer than the NIC's MTU; bytes", len};
        }

    private:
        tx_token() = default;
    };

    net_device_archetype() = default;
    net_device_archetype(const net_device_archetype&) = delete;
    net_device_archetype& operator=(const net_device_archetype&) = delete;
    maybe<received<rx_token, tx_token>> receive() { return nothing; }
    maybe<tx_token> transmit() { return nothing; }
    mac_address mac() const { return {}; }
    std::size_t mtu() const { return 1514; }
};
static_assert(net_device<net_device_archetype>);

namespace detail {

// A bounded FIFO of frames in fixed-size slots: what one direction of a fake link holds.
template <std::size_t Slots, std::size_t FrameSize>
struct frame_ring {
    static_assert(Slots > 0 && FrameSize > 0);
    std::array<std::array<std::byte, FrameSize>, Slots> slot{};
    std::array<std::size_t, Slots> len{};
    std::size_t head = 0, count = 0;
    std::uint64_t pushed = 0, popped = 0;  // popped is the sequence number of the frame at head
    std::uint64_t overflows = 0;           // transmits refused because the ring was full
    bool reading = false, writing = false; // a token's f is running on a slot
};

// A NIC over two rings (receive from one, transmit into the other): both ends of paired_nics, and loopback
// with the same ring twice.
template <std::size_t Slots, std::size_t FrameSize>
class ring_nic {
    using ring = frame_ring<Slots, FrameSize>;

public:
    class rx_token {
    public:
        rx_token(rx_token&&) = default;
        rx_token(const rx_token&) = delete;
        rx_token& operator=(const rx_token&) = delete;

        template <class F>
        rx_result_t<F> consume(F&& f) && {
            ring& r = *ring_;
            if (r.reading || r.count == 0 || r.popped != seq_) return f(std::span<const std::byte>{});
            r.reading = true;
            struct pop_on_exit { // after f returns, whatever it returns (void included)
                ring& r;
                ~pop_on_exit() {
                    r.head = (r.head + 1) % Slots;
                    --r.count;
                    ++r.popped;
                    r.reading = false;
                }
            } pop{r};
            return f(std::span<const std::byte>{r.slot[r.head].data(), r.len[r.head]});
        }

    private:
        friend ring_nic;
        rx_token(ring* r, std::uint64_t seq) : ring_{r}, seq_{seq} {}
        ring* ring_;
        std::uint64_t seq_; // the frame this token may take
    };

    class tx_token {
    public:
        tx_token(tx_token&& o) : ring_{std::exchange(o.ring_, nullptr)} {}
        tx_token(const tx_token&) = delete;
        tx_token& operator=(const tx_token&) = delete;

        template <class F>
        tx_fn_result_t<F> consume(std::size_t len, F&& f) && {
            ring* const rp = std::exchange(ring_, nullptr);
            if (rp == nullptr) return unexpected{"transmit token already used"};
            if (auto ok = check_tx_length(len, FrameSize); !ok) return unexpected{ok.error()};
            ring& r = *rp;
            if (r.writing) return unexpected{"transmit token consumed inside another transmit's callback"};
            if (r.count == Slots) {
                ++r.overflows;
                return unexpected{"transmit queue full; frames", Slots};
            }
            const std::size_t at = (r.head + r.count) % Slots;
            r.writing = true;
            struct push_on_exit {
                ring& r;
                std::size_t at, len;
                ~push_on_exit() {
                    r.len[at] = len;
                    ++r.count;
                    ++r.pushed;
                    r.writing = false;
                }
            } push{r, at, len};
            return invoke_tx(f, std::span<std::byte>{r.slot[at].data(), len});
        }

    private:
        friend ring_nic;
        explicit tx_token(ring* r) : ring_{r} {}
        ring* ring_;
    };

    ring_nic(ring* rx, ring* tx, mac_address mac) : rx_{rx}, tx_{tx}, mac_{mac} {}
    ring_nic(const ring_nic&) = delete;
    ring_nic& operator=(const ring_nic&) = delete;

    maybe<received<rx_token, tx_token>> receive() {
        if (rx_->count == 0) return nothing;
        return received<rx_token, tx_token>{rx_token{rx_, rx_->popped}, tx_token{tx_}};
    }
    maybe<tx_token> transmit() {
        if (tx_->count == Slots) return nothing;
        return tx_token{tx_};
    }
    mac_address mac() const { return mac_; }
    std::size_t mtu() const { return FrameSize; }

    std::uint64_t frames_sent() const { return tx_->pushed; }     // frames this NIC has sent
    std::uint64_t frames_received() const { return rx_->popped; } // frames this NIC has taken in
    std::size_t pending() const { return rx_->count; }            // frames waiting to be received here
    std::uint64_t overflows() const { return tx_->overflows; }    // sends refused: the peer's queue was full

private:
    ring* rx_;
    ring* tx_;
    mac_address mac_;
};

} // namespace detail

// Every frame sent comes back, in order; at most Slots frames wait (a send to a full queue is an error).
// Not copyable or movable: tokens point into it.
template <std::size_t Slots = 8, std::size_t FrameSize = 1514>
class loopback : public detail::ring_nic<Slots, FrameSize> {
public:
    explicit loopback(mac_address mac = {0x02, 0, 0, 0, 0, 0x01})
        : detail::ring_nic<Slots, FrameSize>{&ring_, &ring_, mac} {} // (only ring_'s address is taken here)

private:
    detail::frame_ring<Slots, FrameSize> ring_;
};
static_assert(net_device<loopback<>>);

// Two NICs joined by a cable: what a sends, b receives, and the other way, in order, each direction holding
// at most Slots frames.
template <std::size_t Slots = 8, std::size_t FrameSize = 1514>
class paired_nics {
    detail::frame_ring<Slots, FrameSize> a_to_b_, b_to_a_;

public:
    using nic = detail::ring_nic<Slots, FrameSize>;
    nic a, b;

    explicit paired_nics(mac_address mac_a = {0x02, 0, 0, 0, 0, 0x0a},
                         mac_address mac_b = {0x02, 0, 0, 0, 0, 0x0b})
        : a{&b_to_a_, &a_to_b_, mac_a}, b{&a_to_b_, &b_to_a_, mac_b} {}
    paired_nics(const paired_nics&) = delete;
    paired_nics& operator=(const paired_nics&) = delete;
};
static_assert(net_device<paired_nics<>::nic>);

// Per mille (0..1000) of the frames a faulty_nic receives that suffer each fault.
struct nic_fault_rates {
    std::uint16_t drop = 0;      // never delivered
    std::uint16_t corrupt = 0;   // one byte flipped (xor with a non-zero mask)
    std::uint16_t duplicate = 0; // delivered twice in a row
    std::uint16_t reorder = 0;   // held back and delivered after the next frame
};

// Wraps any NIC and damages the frames it receives, drawing from a xorshift64 generator: the same seed, rates
// and sequence of calls give the same damage. Transmits pass through untouched (to damage both directions of
// a link, wrap both ends). Five draws per frame whatever the rates, so changing one rate does not reshuffle
// the others' choices. A held frame (reordered or duplicated; one at a time, a fault that would need a second
// one is skipped) is delivered after the next frame, or at the next receive() that finds no other frame.
// Corrupted, duplicated and reordered frames are copied through MaxFrame-byte buffers: a longer frame is
// delivered unharmed, or lost if it was to be held back (counted in dropped()).
template <net_device D, std::size_t MaxFrame = 1514>
class faulty_nic {
    using inner_rx = typename D::rx_token;
    using inner_tx = typename D::tx_token;

    struct fate {
        bool drop, corrupt, duplicate, reorder;
        std::uint64_t where; // which byte to flip, and the mask
    };

public:
    class rx_token {
    public:
        rx_token(rx_token&&) = default;
        rx_token(const rx_token&) = delete;
        rx_token& operator=(const rx_token&) = delete;

        template <class F>
        rx_result_t<F> consume(F&& f) && {
            faulty_nic& n = *nic_;
            if (!inner_) { // the held frame
                if (!n.held_ || n.held_generation_ != generation_) return f(std::span<const std::byte>{});
                struct release_on_exit {
                    faulty_nic& n;
                    ~release_on_exit() {
                        n.held_ = false;
                        ++n.delivered_;
                    }
                } release{n};
                return f(std::span<const std::byte>{n.held_buf_.data(), n.held_len_});
            }
            struct delivered_on_exit { // a held reordered frame may go once this one has
                faulty_nic& n;
                ~delivered_on_exit() {
                    n.held_ready_ = true;
                    ++n.delivered_;
                }
            } delivered{n};
            if (!fate_.corrupt && !fate_.duplicate) return std::move(*inner_).consume(f);
            return std::move(*inner_).consume([&](std::span<const std::byte> frame) -> rx_result_t<F> {
                if (frame.empty() || frame.size() > MaxFrame) return f(frame);
                for (std::size_t i = 0; i < frame.size(); ++i) n.scratch_[i] = frame[i];
                std::span<std::byte> copy{n.scratch_.data(), frame.size()};
                if (fate_.corrupt) n.flip(copy, fate_.where);
                if (fate_.duplicate && !n.held_) {
                    n.hold(copy);
                    ++n.duplicated_;
                }
                return f(std::span<const std::byte>{copy});
            });
        }

    private:
        friend faulty_nic;
        rx_token(faulty_nic* n, maybe<inner_rx> inner, fate f, std::uint64_t generation)
            : nic_{n}, inner_{std::move(inner)}, fate_{f}, generation_{generation} {}
        faulty_nic* nic_;
        maybe<inner_rx> inner_; // nothing: this token delivers the held frame
        fate fate_;
        std::uint64_t generation_;
    };

    class tx_token {
    public:
        tx_token(tx_token&&) = default;
        tx_token(const tx_token&) = delete;
        tx_token& operator=(const tx_token&) = delete;

        template <class F>
        tx_fn_result_t<F> consume(std::size_t len, F&& f) && {
            if (!inner_) return unexpected{"no transmit buffer free"};
            return std::move(*inner_).consume(len, f);
        }

    private:
        friend faulty_nic;
        explicit tx_token(maybe<inner_tx> inner) : inner_{std::move(inner)} {}
        maybe<inner_tx> inner_;
    };

    faulty_nic(D& inner, std::uint64_t seed, nic_fault_rates rates) : inner_{inner}, rates_{rates} {
        // splitmix64 of the seed: any seed (0 included) gives a well-mixed, non-zero xorshift state.
        std::uint64_t z = seed + 0x9e3779b97f4a7c15;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
        z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
        state_ = (z ^ (z >> 31)) | 1;
    }
    faulty_nic(const faulty_nic&) = delete;
    faulty_nic& operator=(const faulty_nic&) = delete;

    maybe<received<rx_token, tx_token>> receive() {
        for (;;) {
            if (held_ && held_ready_) return held_token();
            auto r = inner_.receive();
            if (!r) {
                if (held_) return held_token();
                return nothing;
            }
            const fate f = roll();
            if (f.drop) {
                std::move(r->rx).consume([](std::span<const std::byte>) {});
                ++dropped_;
                continue;
            }
            if (f.reorder && !held_) {
                const bool held = std::move(r->rx).consume([&](std::span<const std::byte> frame) {
                    if (frame.empty() || frame.size() > MaxFrame) return false;
                    std::span<std::byte> copy{held_buf_.data(), frame.size()};
                    for (std::size_t i = 0; i < frame.size(); ++i) copy[i] = frame[i];
                    if (f.corrupt) flip(copy, f.where);
                    hold(copy);
                    held_ready_ = false;
                    return true;
                });
                if (held)
                    ++reordered_;
                else
                    ++dropped_;
                continue;
            }
            return received<rx_token, tx_token>{rx_token{this, std::move(r->rx), f, 0},
                                                tx_token{std::move(r->tx)}};
        }
    }
    maybe<tx_token> transmit() {
        auto t = inner_.transmit();
        if (!t) return nothing;
        return tx_token{std::move(*t)};
    }
    mac_address mac() const { return inner_.mac(); }
    std::size_t mtu() const { return inner_.mtu(); }

    // Frames handed to the stack (duplicates count twice), and the faults done so far.
    std::uint64_t delivered() const { return delivered_; }
    std::uint64_t dropped() const { return dropped_; }
    std::uint64_t corrupted() const { return corrupted_; }
    std::uint64_t duplicated() const { return duplicated_; }
    std::uint64_t reordered() const { return reordered_; }
    D& inner() const { return inner_; }

private:
    std::uint64_t next() {
        state_ ^= state_ << 13;
        state_ ^= state_ >> 7;
        state_ ^= state_ << 17;
        return state_;
    }
    bool chance(std::uint16_t per_mille) { return next() % 1000 < per_mille; }
    fate roll() {
        fate f{};
        f.drop = chance(rates_.drop);
        f.corrupt = chance(rates_.corrupt);
        f.duplicate = chance(rates_.duplicate);
        f.reorder = chance(rates_.reorder);
        f.where = next();
        return f;
    }
    void flip(std::span<std::byte> frame, std::uint64_t where) {
        const auto mask = static_cast<std::byte>((where >> 56) | 1); // never 0: the byte always changes
        frame[where % frame.size()] ^= mask;
        ++corrupted_;
    }
    // Copies frame into the held buffer (a no-op when it is already there).
    void hold(std::span<const std::byte> frame) {
        if (frame.data() != held_buf_.data())
            for (std::size_t i = 0; i < frame.size(); ++i) held_buf_[i] = frame[i];
        held_len_ = frame.size();
        held_ = true;
        held_ready_ = true;
        ++held_generation_;
    }
    maybe<received<rx_token, tx_token>> held_token() {
        return received<rx_token, tx_token>{rx_token{this, nothing, fate{}, held_generation_},
                                            tx_token{inner_.transmit()}};
    }

    D& inner_;
    nic_fault_rates rates_;
    std::uint64_t state_;
    std::array<std::byte, MaxFrame> scratch_{}, held_buf_{};
    std::size_t held_len_ = 0;
    bool held_ = false, held_ready_ = false;
    std::uint64_t held_generation_ = 0;
    std::uint64_t delivered_ = 0, dropped_ = 0, corrupted_ = 0, duplicated_ = 0, reordered_ = 0;
};
static_assert(net_device<faulty_nic<net_device_archetype>>);
static_assert(net_device<faulty_nic<loopback<>>>);

} // namespace toro
