// Helpers shared by the boot-info host tests: readable strings for maps and values, and a fake physical
// memory written byte by byte (little-endian) that the parsers read through span_phys_reader.
#pragma once

#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <toro/boot/boot_info.hpp>
#include <toro/boot/phys_reader.hpp>

namespace boot_test {

inline std::string str(toro::string_view s) {
    return {s.data(), s.size()};
}

inline std::string hex(std::uint64_t v) {
    const char* digits = "0123456789abcdef";
    std::string out;
    do {
        out.insert(out.begin(), digits[v & 15]);
        v >>= 4;
    } while (v != 0);
    return "0x" + out;
}

// One line per region, so a failing CHECK shows the whole map.
inline std::string show(const toro::memory_map& m) {
    std::string out;
    for (const auto& r : m.regions())
        out += "[" + hex(r.base) + "," + hex(r.end()) + ") " + str(toro::memory_type_name(r.type)) + "\n";
    return out;
}

// Fake physical memory: `bytes` at `base`, written little-endian.
struct image {
    std::uint64_t base;
    std::vector<std::byte> bytes;

    image(std::uint64_t b, std::size_t size) : base{b}, bytes(size) {}
    void put(std::uint64_t addr, std::uint64_t v, int width) {
        REQUIRE(addr >= base);
        REQUIRE(addr - base + static_cast<std::uint64_t>(width) <= bytes.size());
        for (int i = 0; i < width; ++i)
            bytes[addr - base + static_cast<std::uint64_t>(i)] = static_cast<std::byte>(v >> (8 * i));
    }
    void put8(std::uint64_t addr, std::uint8_t v) { put(addr, v, 1); }
    void put16(std::uint64_t addr, std::uint16_t v) { put(addr, v, 2); }
    void put32(std::uint64_t addr, std::uint32_t v) { put(addr, v, 4); }
    void put64(std::uint64_t addr, std::uint64_t v) { put(addr, v, 8); }
    void put_string(std::uint64_t addr, const std::string& s, bool nul = true) {
        for (std::size_t i = 0; i < s.size(); ++i) put(addr + i, static_cast<unsigned char>(s[i]), 1);
        if (nul) put(addr + s.size(), 0, 1);
    }
    toro::span_phys_reader reader() const { return {bytes, base}; }
};

} // namespace boot_test
