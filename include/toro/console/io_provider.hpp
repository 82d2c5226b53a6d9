// io_provider: how a byte-register device driver reaches its registers (port I/O, MMIO, or a test mock).
// Offsets are relative to the device's base, so a driver never knows where its device lives.
#pragma once

#include <concepts>
#include <cstdint>

namespace toro {

template <class T>
concept io_provider = requires(T& io, std::uint16_t offset, std::uint8_t value) {
    { io.read8(offset) } -> std::same_as<std::uint8_t>;
    { io.write8(offset, value) } -> std::same_as<void>;
};

// Models io_provider and nothing more; instantiate drivers with it to prove they ask for no more.
struct io_provider_archetype {
    std::uint8_t read8(std::uint16_t) { return 0; }
    void write8(std::uint16_t, std::uint8_t) {}
};
static_assert(io_provider<io_provider_archetype>);

} // namespace toro
