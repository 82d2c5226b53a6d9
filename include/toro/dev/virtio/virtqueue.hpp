// The virtio split virtqueue (virtio 1.x, section 2.7) as pure ring logic: no transport, no hardware. The
// caller provides the ring memory (virtqueue_memory) and a translation from driver addresses to the device's
// (physical) addresses; the transport programs addresses() into the device and rings its doorbell when
// should_notify() says so. The same code runs in the kernel (identity translation, DMA-able memory) and on
// the host over a plain buffer against fake_device.hpp.
//
// Trust. The rings are shared with the device, so nothing the driver needs is read back from them: the
// driver keeps a shadow of every descriptor it wrote (chains are reclaimed by walking the shadow, never the
// shared `next` fields), of the available ring and its index, and the state of every chain in flight. What
// the device writes (used.idx, used elements, used.flags, avail_event) is read once and validated: the used
// index may not run ahead of the chains published, an element's id must be the head of a published chain in
// flight, and its length may not exceed the chain's writable bytes. A bad element is consumed and reported
// once.
//
// Indices are free-running u16 (slot = index % N), as the spec has them; N is a power of two, so the
// wrap-around of the u16 keeps slots consecutive. VIRTIO_F_EVENT_IDX is implemented (options::event_idx:
// used_event / avail_event); without it, notifications honour VIRTQ_USED_F_NO_NOTIFY and interrupt
// suppression writes VIRTQ_AVAIL_F_NO_INTERRUPT. Indirect descriptors are not used.
//
// Not thread-safe: one owner (or the owner's lock) calls add/publish/pop_used.
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>

#include <toro/base/expected.hpp>
#include <toro/base/string_view.hpp>

namespace toro::virtio {

// Descriptor and ring flags (virtio 1.x 2.7.5, 2.7.6, 2.7.8).
inline constexpr std::uint16_t desc_f_next = 1;
inline constexpr std::uint16_t desc_f_write = 2;
inline constexpr std::uint16_t desc_f_indirect = 4;
inline constexpr std::uint16_t avail_f_no_interrupt = 1;
inline constexpr std::uint16_t used_f_no_notify = 1;
inline constexpr unsigned feature_event_idx = 29; // VIRTIO_F_EVENT_IDX, a feature bit number

// The descriptor as it sits in the table (little-endian; x86-64 is too).
struct virtq_desc {
    std::uint64_t addr;
    std::uint32_t len;
    std::uint16_t flags;
    std::uint16_t next;
};
static_assert(sizeof(virtq_desc) == 16);

// Byte offsets inside the rings. Available ring: flags, idx, ring[N] of u16, used_event. Used ring: flags,
// idx, ring[N] of {u32 id, u32 len}, avail_event.
namespace ring_offsets {
inline constexpr std::size_t flags = 0;
inline constexpr std::size_t idx = 2;
inline constexpr std::size_t ring = 4;
constexpr std::size_t avail_slot(std::size_t i) {
    return ring + 2 * i;
}
constexpr std::size_t used_event(std::size_t n) {
    return ring + 2 * n;
}
constexpr std::size_t used_slot(std::size_t i) {
    return ring + 8 * i;
}
constexpr std::size_t avail_event(std::size_t n) {
    return ring + 8 * n;
}
} // namespace ring_offsets

// Sizes and alignments of the three parts (2.7: "Alignment and size requirements"), event fields included.
constexpr std::size_t desc_table_bytes(std::size_t n) {
    return 16 * n;
}
constexpr std::size_t avail_ring_bytes(std::size_t n) {
    return 6 + 2 * n;
}
constexpr std::size_t used_ring_bytes(std::size_t n) {
    return 6 + 8 * n;
}
inline constexpr std::size_t desc_table_align = 16;
inline constexpr std::size_t avail_ring_align = 2;
inline constexpr std::size_t used_ring_align = 4;

// The legacy (and virtio-mmio v1) contiguous layout: descriptors, then the available ring, then the used
// ring at the next multiple of `align` (the page size the device was told; 4096 for legacy PCI). `bytes`
// is where the used ring ends; the region itself must start `align`-aligned.
struct ring_layout {
    std::size_t desc_offset;
    std::size_t avail_offset;
    std::size_t used_offset;
    std::size_t bytes;
};
constexpr ring_layout legacy_layout(std::size_t n, std::size_t align = 4096) {
    const std::size_t avail_end = desc_table_bytes(n) + avail_ring_bytes(n);
    const std::size_t used = (avail_end + align - 1) / align * align;
    return {0, desc_table_bytes(n), used, used + used_ring_bytes(n)};
}

// Where the three parts are, as driver addresses. Modern transports take three independent addresses;
// legacy ones one contiguous region (legacy()).
struct virtqueue_memory {
    std::byte* desc = nullptr;
    std::byte* avail = nullptr;
    std::byte* used = nullptr;

    static constexpr virtqueue_memory legacy(std::byte* base, std::size_t n, std::size_t align = 4096) {
        const ring_layout l = legacy_layout(n, align);
        return {base + l.desc_offset, base + l.avail_offset, base + l.used_offset};
    }
};

// Ring memory of a queue of size N in the legacy layout, page-aligned: static or heap storage for a queue
// (kernel memory is identity-mapped, so its address is its physical address).
template <std::uint16_t N>
struct alignas(4096) legacy_ring_storage {
    std::array<std::byte, legacy_layout(N).bytes> bytes{};
    virtqueue_memory memory() { return virtqueue_memory::legacy(bytes.data(), N); }
};

// The device addresses of the three parts, for the transport to program.
struct queue_addresses {
    std::uint64_t desc;
    std::uint64_t avail;
    std::uint64_t used;
};

// Driver address -> the address the device uses for it (guest-physical).
template <class T>
concept dma_translation = requires(const T& t, const void* p) {
    { t.to_device(p) } -> std::same_as<std::uint64_t>;
};

// The kernel's map is the identity map.
struct identity_dma {
    std::uint64_t to_device(const void* p) const { return reinterpret_cast<std::uintptr_t>(p); }
};
static_assert(dma_translation<identity_dma>);

// One buffer of a request: `out` buffers are read by the device, `in` buffers written by it.
struct buffer {
    const void* data;
    std::uint32_t len;
};

// What pop_used returns: nothing yet (ready false), or a chain the device has finished with.
struct completion {
    bool ready = false;
    std::uint16_t token = 0; // the token add() returned for that chain
    std::uint32_t len = 0;   // bytes the device says it wrote into the chain's `in` buffers
    constexpr explicit operator bool() const { return ready; }
};

struct virtqueue_options {
    bool event_idx = false;    // VIRTIO_F_EVENT_IDX was negotiated
    bool no_interrupt = false; // start with device interrupts suppressed
};

// The errors, so drivers can tell them apart (error.what == vq_error::...).
namespace vq_error {
inline constexpr string_view not_attached{"virtqueue: no ring memory attached"};
inline constexpr string_view misaligned{"virtqueue: ring memory misaligned (desc 16, avail 2, used 4)"};
inline constexpr string_view empty_chain{"virtqueue: a request needs at least one buffer"};
inline constexpr string_view empty_buffer{"virtqueue: zero-length buffer"};
inline constexpr string_view chain_too_long{"virtqueue: a chain's buffers total more than 4 GiB"};
inline constexpr string_view no_descriptors{"virtqueue: not enough free descriptors"};
// Device misbehaviour. value: how far used.idx moved; the bad id; the token of the reclaimed chain.
inline constexpr string_view used_index_jump{"virtio device moved the used index past the chains published"};
inline constexpr string_view bad_used_id{"virtio device used an id that is not a chain in flight"};
inline constexpr string_view bad_used_len{"virtio device reported more bytes written than the chain holds"};
} // namespace vq_error

template <std::uint16_t N, dma_translation Translate = identity_dma>
class virtqueue {
    static_assert(N >= 1 && N <= 32768 && (N & (N - 1)) == 0,
                  "the queue size must be a power of two <= 32768");

public:
    static constexpr std::uint16_t size = N;

    explicit virtqueue(Translate t = {}) : translate_{t} {}
    virtqueue(const virtqueue&) = delete;
    virtqueue& operator=(const virtqueue&) = delete;

    // Takes the ring memory (zeroing it) and resets every index: call before the transport programs
    // addresses(), and again after a device reset.
    expected<void> attach(virtqueue_memory mem, virtqueue_options opt = {}) {
        if (mem.desc == nullptr || mem.avail == nullptr || mem.used == nullptr)
            return unexpected{vq_error::not_attached};
        const auto aligned = [](const void* p, std::uint64_t a) {
            return reinterpret_cast<std::uintptr_t>(p) % a == 0;
        };
        if (!aligned(mem.desc, desc_table_align) || !aligned(mem.avail, avail_ring_align) ||
            !aligned(mem.used, used_ring_align))
            return unexpected{vq_error::misaligned};
        mem_ = mem;
        opt_ = opt;
        __builtin_memset(mem.desc, 0, desc_table_bytes(N));
        __builtin_memset(mem.avail, 0, avail_ring_bytes(N));
        __builtin_memset(mem.used, 0, used_ring_bytes(N));
        // The free list threads through the shadow's next fields: 0 -> 1 -> ... -> N-1.
        for (std::uint16_t i = 0; i < N; ++i) {
            shadow_[i] = {0, 0, 0, static_cast<std::uint16_t>(i + 1 < N ? i + 1 : 0)};
            heads_[i] = {};
        }
        free_head_ = 0;
        free_count_ = N;
        avail_idx_ = published_ = notified_at_ = last_used_ = 0;
        chains_ = 0;
        attached_ = true;
        interrupts_ = true;
        if (opt.no_interrupt) disable_interrupts();
        return {};
    }

    // The parts' device addresses, for the transport.
    queue_addresses addresses() const {
        return {translate_.to_device(mem_.desc), translate_.to_device(mem_.avail),
                translate_.to_device(mem_.used)};
    }

    // Chains the `out` buffers (device-readable) then the `in` buffers (device-writable) and puts the chain
    // in the available ring; the device sees it after publish(). Returns the chain's token (its head
    // descriptor). All checks come first: an error changes nothing.
    expected<std::uint16_t> add(std::span<const buffer> out, std::span<const buffer> in) {
        if (!attached_) return unexpected{vq_error::not_attached};
        const std::size_t count = out.size() + in.size();
        if (count == 0) return unexpected{vq_error::empty_chain};
        if (count > free_count_) return unexpected{vq_error::no_descriptors, count};
        std::uint64_t total = 0, writable = 0;
        for (const buffer& b : out) {
            if (b.len == 0) return unexpected{vq_error::empty_buffer};
            total += b.len;
        }
        for (const buffer& b : in) {
            if (b.len == 0) return unexpected{vq_error::empty_buffer};
            writable += b.len;
        }
        total += writable;
        if (total > 0xffffffffu) return unexpected{vq_error::chain_too_long, total};

        // Take `count` descriptors off the free list; its links become the chain's links.
        const std::uint16_t head = free_head_;
        std::uint16_t d = head;
        for (std::size_t i = 0; i < count; ++i) {
            const bool write = i >= out.size();
            const buffer& b = write ? in[i - out.size()] : out[i];
            const bool last = i + 1 == count;
            virtq_desc& s = shadow_[d];
            s.addr = translate_.to_device(b.data);
            s.len = b.len;
            s.flags = static_cast<std::uint16_t>((write ? desc_f_write : 0) | (last ? 0 : desc_f_next));
            // s.next already links to the next free descriptor; the last one's keeps the rest of the list.
            virtq_desc shared = s;
            if (last) shared.next = 0;
            __builtin_memcpy(mem_.desc + 16 * std::size_t{d}, &shared, sizeof shared);
            if (last) free_head_ = s.next;
            d = s.next;
        }
        free_count_ = static_cast<std::uint16_t>(free_count_ - count);
        heads_[head] = {static_cast<std::uint32_t>(writable), static_cast<std::uint16_t>(count), chain_added};
        ++chains_;

        avail_shadow_[avail_idx_ % N] = head;
        store16(mem_.avail, ring_offsets::avail_slot(avail_idx_ % N), head);
        ++avail_idx_;
        return head;
    }

    // Makes every chain added so far visible to the device: the release store orders the descriptor and
    // ring writes before the new avail.idx (2.7.13).
    void publish() {
        for (std::uint16_t i = published_; i != avail_idx_; ++i)
            heads_[avail_shadow_[i % N]].state = chain_published;
        published_ = avail_idx_;
        __atomic_store_n(ptr16(mem_.avail, ring_offsets::idx), published_, __ATOMIC_RELEASE);
    }

    // Whether the transport should notify the device of the chains published since the last call (2.7.10):
    // not if the device set VIRTQ_USED_F_NO_NOTIFY, or with event_idx, only if avail_event fell inside them.
    bool should_notify() {
        if (!attached_) return false;
        // The device must see the new avail.idx before we read its suppression state: a full fence.
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        const std::uint16_t old = notified_at_;
        notified_at_ = published_;
        if (old == published_) return false;
        if (opt_.event_idx)
            return need_event(load16(mem_.used, ring_offsets::avail_event(N)), published_, old);
        return (load16(mem_.used, ring_offsets::flags) & used_f_no_notify) == 0;
    }

    // Whether the device has used a chain we have not popped yet (cheap; no validation).
    bool has_used() const {
        return attached_ && load16(mem_.used, ring_offsets::idx, __ATOMIC_ACQUIRE) != last_used_;
    }

    // The next chain the device has finished with, its descriptors back on the free list. A device that
    // breaks the protocol gives an error: used.idx beyond what was published (nothing consumed, value: the
    // step), an element whose id is no published chain in flight (skipped, value: the id), or a length above
    // the chain's writable bytes (the chain is reclaimed, value: its token, so the driver can fail it).
    expected<completion> pop_used() {
        if (!attached_) return unexpected{vq_error::not_attached};
        const std::uint16_t used_idx = load16(mem_.used, ring_offsets::idx, __ATOMIC_ACQUIRE);
        if (used_idx == last_used_) return completion{};
        const std::uint16_t step = static_cast<std::uint16_t>(used_idx - last_used_);
        if (step > static_cast<std::uint16_t>(published_ - last_used_))
            return unexpected{vq_error::used_index_jump, step};

        // Each field read once: the device could change them under us.
        const std::size_t slot = ring_offsets::used_slot(last_used_ % N);
        const std::uint32_t id = load32(mem_.used, slot);
        const std::uint32_t len = load32(mem_.used, slot + 4);
        ++last_used_;
        if (opt_.event_idx && interrupts_) store16(mem_.avail, ring_offsets::used_event(N), last_used_);

        if (id >= N || heads_[id].state != chain_published) return unexpected{vq_error::bad_used_id, id};
        const auto token = static_cast<std::uint16_t>(id);
        const bool len_ok = len <= heads_[token].writable;
        reclaim(token);
        if (!len_ok) return unexpected{vq_error::bad_used_len, token};
        return completion{true, token, len};
    }

    // Driver-side interrupt suppression (2.7.7): a hint the device may ignore. With event_idx, used_event is
    // moved a whole index space away instead (the device ignores avail.flags then).
    void disable_interrupts() {
        if (!attached_) return;
        interrupts_ = false;
        store16(mem_.avail, ring_offsets::flags, avail_f_no_interrupt);
        if (opt_.event_idx)
            store16(mem_.avail, ring_offsets::used_event(N), static_cast<std::uint16_t>(last_used_ - 1));
    }

    // Asks for interrupts again. True when used chains are already waiting: the caller must pop them rather
    // than sleep, since the device may have used them before it saw the request.
    bool enable_interrupts() {
        if (!attached_) return false;
        interrupts_ = true;
        store16(mem_.avail, ring_offsets::flags, 0);
        if (opt_.event_idx) store16(mem_.avail, ring_offsets::used_event(N), last_used_);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        return has_used();
    }

    std::uint16_t free_descriptors() const { return free_count_; }
    std::uint16_t chains_in_flight() const { return chains_; } // added and not yet popped
    bool attached() const { return attached_; }
    const virtqueue_memory& memory() const { return mem_; }

    // vring_need_event: whether the other side's event index lies in [old, new_idx), the entries just added
    // (it asked to hear once entry `event` is there).
    static constexpr bool need_event(std::uint16_t event, std::uint16_t new_idx, std::uint16_t old) {
        return static_cast<std::uint16_t>(new_idx - event - 1) < static_cast<std::uint16_t>(new_idx - old);
    }

private:
    static constexpr std::uint8_t chain_none = 0;      // not the head of a chain in flight
    static constexpr std::uint8_t chain_added = 1;     // in the avail ring, avail.idx not yet past it
    static constexpr std::uint8_t chain_published = 2; // visible to the device

    struct head_state {
        std::uint32_t writable = 0; // sum of the `in` buffers' lengths
        std::uint16_t count = 0;    // descriptors in the chain
        std::uint8_t state = chain_none;
    };

    // Puts a chain back on the free list by its shadow links: its last descriptor's shadow next still
    // points past the chain (add() left it so), and is overwritten with the current free head.
    void reclaim(std::uint16_t head) {
        std::uint16_t last = head;
        for (std::uint16_t i = 1; i < heads_[head].count; ++i) last = shadow_[last].next;
        shadow_[last].next = free_head_;
        free_head_ = head;
        free_count_ = static_cast<std::uint16_t>(free_count_ + heads_[head].count);
        heads_[head] = {};
        --chains_;
    }

    static std::uint16_t* ptr16(std::byte* base, std::size_t off) {
        return reinterpret_cast<std::uint16_t*>(base + off);
    }
    static std::uint16_t load16(std::byte* base, std::size_t off, int order = __ATOMIC_RELAXED) {
        return __atomic_load_n(ptr16(base, off), order);
    }
    static void store16(std::byte* base, std::size_t off, std::uint16_t v) {
        __atomic_store_n(ptr16(base, off), v, __ATOMIC_RELAXED);
    }
    static std::uint32_t load32(std::byte* base, std::size_t off) {
        return __atomic_load_n(reinterpret_cast<std::uint32_t*>(base + off), __ATOMIC_RELAXED);
    }

    Translate translate_;
    virtqueue_memory mem_{};
    virtqueue_options opt_{};
    bool attached_ = false;
    bool interrupts_ = true;
    std::uint16_t free_head_ = 0;
    std::uint16_t free_count_ = 0;
    std::uint16_t chains_ = 0;
    std::uint16_t avail_idx_ = 0;   // our avail.idx, including chains not yet published
    std::uint16_t published_ = 0;   // the avail.idx the device may see
    std::uint16_t notified_at_ = 0; // published_ at the last should_notify()
    std::uint16_t last_used_ = 0;   // used elements consumed
    std::array<virtq_desc, N> shadow_{};
    std::array<head_state, N> heads_{};
    std::array<std::uint16_t, N> avail_shadow_{}; // what we put in the avail ring: the device may rewrite it
};

} // namespace toro::virtio
