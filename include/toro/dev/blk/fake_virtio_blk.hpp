// A fake virtio-blk device and the transport that reaches it: the test oracle for blk::virtio_blk.
// Freestanding (no heap, no std beyond the kernel's set), so kernel self-tests can use it too.
//
// fake_virtio_blk<N> is the device: its feature offer, configuration space (capacity, size_max, seg_max,
// blk_size), a status register that records every write, one queue of size N served by a
// virtio::fake_device over an in-memory disk (memory_block_device<512>: virtio sectors are 512 bytes whatever
// blk_size says). fake_blk_transport<N> is a copyable handle to it modelling virtio::transport, as a driver
// takes its transport by value. The legacy variant demands the contiguous legacy ring layout, takes bits 0-31
// only and has no FEATURES_OK step; the modern one requires VERSION_1.
//
// Serving. By default notify() serves every available chain at once (a synchronous device). With
// auto_serve off, chains wait until the test calls take_all() then serve_held(i) in any order, or
// serve_all(). Misbehaviour on demand: the next request's status or written length, or raw used elements
// through queue(). A chain the fake cannot parse (a driver bug) is counted in faults().
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <new>
#include <span>

#include <toro/base/expected.hpp>
#include <toro/dev/blk/virtio_blk.hpp>
#include <toro/dev/block_device.hpp>
#include <toro/dev/virtio/fake_device.hpp>
#include <toro/dev/virtio/transport.hpp>

namespace toro::blk {

template <std::uint16_t N>
class fake_virtio_blk {
public:
    static constexpr std::uint16_t max_chain = 4; // header, data, status (+1 to notice a longer one)
    using device = virtio::fake_device<N, virtio::identity_device_memory, max_chain>;
    using chain = typename device::chain;

    struct options {
        bool legacy = false;
        std::uint64_t features =
            std::uint64_t{1} << virtio::feature_version_1 | std::uint64_t{1} << feature_flush; // offered
        std::uint32_t device_id = virtio::device_block;
        std::uint16_t queue_max = N;
        bool accept_features = true; // false: FEATURES_OK does not stick
        std::uint32_t size_max = 0;
        std::uint32_t seg_max = 0;
        std::uint32_t blk_size = 0;
        std::uint64_t capacity = ~std::uint64_t{0}; // sectors; default: the disk's
    };

    // One request as the device saw it.
    struct request {
        std::uint32_t type;
        std::uint64_t sector;
        std::uint32_t bytes;
    };

    fake_virtio_blk(memory_block_device<512>& disk, options o) : disk_{disk}, opt_{o} {
        const std::uint64_t cap = o.capacity == ~std::uint64_t{0} ? disk.block_count() : o.capacity;
        put(config_capacity, &cap, 8);
        put(config_size_max, &o.size_max, 4);
        put(config_seg_max, &o.seg_max, 4);
        put(config_blk_size, &o.blk_size, 4);
    }
    fake_virtio_blk(const fake_virtio_blk&) = delete;
    fake_virtio_blk& operator=(const fake_virtio_blk&) = delete;

    // The transport's side.
    std::uint32_t device_id() const { return opt_.device_id; }
    bool legacy() const { return opt_.legacy; }
    void reset() {
        log(0);
        status_ = 0;
        driver_features_ = 0;
        has_queue_ = false;
        held_count_ = 0;
    }
    std::uint8_t status() const { return status_; }
    void set_status(std::uint8_t s) {
        log(s);
        if (!opt_.accept_features) s = static_cast<std::uint8_t>(s & ~virtio::status_features_ok);
        status_ = s;
    }
    std::uint64_t device_features() const { return opt_.legacy ? opt_.features & 0xffffffff : opt_.features; }
    void set_driver_features(std::uint64_t f) { driver_features_ = f; }
    std::uint16_t max_queue_size(std::uint16_t q) const { return q == 0 ? opt_.queue_max : 0; }
    expected<void> setup_queue(std::uint16_t q, std::uint16_t size, const virtio::queue_addresses& a) {
        if (q != 0) return unexpected{"fake virtio-blk: no such queue", q};
        if (size != N) return unexpected{"fake virtio-blk: queue size must be", N};
        if (opt_.legacy) {
            const virtio::ring_layout l = virtio::legacy_layout(N);
            if (a.desc % 4096 != 0 || a.avail != a.desc + l.avail_offset || a.used != a.desc + l.used_offset)
                return unexpected{"fake virtio-blk: legacy queue not in the contiguous layout"};
        }
        const bool event_idx = (driver_features_ >> virtio::feature_event_idx & 1) != 0;
        ::new (&queue_.value) device(a, virtio::identity_device_memory{}, event_idx);
        has_queue_ = true;
        return {};
    }
    void notify(std::uint16_t q) {
        ++notifications_;
        if (q != 0 || !has_queue_) {
            ++faults_;
            return;
        }
        if (auto_serve) (void)serve_all();
    }
    void read_config(std::uint32_t off, void* dst, std::uint32_t len) const {
        auto* d = static_cast<std::byte*>(dst);
        for (std::uint32_t i = 0; i < len; ++i)
            d[i] = off + i < config_.size() ? config_[off + i] : std::byte{0};
    }
    std::uint32_t interrupt_status() {
        const std::uint32_t isr = interrupt_;
        interrupt_ = 0;
        return isr;
    }

    // The test's side.
    bool auto_serve = true;

    // Takes every available chain into the held list; returns how many are held.
    std::uint16_t take_all() {
        while (has_queue_ && queue_.value.available() != 0 && held_count_ < N) {
            auto c = queue_.value.take();
            if (!c) {
                ++faults_;
                break;
            }
            held_[held_count_++] = *c;
        }
        return held_count_;
    }
    // Serves held chain i (the others keep their order) and completes it.
    void serve_held(std::uint16_t i) {
        if (i >= held_count_) return;
        chain c = held_[i];
        for (std::uint16_t k = i; k + 1 < held_count_; ++k) held_[k] = held_[k + 1];
        --held_count_;
        complete(c);
    }
    // Serves every held chain, then every available one, in order. Returns how many.
    std::uint16_t serve_all() {
        std::uint16_t n = 0;
        while (held_count_ != 0) {
            serve_held(0);
            ++n;
        }
        while (has_queue_ && queue_.value.available() != 0) {
            auto c = queue_.value.take();
            if (!c) {
                ++faults_;
                break;
            }
            complete(*c);
            ++n;
        }
        return n;
    }

    // The next request served reports this status / this written length instead of the real ones.
    void force_status(std::uint8_t s) {
        forced_status_ = s;
        force_status_ = true;
    }
    void skip_status() { skip_status_ = true; } // the next request's status byte is left as it was
    void force_len(std::uint32_t len) {
        forced_len_ = len;
        force_len_ = true;
    }

    std::span<const std::uint8_t> status_log() const { return {log_.data(), log_count_}; }
    std::uint64_t driver_features() const { return driver_features_; }
    std::uint64_t notifications() const { return notifications_; }
    std::uint64_t faults() const { return faults_; }
    std::uint16_t held() const { return held_count_; }
    std::span<const request> requests() const {
        return {requests_.data(), request_count_ < requests_.size() ? request_count_ : requests_.size()};
    }
    std::size_t request_count() const { return request_count_; }
    device* queue() { return has_queue_ ? &queue_.value : nullptr; }

private:
    void put(std::uint32_t off, const void* src, std::uint32_t len) {
        __builtin_memcpy(&config_[off], src, len);
    }
    void log(std::uint8_t s) {
        if (log_count_ < log_.size()) log_[log_count_++] = s;
    }

    // Does what the request asks of the disk and posts the used element.
    void complete(const chain& c) {
        const std::uint32_t len = serve(c);
        queue_.value.complete(c.head, len);
        interrupt_ |= 1;
    }

    std::uint32_t serve(const chain& c) {
        const auto segs = c.all();
        if (segs.size() < 2 || segs[0].writable || segs[0].len != sizeof(request_header) ||
            !segs.back().writable || segs.back().len != 1) {
            ++faults_;
            return 0;
        }
        request_header h;
        __builtin_memcpy(&h, segs[0].data, sizeof h);
        const auto data = segs.subspan(1, segs.size() - 2);
        std::uint8_t st = status_ok;
        std::uint32_t written = 0, bytes = 0;
        std::uint64_t sector = h.sector;
        const bool ro = (driver_features_ >> feature_ro & 1) != 0;
        if (h.type == type_in || h.type == type_out) {
            for (const virtio::segment& s : data) {
                bytes += s.len;
                if (st != status_ok) continue;
                if (s.writable != (h.type == type_in) || s.len % 512 != 0 || (h.type == type_out && ro)) {
                    st = status_ioerr;
                    continue;
                }
                auto ok = h.type == type_in ? disk_.read(sector, {s.data, s.len})
                                            : disk_.write(sector, {s.data, s.len});
                if (!ok) st = status_ioerr;
                if (h.type == type_in) written += s.len;
                sector += s.len / 512;
            }
            if (data.empty()) st = status_ioerr;
        } else if (h.type == type_flush) {
            if (!data.empty() || (driver_features_ >> feature_flush & 1) == 0)
                st = status_unsupp;
            else if (!disk_.flush())
                st = status_ioerr;
        } else {
            st = status_unsupp;
        }
        if (request_count_ < requests_.size()) requests_[request_count_] = {h.type, h.sector, bytes};
        ++request_count_;
        if (force_status_) {
            st = forced_status_;
            force_status_ = false;
        }
        if (!skip_status_) *segs.back().data = std::byte{st};
        skip_status_ = false;
        written += 1;
        if (force_len_) {
            written = forced_len_;
            force_len_ = false;
        }
        return written;
    }

    memory_block_device<512>& disk_;
    options opt_;
    std::array<std::byte, 64> config_{};
    std::array<std::uint8_t, 32> log_{};
    std::size_t log_count_ = 0;
    std::uint8_t status_ = 0;
    std::uint64_t driver_features_ = 0;
    std::uint32_t interrupt_ = 0;
    union queue_slot { // no destructor anywhere: usable as a static in a kernel without atexit
        constexpr queue_slot() : none{0} {}
        char none;
        device value;
    } queue_;
    bool has_queue_ = false;
    std::array<chain, N> held_{};
    std::uint16_t held_count_ = 0;
    std::array<request, 256> requests_{};
    std::size_t request_count_ = 0;
    std::uint8_t forced_status_ = 0;
    std::uint32_t forced_len_ = 0;
    bool force_status_ = false, force_len_ = false, skip_status_ = false;
    std::uint64_t notifications_ = 0;
    std::uint64_t faults_ = 0;
};

// What the driver holds: a pointer to the device, copied freely.
template <std::uint16_t N>
using fake_blk_transport = virtio::fake_transport<fake_virtio_blk<N>>;
static_assert(virtio::transport<fake_blk_transport<8>>);

} // namespace toro::blk
