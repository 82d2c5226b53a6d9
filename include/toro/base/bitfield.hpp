// Typed register values with named bit fields (in the spirit of Fuchsia's hwreg, without macros).
//
// A register is a small struct deriving from reg_value<Self, T>; each named field is a getter plus a
// `set_` that returns the register, so a value is built by chaining:
//
//   struct lcr : toro::reg_value<lcr, std::uint8_t> {
//       constexpr bool dlab() const { return get_bit<7>(); }
//       constexpr lcr& set_dlab(bool on) { return set_bit<7>(on); }
//       constexpr std::uint8_t word_length() const { return get_field<1, 0>(); }
//       constexpr lcr& set_word_length(std::uint8_t v) { return set_field<1, 0>(v); }
//   };
//   auto v = lcr{}.set_word_length(3).set_dlab(true).value(); // 0x83
//
// Everything is constexpr and folds to plain shifts and masks; a register is exactly sizeof(T).
#pragma once

#include <concepts>
#include <cstdint>
#include <limits>

namespace toro {

// Register storage: an unsigned integer of 8, 16, 32 or 64 bits (bool is integral but is not a register).
template <class T>
concept reg_storage = std::unsigned_integral<T> && !std::same_as<T, bool>;

// Bits Hi..Lo (inclusive, Hi >= Lo) of a T. Usable on its own for one-off masks.
template <reg_storage T, unsigned Hi, unsigned Lo>
struct field {
    static_assert(Hi >= Lo, "field<T, Hi, Lo>: Hi must not be below Lo");
    static_assert(Hi < std::numeric_limits<T>::digits, "field<T, Hi, Lo>: Hi is outside the register");

    static constexpr unsigned width = Hi - Lo + 1;

private:
    // Shifting by the full width is undefined, so the all-ones case is taken separately.
    static constexpr T make_max() {
        if constexpr (width == std::numeric_limits<T>::digits)
            return static_cast<T>(~T{0});
        else
            return static_cast<T>((T{1} << width) - 1);
    }

public:
    static constexpr T max = make_max();                 // largest value the field holds
    static constexpr T mask = static_cast<T>(max << Lo); // the field's bits in place

    static constexpr T get(T reg) { return static_cast<T>((reg >> Lo) & max); }
    // Bits of v above the field's width are dropped rather than spilling into neighbours.
    static constexpr T set(T reg, T v) {
        return static_cast<T>((reg & static_cast<T>(~mask)) | (static_cast<T>(v << Lo) & mask));
    }
};

// CRTP base for a register value; Derived adds the named fields. Derived{} is the all-zero value.
template <class Derived, reg_storage T>
class reg_value {
public:
    using value_type = T;

    static constexpr Derived from_value(T v) {
        Derived d{};
        d.set_value(v);
        return d;
    }

    constexpr T value() const { return value_; }
    constexpr Derived& set_value(T v) {
        value_ = v;
        return self();
    }

    friend constexpr bool operator==(const reg_value& a, const reg_value& b) { return a.value_ == b.value_; }

protected:
    // Raw field access is for the register's own named accessors, not for drivers.
    template <unsigned Hi, unsigned Lo>
    constexpr T get_field() const {
        return field<T, Hi, Lo>::get(value_);
    }
    template <unsigned Hi, unsigned Lo>
    constexpr Derived& set_field(T v) {
        value_ = field<T, Hi, Lo>::set(value_, v);
        return self();
    }
    template <unsigned Bit>
    constexpr bool get_bit() const {
        return get_field<Bit, Bit>() != 0;
    }
    template <unsigned Bit>
    constexpr Derived& set_bit(bool on) {
        return set_field<Bit, Bit>(on ? T{1} : T{0});
    }

private:
    constexpr Derived& self() { return static_cast<Derived&>(*this); }

    T value_ = 0;
};

} // namespace toro
