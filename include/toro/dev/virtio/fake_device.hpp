// A fake virtio device for one split virtqueue: the test oracle for virtqueue<N> and for drivers built on it.
// Freestanding (no std beyond the kernel's set, no heap), so it also serves in-kernel self-tests.
//
// It behaves as a device does: it knows the queue only by the device addresses the transport would program
// (virtqueue::addresses()), maps them through its own translation, reads avail.idx with acquire and the
// available ring, and walks each chain through the descriptor table in shared memory, so a driver bug in
// the shared table (a bad link, a loop, a writable buffer before a readable one, a descriptor handed out
// twice) is an error here rather than a silently passing test. The test handles each chain (reads the
// readable buffers, fills the writable ones, chooses the written length) and completes it, in any order.
// On demand it misbehaves: any used element, any used.idx, rewritten descriptors.
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>

#include <toro/base/expected.hpp>
#include <toro/dev/virtio/virtqueue.hpp>

namespace toro::virtio {

// Device address -> driver pointer, nullptr when [addr, addr + len) is not memory the device may touch.
template <class T>
concept device_memory = requires(const T& t, std::uint64_t addr, std::uint64_t len) {
    { t.to_driver(addr, len) } -> std::same_as<std::byte*>;
};

struct identity_device_memory {
    std::byte* to_driver(std::uint64_t addr, std::uint64_t) const {
        return reinterpret_cast<std::byte*>(static_cast<std::uintptr_t>(addr));
    }
};
static_assert(device_memory<identity_device_memory>);

// One descriptor of a chain as the device sees it.
struct segment {
    std::byte* data;
    std::uint32_t len;
    bool writable;
    std::uint16_t index; // in the descriptor table
};

// A chain the device took from the available ring: readable segments first, then writable ones.
template <std::uint16_t N>
struct device_chain {
    std::uint16_t head = 0;
    std::uint16_t count = 0;
    std::array<segment, N> segments{};

    std::span<const segment> all() const { return {segments.data(), count}; }
    std::uint64_t readable_bytes() const { return bytes(false); }
    std::uint64_t writable_bytes() const { return bytes(true); }

    // Copies the readable bytes, in chain order, into `to`; returns how many were copied.
    std::size_t read(std::span<std::byte> to) const {
        std::size_t at = 0;
        for (const segment& s : all()) {
            if (s.writable) continue;
            const std::size_t n = s.len < to.size() - at ? s.len : to.size() - at;
            __builtin_memcpy(to.data() + at, s.data, n);
            at += n;
        }
        return at;
    }

    // Fills the writable buffers, in chain order, from `from`; returns how many bytes were written.
    std::uint32_t write(std::span<const std::byte> from) {
        std::size_t at = 0;
        for (const segment& s : all()) {
            if (!s.writable) continue;
            const std::size_t n = s.len < from.size() - at ? s.len : from.size() - at;
            __builtin_memcpy(s.data, from.data() + at, n);
            at += n;
        }
        return static_cast<std::uint32_t>(at);
    }

private:
    std::uint64_t bytes(bool writable) const {
        std::uint64_t n = 0;
        for (const segment& s : all())
            if (s.writable == writable) n += s.len;
        return n;
    }
};

// Errors the fake device reports: each is a driver bug (or a queue not set up).
namespace fake_error {
inline constexpr string_view unmapped_ring{"fake device: a ring's device address maps to no memory"};
inline constexpr string_view avail_jump{"fake device: avail.idx moved by more than the queue size"};
inline constexpr string_view nothing_available{"fake device: no chain available"};
inline constexpr string_view bad_head{"fake device: available ring names a descriptor beyond the table"};
inline constexpr string_view bad_next{"fake device: a descriptor links beyond the table"};
inline constexpr string_view loop{"fake device: descriptor chain longer than the table (a loop)"};
inline constexpr string_view too_long{"fake device: chain longer than the fake device's MaxChain"};
inline constexpr string_view busy{"fake device: descriptor already in a chain the device holds"};
inline constexpr string_view order{"fake device: device-readable descriptor after a device-writable one"};
inline constexpr string_view indirect{"fake device: indirect descriptor (not negotiated)"};
inline constexpr string_view zero_len{"fake device: zero-length descriptor"};
inline constexpr string_view bad_addr{"fake device: descriptor address maps to no memory"};
} // namespace fake_error

// MaxChain: the longest chain it accepts (its chains are arrays of that many segments; a big queue's tests
// can keep them small).
template <std::uint16_t N, device_memory Memory = identity_device_memory, std::uint16_t MaxChain = N>
class fake_device {
    static_assert(MaxChain >= 1 && MaxChain <= N);

public:
    using chain = device_chain<MaxChain>;

    // `event_idx`: the device negotiated VIRTIO_F_EVENT_IDX (it then writes avail_event, reads used_event).
    fake_device(queue_addresses at, Memory m = {}, bool event_idx = false)
        : mem_{m}, desc_{m.to_driver(at.desc, desc_table_bytes(N))}, avail_{m.to_driver(at.avail,
                                                                                        avail_ring_bytes(N))},
          used_{m.to_driver(at.used, used_ring_bytes(N))}, event_idx_{event_idx} {}

    bool mapped() const { return desc_ != nullptr && avail_ != nullptr && used_ != nullptr; }

    // Chains the driver published that the device has not taken yet.
    std::uint16_t available() const {
        if (!mapped()) return 0;
        return static_cast<std::uint16_t>(load16(avail_, ring_offsets::idx, __ATOMIC_ACQUIRE) - last_avail_);
    }

    // Takes the next available chain, walking the shared descriptor table as a device would.
    expected<chain> take() {
        if (!mapped()) return unexpected{fake_error::unmapped_ring};
        const std::uint16_t ready = available();
        if (ready > N) return unexpected{fake_error::avail_jump, ready};
        if (ready == 0) return unexpected{fake_error::nothing_available};
        const std::uint16_t head = load16(avail_, ring_offsets::avail_slot(last_avail_ % N));
        if (head >= N) return unexpected{fake_error::bad_head, head};

        chain c;
        c.head = head;
        std::uint16_t d = head;
        bool seen_writable = false;
        for (;;) {
            if (c.count == N) return unexpected{fake_error::loop, head};
            if (c.count == MaxChain) return unexpected{fake_error::too_long, head};
            if (owner_[d] != 0) return unexpected{fake_error::busy, d};
            virtq_desc v;
            __builtin_memcpy(&v, desc_ + 16 * std::size_t{d}, sizeof v);
            if (v.flags & desc_f_indirect) return unexpected{fake_error::indirect, d};
            const bool writable = (v.flags & desc_f_write) != 0;
            if (seen_writable && !writable) return unexpected{fake_error::order, d};
            seen_writable = writable;
            if (v.len == 0) return unexpected{fake_error::zero_len, d};
            std::byte* p = mem_.to_driver(v.addr, v.len);
            if (p == nullptr) return unexpected{fake_error::bad_addr, v.addr};
            c.segments[c.count++] = {p, v.len, writable, d};
            if ((v.flags & desc_f_next) == 0) break;
            if (v.next >= N) return unexpected{fake_error::bad_next, v.next};
            d = v.next;
        }
        // Only now is the chain the device's: an error above leaves it available.
        for (const segment& s : c.all()) owner_[s.index] = static_cast<std::uint16_t>(head + 1);
        ++last_avail_;
        if (event_idx_)
            store16(used_, ring_offsets::avail_event(N), last_avail_); // notify me for the next one
        ++taken_;
        return c;
    }

    // Returns a chain to the driver: a used element, then used.idx with release (2.7.8).
    void complete(std::uint16_t head, std::uint32_t len) {
        for (std::uint16_t d = 0; d < N; ++d)
            if (owner_[d] == head + 1) owner_[d] = 0;
        post_raw(head, len);
    }

    // Takes every available chain and completes each, in order, with the length `handle(chain&)` returns.
    // Returns how many chains were served, or the first error.
    template <class Handler>
    expected<std::uint16_t> serve(Handler&& handle) {
        std::uint16_t served = 0;
        while (available() != 0) {
            auto c = take();
            if (!c) return unexpected{c.error()};
            const std::uint32_t len = handle(*c);
            complete(c->head, len);
            ++served;
        }
        return served;
    }

    // Whether the device would interrupt for the used elements posted since the last call (2.7.7).
    bool should_interrupt() {
        const std::uint16_t old = signalled_at_;
        signalled_at_ = used_idx_;
        if (old == used_idx_) return false;
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (event_idx_)
            return virtqueue<N>::need_event(load16(avail_, ring_offsets::used_event(N)), used_idx_, old);
        return (load16(avail_, ring_offsets::flags) & avail_f_no_interrupt) == 0;
    }

    // Device-side notification suppression: VIRTQ_USED_F_NO_NOTIFY, or avail_event with event_idx.
    void set_no_notify(bool on) { store16(used_, ring_offsets::flags, on ? used_f_no_notify : 0); }
    void set_avail_event(std::uint16_t idx) { store16(used_, ring_offsets::avail_event(N), idx); }

    // Misbehaviour. post_raw: any element at the next used slot, then used.idx + 1. write_used: an element
    // at any slot, used.idx untouched. set_used_idx: used.idx to anything. poke_desc / poke_next: rewrite
    // a descriptor in the shared table (the driver must not trust it).
    void post_raw(std::uint32_t id, std::uint32_t len) {
        write_used(used_idx_, id, len);
        set_used_idx(static_cast<std::uint16_t>(used_idx_ + 1));
    }
    void write_used(std::uint16_t index, std::uint32_t id, std::uint32_t len) {
        const std::size_t slot = ring_offsets::used_slot(index % N);
        __atomic_store_n(reinterpret_cast<std::uint32_t*>(used_ + slot), id, __ATOMIC_RELAXED);
        __atomic_store_n(reinterpret_cast<std::uint32_t*>(used_ + slot + 4), len, __ATOMIC_RELAXED);
    }
    void set_used_idx(std::uint16_t idx) {
        used_idx_ = idx;
        __atomic_store_n(reinterpret_cast<std::uint16_t*>(used_ + ring_offsets::idx), idx, __ATOMIC_RELEASE);
    }
    void poke_desc(std::uint16_t d, const virtq_desc& v) {
        __builtin_memcpy(desc_ + 16 * std::size_t{d}, &v, 16);
    }
    void poke_next(std::uint16_t d, std::uint16_t next) {
        __builtin_memcpy(desc_ + 16 * std::size_t{d} + 14, &next, 2);
    }
    virtq_desc peek_desc(std::uint16_t d) const {
        virtq_desc v;
        __builtin_memcpy(&v, desc_ + 16 * std::size_t{d}, sizeof v);
        return v;
    }

    std::uint16_t used_idx() const { return used_idx_; }
    std::uint64_t chains_taken() const { return taken_; }
    // Descriptors in chains the device has taken and not completed.
    std::uint16_t held_descriptors() const {
        std::uint16_t n = 0;
        for (std::uint16_t o : owner_) n = static_cast<std::uint16_t>(n + (o != 0));
        return n;
    }

private:
    static std::uint16_t load16(std::byte* base, std::size_t off, int order = __ATOMIC_RELAXED) {
        return __atomic_load_n(reinterpret_cast<std::uint16_t*>(base + off), order);
    }
    static void store16(std::byte* base, std::size_t off, std::uint16_t v) {
        __atomic_store_n(reinterpret_cast<std::uint16_t*>(base + off), v, __ATOMIC_RELAXED);
    }

    Memory mem_;
    std::byte* desc_;
    std::byte* avail_;
    std::byte* used_;
    bool event_idx_;
    std::uint16_t last_avail_ = 0;   // avail entries taken
    std::uint16_t used_idx_ = 0;     // the used.idx the device last wrote
    std::uint16_t signalled_at_ = 0; // used_idx_ at the last should_interrupt()
    std::uint64_t taken_ = 0;
    std::array<std::uint16_t, N> owner_{}; // head + 1 of the taken chain holding each descriptor, 0: none
};

// What a driver holds of a fake device: a pointer, copied freely, modelling transport when Device has the
// transport's members (fake_virtio_blk, fake_virtio_net).
template <class Device>
struct fake_transport {
    Device* dev;

    std::uint32_t device_id() const { return dev->device_id(); }
    bool legacy() const { return dev->legacy(); }
    void reset() { dev->reset(); }
    std::uint8_t status() { return dev->status(); }
    void set_status(std::uint8_t s) { dev->set_status(s); }
    std::uint64_t device_features() { return dev->device_features(); }
    void set_driver_features(std::uint64_t f) { dev->set_driver_features(f); }
    std::uint16_t max_queue_size(std::uint16_t q) { return dev->max_queue_size(q); }
    expected<void> setup_queue(std::uint16_t q, std::uint16_t size, const queue_addresses& a) {
        return dev->setup_queue(q, size, a);
    }
    void notify(std::uint16_t q) { dev->notify(q); }
    void read_config(std::uint32_t off, void* dst, std::uint32_t len) { dev->read_config(off, dst, len); }
    std::uint32_t interrupt_status() { return dev->interrupt_status(); }
};

} // namespace toro::virtio
