// Host tests for the NIC seam: token semantics (single use, stale tokens, frames longer than the MTU refused,
// results passed through), loopback and paired_nics delivery order and bytes, faulty_nic (each fault exactly,
// determinism for a seed, rates over 10k frames), and pcap_writer's file parsed back.
#include <catch2/catch.hpp>

#include "../temp_path.hpp"

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <toro/dev/net_device.hpp>
#include <toro/dev/pcap.hpp>

namespace {

using toro::net_device;
using bytes = std::vector<std::byte>;

std::string str(toro::string_view s) {
    return {s.data(), s.size()};
}

// A frame that carries its id in its first 4 bytes and a pattern derived from all of it after (a bijective
// hash: a frame whose id bytes were damaged no longer matches its pattern).
bytes make_frame(std::uint32_t id, std::size_t len = 60) {
    const std::uint32_t h = (id ^ (id >> 16)) * 0x9e3779b1u;
    bytes f(len);
    for (std::size_t i = 0; i < len; ++i)
        f[i] = static_cast<std::byte>(i < 4 ? id >> (8 * i) : (h >> (8 * (i % 4))) + i);
    return f;
}
std::uint32_t id_of(const bytes& f) {
    std::uint32_t id = 0;
    for (std::size_t i = 0; i < 4 && i < f.size(); ++i) id |= std::uint32_t(f[i]) << (8 * i);
    return id;
}

// Code that knows only the concept.
template <net_device D>
toro::expected<void> send(D& nic, const bytes& frame) {
    auto t = nic.transmit();
    if (!t) return toro::unexpected{"no transmit buffer"};
    return std::move(*t).consume(frame.size(), [&](std::span<std::byte> buf) {
        for (std::size_t i = 0; i < frame.size(); ++i) buf[i] = frame[i];
    });
}
template <net_device D>
toro::maybe<bytes> recv(D& nic) {
    auto r = nic.receive();
    if (!r) return toro::nothing;
    return std::move(r->rx).consume([](std::span<const std::byte> f) { return bytes(f.begin(), f.end()); });
}
template <net_device D>
std::vector<bytes> drain(D& nic) {
    std::vector<bytes> out;
    while (auto f = recv(nic)) out.push_back(std::move(*f));
    return out;
}

} // namespace

// Types that miss a part of the concept do not model it.
namespace {
struct no_mtu : toro::net_device_archetype {
    void mtu() const {}
};
struct copy_only_token_device : toro::net_device_archetype {
    struct rx_token {
        template <class F>
        toro::rx_result_t<F> consume(F&& f) & { // not single-use: callable on an lvalue only
            return f(std::span<const std::byte>{});
        }
    };
    toro::maybe<toro::received<rx_token, tx_token>> receive() { return toro::nothing; }
};
static_assert(!net_device<no_mtu>);
static_assert(!net_device<copy_only_token_device>);
static_assert(!net_device<int>);
} // namespace

TEST_CASE("net: the archetype is enough for code generic over NICs", "[net]") {
    toro::net_device_archetype nic;
    auto s = send(nic, make_frame(1));
    REQUIRE_FALSE(s);
    CHECK(str(s.error().what) == "no transmit buffer");
    CHECK_FALSE(recv(nic));
    CHECK(nic.mtu() == 1514);
}

TEST_CASE("net: loopback delivers frames in order, bytes intact", "[net]") {
    toro::loopback<> lo;
    CHECK(lo.mtu() == 1514);
    CHECK(lo.mac() == toro::mac_address{0x02, 0, 0, 0, 0, 0x01});
    CHECK_FALSE(lo.receive());

    const bytes f1 = make_frame(1, 60), f2 = make_frame(2, 1514), f3 = make_frame(3, 1);
    REQUIRE(send(lo, f1));
    REQUIRE(send(lo, f2));
    REQUIRE(send(lo, f3));
    CHECK(lo.pending() == 3);
    CHECK(lo.frames_sent() == 3);
    auto got = drain(lo);
    REQUIRE(got.size() == 3);
    CHECK(got[0] == f1);
    CHECK(got[1] == f2);
    CHECK(got[2] == f3);
    CHECK(lo.pending() == 0);
    CHECK(lo.frames_received() == 3);
    CHECK_FALSE(lo.receive());
}

TEST_CASE("net: a full loopback queue refuses transmits as values", "[net]") {
    toro::loopback<4, 128> lo{{0x02, 1, 2, 3, 4, 5}};
    CHECK(lo.mac() == toro::mac_address{0x02, 1, 2, 3, 4, 5});
    CHECK(lo.mtu() == 128);
    auto early = lo.transmit(); // taken while there is room, used when there is none
    REQUIRE(early);
    for (std::uint32_t i = 0; i < 4; ++i) REQUIRE(send(lo, make_frame(i, 64)));
    CHECK_FALSE(lo.transmit());
    bool called = false;
    auto r = std::move(*early).consume(64, [&](std::span<std::byte>) { called = true; });
    REQUIRE_FALSE(r);
    CHECK(str(r.error().what) == "transmit queue full; frames");
    CHECK(r.error().value == 4);
    CHECK_FALSE(called);
    CHECK(lo.overflows() == 1);
    auto got = drain(lo);
    REQUIRE(got.size() == 4);
    for (std::uint32_t i = 0; i < 4; ++i) CHECK(got[i] == make_frame(i, 64));
    // The ring wraps around.
    for (std::uint32_t i = 4; i < 11; ++i) {
        REQUIRE(send(lo, make_frame(i, 100)));
        auto f = recv(lo);
        REQUIRE(f);
        CHECK(*f == make_frame(i, 100));
    }
}

TEST_CASE("net: tx token lengths: 1..mtu accepted, others refused without calling f", "[net]") {
    toro::loopback<4, 256> lo;
    int calls = 0;
    auto fill = [&](std::span<std::byte> b) {
        ++calls;
        for (auto& x : b) x = std::byte{0x5a};
        return b.size();
    };
    auto too_long = (*lo.transmit()).consume(257, fill);
    REQUIRE_FALSE(too_long);
    CHECK(str(too_long.error().what) == "frame longer than the NIC's MTU; bytes");
    CHECK(too_long.error().value == 257);
    auto empty = (*lo.transmit()).consume(0, fill);
    REQUIRE_FALSE(empty);
    CHECK(str(empty.error().what) == "empty frame");
    CHECK(calls == 0);
    CHECK(lo.pending() == 0);

    // f sees a buffer of exactly len bytes and its result comes back wrapped.
    auto full = (*lo.transmit()).consume(256, fill);
    REQUIRE(full);
    CHECK(*full == 256);
    auto one = (*lo.transmit()).consume(1, fill);
    REQUIRE(one);
    CHECK(*one == 1);
    CHECK(calls == 2);
    auto got = drain(lo);
    REQUIRE(got.size() == 2);
    CHECK(got[0] == bytes(256, std::byte{0x5a}));
    CHECK(got[1] == bytes(1, std::byte{0x5a}));
}

TEST_CASE("net: token results: rx returns what f returns, tx flattens an expected", "[net]") {
    toro::loopback<> lo;
    auto e = (*lo.transmit()).consume(10, [](std::span<std::byte> b) -> toro::expected<int> {
        b[0] = std::byte{9};
        return toro::unexpected{"stack gave up", 42};
    });
    static_assert(std::is_same_v<decltype(e), toro::expected<int>>);
    REQUIRE_FALSE(e); // f's own error, not nested; the frame still went out
    CHECK(str(e.error().what) == "stack gave up");
    CHECK(e.error().value == 42);
    CHECK(lo.pending() == 1);

    auto r = lo.receive();
    REQUIRE(r);
    const int first =
        std::move(r->rx).consume([](std::span<const std::byte> f) { return int(f[0]) + int(f.size()); });
    CHECK(first == 19);
    REQUIRE(send(lo, make_frame(5)));
    auto r2 = lo.receive();
    REQUIRE(r2);
    std::size_t seen = 0;
    std::move(r2->rx).consume([&](std::span<const std::byte> f) { seen = f.size(); }); // void f
    CHECK(seen == 60);
}

TEST_CASE("net: tokens are single use; an unconsumed rx token leaves its frame", "[net]") {
    toro::loopback<> lo;
    REQUIRE(send(lo, make_frame(1)));
    REQUIRE(send(lo, make_frame(2)));

    {
        auto dropped = lo.receive();
        REQUIRE(dropped);
    } // never consumed
    CHECK(lo.pending() == 2);

    auto a = lo.receive();
    REQUIRE(a);
    auto rx = std::move(a->rx);
    std::size_t n1 = std::move(rx).consume([](std::span<const std::byte> f) { return f.size(); });
    CHECK(n1 == 60);
    // The same token again is stale: f sees no frame and frame 2 stays queued.
    std::size_t n2 = std::move(rx).consume([](std::span<const std::byte> f) { return f.size() + 1000; });
    CHECK(n2 == 1000);
    CHECK(lo.pending() == 1);
    auto f = recv(lo);
    REQUIRE(f);
    CHECK(id_of(*f) == 2);

    auto t = lo.transmit();
    REQUIRE(t);
    auto tx = std::move(*t);
    REQUIRE(std::move(tx).consume(10, [](std::span<std::byte>) {}));
    auto again = std::move(tx).consume(10, [](std::span<std::byte>) {});
    REQUIRE_FALSE(again);
    CHECK(str(again.error().what) == "transmit token already used");
    CHECK(lo.pending() == 1);
}

TEST_CASE("net: paired NICs: what one sends the other receives, in order", "[net]") {
    toro::paired_nics<> link;
    CHECK(link.a.mac() == toro::mac_address{0x02, 0, 0, 0, 0, 0x0a});
    CHECK(link.b.mac() == toro::mac_address{0x02, 0, 0, 0, 0, 0x0b});
    for (std::uint32_t i = 0; i < 5; ++i) REQUIRE(send(link.a, make_frame(100 + i, 60 + i)));
    REQUIRE(send(link.b, make_frame(7, 99)));
    CHECK(link.b.pending() == 5);
    CHECK(link.a.pending() == 1);

    auto at_b = drain(link.b);
    REQUIRE(at_b.size() == 5);
    for (std::uint32_t i = 0; i < 5; ++i) CHECK(at_b[i] == make_frame(100 + i, 60 + i));
    auto at_a = drain(link.a);
    REQUIRE(at_a.size() == 1);
    CHECK(at_a[0] == make_frame(7, 99));
    CHECK(link.a.frames_sent() == 5);
    CHECK(link.b.frames_received() == 5);
}

TEST_CASE("net: the tx token that comes with a received frame answers it", "[net]") {
    toro::paired_nics<> link;
    REQUIRE(send(link.a, make_frame(41)));
    auto r = link.b.receive();
    REQUIRE(r);
    // Reply from inside the rx callback, while the received frame is still in the driver's buffer.
    auto sent = std::move(r->rx).consume([&](std::span<const std::byte> ping) {
        return std::move(r->tx).consume(ping.size(), [&](std::span<std::byte> pong) {
            for (std::size_t i = 0; i < ping.size(); ++i) pong[i] = ping[i] ^ std::byte{0xff};
        });
    });
    REQUIRE(sent);
    auto back = recv(link.a);
    REQUIRE(back);
    bytes want = make_frame(41);
    for (auto& x : want) x ^= std::byte{0xff};
    CHECK(*back == want);

    // On a loopback the answer lands in the same queue, behind the frame being read.
    toro::loopback<2, 64> lo;
    REQUIRE(send(lo, make_frame(1, 64)));
    auto l = lo.receive();
    REQUIRE(l);
    auto echoed = std::move(l->rx).consume([&](std::span<const std::byte> f) {
        return std::move(l->tx).consume(f.size(), [&](std::span<std::byte> b) {
            for (std::size_t i = 0; i < f.size(); ++i) b[i] = f[i];
        });
    });
    REQUIRE(echoed);
    auto e = recv(lo);
    REQUIRE(e);
    CHECK(*e == make_frame(1, 64));
}

// ----- faulty_nic -----

TEST_CASE("net: faulty_nic with zero rates is transparent", "[net]") {
    toro::loopback<> lo;
    toro::faulty_nic<toro::loopback<>> nic{lo, 1, {}};
    CHECK(nic.mac() == lo.mac());
    CHECK(nic.mtu() == 1514);
    for (std::uint32_t i = 0; i < 6; ++i) REQUIRE(send(nic, make_frame(i, 60 + i)));
    auto got = drain(nic);
    REQUIRE(got.size() == 6);
    for (std::uint32_t i = 0; i < 6; ++i) CHECK(got[i] == make_frame(i, 60 + i));
    CHECK(nic.delivered() == 6);
    CHECK(nic.dropped() + nic.corrupted() + nic.duplicated() + nic.reordered() == 0);
}

TEST_CASE("net: faulty_nic drop", "[net]") {
    toro::loopback<> lo;
    toro::faulty_nic<toro::loopback<>> nic{lo, 7, {.drop = 1000}};
    for (std::uint32_t i = 0; i < 5; ++i) REQUIRE(send(nic, make_frame(i)));
    CHECK_FALSE(nic.receive());
    CHECK(nic.dropped() == 5);
    CHECK(lo.pending() == 0);
}

TEST_CASE("net: faulty_nic corrupt flips exactly one byte", "[net]") {
    toro::loopback<> lo;
    toro::faulty_nic<toro::loopback<>> nic{lo, 3, {.corrupt = 1000}};
    for (std::uint32_t i = 0; i < 8; ++i) {
        const bytes sent = make_frame(i, 200);
        REQUIRE(send(nic, sent));
        auto f = recv(nic);
        REQUIRE(f);
        REQUIRE(f->size() == sent.size());
        int diffs = 0;
        for (std::size_t j = 0; j < sent.size(); ++j) diffs += (*f)[j] != sent[j];
        CHECK(diffs == 1);
    }
    CHECK(nic.corrupted() == 8);
}

TEST_CASE("net: faulty_nic duplicate delivers each frame twice", "[net]") {
    toro::loopback<> lo;
    toro::faulty_nic<toro::loopback<>> nic{lo, 5, {.duplicate = 1000}};
    for (std::uint32_t i = 0; i < 3; ++i) REQUIRE(send(nic, make_frame(i)));
    auto got = drain(nic);
    REQUIRE(got.size() == 6);
    for (std::uint32_t i = 0; i < 6; ++i) CHECK(got[i] == make_frame(i / 2));
    CHECK(nic.duplicated() == 3);
    CHECK(nic.delivered() == 6);
}

TEST_CASE("net: faulty_nic reorder swaps a frame with the next one", "[net]") {
    toro::loopback<> lo;
    toro::faulty_nic<toro::loopback<>> nic{lo, 11, {.reorder = 1000}};
    for (std::uint32_t i = 0; i < 5; ++i) REQUIRE(send(nic, make_frame(i)));
    auto got = drain(nic);
    std::vector<std::uint32_t> ids;
    for (auto& f : got) ids.push_back(id_of(f));
    // 0 held, 1 delivered (hold busy), 0; 2 held, 3, 2; 4 held, nothing follows: delivered late, not lost.
    CHECK(ids == std::vector<std::uint32_t>{1, 0, 3, 2, 4});
    for (auto& f : got) CHECK(f == make_frame(id_of(f)));
    CHECK(nic.reordered() == 3);
}

TEST_CASE("net: faulty_nic passes frames longer than its buffers unharmed, or loses them if held", "[net]") {
    toro::loopback<4, 256> lo;
    toro::faulty_nic<toro::loopback<4, 256>, 64> corrupting{lo, 1, {.corrupt = 1000}};
    REQUIRE(send(corrupting, make_frame(1, 100)));
    REQUIRE(send(corrupting, make_frame(2, 64)));
    auto got = drain(corrupting);
    REQUIRE(got.size() == 2);
    CHECK(got[0] == make_frame(1, 100)); // too long to copy: unharmed
    CHECK(got[1] != make_frame(2, 64));  // fits: corrupted
    CHECK(corrupting.corrupted() == 1);

    toro::faulty_nic<toro::loopback<4, 256>, 64> reordering{lo, 1, {.reorder = 1000}};
    REQUIRE(send(reordering, make_frame(3, 100)));
    CHECK_FALSE(reordering.receive());
    CHECK(reordering.dropped() == 1);
    CHECK(reordering.reordered() == 0);
}

namespace {
struct faulty_run {
    std::vector<bytes> got;
    std::uint64_t delivered, dropped, corrupted, duplicated, reordered;
};
// Sends `frames` frames through a faulty loopback in batches of 4 and returns everything delivered.
faulty_run run_faulty(std::uint64_t seed, toro::nic_fault_rates rates, std::uint32_t frames) {
    toro::loopback<> lo;
    toro::faulty_nic<toro::loopback<>> nic{lo, seed, rates};
    faulty_run run{};
    for (std::uint32_t i = 0; i < frames; i += 4) {
        for (std::uint32_t j = i; j < i + 4 && j < frames; ++j) REQUIRE(send(nic, make_frame(j, 64)));
        for (auto& f : drain(nic)) run.got.push_back(std::move(f));
    }
    run.delivered = nic.delivered();
    run.dropped = nic.dropped();
    run.corrupted = nic.corrupted();
    run.duplicated = nic.duplicated();
    run.reordered = nic.reordered();
    return run;
}
} // namespace

TEST_CASE("net: faulty_nic is deterministic for a seed", "[net]") {
    const toro::nic_fault_rates rates{.drop = 100, .corrupt = 100, .duplicate = 100, .reorder = 100};
    const auto a = run_faulty(42, rates, 2000).got;
    const auto b = run_faulty(42, rates, 2000).got;
    const auto c = run_faulty(43, rates, 2000).got;
    CHECK(a == b);
    CHECK(a != c);
    CHECK(a.size() > 1000);
}

TEST_CASE("net: faulty_nic honours its rates over 10k frames", "[net]") {
    const toro::nic_fault_rates rates{.drop = 100, .corrupt = 50, .duplicate = 30, .reorder = 20};
    const auto run = run_faulty(2024, rates, 10000);
    // Drop is drawn for all 10000 frames; the rest for the ~9000 kept. Bounds are about +-5 sigma.
    CHECK(run.dropped >= 850);
    CHECK(run.dropped <= 1150);
    CHECK(run.corrupted >= 340);
    CHECK(run.corrupted <= 560);
    CHECK(run.duplicated >= 160); // a little under 270: no duplicate while a frame is held
    CHECK(run.duplicated <= 360);
    CHECK(run.reordered >= 110);
    CHECK(run.reordered <= 250);
    // Every frame is accounted for: delivered = kept + duplicates.
    CHECK(run.got.size() == run.delivered);
    CHECK(run.delivered == 10000 - run.dropped + run.duplicated);
    // Damaged frames seen = corruptions, plus the copies of corrupted frames that were duplicated.
    std::uint64_t damaged = 0;
    for (auto& f : run.got) damaged += f != make_frame(id_of(f), 64);
    CHECK(damaged >= run.corrupted);
    CHECK(damaged <= run.corrupted + run.duplicated);
    // And apart from drops and damage, no frame is lost: every id that was not dropped arrives.
    std::vector<int> seen(10000);
    for (auto& f : run.got)
        if (id_of(f) < seen.size() && f == make_frame(id_of(f), 64)) seen[id_of(f)] = 1;
    std::uint64_t arrived = 0;
    for (int x : seen) arrived += x;
    CHECK(arrived + run.dropped + run.corrupted >= 10000);
}

// ----- pcap_writer -----

namespace {
std::uint32_t le32(const bytes& b, std::size_t at) {
    return std::uint32_t(b[at]) | std::uint32_t(b[at + 1]) << 8 | std::uint32_t(b[at + 2]) << 16 |
           std::uint32_t(b[at + 3]) << 24;
}
std::uint16_t le16(const bytes& b, std::size_t at) {
    return static_cast<std::uint16_t>(std::uint16_t(b[at]) | std::uint16_t(b[at + 1]) << 8);
}
bytes read_file(const std::string& path) {
    bytes out;
    std::FILE* f = std::fopen(path.c_str(), "rb");
    REQUIRE(f != nullptr);
    std::byte buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.insert(out.end(), buf, buf + n);
    std::fclose(f);
    return out;
}
struct record {
    std::uint32_t sec, usec, incl, orig;
    bytes data;
};
// Checks the global header and splits the records.
std::vector<record> parse_pcap(const bytes& file) {
    REQUIRE(file.size() >= 24);
    CHECK(le32(file, 0) == 0xa1b2c3d4);
    CHECK(le16(file, 4) == 2);
    CHECK(le16(file, 6) == 4);
    CHECK(le32(file, 8) == 0);
    CHECK(le32(file, 12) == 0);
    CHECK(le32(file, 16) == 65535);
    CHECK(le32(file, 20) == 1);
    std::vector<record> out;
    std::size_t at = 24;
    while (at < file.size()) {
        REQUIRE(file.size() - at >= 16);
        record r{le32(file, at), le32(file, at + 4), le32(file, at + 8), le32(file, at + 12), {}};
        at += 16;
        REQUIRE(file.size() - at >= r.incl);
        r.data.assign(file.begin() + static_cast<std::ptrdiff_t>(at),
                      file.begin() + static_cast<std::ptrdiff_t>(at + r.incl));
        at += r.incl;
        out.push_back(std::move(r));
    }
    return out;
}
} // namespace

TEST_CASE("net: pcap_writer records every frame sent and received", "[net]") {
    temp_path tmp;
    toro::loopback<> lo;
    std::uint64_t t = 1'700'000'000'999'998; // ticks 1 us per reading, across a second boundary
    auto w = toro::pcap_writer<toro::loopback<>>::open(lo, tmp.path.c_str(), [&] { return t++; });
    REQUIRE(w);
    CHECK(w->mac() == lo.mac());
    CHECK(w->mtu() == 1514);

    const bytes f1 = make_frame(1, 60), f2 = make_frame(2, 1514);
    REQUIRE(send(*w, f1));
    REQUIRE(send(*w, f2));
    // A refused transmit records nothing.
    CHECK_FALSE((*w->transmit()).consume(1515, [](std::span<std::byte>) {}));
    auto got = drain(*w);
    REQUIRE(got.size() == 2);
    CHECK(got[0] == f1);
    CHECK(got[1] == f2);
    CHECK(w->records() == 4);
    CHECK(w->write_errors() == 0);

    const auto recs = parse_pcap(read_file(tmp.path)); // readable while the writer lives: flushed per record
    REQUIRE(recs.size() == 4);
    const bytes* want[] = {&f1, &f2, &f1, &f2}; // sent, sent, received, received
    for (std::size_t i = 0; i < 4; ++i) {
        const std::uint64_t us = 1'700'000'000'999'998 + i;
        CHECK(recs[i].sec == us / 1'000'000);
        CHECK(recs[i].usec == us % 1'000'000);
        CHECK(recs[i].incl == want[i]->size());
        CHECK(recs[i].orig == want[i]->size());
        CHECK(recs[i].data == *want[i]);
    }
    CHECK(recs[1].sec == 1'700'000'000);
    CHECK(recs[2].sec == 1'700'000'001);
    CHECK(recs[2].usec == 0);
}

TEST_CASE("net: pcap_writer on one end of a link sees both directions", "[net]") {
    temp_path tmp;
    toro::paired_nics<> link;
    std::uint64_t t = 5'000'000;
    {
        auto w = toro::pcap_writer<toro::paired_nics<>::nic>::open(link.a, tmp.path.c_str(),
                                                                   [&] { return t += 10; });
        REQUIRE(w);
        REQUIRE(send(link.b, make_frame(9, 80))); // not through the writer: recorded when a receives it
        REQUIRE(send(*w, make_frame(8, 70)));
        auto in = recv(*w);
        REQUIRE(in);
        CHECK(*in == make_frame(9, 80));
        auto out = recv(link.b);
        REQUIRE(out);
        CHECK(*out == make_frame(8, 70));
    }
    const auto recs = parse_pcap(read_file(tmp.path));
    REQUIRE(recs.size() == 2);
    CHECK(recs[0].data == make_frame(8, 70));
    CHECK(recs[0].sec == 5);
    CHECK(recs[0].usec == 10);
    CHECK(recs[1].data == make_frame(9, 80));
    CHECK(recs[1].usec == 20);

    toro::loopback<> lo;
    auto bad = toro::pcap_writer<toro::loopback<>>::open(lo, "/nonexistent-dir/x.pcap");
    REQUIRE_FALSE(bad);
    CHECK(str(bad.error().what) == "cannot create the pcap file");
}
