// The virtio transport seam (virtio 1.x, chapter 4): what a device driver (virtio-blk, virtio-net) needs
// from the bus its device sits on, whatever that is: legacy PCI (I/O BAR), modern PCI (capabilities),
// MMIO v1 (legacy) or MMIO v2. The concept, its archetype, and the generic start-up sequence every driver
// runs (section 3.1.1: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, queues, DRIVER_OK).
//
// Legacy transports (PCI I/O BAR, MMIO v1) take one page frame for a queue whose parts are laid out
// contiguously (virtqueue_memory::legacy, used ring page-aligned): setup_queue says so with an error when
// handed anything else. Modern ones take the three addresses.
#pragma once

#include <concepts>
#include <cstdint>

#include <toro/base/expected.hpp>
#include <toro/dev/virtio/virtqueue.hpp>

namespace toro::virtio {

// Device status bits (2.1).
inline constexpr std::uint8_t status_acknowledge = 1;
inline constexpr std::uint8_t status_driver = 2;
inline constexpr std::uint8_t status_driver_ok = 4;
inline constexpr std::uint8_t status_features_ok = 8;
inline constexpr std::uint8_t status_needs_reset = 64;
inline constexpr std::uint8_t status_failed = 128;

// Feature bits every transport knows (6).
inline constexpr unsigned feature_version_1 = 32;       // VIRTIO_F_VERSION_1: modern device
inline constexpr unsigned feature_access_platform = 33; // VIRTIO_F_ACCESS_PLATFORM (IOMMU): not offered back

// Device ids (5).
inline constexpr std::uint32_t device_net = 1;
inline constexpr std::uint32_t device_block = 2;

// device_id(): 0 when there is no device. legacy(): true for legacy PCI / MMIO v1 (contiguous rings, no
// FEATURES_OK, only feature bits 0-31, guest-endian config). max_queue_size(q): 0 when the queue does not
// exist. setup_queue(q, size, addresses): programs and enables it. notify(q): the doorbell.
// read_config(offset, dst, len): the device-specific configuration space. interrupt_status(): reads and
// acknowledges the ISR (bit 0: a queue, bit 1: configuration change).
template <class T>
concept transport = requires(T& t, const T& ct, std::uint64_t features, std::uint16_t queue,
                             std::uint16_t size, const queue_addresses& addrs, std::uint8_t status,
                             std::uint32_t offset, void* dst, std::uint32_t len) {
    { ct.device_id() } -> std::same_as<std::uint32_t>;
    { ct.legacy() } -> std::same_as<bool>;
    { t.reset() } -> std::same_as<void>;
    { t.status() } -> std::same_as<std::uint8_t>;
    { t.set_status(status) } -> std::same_as<void>;
    { t.device_features() } -> std::same_as<std::uint64_t>;
    { t.set_driver_features(features) } -> std::same_as<void>;
    { t.max_queue_size(queue) } -> std::same_as<std::uint16_t>;
    { t.setup_queue(queue, size, addrs) } -> std::same_as<expected<void>>;
    { t.notify(queue) } -> std::same_as<void>;
    { t.read_config(offset, dst, len) } -> std::same_as<void>;
    { t.interrupt_status() } -> std::same_as<std::uint32_t>;
};

struct transport_archetype {
    std::uint32_t device_id() const { return 0; }
    bool legacy() const { return false; }
    void reset() {}
    std::uint8_t status() { return 0; }
    void set_status(std::uint8_t) {}
    std::uint64_t device_features() { return 0; }
    void set_driver_features(std::uint64_t) {}
    std::uint16_t max_queue_size(std::uint16_t) { return 0; }
    expected<void> setup_queue(std::uint16_t, std::uint16_t, const queue_addresses&) { return {}; }
    void notify(std::uint16_t) {}
    void read_config(std::uint32_t, void*, std::uint32_t) {}
    std::uint32_t interrupt_status() { return 0; }
};
static_assert(transport<transport_archetype>);

// The start-up sequence up to (not including) the queues: reset, ACKNOWLEDGE, DRIVER, then the features
// both sides have among `wanted` (VERSION_1 is required of modern transports and refused by legacy ones),
// FEATURES_OK checked back (modern). Returns the negotiated features. On failure the device is left FAILED.
template <transport T>
expected<std::uint64_t> negotiate(T& t, std::uint32_t expected_device, std::uint64_t wanted) {
    if (t.device_id() != expected_device) return unexpected{"virtio: unexpected device id", t.device_id()};
    t.reset();
    t.set_status(status_acknowledge);
    t.set_status(status_acknowledge | status_driver);
    const std::uint64_t offered = t.device_features();
    std::uint64_t features = offered & wanted & ~(std::uint64_t{1} << feature_access_platform);
    if (t.legacy()) {
        features &= 0xffffffff;
    } else {
        if ((offered >> feature_version_1 & 1) == 0) {
            t.set_status(status_failed);
            return unexpected{"virtio: a modern transport whose device does not offer VERSION_1"};
        }
        features |= std::uint64_t{1} << feature_version_1;
    }
    t.set_driver_features(features);
    if (!t.legacy()) {
        t.set_status(status_acknowledge | status_driver | status_features_ok);
        if ((t.status() & status_features_ok) == 0) {
            t.set_status(status_failed);
            return unexpected{"virtio: the device refused the negotiated features", features};
        }
    }
    return features;
}

// The drivers' simplest wait policy: spins until ready() (host tests, early boot, a kernel with interrupts
// off). The kernel's blocks on the device's interrupt (toro/dev/devices_unit.hpp: interrupt_wait).
struct poll_wait {
    template <class Ready>
    void wait(Ready&& ready) {
        while (!ready()) __builtin_ia32_pause();
    }
};

// After the queues: the device may run.
template <transport T>
void driver_ok(T& t) {
    t.set_status(t.status() | status_driver_ok);
}

} // namespace toro::virtio
