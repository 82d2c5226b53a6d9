// The device registries (toro/dev/registry.hpp): block_device_ref and net_interface_ref forward every
// operation to the device behind them (checked against the fakes), names are given per base in order, lookups
// find exactly those names, and a full registry says so.
#include <catch2/catch.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include <toro/dev/block_device.hpp>
#include <toro/dev/net_device.hpp>
#include <toro/dev/registry.hpp>

namespace {

// A paired NIC end with what the registry asks beyond net_device: a link state and a wait that counts
// its calls (the kernel's sleeps on an interrupt; here a frame either waits or does not).
template <class End>
struct interface_end {
    End& nic;
    bool link = true;
    int waits = 0;

    using rx_token = typename End::rx_token;
    using tx_token = typename End::tx_token;
    toro::maybe<toro::received<rx_token, tx_token>> receive() { return nic.receive(); }
    toro::maybe<tx_token> transmit() { return nic.transmit(); }
    toro::mac_address mac() const { return nic.mac(); }
    std::size_t mtu() const { return nic.mtu(); }
    bool link_up() { return link; }
    bool wait_frame(std::uint64_t) {
        ++waits;
        return nic.pending() != 0;
    }
};

std::vector<std::byte> bytes_of(std::span<const std::byte> s) {
    return {s.begin(), s.end()};
}

} // namespace

TEST_CASE("block_device_ref forwards to the device behind it", "[registry]") {
    std::vector<std::byte> storage(64 * 512);
    toro::memory_block_device<> disk{storage};
    toro::block_device_ref ref{disk};
    CHECK(ref.block_size() == 512);
    CHECK(ref.block_count() == 64);

    std::array<std::byte, 1024> out{};
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<std::byte>(i * 7);
    REQUIRE(ref.write(3, out));
    CHECK(storage[3 * 512 + 5] == static_cast<std::byte>(35));
    std::array<std::byte, 1024> in{};
    REQUIRE(ref.read(3, in));
    CHECK(in == out);
    REQUIRE(ref.flush());
    // The device's own checks come through unchanged.
    auto past = ref.read(63, in);
    REQUIRE_FALSE(past);
    CHECK(past.error().value == 63);
}

TEST_CASE("net_interface_ref sends and receives through the NIC's own buffers", "[registry]") {
    toro::paired_nics<> link;
    interface_end<decltype(link.a)> a{link.a};
    interface_end<decltype(link.b)> b{link.b};
    static_assert(toro::net_interface_source<interface_end<decltype(link.a)>>);
    toro::net_interface_ref ra{a}, rb{b};
    CHECK(ra.mac() == link.a.mac());
    CHECK(ra.mtu() == link.a.mtu());

    REQUIRE(ra.send(60, [](std::span<std::byte> f) {
        REQUIRE(f.size() == 60);
        for (std::size_t i = 0; i < f.size(); ++i) f[i] = static_cast<std::byte>(i + 1);
    }));
    CHECK(rb.wait_frame(0));
    CHECK(b.waits == 1);
    std::vector<std::byte> got;
    CHECK(rb.receive([&](std::span<const std::byte> f) { got = bytes_of(f); }));
    REQUIRE(got.size() == 60);
    CHECK(got[0] == std::byte{1});
    CHECK(got[59] == std::byte{60});
    // Nothing left: no call, false.
    bool called = false;
    CHECK_FALSE(rb.receive([&](std::span<const std::byte>) { called = true; }));
    CHECK_FALSE(called);
    CHECK_FALSE(rb.wait_frame(0));

    // A frame longer than the MTU is refused and the callback never runs.
    auto big = ra.send(ra.mtu() + 1, [&](std::span<std::byte>) { called = true; });
    CHECK_FALSE(big);
    CHECK_FALSE(called);
    b.link = false;
    CHECK_FALSE(rb.link_up());
}

TEST_CASE("registries name devices per base, in order, and find exactly those names", "[registry]") {
    std::vector<std::byte> s1(8 * 512), s2(8 * 512), s3(16 * 512);
    toro::memory_block_device<> d1{s1}, d2{s2}, d3{s3};
    toro::device_registry<toro::block_device_ref, 3> reg;
    auto n1 = reg.add("virtio-blk", "virtio-blk", toro::block_device_ref{d1});
    auto n2 = reg.add("ram", "memory", toro::block_device_ref{d2});
    auto n3 = reg.add("virtio-blk", "virtio-blk", toro::block_device_ref{d3});
    REQUIRE(n1);
    REQUIRE(n2);
    REQUIRE(n3);
    CHECK(*n1 == toro::string_view{"virtio-blk0"});
    CHECK(*n2 == toro::string_view{"ram0"});
    CHECK(*n3 == toro::string_view{"virtio-blk1"});
    REQUIRE(reg.find("virtio-blk1") != nullptr);
    CHECK(reg.find("virtio-blk1")->block_count() == 16);
    CHECK(reg.find("virtio-blk") == nullptr);
    CHECK(reg.find("virtio-blk2") == nullptr);
    CHECK(reg.entries().size() == 3);
    CHECK(reg.entries()[1].driver == toro::string_view{"memory"});

    auto full = reg.add("ram", "memory", toro::block_device_ref{d1});
    REQUIRE_FALSE(full);
    CHECK(full.error().value == 3);
    CHECK(reg.size() == 3);
}

TEST_CASE("a base that is a prefix of another name does not share its numbering", "[registry]") {
    std::vector<std::byte> s(8 * 512);
    toro::memory_block_device<> d{s};
    toro::device_registry<toro::block_device_ref, 4> reg;
    REQUIRE(reg.add("ethernet", "x", toro::block_device_ref{d}));
    auto e = reg.add("eth", "x", toro::block_device_ref{d});
    REQUIRE(e);
    CHECK(*e == toro::string_view{"eth0"});
    CHECK(toro::device_name{"eth", 1234567}.view() == toro::string_view{"eth1234567"});
}

TEST_CASE("Toro's register_network_interface names NICs eth0, eth1...", "[registry]") {
    toro::paired_nics<> link;
    interface_end<decltype(link.a)> a{link.a};
    interface_end<decltype(link.b)> b{link.b};
    toro::net_interfaces.clear();
    auto n0 = toro::register_network_interface("fake", toro::net_interface_ref{a});
    auto n1 = toro::register_network_interface("fake", toro::net_interface_ref{b});
    REQUIRE(n0);
    REQUIRE(n1);
    CHECK(*n1 == toro::string_view{"eth1"});
    REQUIRE(toro::find_network_interface("eth1") != nullptr);
    CHECK(toro::find_network_interface("eth1")->mac() == link.b.mac());
    toro::net_interfaces.clear();
}
