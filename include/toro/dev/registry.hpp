// The registries of devices found at boot, under Toro's names: register_block_driver adds a block device,
// register_network_interface a NIC, each under a name ("virtio-blk0", "eth0"); find_block_device /
// find_network_interface and the lists give them to the filesystem, the network stack and the app.
//
// Drivers are templates chosen at compile time (toro::devices<...> names them, so an app links only those);
// what is found at boot varies, so the registry holds type-erased references: block_device_ref (itself a
// block_device) and net_interface_ref (frames through callbacks over the driver's own buffers: no copy, no
// allocation). Both refer to objects that live for the kernel's life (drivers sit in heap memory that is
// never freed); the registries are fixed arrays filled before the app runs (the devices unit's start) and
// read-only afterwards, so readers take no lock. Freestanding: the host tests use them over the fakes.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <new>
#include <span>
#include <type_traits>
#include <utility>

#include <toro/base/expected.hpp>
#include <toro/base/string_view.hpp>
#include <toro/dev/block_device.hpp>
#include <toro/dev/net_device.hpp>

namespace toro {

// ---- block devices --------------------------------------------------------------------------------------

// Any block_device behind one pointer and a table of functions; models block_device itself.
class block_device_ref {
public:
    template <block_device D>
    requires(!std::is_same_v<std::remove_cv_t<D>, block_device_ref>) explicit block_device_ref(D& d)
        : self_{&d}, ops_{&ops_for<D>} {}

    std::size_t block_size() const { return ops_->block_size(self_); }
    std::uint64_t block_count() const { return ops_->block_count(self_); }
    expected<void> read(std::uint64_t lba, std::span<std::byte> dst) { return ops_->read(self_, lba, dst); }
    expected<void> write(std::uint64_t lba, std::span<const std::byte> src) {
        return ops_->write(self_, lba, src);
    }
    expected<void> flush() { return ops_->flush(self_); }

private:
    struct ops {
        std::size_t (*block_size)(const void*);
        std::uint64_t (*block_count)(const void*);
        expected<void> (*read)(void*, std::uint64_t, std::span<std::byte>);
        expected<void> (*write)(void*, std::uint64_t, std::span<const std::byte>);
        expected<void> (*flush)(void*);
    };
    template <class D>
    static constexpr ops ops_for{
        [](const void* s) { return static_cast<const D*>(s)->block_size(); },
        [](const void* s) { return static_cast<const D*>(s)->block_count(); },
        [](void* s, std::uint64_t lba, std::span<std::byte> d) { return static_cast<D*>(s)->read(lba, d); },
        [](void* s, std::uint64_t lba, std::span<const std::byte> d) {
            return static_cast<D*>(s)->write(lba, d);
        },
        [](void* s) { return static_cast<D*>(s)->flush(); },
    };

    void* self_;
    const ops* ops_;
};
static_assert(block_device<block_device_ref>);

// ---- network interfaces ---------------------------------------------------------------------------------

// What the registry asks of a NIC beyond net_device: whether the link is up, and a way to wait for a frame
// (wait_frame(deadline): true once one waits; false when the deadline, a clock-tick count whose meaning
// belongs to the kernel, passed first; 0 waits forever).
template <class N>
concept net_interface_source = net_device<N> && requires(N& n, std::uint64_t deadline) {
    { n.link_up() } -> std::same_as<bool>;
    { n.wait_frame(deadline) } -> std::same_as<bool>;
};

// Any net_interface_source behind one pointer and a table of functions. receive(f): when a frame waits,
// calls f(frame) (a span valid during the call) and returns true. send(len, f): calls f(buffer of len
// bytes) and sends it; an error (no transmit buffer free, len outside 1..mtu) means f was not called.
class net_interface_ref {
public:
    template <net_interface_source N>
    explicit net_interface_ref(N& n) : self_{&n}, ops_{&ops_for<N>} {}

    mac_address mac() const { return ops_->mac(self_); }
    std::size_t mtu() const { return ops_->mtu(self_); }
    bool link_up() { return ops_->link_up(self_); }
    bool wait_frame(std::uint64_t deadline) { return ops_->wait_frame(self_, deadline); }

    template <class F>
    bool receive(F&& f) {
        return ops_->receive(self_, &call_rx<std::remove_reference_t<F>>, &f);
    }
    template <class F>
    expected<void> send(std::size_t len, F&& f) {
        return ops_->send(self_, len, &call_tx<std::remove_reference_t<F>>, &f);
    }

private:
    using rx_fn = void (*)(void*, std::span<const std::byte>);
    using tx_fn = void (*)(void*, std::span<std::byte>);
    template <class F>
    static void call_rx(void* f, std::span<const std::byte> frame) {
        (*static_cast<F*>(f))(frame);
    }
    template <class F>
    static void call_tx(void* f, std::span<std::byte> buffer) {
        (*static_cast<F*>(f))(buffer);
    }

    struct ops {
        mac_address (*mac)(const void*);
        std::size_t (*mtu)(const void*);
        bool (*link_up)(void*);
        bool (*wait_frame)(void*, std::uint64_t);
        bool (*receive)(void*, rx_fn, void*);
        expected<void> (*send)(void*, std::size_t, tx_fn, void*);
    };
    template <class N>
    static constexpr ops ops_for{
        [](const void* s) { return static_cast<const N*>(s)->mac(); },
        [](const void* s) { return static_cast<const N*>(s)->mtu(); },
        [](void* s) { return static_cast<N*>(s)->link_up(); },
        [](void* s, std::uint64_t deadline) { return static_cast<N*>(s)->wait_frame(deadline); },
        [](void* s, rx_fn fn, void* ctx) {
            auto r = static_cast<N*>(s)->receive();
            if (!r) return false;
            std::move(r->rx).consume([&](std::span<const std::byte> frame) { fn(ctx, frame); });
            return true;
        },
        [](void* s, std::size_t len, tx_fn fn, void* ctx) -> expected<void> {
            auto t = static_cast<N*>(s)->transmit();
            if (!t) return unexpected{"no transmit buffer free"};
            return std::move(*t).consume(len, [&](std::span<std::byte> b) { fn(ctx, b); });
        },
    };

    void* self_;
    const ops* ops_;
};

// ---- the registries -------------------------------------------------------------------------------------

// A device's name: a short ASCII string kept inline ("virtio-blk0", "eth1").
class device_name {
public:
    static constexpr std::size_t capacity = 23;
    constexpr device_name() = default;
    // `base` then the decimal `index` ("eth" + 0 -> "eth0"), cut at capacity.
    constexpr device_name(string_view base, std::uint32_t index) {
        for (std::size_t i = 0; i < base.size() && len_ < capacity; ++i) chars_[len_++] = base[i];
        char digits[10];
        std::size_t n = 0;
        do {
            digits[n++] = static_cast<char>('0' + index % 10);
            index /= 10;
        } while (index != 0);
        while (n != 0 && len_ < capacity) chars_[len_++] = digits[--n];
    }
    constexpr string_view view() const { return {chars_.data(), len_}; }

private:
    std::array<char, capacity + 1> chars_{};
    std::size_t len_ = 0;
};

template <class Ref, std::size_t Capacity>
class device_registry {
public:
    struct entry {
        device_name name;
        string_view driver; // the driver's name, for reports
        Ref device;
    };

    // Adds a device under `base` + the next index for that base ("eth" -> eth0, eth1...).
    expected<string_view> add(string_view base, string_view driver, Ref device) {
        if (count_ == Capacity) return unexpected{"device registry full; capacity", Capacity};
        std::uint32_t index = 0;
        for (std::size_t i = 0; i < count_; ++i) index += starts_as(slot(i).name.view(), base);
        entry& e = slot(count_++);
        ::new (&e) entry{device_name{base, index}, driver, device};
        return e.name.view();
    }

    Ref* find(string_view name) {
        for (std::size_t i = 0; i < count_; ++i)
            if (slot(i).name.view() == name) return &slot(i).device;
        return nullptr;
    }
    std::span<entry> entries() { return {std::launder(reinterpret_cast<entry*>(storage_.data())), count_}; }
    std::size_t size() const { return count_; }
    void clear() { count_ = 0; } // host tests

private:
    // base followed by digits only: "eth" names eth0 and eth12, not ethernet0.
    static bool starts_as(string_view name, string_view base) {
        if (!name.starts_with(base) || name.size() == base.size()) return false;
        for (std::size_t i = base.size(); i < name.size(); ++i)
            if (name[i] < '0' || name[i] > '9') return false;
        return true;
    }
    entry& slot(std::size_t i) { return std::launder(reinterpret_cast<entry*>(storage_.data()))[i]; }

    // Refs have no default constructor: raw storage, constructed by add().
    alignas(entry) std::array<std::byte, sizeof(entry) * Capacity> storage_{};
    std::size_t count_ = 0;
};

inline constexpr std::size_t max_block_devices = 8;
inline constexpr std::size_t max_net_interfaces = 8;

// constinit: filled at boot, so they must need no initializer of their own (the kernel runs none before
// them).
constinit inline device_registry<block_device_ref, max_block_devices> block_devices;
constinit inline device_registry<net_interface_ref, max_net_interfaces> net_interfaces;

// Toro's RegisterBlockDriver: the device is then found as `base` + index ("virtio-blk" -> virtio-blk0).
inline expected<string_view> register_block_driver(string_view base, string_view driver, block_device_ref d) {
    return block_devices.add(base, driver, d);
}
// Toro's RegisterNetworkInterface: NICs are named eth0, eth1... in the order they were found.
inline expected<string_view> register_network_interface(string_view driver, net_interface_ref n) {
    return net_interfaces.add("eth", driver, n);
}

inline block_device_ref* find_block_device(string_view name) {
    return block_devices.find(name);
}
inline net_interface_ref* find_network_interface(string_view name) {
    return net_interfaces.find(name);
}

} // namespace toro
