// Host tests for toro::virtio::virtqueue against fake_device: the legacy layout, single and multi-buffer
// chains, running out of descriptors, out-of-order completion, u16 index wrap-around, notification and
// interrupt suppression (flags and event_idx), every validation error of pop_used against a misbehaving
// device, and that chains are reclaimed through the driver's shadow, not the shared table. Device addresses
// are driver addresses plus a bias, so a missing translation shows up as an unmapped buffer.
#include <catch2/catch.hpp>

#include "../xorshift.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <toro/dev/virtio/fake_device.hpp>
#include <toro/dev/virtio/virtqueue.hpp>

namespace {

using namespace toro::virtio;

std::string str(toro::string_view s) {
    return {s.data(), s.size()};
}

// Device address = driver address + bias, and only the arena is device-visible.
struct offset_dma {
    static constexpr std::uint64_t bias = 0x7000'0000'0000;
    const std::byte* base = nullptr;
    std::size_t size = 0;
    std::uint64_t to_device(const void* p) const { return reinterpret_cast<std::uintptr_t>(p) + bias; }
    std::byte* to_driver(std::uint64_t addr, std::uint64_t len) const {
        const std::uint64_t a = addr - bias, b = reinterpret_cast<std::uintptr_t>(base);
        if (a < b || len > size || a - b > size - len) return nullptr;
        return reinterpret_cast<std::byte*>(static_cast<std::uintptr_t>(a));
    }
};

template <std::uint16_t N>
struct arena {
    legacy_ring_storage<N> rings;
    std::array<std::byte, 65536> data{};
};

// A queue, its ring memory and data buffers, and a fake device that found the queue by its addresses.
template <std::uint16_t N, std::uint16_t MaxChain = N>
struct rig {
    using device = fake_device<N, offset_dma, MaxChain>;
    std::unique_ptr<arena<N>> mem = std::make_unique<arena<N>>();
    offset_dma dma{reinterpret_cast<const std::byte*>(mem.get()), sizeof(arena<N>)};
    std::unique_ptr<virtqueue<N, offset_dma>> q = std::make_unique<virtqueue<N, offset_dma>>(dma);
    std::unique_ptr<device> dev;

    explicit rig(virtqueue_options opt = {}) {
        REQUIRE(q->attach(mem->rings.memory(), opt));
        dev = std::make_unique<device>(q->addresses(), dma, opt.event_idx);
        REQUIRE(dev->mapped());
    }
    std::byte* at(std::size_t off) { return mem->data.data() + off; }
    buffer buf(std::size_t off, std::uint32_t len) { return {at(off), len}; }

    std::uint16_t add(std::vector<buffer> out, std::vector<buffer> in) {
        auto t = q->add(out, in);
        if (!t) FAIL(str(t.error().what));
        return *t;
    }
    typename device::chain take() {
        auto c = dev->take();
        if (!c) FAIL(str(c.error().what));
        return *c;
    }
    completion pop() {
        auto c = q->pop_used();
        if (!c) FAIL(str(c.error().what));
        return *c;
    }
    toro::error pop_error() {
        auto c = q->pop_used();
        REQUIRE_FALSE(c);
        return c.error();
    }
};

void fill(std::byte* p, std::string_view s) {
    std::memcpy(p, s.data(), s.size());
}
std::string text(const std::byte* p, std::size_t n) {
    return {reinterpret_cast<const char*>(p), n};
}

} // namespace

TEST_CASE("legacy layout and ring memory", "[virtqueue]") {
    constexpr auto l = legacy_layout(256);
    STATIC_REQUIRE(l.desc_offset == 0);
    STATIC_REQUIRE(l.avail_offset == 4096);
    STATIC_REQUIRE(l.used_offset == 8192); // 4096 + 518 rounded up to the page
    STATIC_REQUIRE(l.bytes == 8192 + 6 + 8 * 256);
    STATIC_REQUIRE(legacy_layout(8).used_offset == 4096);
    STATIC_REQUIRE(legacy_layout(1024, 4096).used_offset == 16384 + 4096); // 16384 + 2054 -> 20480
    STATIC_REQUIRE(legacy_layout(16, 64).used_offset == 320);              // 256 + 38 -> 320
    STATIC_REQUIRE(sizeof(legacy_ring_storage<256>) == 12288);

    rig<8> r;
    const auto a = r.q->addresses();
    const auto base = reinterpret_cast<std::uintptr_t>(r.mem->rings.bytes.data());
    CHECK(a.desc == base + offset_dma::bias);
    CHECK(a.avail == base + 128 + offset_dma::bias);
    CHECK(a.used == base + 4096 + offset_dma::bias);
    CHECK(r.q->free_descriptors() == 8);

    // Misaligned or missing parts are refused; the queue stays unusable until attached.
    virtqueue<8> q;
    CHECK(q.add({}, {}).error().what == vq_error::not_attached);
    CHECK(q.pop_used().error().what == vq_error::not_attached);
    CHECK_FALSE(q.should_notify());
    auto m = r.mem->rings.memory();
    CHECK(q.attach({m.desc + 8, m.avail, m.used}).error().what == vq_error::misaligned);
    CHECK(q.attach({m.desc, m.avail + 1, m.used}).error().what == vq_error::misaligned);
    CHECK(q.attach({m.desc, m.avail, m.used + 2}).error().what == vq_error::misaligned);
    CHECK(q.attach({m.desc, nullptr, m.used}).error().what == vq_error::not_attached);
    CHECK_FALSE(q.attached());
}

TEST_CASE("a single-buffer chain goes to the device and back", "[virtqueue]") {
    rig<8> r;
    fill(r.at(0), "hello");
    const auto token = r.add({r.buf(0, 5)}, {});
    CHECK(r.q->free_descriptors() == 7);
    CHECK(r.q->chains_in_flight() == 1);
    CHECK(r.dev->available() == 0); // not published yet
    r.q->publish();
    CHECK(r.q->should_notify());
    CHECK(r.dev->available() == 1);

    const auto c = r.take();
    CHECK(c.head == token);
    REQUIRE(c.count == 1);
    CHECK_FALSE(c.segments[0].writable);
    CHECK(text(c.segments[0].data, c.segments[0].len) == "hello");
    CHECK_FALSE(r.q->has_used());
    CHECK_FALSE(r.pop().ready);

    r.dev->complete(c.head, 0);
    CHECK(r.q->has_used());
    const auto done = r.pop();
    CHECK(done.ready);
    CHECK(done.token == token);
    CHECK(done.len == 0);
    CHECK(r.q->free_descriptors() == 8);
    CHECK(r.q->chains_in_flight() == 0);
    CHECK_FALSE(r.pop().ready);
}

TEST_CASE("a multi-buffer chain: readable then writable descriptors", "[virtqueue]") {
    rig<8> r;
    fill(r.at(0), "head");
    fill(r.at(100), "-body");
    const auto token = r.add({r.buf(0, 4), r.buf(100, 5)}, {r.buf(200, 3), r.buf(300, 16)});
    r.q->publish();

    // The shared table holds the chain as the spec has it.
    std::uint16_t d = token;
    for (int i = 0; i < 4; ++i) {
        const auto v = r.dev->peek_desc(d);
        CHECK(((v.flags & desc_f_next) != 0) == (i < 3));
        CHECK(((v.flags & desc_f_write) != 0) == (i >= 2));
        d = v.next;
    }

    auto c = r.take();
    REQUIRE(c.count == 4);
    CHECK(c.readable_bytes() == 9);
    CHECK(c.writable_bytes() == 19);
    std::array<std::byte, 32> got{};
    REQUIRE(c.read(got) == 9);
    CHECK(text(got.data(), 9) == "head-body");
    const std::string reply = "0123456789";
    const auto written = c.write(std::as_bytes(std::span{reply.data(), reply.size()}));
    CHECK(written == 10);
    r.dev->complete(c.head, written);

    const auto done = r.pop();
    CHECK(done.token == token);
    CHECK(done.len == 10);
    CHECK(text(r.at(200), 3) == "012");
    CHECK(text(r.at(300), 7) == "3456789");
    CHECK(r.q->free_descriptors() == 8);
}

TEST_CASE("running out of descriptors is an error that changes nothing", "[virtqueue]") {
    rig<8> r;
    r.add({r.buf(0, 1), r.buf(1, 1)}, {r.buf(2, 1)});
    const auto second = r.add({r.buf(10, 1)}, {r.buf(11, 1), r.buf(12, 1)});
    CHECK(r.q->free_descriptors() == 2);

    auto full = r.q->add(std::vector<buffer>{r.buf(20, 1), r.buf(21, 1)}, std::vector<buffer>{r.buf(22, 1)});
    REQUIRE_FALSE(full);
    CHECK(full.error().what == vq_error::no_descriptors);
    CHECK(full.error().value == 3);
    CHECK(r.q->free_descriptors() == 2);
    CHECK(r.q->chains_in_flight() == 2);
    r.q->publish();
    CHECK(r.dev->available() == 2); // the failed add put nothing in the ring

    // Other refusals, also without effect.
    CHECK(r.q->add({}, {}).error().what == vq_error::empty_chain);
    const std::vector<buffer> zero{r.buf(0, 0)};
    CHECK(r.q->add(zero, {}).error().what == vq_error::empty_buffer);
    CHECK(r.q->add({}, zero).error().what == vq_error::empty_buffer);
    const std::vector<buffer> huge{r.buf(0, 0x80000000u), r.buf(0, 0x80000000u)};
    CHECK(r.q->add(huge, {}).error().what == vq_error::chain_too_long);
    CHECK(r.q->free_descriptors() == 2);

    // Exactly what is left fits; then one completion makes room again.
    r.add({r.buf(30, 1)}, {r.buf(31, 1)});
    CHECK(r.q->free_descriptors() == 0);
    CHECK_FALSE(r.q->add(std::vector<buffer>{r.buf(0, 1)}, {}));
    r.q->publish();
    r.take();
    const auto c = r.take();
    CHECK(c.head == second);
    r.dev->complete(c.head, 2);
    CHECK(r.pop().token == second);
    CHECK(r.q->free_descriptors() == 3);
    r.add({r.buf(0, 1), r.buf(1, 1)}, {r.buf(2, 1)});
    r.q->publish();
    r.take();
    r.take();
    CHECK(r.dev->held_descriptors() == 8);
}

TEST_CASE("chains complete out of order", "[virtqueue]") {
    rig<16> r;
    std::vector<std::uint16_t> tokens;
    for (std::uint32_t i = 0; i < 4; ++i)
        tokens.push_back(r.add({r.buf(i * 64, 8)}, {r.buf(i * 64 + 8, 8), r.buf(i * 64 + 16, 8)}));
    r.q->publish();
    std::vector<device_chain<16>> chains;
    for (int i = 0; i < 4; ++i) chains.push_back(r.take());
    CHECK(r.q->free_descriptors() == 4);

    for (int i : {2, 0, 3, 1}) r.dev->complete(chains[i].head, static_cast<std::uint32_t>(i + 1));
    for (int i : {2, 0, 3, 1}) {
        const auto c = r.pop();
        CHECK(c.token == tokens[i]);
        CHECK(c.len == static_cast<std::uint32_t>(i + 1));
    }
    CHECK_FALSE(r.pop().ready);
    CHECK(r.q->free_descriptors() == 16);

    // The reshuffled free list still hands out disjoint descriptors: the device sees no overlap.
    for (std::uint32_t i = 0; i < 5; ++i) r.add({r.buf(i, 1), r.buf(i, 1)}, {r.buf(i, 1)});
    r.q->publish();
    for (int i = 0; i < 5; ++i) r.take();
    CHECK(r.dev->held_descriptors() == 15);
}

TEST_CASE("free-running indices wrap around over 65536 requests", "[virtqueue]") {
    rig<4> r;
    xorshift rng{0x5eed};
    std::map<std::uint16_t, std::uint32_t> in_flight; // token -> the tag the device must write back
    std::deque<device_chain<4>> taken;
    std::uint32_t next_tag = 1, done = 0, notified = 0;
    const std::uint32_t total = 70000;
    while (done < total) {
        // Add what fits (1-3 descriptors each), publish, let the device take some and finish some, any order.
        while (next_tag <= total) {
            const std::size_t n_in = 1 + rng.below(2), n_out = rng.below(2);
            if (n_in + n_out > r.q->free_descriptors()) break;
            const std::size_t slot = (next_tag % 1024) * 64; // far more slots than chains in flight
            fill(r.at(slot), "req");
            std::vector<buffer> out(n_out, r.buf(slot, 3)), in;
            for (std::size_t i = 0; i < n_in; ++i) in.push_back(r.buf(slot + 8 + i * 4, 4));
            const auto t = r.add(out, in);
            REQUIRE(in_flight.count(t) == 0);
            in_flight[t] = next_tag++;
        }
        r.q->publish();
        if (r.q->should_notify()) ++notified;
        for (std::uint64_t k = rng.below(4); k-- > 0 && r.dev->available() != 0;) taken.push_back(r.take());
        for (std::uint64_t k = rng.below(4); k-- > 0 && !taken.empty();) {
            const std::size_t i = rng.below(taken.size());
            auto c = taken[i];
            taken.erase(taken.begin() + static_cast<std::ptrdiff_t>(i));
            const std::uint32_t tag = in_flight.at(c.head);
            r.dev->complete(c.head, c.write(std::as_bytes(std::span{&tag, 1})));
        }
        while (true) {
            const auto c = r.pop();
            if (!c) break;
            REQUIRE(in_flight.count(c.token) == 1);
            REQUIRE(c.len == 4);
            std::uint32_t tag;
            std::memcpy(&tag, r.at((in_flight[c.token] % 1024) * 64 + 8), 4);
            REQUIRE(tag == in_flight[c.token]);
            in_flight.erase(c.token);
            ++done;
        }
    }
    CHECK(r.dev->used_idx() == static_cast<std::uint16_t>(total));
    CHECK(r.dev->chains_taken() == total);
    CHECK(r.q->free_descriptors() == 4);
    CHECK(notified > 0);
}

TEST_CASE("notifications honour VIRTQ_USED_F_NO_NOTIFY", "[virtqueue]") {
    rig<8> r;
    CHECK_FALSE(r.q->should_notify()); // nothing published
    r.add({r.buf(0, 1)}, {});
    CHECK_FALSE(r.q->should_notify()); // added, not published
    r.q->publish();
    CHECK(r.q->should_notify());
    CHECK_FALSE(r.q->should_notify()); // already notified for it

    r.dev->set_no_notify(true);
    r.add({r.buf(0, 1)}, {});
    r.q->publish();
    CHECK_FALSE(r.q->should_notify());

    r.dev->set_no_notify(false);
    r.add({r.buf(0, 1)}, {});
    r.q->publish();
    CHECK(r.q->should_notify());
}

TEST_CASE("notifications with VIRTIO_F_EVENT_IDX follow avail_event", "[virtqueue]") {
    using q8 = virtqueue<8>;
    STATIC_REQUIRE(q8::need_event(0, 1, 0));
    STATIC_REQUIRE_FALSE(q8::need_event(1, 1, 1));
    STATIC_REQUIRE(q8::need_event(5, 7, 3));
    STATIC_REQUIRE(q8::need_event(3, 7, 3));           // entries 3..6 were added: 3 among them
    STATIC_REQUIRE_FALSE(q8::need_event(7, 7, 3));     // entry 7 is not there yet
    STATIC_REQUIRE_FALSE(q8::need_event(2, 7, 3));     // entry 2 was there before: already notified
    STATIC_REQUIRE(q8::need_event(0xffff, 2, 0xfffe)); // across the wrap
    STATIC_REQUIRE_FALSE(q8::need_event(3, 2, 0xfffe));

    rig<8> r{{.event_idx = true}};
    r.add({r.buf(0, 1)}, {});
    r.q->publish();
    CHECK(r.q->should_notify()); // avail_event 0: the device wants to hear of entry 0
    r.take();                    // the device now asks for a kick when chain 1 arrives (avail_event = 1)
    r.add({r.buf(0, 1)}, {});
    r.q->publish();
    CHECK(r.q->should_notify());
    r.add({r.buf(0, 1)}, {});
    r.q->publish();
    CHECK_FALSE(r.q->should_notify()); // the device has not caught up: no second kick
    r.take();
    r.take();
    r.dev->set_avail_event(10); // a device that wants a kick only when index 10 is published
    for (int i = 0; i < 5; ++i) r.add({r.buf(0, 1)}, {});
    r.q->publish(); // idx 3 -> 8
    CHECK_FALSE(r.q->should_notify());
}

TEST_CASE("driver-side interrupt suppression", "[virtqueue]") {
    SECTION("VIRTQ_AVAIL_F_NO_INTERRUPT") {
        rig<8> r{{.no_interrupt = true}};
        r.add({r.buf(0, 1)}, {});
        r.q->publish();
        r.dev->complete(r.take().head, 0);
        CHECK_FALSE(r.dev->should_interrupt());
        CHECK(r.q->enable_interrupts()); // a used chain is already waiting: poll, don't sleep
        r.pop();
        CHECK_FALSE(r.q->enable_interrupts());
        r.add({r.buf(0, 1)}, {});
        r.q->publish();
        r.dev->complete(r.take().head, 0);
        CHECK(r.dev->should_interrupt());
        CHECK_FALSE(r.dev->should_interrupt()); // nothing new
        r.q->disable_interrupts();
        r.pop();
        r.add({r.buf(0, 1)}, {});
        r.q->publish();
        r.dev->complete(r.take().head, 0);
        CHECK_FALSE(r.dev->should_interrupt());
    }
    SECTION("used_event") {
        rig<8> r{{.event_idx = true}};
        for (int i = 0; i < 3; ++i) r.add({r.buf(0, 1)}, {});
        r.q->publish();
        r.dev->complete(r.take().head, 0);
        CHECK(r.dev->should_interrupt()); // used_event 0: interrupt on the first completion
        r.dev->complete(r.take().head, 0);
        CHECK_FALSE(r.dev->should_interrupt()); // the driver has not popped: no second interrupt
        r.pop();
        r.pop(); // used_event follows the driver: 2
        r.dev->complete(r.take().head, 0);
        CHECK(r.dev->should_interrupt());
        r.q->disable_interrupts();
        r.pop();
        r.add({r.buf(0, 1)}, {});
        r.q->publish();
        r.dev->complete(r.take().head, 0);
        CHECK_FALSE(r.dev->should_interrupt());
        CHECK(r.q->enable_interrupts());
    }
}

TEST_CASE("pop_used rejects a used index that runs ahead", "[virtqueue]") {
    rig<8> r;
    const auto t = r.add({r.buf(0, 1)}, {r.buf(8, 4)});
    r.add({r.buf(0, 1)}, {});
    r.q->publish();           // two chains published
    r.add({r.buf(0, 1)}, {}); // and one not
    const auto c = r.take();

    SECTION("by more than was published") {
        r.dev->write_used(0, c.head, 1);
        r.dev->write_used(1, c.head, 1);
        r.dev->set_used_idx(3); // published: 2
        auto e = r.pop_error();
        CHECK(e.what == vq_error::used_index_jump);
        CHECK(e.value == 3);
    }
    SECTION("by more than the queue size") {
        r.dev->set_used_idx(9);
        CHECK(r.pop_error().value == 9);
    }
    SECTION("backwards") {
        r.dev->set_used_idx(0xffff);
        CHECK(r.pop_error().what == vq_error::used_index_jump);
    }
    // Nothing was consumed: once the device behaves, the chain completes normally.
    CHECK(r.q->free_descriptors() == 4);
    r.dev->set_used_idx(0);
    r.dev->complete(c.head, 4);
    const auto done = r.pop();
    CHECK(done.token == t);
    CHECK(done.len == 4);
    CHECK(r.q->free_descriptors() == 6);
}

TEST_CASE("pop_used rejects ids that are not chains in flight, once", "[virtqueue]") {
    rig<8> r;
    const auto a = r.add({r.buf(0, 1), r.buf(1, 1)}, {r.buf(8, 4)}); // descriptors 0, 1, 2
    r.add({r.buf(0, 1)}, {});
    r.q->publish(); // two published: the bad element and a's fit under used.idx
    const auto unpublished = r.add({r.buf(0, 1)}, {});
    const auto ca = r.take();
    const auto middle = r.dev->peek_desc(a).next;
    std::uint32_t bad = 0;
    SECTION("beyond the table") {
        bad = 8;
    }
    SECTION("far beyond") {
        bad = 0x10000 + a;
    }
    SECTION("a free descriptor") {
        bad = 7;
    }
    SECTION("inside a chain, not its head") {
        bad = middle;
    }
    SECTION("a chain not published yet") {
        bad = unpublished;
    }
    r.dev->post_raw(bad, 0);
    r.dev->complete(ca.head, 4);
    const auto e = r.pop_error();
    CHECK(e.what == vq_error::bad_used_id);
    CHECK(e.value == bad);
    CHECK(r.q->free_descriptors() == 3); // nothing reclaimed for it
    const auto c = r.pop();              // the bad element was consumed; the good one follows
    CHECK(c.token == a);
    CHECK(r.q->free_descriptors() == 6);
    CHECK_FALSE(r.pop().ready);
}

TEST_CASE("a chain completed twice is reclaimed once", "[virtqueue]") {
    rig<8> r;
    const auto a = r.add({r.buf(0, 1)}, {r.buf(8, 4)});
    const auto b = r.add({r.buf(0, 1)}, {r.buf(8, 4)});
    r.q->publish();
    const auto ca = r.take();
    r.take();
    r.dev->complete(ca.head, 4);
    r.dev->post_raw(ca.head, 4); // again
    CHECK(r.pop().token == a);
    CHECK(r.q->free_descriptors() == 6);
    const auto e = r.pop_error();
    CHECK(e.what == vq_error::bad_used_id);
    CHECK(e.value == a);
    CHECK(r.q->free_descriptors() == 6);
    CHECK(r.q->chains_in_flight() == 1);
    // The head is reused by the next chain, and b still completes normally.
    CHECK(r.add({r.buf(0, 1)}, {}) == a);
    r.q->publish();
    r.dev->complete(b, 4);
    CHECK(r.pop().token == b);
}

TEST_CASE("pop_used rejects a length beyond the chain's writable bytes", "[virtqueue]") {
    rig<8> r;
    const auto rw = r.add({r.buf(0, 100)}, {r.buf(100, 4), r.buf(200, 6)});
    const auto ro = r.add({r.buf(0, 100)}, {});
    r.q->publish();
    r.take();
    r.take();
    r.dev->complete(rw, 11); // 10 writable bytes
    r.dev->complete(ro, 1);  // none
    auto e = r.pop_error();
    CHECK(e.what == vq_error::bad_used_len);
    CHECK(e.value == rw); // the token, so the driver can fail that request
    CHECK(r.q->free_descriptors() == 7);
    e = r.pop_error();
    CHECK(e.value == ro);
    CHECK(r.q->free_descriptors() == 8);
    CHECK(r.q->chains_in_flight() == 0);
    CHECK_FALSE(r.pop().ready);

    const auto ok = r.add({}, {r.buf(0, 10)});
    r.q->publish();
    r.take();
    r.dev->complete(ok, 10); // exactly the writable bytes is fine
    CHECK(r.pop().len == 10);
}

TEST_CASE("reclaiming follows the driver's shadow, not the shared table", "[virtqueue]") {
    rig<8> r;
    const auto a = r.add({r.buf(0, 1), r.buf(1, 1)}, {r.buf(8, 4)});   // 0 -> 1 -> 2
    const auto b = r.add({r.buf(0, 1)}, {r.buf(16, 4), r.buf(24, 4)}); // 3 -> 4 -> 5
    r.q->publish();
    const auto ca = r.take();
    const auto cb = r.take();
    std::vector<std::uint16_t> b_descs;
    for (const auto& s : cb.all()) b_descs.push_back(s.index);

    // The device rewrites chain a in shared memory: its links now run into chain b (and loop), its flags
    // claim more descriptors, and the available ring names other heads.
    r.dev->poke_next(a, b_descs[1]);
    r.dev->poke_next(ca.segments[1].index, b);
    r.dev->poke_next(ca.segments[2].index, a);
    r.dev->poke_desc(ca.segments[2].index, {0, 0xffff, desc_f_next, b_descs[2]});
    r.dev->complete(ca.head, 4);
    const auto done = r.pop();
    CHECK(done.token == a);
    CHECK(r.q->free_descriptors() == 5);

    // Had chain b's descriptors gone back on the free list, the device would now see them handed out
    // twice (its `busy` check): fill the table while b is still held.
    std::vector<std::uint16_t> more;
    for (int i = 0; i < 5; ++i) more.push_back(r.add({r.buf(0, 1)}, {}));
    CHECK(r.q->free_descriptors() == 0);

    // The device also rewrites the available ring entries before they are published (slots 2..6):
    // publish() must take the heads from the driver's own copy.
    std::byte* ring = r.mem->rings.memory().avail + ring_offsets::avail_slot(2);
    std::array<std::byte, 10> saved;
    std::memcpy(saved.data(), ring, 10);
    std::memset(ring, 0xff, 10);
    r.q->publish();
    std::memcpy(ring, saved.data(), 10);
    for (int i = 0; i < 5; ++i) r.take();
    CHECK(r.dev->held_descriptors() == 8);
    r.dev->complete(more[3], 0);
    CHECK(r.pop().token == more[3]);
    r.dev->complete(cb.head, 8);
    CHECK(r.pop().token == b);
}

TEST_CASE("the fake device catches driver bugs in the shared table", "[virtqueue]") {
    rig<8> r;
    const auto a = r.add({r.buf(0, 1), r.buf(1, 1)}, {r.buf(8, 4)});
    r.q->publish();
    const auto second = r.dev->peek_desc(a).next;
    auto expect_error = [&](toro::string_view what) {
        auto c = r.dev->take();
        REQUIRE_FALSE(c);
        CHECK(c.error().what == what);
    };
    SECTION("a loop") {
        r.dev->poke_next(second, a);
        auto v = r.dev->peek_desc(second);
        v.flags = desc_f_next;
        r.dev->poke_desc(second, v);
        expect_error(fake_error::loop);
    }
    SECTION("a link beyond the table") {
        r.dev->poke_next(a, 100);
        expect_error(fake_error::bad_next);
    }
    SECTION("writable before readable") {
        auto v = r.dev->peek_desc(a);
        v.flags |= desc_f_write;
        r.dev->poke_desc(a, v);
        expect_error(fake_error::order);
    }
    SECTION("an address outside guest memory") {
        auto v = r.dev->peek_desc(a);
        v.addr -= offset_dma::bias; // a driver that forgot to translate
        r.dev->poke_desc(a, v);
        expect_error(fake_error::bad_addr);
    }
    SECTION("indirect") {
        auto v = r.dev->peek_desc(a);
        v.flags |= desc_f_indirect;
        r.dev->poke_desc(a, v);
        expect_error(fake_error::indirect);
    }
    SECTION("nothing available") {
        r.take();
        expect_error(fake_error::nothing_available);
    }
}

TEST_CASE("fake_device::serve handles every available chain", "[virtqueue]") {
    rig<16> r;
    for (std::uint32_t i = 0; i < 8; ++i) {
        fill(r.at(i * 16), "ping");
        r.add({r.buf(i * 16, 4)}, {r.buf(i * 16 + 4, 4)});
    }
    r.q->publish();
    auto served = r.dev->serve([](auto& c) {
        std::array<std::byte, 4> b{};
        c.read(b);
        return c.write(b); // echo
    });
    REQUIRE(served);
    CHECK(*served == 8);
    int n = 0;
    while (r.pop().ready) ++n;
    CHECK(n == 8);
    CHECK(text(r.at(7 * 16 + 4), 4) == "ping");
    CHECK(r.q->free_descriptors() == 16);
}

TEST_CASE("a queue of the largest size", "[virtqueue]") {
    rig<32768, 4>
        r; // ring memory and shadows of ~850 KiB each, on the heap; chains of up to 4 for the device
    const auto t = r.add({r.buf(0, 1)}, {r.buf(1, 1)});
    r.q->publish();
    r.dev->complete(r.take().head, 1);
    CHECK(r.pop().token == t);
    CHECK(r.q->free_descriptors() == 32768);
}
