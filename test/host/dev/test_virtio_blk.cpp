// Host tests for toro::blk::virtio_blk against fake_virtio_blk (a fake transport + device over an in-memory
// disk): the start-up status sequence and features (modern and legacy), capacity and blk_size, read/write
// round trips against the disk, requests in flight completed out of order, flush, a read-only device,
// device errors (bad status, no status byte, short read, bogus ids and lengths, a runaway used index),
// back-pressure when the queue is full, splitting transfers bigger than one request, and the Wait seam.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include <toro/dev/blk/fake_virtio_blk.hpp>
#include <toro/dev/blk/virtio_blk.hpp>

namespace {

using namespace toro;
using namespace toro::blk;

static_assert(block_device<virtio_blk<virtio::transport_archetype>>);

std::string str(string_view s) {
    return {s.data(), s.size()};
}

constexpr std::uint64_t bit(unsigned b) {
    return std::uint64_t{1} << b;
}
constexpr std::uint64_t modern = bit(virtio::feature_version_1);

std::byte pattern(std::size_t i, unsigned seed) {
    return static_cast<std::byte>((i * 7 + i / 512 + seed) & 0xff);
}

template <std::uint16_t N>
struct test_wait;

// A disk, the fake device in front of it, and a driver for it.
template <std::uint16_t N = 16, class Wait = poll_wait>
struct rig {
    using fake = fake_virtio_blk<N>;
    using driver = virtio_blk<fake_blk_transport<N>, N, Wait>;
    std::vector<std::byte> storage;
    std::unique_ptr<memory_block_device<512>> disk;
    std::unique_ptr<fake> dev;
    std::unique_ptr<driver> drv;

    explicit rig(typename fake::options o = {}, std::size_t sectors = 256) : storage(sectors * 512) {
        for (std::size_t i = 0; i < storage.size(); ++i) storage[i] = pattern(i, 1);
        disk = std::make_unique<memory_block_device<512>>(storage);
        dev = std::make_unique<fake>(*disk, o);
        if constexpr (std::is_same_v<Wait, poll_wait>)
            drv = std::make_unique<driver>();
        else
            drv = std::make_unique<driver>(Wait{dev.get()});
    }
    expected<void> start() { return drv->start({dev.get()}); }
    void started() {
        auto ok = start();
        if (!ok) FAIL(str(ok.error().what));
        REQUIRE(dev->faults() == 0);
    }
    bool disk_equals(std::size_t off, const std::vector<std::byte>& v) const {
        return std::equal(v.begin(), v.end(), storage.begin() + static_cast<std::ptrdiff_t>(off));
    }
};

// The seam the kernel fills with "block until the interrupt": here "the device gets on with its work".
// give_up: it returns with nothing done, as a timed-out wait would.
template <std::uint16_t N>
struct test_wait {
    fake_virtio_blk<N>* dev = nullptr;
    bool give_up = false;
    int calls = 0;
    template <class Ready>
    void wait(Ready&& ready) {
        ++calls;
        if (!give_up && !ready()) dev->serve_all();
    }
};

std::vector<std::byte> make(std::size_t n, unsigned seed) {
    std::vector<std::byte> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = pattern(i, seed);
    return v;
}

template <class R>
blk_completion poll(R& r) {
    auto c = r.drv->poll_completion();
    REQUIRE(c);
    return *c;
}

} // namespace

TEST_CASE("virtio-blk start-up: status sequence and features", "[virtio-blk]") {
    using vb = virtio_blk<fake_blk_transport<16>, 16>;
    SECTION("modern") {
        rig<> r{{.features = modern | bit(feature_flush) | bit(feature_blk_size) | bit(feature_seg_max) |
                             bit(3) | bit(virtio::feature_event_idx),
                 .blk_size = 512}};
        r.started();
        const std::vector<std::uint8_t> want{0, 1, 3, 11, 15};
        CHECK(std::vector<std::uint8_t>(r.dev->status_log().begin(), r.dev->status_log().end()) == want);
        // Everything wanted and offered; bit 3 (not wanted) left out.
        CHECK(r.dev->driver_features() == (modern | bit(feature_flush) | bit(feature_blk_size) |
                                           bit(feature_seg_max) | bit(virtio::feature_event_idx)));
        CHECK(r.drv->has(virtio::feature_event_idx));
        CHECK_FALSE(r.drv->read_only());
        CHECK(r.drv->started());
        CHECK((vb::wanted_features & bit(feature_ro)) != 0);
        // event_idx negotiated on both sides: I/O still works.
        std::vector<std::byte> b(1024);
        REQUIRE(r.drv->read(2, b));
        CHECK(r.disk_equals(1024, b));
        // The driver honours avail_event: a device that asked to hear only at entry 1000 is not notified.
        const auto before = r.dev->notifications();
        r.dev->auto_serve = false;
        r.dev->queue()->set_avail_event(1000);
        REQUIRE(r.drv->submit_read(2, b));
        CHECK(r.dev->notifications() == before);
    }
    SECTION("legacy: no FEATURES_OK, bits 0-31 only, contiguous rings") {
        rig<> r{{.legacy = true, .features = modern | bit(feature_flush)}};
        r.started();
        const std::vector<std::uint8_t> want{0, 1, 3, 7};
        CHECK(std::vector<std::uint8_t>(r.dev->status_log().begin(), r.dev->status_log().end()) == want);
        CHECK(r.dev->driver_features() == bit(feature_flush));
        std::vector<std::byte> b(512);
        REQUIRE(r.drv->read(0, b));
        CHECK(r.disk_equals(0, b));
    }
    SECTION("refused features, wrong device, missing or small queue") {
        rig<> r{{.accept_features = false}};
        CHECK_FALSE(r.start());
        CHECK(r.dev->status() == virtio::status_failed);
        CHECK_FALSE(r.drv->started());
        std::vector<std::byte> b(512);
        CHECK(r.drv->read(0, b).error().what == blk_error::not_started);

        rig<> net{{.device_id = virtio::device_net}};
        CHECK_FALSE(net.start());

        rig<> small{{.queue_max = 8}};
        auto e = small.start();
        REQUIRE_FALSE(e);
        CHECK(e.error().what == blk_error::no_queue);
        CHECK(small.dev->status() == virtio::status_failed);
    }
}

TEST_CASE("virtio-blk capacity and block size", "[virtio-blk]") {
    SECTION("512-byte sectors without blk_size") {
        rig<> r{{}, 100};
        r.started();
        CHECK(r.drv->block_size() == 512);
        CHECK(r.drv->block_count() == 100);
    }
    SECTION("blk_size 4096: blocks are 8 sectors") {
        rig<> r{{.features = modern | bit(feature_blk_size), .blk_size = 4096}, 100};
        r.started();
        CHECK(r.drv->block_size() == 4096);
        CHECK(r.drv->block_count() == 12); // 100 sectors, the partial block is not used
        std::vector<std::byte> b(4096);
        REQUIRE(r.drv->read(3, b));
        CHECK(r.disk_equals(3 * 4096, b));
        CHECK(r.dev->requests()[0].sector == 24);
        CHECK_FALSE(r.drv->read(12, b));                                  // past the end
        CHECK_FALSE(r.drv->read(0, std::span<std::byte>{b.data(), 512})); // not a whole block
    }
    SECTION("blk_size ignored unless negotiated; a bad one refused") {
        rig<> r{{.blk_size = 4096}};
        r.started();
        CHECK(r.drv->block_size() == 512);
        rig<> bad{{.features = modern | bit(feature_blk_size), .blk_size = 1000}};
        auto e = bad.start();
        REQUIRE_FALSE(e);
        CHECK(e.error().what == blk_error::bad_blk_size);
        CHECK(e.error().value == 1000);
    }
    SECTION("capacity from the config space") {
        rig<> r{{.capacity = 40}};
        r.started();
        CHECK(r.drv->block_count() == 40);
        std::vector<std::byte> b(512);
        CHECK_FALSE(r.drv->read(40, b));
        CHECK(r.drv->read(39, b));
    }
}

TEST_CASE("virtio-blk read and write round trips", "[virtio-blk]") {
    rig<> r;
    r.started();
    SECTION("single sector") {
        std::vector<std::byte> b(512);
        REQUIRE(r.drv->read(7, b));
        CHECK(r.disk_equals(7 * 512, b));
        const auto w = make(512, 9);
        REQUIRE(r.drv->write(7, w));
        CHECK(r.disk_equals(7 * 512, w));
        std::vector<std::byte> back(512);
        REQUIRE(r.drv->read(7, back));
        CHECK(back == w);
        CHECK(r.dev->request_count() == 3);
        CHECK(r.dev->requests()[1].type == type_out);
    }
    SECTION("multi-sector in one request") {
        const auto w = make(5 * 512, 3);
        REQUIRE(r.drv->write(10, w));
        CHECK(r.disk_equals(10 * 512, w));
        std::vector<std::byte> back(5 * 512);
        REQUIRE(r.drv->read(10, back));
        CHECK(back == w);
        REQUIRE(r.dev->request_count() == 2);
        CHECK(r.dev->requests()[0].sector == 10);
        CHECK(r.dev->requests()[0].bytes == 5 * 512);
        // Neighbours untouched.
        CHECK(r.storage[10 * 512 - 1] == pattern(10 * 512 - 1, 1));
        CHECK(r.storage[15 * 512] == pattern(15 * 512, 1));
    }
    SECTION("bad transfers touch nothing") {
        std::vector<std::byte> b(512);
        CHECK_FALSE(r.drv->read(256, b));
        CHECK_FALSE(r.drv->write(255, make(1024, 1)));
        CHECK_FALSE(r.drv->read(0, std::span<std::byte>{}));
        CHECK(r.dev->request_count() == 0);
    }
}

TEST_CASE("virtio-blk requests in flight complete out of order", "[virtio-blk]") {
    rig<> r;
    r.started();
    r.dev->auto_serve = false;
    std::vector<std::byte> a(512), b(1024), c(512);
    const auto w = make(512, 5);
    auto ia = r.drv->submit_read(1, a);
    auto ib = r.drv->submit_read(20, b);
    auto ic = r.drv->submit_write(30, w);
    REQUIRE(ia);
    REQUIRE(ib);
    REQUIRE(ic);
    CHECK(r.drv->in_flight() == 3);
    CHECK_FALSE(r.drv->poll_completion()); // nothing used yet
    REQUIRE(r.dev->take_all() == 3);
    r.dev->serve_held(2); // the write first
    r.dev->serve_held(0); // then a
    auto c1 = poll(r);
    CHECK(c1.id == *ic);
    CHECK(c1.result);
    CHECK(r.disk_equals(30 * 512, w));
    auto c2 = poll(r);
    CHECK(c2.id == *ia);
    CHECK(c2.result);
    CHECK(r.disk_equals(512, a));
    CHECK_FALSE(r.drv->poll_completion());
    r.dev->serve_held(0);
    auto c3 = poll(r);
    CHECK(c3.id == *ib);
    CHECK(r.disk_equals(20 * 512, b));
    CHECK(r.drv->in_flight() == 0);
    CHECK(r.dev->notifications() == 3);
    // With VIRTQ_USED_F_NO_NOTIFY set the driver does not ring the doorbell.
    r.dev->queue()->set_no_notify(true);
    REQUIRE(r.drv->submit_read(1, a));
    CHECK(r.dev->notifications() == 3);
    // A spent id is no longer in flight.
    CHECK(r.drv->wait_for(*ia).error().what == blk_error::not_in_flight);
}

TEST_CASE("virtio-blk flush", "[virtio-blk]") {
    SECTION("negotiated: a FLUSH request reaches the disk") {
        rig<> r;
        r.started();
        REQUIRE(r.drv->write(0, make(512, 2)));
        CHECK(r.disk->dirty());
        REQUIRE(r.drv->flush());
        CHECK_FALSE(r.disk->dirty());
        CHECK(r.disk->flushes() == 1);
        CHECK(r.dev->requests()[1].type == type_flush);
        auto id = r.drv->submit_flush();
        REQUIRE(id);
        auto c = poll(r);
        CHECK(c.id == *id);
        CHECK(c.result);
        CHECK(r.disk->flushes() == 2);
    }
    SECTION("not offered: nothing to send") {
        rig<> r{{.features = modern}};
        r.started();
        REQUIRE(r.drv->flush());
        CHECK(r.dev->request_count() == 0);
        CHECK(r.drv->submit_flush().error().what == blk_error::no_flush);
    }
}

TEST_CASE("virtio-blk read-only device rejects writes", "[virtio-blk]") {
    rig<> r{{.features = modern | bit(feature_ro)}};
    r.started();
    CHECK(r.drv->read_only());
    const auto w = make(512, 4);
    auto e = r.drv->write(3, w);
    REQUIRE_FALSE(e);
    CHECK(e.error().what == blk_error::read_only);
    CHECK(r.drv->submit_write(3, w).error().what == blk_error::read_only);
    CHECK(r.dev->request_count() == 0);
    CHECK(r.disk->writes() == 0);
    std::vector<std::byte> b(512);
    REQUIRE(r.drv->read(3, b));
    CHECK(r.disk_equals(3 * 512, b));
}

TEST_CASE("virtio-blk device errors surface as error values", "[virtio-blk]") {
    rig<> r;
    r.started();
    std::vector<std::byte> b(1024);
    SECTION("IOERR, UNSUPP, unknown status") {
        r.dev->force_status(status_ioerr);
        auto e = r.drv->read(4, b);
        REQUIRE_FALSE(e);
        CHECK(e.error().what == blk_error::io_error);
        CHECK(e.error().value == 4);
        r.dev->force_status(status_unsupp);
        e = r.drv->write(4, make(512, 1));
        REQUIRE_FALSE(e);
        CHECK(e.error().what == blk_error::unsupported);
        CHECK(e.error().value == type_out);
        r.dev->force_status(7);
        e = r.drv->flush();
        REQUIRE_FALSE(e);
        CHECK(e.error().what == blk_error::bad_status);
        CHECK(e.error().value == 7);
        REQUIRE(r.drv->read(4, b)); // still usable
        CHECK(r.disk_equals(4 * 512, b));
    }
    SECTION("no status byte, short read, too long") {
        r.dev->force_len(0);
        auto e = r.drv->read(0, b);
        REQUIRE_FALSE(e);
        CHECK(e.error().what == blk_error::no_status);
        r.dev->force_len(100);
        e = r.drv->read(0, b);
        REQUIRE_FALSE(e);
        CHECK(e.error().what == blk_error::short_read);
        CHECK(e.error().value == 100);
        r.dev->skip_status(); // a used length, but the status byte never written
        e = r.drv->read(0, b);
        REQUIRE_FALSE(e);
        CHECK(e.error().what == blk_error::bad_status);
        CHECK(e.error().value == 0xff);
        r.dev->force_len(1); // a write writes only the status: fine
        REQUIRE(r.drv->write(0, make(512, 1)));
        r.dev->force_len(1026); // more than the read's 1024 + 1 writable bytes
        e = r.drv->read(0, b);
        REQUIRE_FALSE(e);
        CHECK(e.error().what == blk_error::bad_len);
        REQUIRE(r.drv->read(0, b));
    }
    SECTION("a completion for no request in flight") {
        r.dev->auto_serve = false;
        std::vector<std::byte> b2(512);
        auto id = r.drv->submit_read(2, b);   // descriptors 0, 1, 2
        auto id2 = r.drv->submit_read(9, b2); // descriptors 3, 4, 5
        REQUIRE(id);
        REQUIRE(id2);
        REQUIRE(r.dev->take_all() == 2);
        r.dev->queue()->post_raw(5, 1); // descriptor 5 heads no chain
        auto c = poll(r);
        CHECK_FALSE(c.id.valid());
        REQUIRE_FALSE(c.result);
        CHECK(c.result.error().what == blk_error::bogus_id);
        CHECK(c.result.error().value == 5);
        CHECK(r.drv->bogus_completions() == 1);
        r.dev->serve_held(0);
        auto ok = poll(r);
        CHECK(ok.id == *id);
        CHECK(ok.result);
        CHECK(r.disk_equals(1024, b));
        // The bogus element used up one of the two completions the device may post: a third is a runaway
        // used index, so the device is reset and the request still in flight fails.
        r.dev->serve_held(0);
        auto last = poll(r);
        CHECK(last.id == *id2);
        REQUIRE_FALSE(last.result);
        CHECK(last.result.error().what == blk_error::broken);
        CHECK(r.drv->broken());
    }
    SECTION("a used index that runs ahead: the device is reset, requests fail") {
        r.dev->auto_serve = false;
        auto id = r.drv->submit_read(2, b);
        REQUIRE(id);
        r.dev->queue()->set_used_idx(9);
        auto c = poll(r);
        CHECK(c.id == *id);
        REQUIRE_FALSE(c.result);
        CHECK(c.result.error().what == blk_error::broken);
        CHECK(r.drv->broken());
        CHECK(r.dev->status() == virtio::status_failed);
        CHECK(r.drv->submit_read(2, b).error().what == blk_error::broken);
        CHECK_FALSE(r.drv->poll_completion());
        // start() brings it back.
        r.started();
        r.dev->auto_serve = true;
        REQUIRE(r.drv->read(2, b));
    }
}

TEST_CASE("virtio-blk queue-full back-pressure", "[virtio-blk]") {
    rig<8> r; // 8 descriptors, 4 slots: two reads (3 descriptors each), or four flushes
    r.started();
    r.dev->auto_serve = false;
    std::vector<std::byte> a(512), b(512), c(512);
    SECTION("descriptors run out") {
        REQUIRE(r.drv->submit_read(0, a));
        REQUIRE(r.drv->submit_read(1, b));
        auto e = r.drv->submit_read(2, c);
        REQUIRE_FALSE(e);
        CHECK(e.error().what == blk_error::queue_full);
        CHECK(r.dev->serve_all() == 2);
        CHECK(poll(r).result);
        REQUIRE(r.drv->submit_read(2, c)); // room again after one completion
    }
    SECTION("slots run out") {
        for (int i = 0; i < 4; ++i) REQUIRE(r.drv->submit_flush());
        CHECK(r.drv->submit_flush().error().what == blk_error::queue_full);
    }
}

TEST_CASE("virtio-blk blocking calls wait through the Wait policy", "[virtio-blk]") {
    rig<8, test_wait<8>> r;
    r.started();
    r.dev->auto_serve = false; // completions only come while the driver waits
    std::vector<std::byte> a(512), b(512), c(1024);
    SECTION("back-pressure: a blocking read waits for room") {
        auto ia = r.drv->submit_read(0, a);
        auto ib = r.drv->submit_read(1, b);
        REQUIRE(ia);
        REQUIRE(ib);
        REQUIRE(r.drv->read(10, c)); // the queue was full: it waited, then went
        CHECK(r.disk_equals(10 * 512, c));
        // The earlier requests' completions were kept for poll_completion.
        auto c1 = poll(r);
        auto c2 = poll(r);
        CHECK(((c1.id == *ia && c2.id == *ib) || (c1.id == *ib && c2.id == *ia)));
        CHECK(r.disk_equals(0, a));
        CHECK(r.disk_equals(512, b));
        CHECK(r.drv->in_flight() == 0);
    }
    SECTION("a wait that gives up resets the device") {
        // A rig whose Wait gives up.
        rig<8, test_wait<8>> g;
        g.drv = std::make_unique<rig<8, test_wait<8>>::driver>(test_wait<8>{g.dev.get(), true});
        g.started();
        g.dev->auto_serve = false;
        auto e = g.drv->read(0, a);
        REQUIRE_FALSE(e);
        CHECK(e.error().what == blk_error::wait_gave_up);
        CHECK(g.drv->broken());
        CHECK(g.dev->status_log().back() == virtio::status_failed);
        CHECK(g.dev->queue() == nullptr); // reset: the device let go of the rings
    }
}

TEST_CASE("virtio-blk splits transfers bigger than one request", "[virtio-blk]") {
    rig<> r{{.features = modern | bit(feature_flush) | bit(feature_size_max), .size_max = 4096 + 100}};
    r.started();
    CHECK(r.drv->max_request() == 4096);
    std::vector<std::byte> b(16 * 512 + 512);
    REQUIRE(r.drv->read(5, b));
    CHECK(r.disk_equals(5 * 512, b));
    REQUIRE(r.dev->request_count() == 3);
    CHECK(r.dev->requests()[0].sector == 5);
    CHECK(r.dev->requests()[1].sector == 13);
    CHECK(r.dev->requests()[2].sector == 21);
    CHECK(r.dev->requests()[2].bytes == 512);
    const auto w = make(20 * 512, 8);
    REQUIRE(r.drv->write(100, w));
    CHECK(r.disk_equals(100 * 512, w));
    CHECK(r.dev->request_count() == 6);
    // The asynchronous calls do not split.
    auto e = r.drv->submit_read(0, b);
    REQUIRE_FALSE(e);
    CHECK(e.error().what == blk_error::too_large);
    rig<> big{{}, 1024};
    big.started();
    CHECK(big.drv->max_request() == virtio_blk<fake_blk_transport<16>, 16>::max_request_bytes);
    std::vector<std::byte> huge(300 * 1024);
    REQUIRE(big.drv->read(10, huge));
    CHECK(big.disk_equals(10 * 512, huge));
    CHECK(big.dev->request_count() == 3); // 128 + 128 + 44 KiB
}
