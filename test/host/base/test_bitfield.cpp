// Host tests for toro/base/bitfield.hpp: field masks at every width, and chaining named fields.
#include <catch2/catch.hpp>

#include <cstdint>

#include <toro/base/bitfield.hpp>

namespace {

// A made-up 8-bit register covering single bits, a multi-bit field, and the top bit.
struct ctrl8 : toro::reg_value<ctrl8, std::uint8_t> {
    constexpr bool enable() const { return get_bit<0>(); }
    constexpr ctrl8& set_enable(bool on) { return set_bit<0>(on); }
    constexpr std::uint8_t mode() const { return get_field<3, 1>(); }
    constexpr ctrl8& set_mode(std::uint8_t m) { return set_field<3, 1>(m); }
    constexpr bool top() const { return get_bit<7>(); }
    constexpr ctrl8& set_top(bool on) { return set_bit<7>(on); }
};

// 64-bit register shaped like a page table entry: address in 51..12, flags low, NX on top.
struct pte64 : toro::reg_value<pte64, std::uint64_t> {
    constexpr bool present() const { return get_bit<0>(); }
    constexpr pte64& set_present(bool on) { return set_bit<0>(on); }
    constexpr std::uint64_t frame() const { return get_field<51, 12>(); }
    constexpr pte64& set_frame(std::uint64_t f) { return set_field<51, 12>(f); }
    constexpr bool nx() const { return get_bit<63>(); }
    constexpr pte64& set_nx(bool on) { return set_bit<63>(on); }
};

// Registers cost nothing beyond their storage.
static_assert(sizeof(ctrl8) == 1);
static_assert(sizeof(pte64) == 8);

// Everything is usable at compile time.
static_assert(ctrl8{}.set_mode(5).set_enable(true).value() == 0x0b);
static_assert(ctrl8::from_value(0x0b).mode() == 5);

} // namespace

TEST_CASE("field masks at 8/16/32/64 bits", "[bitfield]") {
    using toro::field;
    CHECK(field<std::uint8_t, 7, 0>::mask == 0xff);
    CHECK(field<std::uint8_t, 7, 0>::max == 0xff);
    CHECK(field<std::uint8_t, 5, 5>::mask == 0x20);
    CHECK(field<std::uint8_t, 7, 6>::mask == 0xc0);
    CHECK(field<std::uint16_t, 15, 8>::mask == 0xff00);
    CHECK(field<std::uint16_t, 11, 4>::max == 0xff);
    CHECK(field<std::uint32_t, 31, 0>::mask == 0xffffffffu);
    CHECK(field<std::uint32_t, 31, 31>::mask == 0x80000000u);
    CHECK(field<std::uint32_t, 19, 4>::mask == 0x000ffff0u);
    CHECK(field<std::uint64_t, 63, 0>::mask == ~std::uint64_t{0});
    CHECK(field<std::uint64_t, 63, 63>::mask == std::uint64_t{1} << 63);
    CHECK(field<std::uint64_t, 51, 12>::mask == 0x000ffffffffff000ull);
    CHECK(field<std::uint64_t, 51, 12>::width == 40);
}

TEST_CASE("field get and set leave neighbours alone", "[bitfield]") {
    using f = toro::field<std::uint16_t, 11, 4>;
    CHECK(f::get(0xabcd) == 0xbc);
    CHECK(f::set(0xabcd, 0x12) == 0xa12d);
    CHECK(f::set(0x0000, 0xff) == 0x0ff0);
    CHECK(f::set(0xffff, 0x00) == 0xf00f);
    // A value wider than the field is cut to the field, not spilled into bits 12..15.
    CHECK(f::set(0x0000, 0xfff) == 0x0ff0);

    using whole = toro::field<std::uint64_t, 63, 0>;
    CHECK(whole::get(0x0123456789abcdefull) == 0x0123456789abcdefull);
    CHECK(whole::set(0, 0xfedcba9876543210ull) == 0xfedcba9876543210ull);
}

TEST_CASE("named fields chain and read back", "[bitfield]") {
    ctrl8 r{};
    CHECK(r.value() == 0);
    r.set_enable(true).set_mode(3).set_top(true);
    CHECK(r.value() == 0x87);
    CHECK(r.enable());
    CHECK(r.mode() == 3);
    CHECK(r.top());

    r.set_mode(0);
    CHECK(r.value() == 0x81);
    r.set_enable(false);
    CHECK(r.value() == 0x80);
    // Out-of-range mode is masked to 3 bits: 9 -> 1.
    r.set_mode(9);
    CHECK(r.mode() == 1);
    CHECK(r.value() == 0x82);

    ctrl8 from = ctrl8::from_value(0xfe);
    CHECK_FALSE(from.enable());
    CHECK(from.mode() == 7);
    CHECK(from.top());
    CHECK(from == ctrl8::from_value(0xfe));
    CHECK_FALSE(from == ctrl8{});

    r.set_value(0x0e);
    CHECK(r.mode() == 7);
}

TEST_CASE("64-bit register fields including bit 63", "[bitfield]") {
    auto e = pte64{}.set_present(true).set_frame(0xabcdef123).set_nx(true);
    CHECK(e.value() == 0x8000'abcd'ef12'3001ull);
    CHECK(e.frame() == 0xabcdef123);
    CHECK(e.nx());
    CHECK(e.present());
    e.set_frame(~std::uint64_t{0}); // masked to 40 bits
    CHECK(e.value() == 0x800f'ffff'ffff'f001ull);
}
