// The virtio-blk driver (virtio 1.x, section 5.2) over any virtio::transport, modelling toro::block_device.
//
// A request is a chain: a 16-byte header {type, reserved, sector} the device reads, the data (read by the
// device for OUT, written by it for IN), then one status byte the device writes. The driver owns a fixed
// pool of request slots (header + status each) and its ring memory (legacy_ring_storage: page-aligned and
// contiguous, so legacy transports take it too); nothing is allocated. Several requests may be in flight:
// submit_read/submit_write/submit_flush hand out request ids, poll_completion returns finished ones in any
// order. read/write/flush are the blocking block_device operations built on the same path; they split a
// transfer bigger than one request carries (size_max, or max_request_bytes) into several requests.
//
// Trust. Everything the device says is checked: the virtqueue validates used elements (index, id, length);
// the driver then needs a status byte (written length >= 1), a known status, and for a read the whole
// buffer written. A bad answer is an error value for that request, or, when it names no request in flight,
// a completion with an invalid id. A used index that runs ahead, or a wait that gives up, makes the device
// unusable: the driver resets it (so it stops touching request buffers), fails every request in flight and
// refuses new ones until start() is called again.
//
// Waiting. The blocking operations call `wait_.wait(ready)` when no used chain is there yet; `ready()` is
// true once the device has used one. poll_wait spins (host tests, early boot). The kernel's policy blocks the
// thread on an event the device's interrupt handler sets (after acknowledging it with
// transport().interrupt_status()); it must re-check ready() after arming the event so a completion that
// landed in between is not lost. A policy may return with ready() still false to give up.
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

#include <toro/base/expected.hpp>
#include <toro/base/maybe.hpp>
#include <toro/dev/block_device.hpp>
#include <toro/dev/virtio/transport.hpp>
#include <toro/dev/virtio/virtqueue.hpp>

namespace toro::blk {

// Feature bits (5.2.3).
inline constexpr unsigned feature_size_max = 1; // config size_max: the largest segment
inline constexpr unsigned feature_seg_max = 2;  // config seg_max: segments per request
inline constexpr unsigned feature_ro = 5;       // read-only device
inline constexpr unsigned feature_blk_size = 6; // config blk_size: the device's block size
inline constexpr unsigned feature_flush = 9;    // VIRTIO_BLK_T_FLUSH works

// Configuration space offsets (5.2.4).
inline constexpr std::uint32_t config_capacity = 0; // u64, in 512-byte sectors
inline constexpr std::uint32_t config_size_max = 8;
inline constexpr std::uint32_t config_seg_max = 12;
inline constexpr std::uint32_t config_blk_size = 20;

// Request types and status values (5.2.6).
inline constexpr std::uint32_t type_in = 0;
inline constexpr std::uint32_t type_out = 1;
inline constexpr std::uint32_t type_flush = 4;
inline constexpr std::uint8_t status_ok = 0;
inline constexpr std::uint8_t status_ioerr = 1;
inline constexpr std::uint8_t status_unsupp = 2;

inline constexpr std::size_t sector_size = 512; // the unit of `sector` and `capacity`, whatever blk_size is

struct request_header {
    std::uint32_t type;
    std::uint32_t reserved;
    std::uint64_t sector;
};
static_assert(sizeof(request_header) == 16);

// The errors, so callers can tell them apart (error.what == blk_error::...).
namespace blk_error {
inline constexpr string_view not_started{"virtio-blk: not started"};
inline constexpr string_view broken{"virtio-blk: device failed and was reset; start it again"};
inline constexpr string_view queue_full{"virtio-blk: no free request slot or descriptors"};
inline constexpr string_view too_large{"virtio-blk: transfer larger than one request carries; bytes"};
inline constexpr string_view read_only{"virtio-blk: write to a read-only device"};
inline constexpr string_view no_flush{"virtio-blk: device does not support flush"};
inline constexpr string_view not_in_flight{"virtio-blk: request id is not in flight"};
inline constexpr string_view wait_gave_up{"virtio-blk: wait ended with no completion"};
// Device answers. value: the status byte; the written length; the bad id; the request's sector.
inline constexpr string_view io_error{"virtio-blk: device I/O error; sector"};
inline constexpr string_view unsupported{"virtio-blk: device does not support the request; type"};
inline constexpr string_view bad_status{"virtio-blk: device wrote an unknown status"};
inline constexpr string_view no_status{"virtio-blk: device completed a request without a status byte; len"};
inline constexpr string_view short_read{"virtio-blk: device wrote less than the read asked for; len"};
inline constexpr string_view bad_len{"virtio-blk: device reported more bytes than the request holds"};
inline constexpr string_view bogus_id{"virtio-blk: device completed a chain that is no request in flight"};
// Start-up.
inline constexpr string_view bad_blk_size{"virtio-blk: device block size unusable (power of two 512..64K)"};
inline constexpr string_view bad_size_max{"virtio-blk: device size_max below the block size"};
inline constexpr string_view no_queue{"virtio-blk: request queue missing or smaller than the driver's"};
} // namespace blk_error

using virtio::poll_wait;

// A request handed out by submit_*: the slot plus a sequence number, so a stale id never names a reused
// slot's new request.
struct request_id {
    static constexpr std::uint16_t none = 0xffff;
    std::uint16_t slot = none;
    std::uint16_t seq = 0;
    constexpr bool valid() const { return slot != none; }
    friend constexpr bool operator==(request_id, request_id) = default;
};

// A finished request. id.valid() is false for a device answer that names no request (result: the error).
struct blk_completion {
    request_id id;
    expected<void> result;
};

template <virtio::transport T, std::uint16_t QueueSize = 64, class Wait = poll_wait>
class virtio_blk {
    static_assert(QueueSize >= 4, "a read or write takes three descriptors");
    // Drivers live in static storage, and a kernel has no atexit: nothing here may need a destructor.
    static_assert(std::is_trivially_destructible_v<T> && std::is_trivially_destructible_v<Wait>,
                  "transports and wait policies are handles (port, address, event pointer)");

public:
    // Requests a device answer per chain: at most one per two descriptors (a flush takes two).
    static constexpr std::uint16_t slots = QueueSize / 2;
    // The largest transfer one request carries unless the device's size_max says less.
    static constexpr std::size_t max_request_bytes = 128 * 1024;
    static constexpr std::uint64_t wanted_features =
        std::uint64_t{1} << feature_size_max | std::uint64_t{1} << feature_seg_max |
        std::uint64_t{1} << feature_ro | std::uint64_t{1} << feature_blk_size |
        std::uint64_t{1} << feature_flush | std::uint64_t{1} << virtio::feature_event_idx;

    explicit virtio_blk(Wait w = {}) : wait_{std::move(w)} {}
    virtio_blk(const virtio_blk&) = delete;
    virtio_blk& operator=(const virtio_blk&) = delete;

    // Negotiates, reads the configuration, sets up queue 0 and lets the device run. Any earlier state
    // (requests in flight included) is forgotten: the device is reset first.
    expected<void> start(T transport) {
        started_ = broken_ = false;
        for (slot& s : slots_) s = {};
        for (auto& t : token_slot_) t = request_id::none;
        ::new (&t_.value) T(std::move(transport)); // trivially destructible: nothing to end first
        T& t = t_.value;

        auto f = virtio::negotiate(t, virtio::device_block, wanted_features);
        if (!f) return unexpected{f.error()};
        features_ = *f;

        block_size_ = sector_size;
        if (has(feature_blk_size)) {
            const std::uint32_t bs = config32(config_blk_size);
            if (!valid_block_size(bs) || bs > 65536) return fail(unexpected{blk_error::bad_blk_size, bs});
            block_size_ = bs;
        }
        max_request_ = max_request_bytes;
        if (has(feature_size_max)) {
            const std::uint32_t sm = config32(config_size_max);
            if (sm < block_size_) return fail(unexpected{blk_error::bad_size_max, sm});
            if (sm < max_request_) max_request_ = sm / block_size_ * block_size_;
        }
        seg_max_ = has(feature_seg_max) ? config32(config_seg_max) : 0;
        block_count_ = capacity() / (block_size_ / sector_size);

        const std::uint16_t max = t.max_queue_size(0);
        if (max < QueueSize) return fail(unexpected{blk_error::no_queue, max});
        virtio::virtqueue_options opt;
        opt.event_idx = has(virtio::feature_event_idx);
        if (auto ok = vq_.attach(rings_.memory(), opt); !ok) return fail(unexpected{ok.error()});
        if (auto ok = t.setup_queue(0, QueueSize, vq_.addresses()); !ok) return fail(unexpected{ok.error()});
        virtio::driver_ok(t);
        started_ = true;
        return {};
    }

    // block_device.
    std::size_t block_size() const { return block_size_; }
    std::uint64_t block_count() const { return block_count_; }

    expected<void> read(std::uint64_t lba, std::span<std::byte> dst) {
        if (auto ok = check_transfer(lba, dst.size()); !ok) return ok;
        return blocking(lba, dst.size(), [&](std::uint64_t at, std::size_t off, std::size_t n) {
            return submit_read(at, dst.subspan(off, n));
        });
    }

    expected<void> write(std::uint64_t lba, std::span<const std::byte> src) {
        if (read_only() && started_) return unexpected{blk_error::read_only, lba};
        if (auto ok = check_transfer(lba, src.size()); !ok) return ok;
        return blocking(lba, src.size(), [&](std::uint64_t at, std::size_t off, std::size_t n) {
            return submit_write(at, src.subspan(off, n));
        });
    }

    // Without VIRTIO_BLK_F_FLUSH there is no cache to flush the driver can ask about: nothing to do.
    expected<void> flush() {
        if (!started_) return unexpected{blk_error::not_started};
        if (!has(feature_flush)) return {};
        auto id = submit_blocking([&] { return submit_flush(); });
        if (!id) return unexpected{id.error()};
        return wait_for(*id);
    }

    // Asynchronous requests. The buffer must stay valid, and untouched, until the request completes.
    expected<request_id> submit_read(std::uint64_t lba, std::span<std::byte> dst) {
        if (auto ok = check_request(lba, dst.size()); !ok) return unexpected{ok.error()};
        return submit(type_in, lba * (block_size_ / sector_size), dst.data(), dst.size());
    }
    expected<request_id> submit_write(std::uint64_t lba, std::span<const std::byte> src) {
        if (started_ && read_only()) return unexpected{blk_error::read_only, lba};
        if (auto ok = check_request(lba, src.size()); !ok) return unexpected{ok.error()};
        return submit(type_out, lba * (block_size_ / sector_size), src.data(), src.size());
    }
    expected<request_id> submit_flush() {
        if (started_ && !has(feature_flush)) return unexpected{blk_error::no_flush};
        return submit(type_flush, 0, nullptr, 0);
    }

    // The next finished request, if any: one a blocking call already collected, else the next used chain.
    maybe<blk_completion> poll_completion() {
        if (auto d = take_done()) return d;
        switch (reap()) {
        case reaped::none:
            return nothing;
        case reaped::bogus:
            return blk_completion{request_id{}, unexpected{last_bogus_}};
        case reaped::request:
            return take_done();
        }
        return nothing;
    }

    // Waits for one request submitted earlier and returns its result (the id is then spent).
    expected<void> wait_for(request_id id) {
        if (!id.valid() || id.slot >= slots || slots_[id.slot].seq != id.seq ||
            slots_[id.slot].state == slot_free)
            return unexpected{blk_error::not_in_flight, id.slot};
        for (;;) {
            slot& s = slots_[id.slot];
            if (s.state == slot_done) {
                expected<void> r = s.result;
                release(id.slot);
                return r;
            }
            if (auto ok = await_used(); !ok) return ok;
            reap(); // a bogus answer names no request of ours: counted, dropped
        }
    }

    bool started() const { return started_; }
    bool broken() const { return broken_; }
    bool read_only() const { return has(feature_ro); }
    bool has(unsigned feature) const { return (features_ >> feature & 1) != 0; }
    std::uint64_t features() const { return features_; }
    std::size_t max_request() const { return max_request_; }
    std::uint32_t seg_max() const { return seg_max_; } // informational: requests use one data segment
    std::uint16_t in_flight() const {
        std::uint16_t n = 0;
        for (const slot& s : slots_) n = static_cast<std::uint16_t>(n + (s.state == slot_in_flight));
        return n;
    }
    std::uint64_t bogus_completions() const { return bogus_; } // device answers that named no request
    T& transport() { return t_.value; }                        // valid after start()

private:
    static constexpr std::uint8_t slot_free = 0;
    static constexpr std::uint8_t slot_in_flight = 1;
    static constexpr std::uint8_t slot_done = 2; // finished, result not yet handed out

    struct slot {
        std::uint8_t state = slot_free;
        std::uint16_t seq = 0;
        std::uint16_t token = 0;
        std::uint32_t type = 0;
        std::uint32_t data_bytes = 0;
        std::uint64_t sector = 0;
        expected<void> result{};
    };

    enum class reaped { none, request, bogus };

    expected<void> fail(unexpected e) {
        t_.value.set_status(virtio::status_failed);
        return e;
    }

    std::uint32_t config32(std::uint32_t off) {
        std::uint32_t v = 0;
        t_.value.read_config(off, &v, sizeof v);
        return v;
    }

    // A u64 the device may update between the two halves (no generation counter in the seam): read until
    // two reads agree.
    std::uint64_t capacity() {
        std::uint64_t a = 0, b = 0;
        for (int i = 0; i < 4; ++i) {
            t_.value.read_config(config_capacity, &a, sizeof a);
            t_.value.read_config(config_capacity, &b, sizeof b);
            if (a == b) break;
        }
        return b;
    }

    expected<void> check_transfer(std::uint64_t lba, std::size_t bytes) const {
        if (!started_) return unexpected{blk_error::not_started};
        return check_block_transfer(block_size_, block_count_, lba, bytes);
    }
    expected<void> check_request(std::uint64_t lba, std::size_t bytes) const {
        if (auto ok = check_transfer(lba, bytes); !ok) return ok;
        if (bytes > max_request_) return unexpected{blk_error::too_large, bytes};
        return {};
    }

    expected<request_id> submit(std::uint32_t type, std::uint64_t sector, const void* data,
                                std::size_t bytes) {
        if (!started_) return unexpected{blk_error::not_started};
        if (broken_) return unexpected{blk_error::broken};
        std::uint16_t i = 0;
        while (i < slots && slots_[i].state != slot_free) ++i;
        if (i == slots) return unexpected{blk_error::queue_full, slots};

        headers_[i] = {type, 0, sector};
        status_[i] = 0xff; // not a status: a device that never writes it is caught
        const auto len = static_cast<std::uint32_t>(bytes);
        std::array<virtio::buffer, 2> out{{{&headers_[i], sizeof(request_header)}, {data, len}}};
        std::array<virtio::buffer, 2> in{{{data, len}, {&status_[i], 1}}};
        const bool has_data = bytes != 0;
        const std::span<const virtio::buffer> out_s{out.data(), type == type_out && has_data ? 2u : 1u};
        const std::span<const virtio::buffer> in_s = type == type_in && has_data
                                                         ? std::span<const virtio::buffer>{in.data(), 2}
                                                         : std::span<const virtio::buffer>{in.data() + 1, 1};
        auto token = vq_.add(out_s, in_s);
        if (!token) {
            if (token.error().what == virtio::vq_error::no_descriptors)
                return unexpected{blk_error::queue_full, token.error().value};
            return unexpected{token.error()};
        }
        slot& s = slots_[i];
        s.state = slot_in_flight;
        s.seq = static_cast<std::uint16_t>(s.seq + 1);
        s.token = *token;
        s.type = type;
        s.data_bytes = len;
        s.sector = sector;
        s.result = {};
        token_slot_[*token] = i;
        vq_.publish();
        if (vq_.should_notify()) t_.value.notify(0);
        return request_id{i, s.seq};
    }

    // Splits [lba, lba + bytes) into requests and runs them one after the other.
    template <class Submit>
    expected<void> blocking(std::uint64_t lba, std::size_t bytes, Submit&& submit_one) {
        const std::size_t per_block = block_size_;
        for (std::size_t off = 0; off < bytes;) {
            const std::size_t n = bytes - off < max_request_ ? bytes - off : max_request_;
            auto id = submit_blocking([&] { return submit_one(lba + off / per_block, off, n); });
            if (!id) return unexpected{id.error()};
            if (auto ok = wait_for(*id); !ok) return ok;
            off += n;
        }
        return {};
    }

    // Submits, waiting for room while other requests are in flight (back-pressure).
    template <class Submit>
    expected<request_id> submit_blocking(Submit&& submit_one) {
        for (;;) {
            auto id = submit_one();
            if (id || id.error().what != blk_error::queue_full || in_flight() == 0) return id;
            if (auto ok = await_used(); !ok) return unexpected{ok.error()};
            reap();
        }
    }

    // Returns once a used chain is there, through the Wait policy.
    expected<void> await_used() {
        if (broken_) return unexpected{blk_error::broken};
        if (vq_.has_used()) return {};
        wait_.wait([this] { return vq_.has_used(); });
        if (vq_.has_used()) return {};
        // Requests are still the device's: reset it so it cannot write into buffers we hand back.
        break_device();
        return unexpected{blk_error::wait_gave_up};
    }

    // Collects one used chain into its slot.
    reaped reap() {
        if (!started_ || broken_) return reaped::none; // nothing from a device we reset is believed
        auto c = vq_.pop_used();
        if (!c) {
            const error e = c.error();
            if (e.what == virtio::vq_error::bad_used_len && e.value < QueueSize &&
                token_slot_[e.value] != request_id::none) {
                finish(token_slot_[e.value], unexpected{blk_error::bad_len, e.value});
                return reaped::request;
            }
            if (e.what == virtio::vq_error::bad_used_id)
                return bogus(unexpected{blk_error::bogus_id, e.value});
            // The used index ran ahead (or the queue is gone): nothing more from this device is believable.
            const bool any = in_flight() != 0;
            break_device();
            return any ? reaped::request : bogus(unexpected{e});
        }
        if (!c->ready) return reaped::none;
        const std::uint16_t i = token_slot_[c->token];
        if (i == request_id::none) return bogus(unexpected{blk_error::bogus_id, c->token});
        finish(i, judge(slots_[i], c->len, __atomic_load_n(&status_[i], __ATOMIC_RELAXED)));
        return reaped::request;
    }

    reaped bogus(unexpected e) {
        ++bogus_;
        last_bogus_ = e.err;
        return reaped::bogus;
    }

    expected<void> judge(const slot& s, std::uint32_t len, std::uint8_t status) const {
        if (len < 1) return unexpected{blk_error::no_status, len};
        switch (status) {
        case status_ok:
            if (s.type == type_in && len < s.data_bytes + 1u) return unexpected{blk_error::short_read, len};
            return {};
        case status_ioerr:
            return unexpected{blk_error::io_error, s.sector};
        case status_unsupp:
            return unexpected{blk_error::unsupported, s.type};
        default:
            return unexpected{blk_error::bad_status, status};
        }
    }

    void finish(std::uint16_t i, expected<void> r) {
        slot& s = slots_[i];
        token_slot_[s.token] = request_id::none;
        s.state = slot_done;
        s.result = r;
    }

    void release(std::uint16_t i) { slots_[i].state = slot_free; }

    maybe<blk_completion> take_done() {
        for (std::uint16_t k = 0; k < slots; ++k) {
            const auto i = static_cast<std::uint16_t>((next_done_ + k) % slots);
            if (slots_[i].state != slot_done) continue;
            next_done_ = static_cast<std::uint16_t>((i + 1) % slots); // round-robin: no slot starves
            blk_completion c{request_id{i, slots_[i].seq}, slots_[i].result};
            release(i);
            return c;
        }
        return nothing;
    }

    // Stops the device (a reset ends its access to our memory) and fails every request in flight.
    void break_device() {
        broken_ = true;
        t_.value.reset();
        t_.value.set_status(virtio::status_failed);
        for (std::uint16_t i = 0; i < slots; ++i)
            if (slots_[i].state == slot_in_flight) finish(i, unexpected{blk_error::broken});
    }

    // The rings first: the member is page-aligned, so the object is.
    virtio::legacy_ring_storage<QueueSize> rings_;
    virtio::virtqueue<QueueSize> vq_;
    std::array<request_header, slots> headers_{};
    std::array<std::uint8_t, slots> status_{};
    std::array<slot, slots> slots_{};
    std::array<std::uint16_t, QueueSize> token_slot_{}; // head descriptor -> slot, none when idle
    union transport_slot {
        constexpr transport_slot() : none{0} {}
        char none;
        T value; // constructed by start()
    } t_;
    Wait wait_;
    error last_bogus_{""};
    std::uint64_t features_ = 0;
    std::uint64_t block_count_ = 0;
    std::uint64_t bogus_ = 0;
    std::size_t block_size_ = sector_size;
    std::size_t max_request_ = max_request_bytes;
    std::uint32_t seg_max_ = 0;
    std::uint16_t next_done_ = 0;
    bool started_ = false;
    bool broken_ = false;
};

static_assert(block_device<virtio_blk<virtio::transport_archetype>>);
static_assert(std::is_trivially_destructible_v<virtio_blk<virtio::transport_archetype>>);

} // namespace toro::blk
