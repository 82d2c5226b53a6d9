// toro::format_to: type-safe "{}" formatting into any char sink, checked at compile time, no libc, no heap.
//
//   toro::format_to(console, "irq {} at {:#018x}: {}\n", vector, rip, err);
//   auto line = toro::format_to_buffer<64>("{:>8}|", name);   // fixed_buffer<64>; line.view()
//
// Fields are "{}" or "{:spec}", filled in order; "{{" and "}}" are literal braces. spec is
// [[fill]align][#][0][width][type]: align '<' '>' '^', '#' adds the base prefix (0x 0X 0b 0), '0' pads with
// zeros after sign and prefix, width is at most 255, type is one of d x X b o (integers), s (strings, bool),
// c (char), p (pointers). The field count, every spec, and whether the spec suits its argument's type are
// all checked when the call is compiled; a mismatch does not build.
//
// To keep kernel images small, the per-call template code only packs arguments into an array of
// {pointer, number, function} records; parsing and integer conversion are plain functions emitted once.
// Types beyond the built-ins get formatted by specialising formatter<T> (see below).
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <toro/base/expected.hpp>
#include <toro/base/string_view.hpp>

namespace toro {

// Anything text can be written to: a UART, a fixed_buffer, a log ring.
template <class S>
concept char_sink = requires(S& sink, string_view text) {
    sink.write(text);
};

struct char_sink_archetype {
    void write(string_view) {}
};
static_assert(char_sink<char_sink_archetype>);

// One parsed "{:...}" field.
struct format_spec {
    char fill = ' ';
    char align = '\0'; // '<', '>', '^', or '\0' for the type's default (numbers right, text left)
    char type = '\0';  // 'd' 'x' 'X' 'b' 'o' 's' 'c' 'p', or '\0'
    bool alternate = false;
    bool zero_pad = false;
    std::uint8_t width = 0;
};

class format_sink;

namespace detail {
// A sink format_sink may wrap: anything but a format_sink, which is copied instead of wrapped twice.
template <class S>
concept foreign_sink = char_sink<S> && !std::same_as<std::remove_cv_t<S>, format_sink>;
} // namespace detail

// A type-erased char_sink, so the formatting machinery is compiled once rather than per sink type.
// It refers to the sink it wraps, which must outlive it.
class format_sink {
public:
    template <detail::foreign_sink S>
    format_sink(S& sink) : object_{&sink}, write_{&forward<S>} {}

    void write(string_view text) { write_(object_, text); }

private:
    template <class S>
    static void forward(void* object, string_view text) {
        static_cast<S*>(object)->write(text);
    }

    void* object_;
    void (*write_)(void*, string_view);
};

// Specialise to make T formattable:
//
//   template <> struct toro::formatter<pci_address> {
//       static void format(format_sink& out, const pci_address& a, const format_spec& spec);
//       // optional: reject specs at compile time
//       static constexpr bool accepts(const format_spec& spec) { return spec.type == '\0'; }
//   };
//
// format() may call format_to(out, ...) itself or the helpers format_integer / format_text below.
template <class T>
struct formatter;

// Writes text padded to spec.width per spec.align (default_align when the spec names none).
inline void format_text(format_sink& out, string_view text, const format_spec& spec,
                        char default_align = '<');
// Writes an integer with the given magnitude and sign per spec (base, prefix, width, zero padding).
inline void format_integer(format_sink& out, std::uint64_t magnitude, bool negative, const format_spec& spec);

namespace detail {

// One argument, packed. `number` holds integers (two's complement for signed), bools, chars, pointer
// addresses, string lengths and C string length limits; `object` points at strings and at values with a
// formatter<T>.
struct format_arg {
    const void* object;
    std::uint64_t number;
    void (*format)(format_sink&, const format_arg&, const format_spec&);
};

template <class T>
inline constexpr bool is_char_type =
    std::is_same_v<T, char> || std::is_same_v<T, wchar_t> || std::is_same_v<T, char8_t> ||
    std::is_same_v<T, char16_t> || std::is_same_v<T, char32_t>;

// The built-in argument kinds. Args arrive as deduced by `const Args&`, so without cv or references.
enum class arg_kind : std::uint8_t {
    signed_integer,
    unsigned_integer,
    boolean,
    character,
    c_string,
    view,
    pointer,
    error,
    custom,
    unsupported
};

template <class T>
concept has_formatter = requires(format_sink& out, const T& value, const format_spec& spec) {
    formatter<T>::format(out, value, spec);
};

template <class T>
consteval arg_kind kind_of() {
    if constexpr (std::is_same_v<T, bool>)
        return arg_kind::boolean;
    else if constexpr (std::is_same_v<T, char>)
        return arg_kind::character;
    else if constexpr (std::is_enum_v<T>)
        return std::is_signed_v<std::underlying_type_t<T>> ? arg_kind::signed_integer
                                                           : arg_kind::unsigned_integer;
    else if constexpr (std::is_integral_v<T> && !is_char_type<T>)
        return std::is_signed_v<T> ? arg_kind::signed_integer : arg_kind::unsigned_integer;
    else if constexpr (std::is_same_v<T, const char*> || std::is_same_v<T, char*> ||
                       (std::is_array_v<T> &&
                        std::is_same_v<std::remove_cv_t<std::remove_extent_t<T>>, char>))
        return arg_kind::c_string;
    else if constexpr (std::is_same_v<T, string_view>)
        return arg_kind::view;
    else if constexpr (std::is_same_v<T, error>)
        return arg_kind::error;
    else if constexpr (has_formatter<T>)
        return arg_kind::custom;
    else if constexpr (std::is_null_pointer_v<T> ||
                       (std::is_pointer_v<T> && !is_char_type<std::remove_cv_t<std::remove_pointer_t<T>>>))
        return arg_kind::pointer;
    else
        return arg_kind::unsupported;
}

// Runtime halves: one plain function per built-in kind.
inline void format_signed(format_sink& out, const format_arg& a, const format_spec& spec) {
    const bool negative = static_cast<std::int64_t>(a.number) < 0;
    // 0 - x in unsigned arithmetic is the magnitude even for INT64_MIN.
    format_integer(out, negative ? 0 - a.number : a.number, negative, spec);
}
inline void format_unsigned(format_sink& out, const format_arg& a, const format_spec& spec) {
    format_integer(out, a.number, false, spec);
}
constexpr bool is_integer_type(char t) {
    return t == 'd' || t == 'x' || t == 'X' || t == 'b' || t == 'o';
}
inline void format_bool(format_sink& out, const format_arg& a, const format_spec& spec) {
    if (is_integer_type(spec.type))
        format_integer(out, a.number, false, spec);
    else
        format_text(out, a.number != 0 ? "true" : "false", spec);
}
inline void format_char(format_sink& out, const format_arg& a, const format_spec& spec) {
    const char c = static_cast<char>(a.number);
    if (is_integer_type(spec.type))
        format_integer(out, a.number, false, spec);
    else
        format_text(out, string_view{&c, 1}, spec);
}
inline void format_c_string(format_sink& out, const format_arg& a, const format_spec& spec) {
    const char* s = static_cast<const char*>(a.object);
    if (s == nullptr) return format_text(out, "(null)", spec);
    std::size_t n = 0;
    while (n < a.number && s[n] != '\0') ++n;
    format_text(out, string_view{s, n}, spec);
}
inline void format_view(format_sink& out, const format_arg& a, const format_spec& spec) {
    format_text(out, string_view{static_cast<const char*>(a.object), static_cast<std::size_t>(a.number)},
                spec);
}
inline void format_pointer(format_sink& out, const format_arg& a, const format_spec& spec) {
    format_spec hex = spec;
    hex.type = 'x';
    hex.alternate = true;
    format_integer(out, a.number, false, hex);
}
inline void format_error_value(format_sink& out, const format_arg& a, const format_spec&) {
    const error& e = *static_cast<const error*>(a.object);
    out.write(e.what);
    if (e.has_value) {
        out.write(": ");
        format_spec hex;
        hex.type = 'x';
        hex.alternate = true;
        format_integer(out, e.value, false, hex);
    }
}
template <class T>
void format_custom(format_sink& out, const format_arg& a, const format_spec& spec) {
    formatter<T>::format(out, *static_cast<const T*>(a.object), spec);
}

template <class T>
format_arg make_arg(const T& v) {
    constexpr arg_kind kind = kind_of<T>();
    static_assert(kind != arg_kind::unsupported, "toro::format_to: no formatter<T> for this argument type");
    if constexpr (kind == arg_kind::signed_integer)
        return {nullptr, static_cast<std::uint64_t>(static_cast<std::int64_t>(v)), &format_signed};
    else if constexpr (kind == arg_kind::unsigned_integer)
        return {nullptr, static_cast<std::uint64_t>(v), &format_unsigned};
    else if constexpr (kind == arg_kind::boolean)
        return {nullptr, v ? 1u : 0u, &format_bool};
    else if constexpr (kind == arg_kind::character)
        return {nullptr, static_cast<unsigned char>(v), &format_char};
    else if constexpr (kind == arg_kind::c_string && std::is_array_v<T>)
        return {v, std::extent_v<T>, &format_c_string}; // a char array without a NUL stops at its end
    else if constexpr (kind == arg_kind::c_string)
        return {v, ~std::uint64_t{0}, &format_c_string};
    else if constexpr (kind == arg_kind::view)
        return {v.data(), v.size(), &format_view};
    else if constexpr (kind == arg_kind::error)
        return {&v, 0, &format_error_value};
    else if constexpr (kind == arg_kind::pointer) {
        if constexpr (std::is_null_pointer_v<T>)
            return {nullptr, 0, &format_pointer};
        else
            return {nullptr, reinterpret_cast<std::uintptr_t>(v), &format_pointer};
    } else
        return {&v, 0, &format_custom<T>};
}

// Parses one field after its '{': "}" or ":spec}". Advances pos past the '}'. Shared by the compile-time
// check and the runtime formatter, so the two cannot disagree.
constexpr bool parse_field(string_view s, std::size_t& pos, format_spec& spec) {
    const auto at = [&](std::size_t i) { return i < s.size() ? s[i] : '\0'; };
    const auto is_align = [](char c) { return c == '<' || c == '>' || c == '^'; };
    if (at(pos) == '}') {
        ++pos;
        return true;
    }
    if (at(pos) != ':') return false; // no positional or named fields
    ++pos;
    if (is_align(at(pos + 1)) && at(pos) != '{' && at(pos) != '}' && at(pos) != '\0') {
        spec.fill = at(pos);
        spec.align = at(pos + 1);
        pos += 2;
    } else if (is_align(at(pos))) {
        spec.align = at(pos++);
    }
    if (at(pos) == '#') {
        spec.alternate = true;
        ++pos;
    }
    if (at(pos) == '0') {
        spec.zero_pad = true;
        ++pos;
    }
    unsigned width = 0;
    while (at(pos) >= '0' && at(pos) <= '9') {
        width = width * 10 + static_cast<unsigned>(at(pos++) - '0');
        if (width > 255) return false;
    }
    spec.width = static_cast<std::uint8_t>(width);
    const char t = at(pos);
    if (is_integer_type(t) || t == 's' || t == 'c' || t == 'p') {
        spec.type = t;
        ++pos;
    }
    if (at(pos) != '}') return false;
    ++pos;
    return true;
}

// Does the spec make sense for this kind of argument?
template <class T>
constexpr bool accepts(const format_spec& spec) {
    constexpr arg_kind kind = kind_of<T>();
    const bool plain = !spec.alternate && !spec.zero_pad;
    switch (kind) {
    case arg_kind::signed_integer:
    case arg_kind::unsigned_integer:
        return spec.type == '\0' || is_integer_type(spec.type);
    case arg_kind::boolean:
        return is_integer_type(spec.type) || (plain && (spec.type == '\0' || spec.type == 's'));
    case arg_kind::character:
        return is_integer_type(spec.type) || (plain && (spec.type == '\0' || spec.type == 'c'));
    case arg_kind::c_string:
    case arg_kind::view:
        return plain && (spec.type == '\0' || spec.type == 's');
    case arg_kind::pointer:
        return !spec.alternate && (spec.type == '\0' || spec.type == 'p');
    case arg_kind::error:
        return plain && spec.type == '\0' && spec.width == 0 && spec.align == '\0';
    case arg_kind::custom:
        if constexpr (requires(const format_spec& s) {
                          { formatter<T>::accepts(s) } -> std::same_as<bool>;
                      })
            return formatter<T>::accepts(spec);
        else
            return true;
    case arg_kind::unsupported:
        return false;
    }
    return false;
}

// Deliberately not constexpr: reaching one while checking a format string at compile time makes the
// call ill-formed, and the compiler's note names the function, which names the problem.
void format_error_more_fields_than_arguments();
void format_error_fewer_fields_than_arguments();
void format_error_unmatched_brace();
void format_error_invalid_spec();
void format_error_spec_does_not_suit_argument_type();

using spec_check = bool (*)(const format_spec&);

constexpr void check_format(string_view s, const spec_check* checks, std::size_t arg_count) {
    std::size_t field = 0;
    for (std::size_t i = 0; i < s.size();) {
        const char c = s[i];
        if ((c == '{' || c == '}') && i + 1 < s.size() && s[i + 1] == c) {
            i += 2;
        } else if (c == '}') {
            format_error_unmatched_brace();
            return;
        } else if (c == '{') {
            ++i;
            format_spec spec;
            if (!parse_field(s, i, spec)) {
                format_error_invalid_spec();
                return;
            }
            if (field >= arg_count) {
                format_error_more_fields_than_arguments();
                return;
            }
            if (!checks[field](spec)) {
                format_error_spec_does_not_suit_argument_type();
                return;
            }
            ++field;
        } else {
            ++i;
        }
    }
    if (field != arg_count) format_error_fewer_fields_than_arguments();
}

// The runtime walk over a format string that check_format already accepted.
inline void vformat(format_sink out, string_view s, const format_arg* args, std::size_t arg_count) {
    std::size_t literal = 0; // start of the pending literal text
    std::size_t field = 0;
    for (std::size_t i = 0; i < s.size();) {
        const char c = s[i];
        if (c != '{' && c != '}') {
            ++i;
            continue;
        }
        if (i > literal) out.write(s.substr(literal, i - literal));
        if (i + 1 < s.size() && s[i + 1] == c) { // "{{" or "}}": emit one brace
            literal = i + 1;
            i += 2;
            continue;
        }
        ++i;
        format_spec spec;
        if (c == '{' && parse_field(s, i, spec) && field < arg_count) {
            args[field].format(out, args[field], spec);
            ++field;
        }
        literal = i;
    }
    if (s.size() > literal) out.write(s.substr(literal));
}

} // namespace detail

template <class T>
concept formattable = (detail::kind_of<T>() != detail::arg_kind::unsupported);

// A format string checked against Args when it is constructed, which is always at compile time.
template <class... Args>
class basic_format_string {
    static_assert((formattable<Args> && ...), "toro::format_to: an argument has no formatter<T>");

public:
    template <std::size_t N>
    consteval basic_format_string(const char (&text)[N]) : text_{text, N - 1} {
        constexpr detail::spec_check checks[] = {&detail::accepts<Args>..., nullptr};
        detail::check_format(text_, checks, sizeof...(Args));
    }

    constexpr string_view get() const { return text_; }

private:
    string_view text_;
};

// type_identity keeps the format string out of deduction: Args come from the arguments alone.
template <class... Args>
using format_string = basic_format_string<std::type_identity_t<Args>...>;

template <char_sink Sink, class... Args>
void format_to(Sink& sink, format_string<Args...> fmt, const Args&... args) {
    const std::array<detail::format_arg, sizeof...(Args)> packed{detail::make_arg(args)...};
    detail::vformat(format_sink{sink}, fmt.get(), packed.data(), packed.size());
}

// A char_sink over an in-object array. Output past N characters is dropped and remembered; the text
// is always NUL-terminated. Copyable (it holds no pointer to itself).
template <std::size_t N>
class fixed_buffer {
public:
    void write(string_view text) {
        const std::size_t room = N - size_;
        const std::size_t n = text.size() < room ? text.size() : room;
        for (std::size_t i = 0; i < n; ++i) data_[size_ + i] = text[i];
        size_ += n;
        data_[size_] = '\0';
        if (n != text.size()) truncated_ = true;
    }

    string_view view() const { return {data_, size_}; }
    const char* c_str() const { return data_; }
    std::size_t size() const { return size_; }
    static constexpr std::size_t capacity() { return N; }
    // Was anything dropped for lack of room?
    bool truncated() const { return truncated_; }
    void clear() {
        size_ = 0;
        data_[0] = '\0';
        truncated_ = false;
    }

private:
    char data_[N + 1] = {};
    std::size_t size_ = 0;
    bool truncated_ = false;
};

// Formats into a fresh fixed_buffer<N>: `auto s = format_to_buffer<32>("{:#x}", v); use(s.view());`
template <std::size_t N, class... Args>
fixed_buffer<N> format_to_buffer(format_string<Args...> fmt, const Args&... args) {
    fixed_buffer<N> buffer;
    format_to(buffer, fmt, args...);
    return buffer;
}

inline void format_text(format_sink& out, string_view text, const format_spec& spec, char default_align) {
    const auto fill = [&](std::size_t n) {
        char chunk[16];
        for (char& c : chunk) c = spec.fill;
        for (; n > sizeof chunk; n -= sizeof chunk) out.write({chunk, sizeof chunk});
        if (n != 0) out.write({chunk, n});
    };
    if (text.size() >= spec.width) {
        out.write(text);
        return;
    }
    const std::size_t pad = spec.width - text.size();
    const char align = spec.align != '\0' ? spec.align : default_align;
    const std::size_t left = align == '>' ? pad : align == '^' ? pad / 2 : 0;
    fill(left);
    out.write(text);
    fill(pad - left);
}

inline void format_integer(format_sink& out, std::uint64_t magnitude, bool negative,
                           const format_spec& spec) {
    unsigned base = 10;
    const char* digits = "0123456789abcdef";
    string_view prefix;
    switch (spec.type) {
    case 'x':
        base = 16, prefix = "0x";
        break;
    case 'X':
        base = 16, prefix = "0X", digits = "0123456789ABCDEF";
        break;
    case 'b':
        base = 2, prefix = "0b";
        break;
    case 'o':
        base = 8, prefix = magnitude != 0 ? "0" : "";
        break; // "{:#o}" of 0 is "0", not "00"
    default:
        break;
    }
    char buffer[1 + 2 + 64]; // sign, prefix, 64 binary digits
    std::size_t begin = sizeof buffer;
    do {
        buffer[--begin] = digits[magnitude % base];
        magnitude /= base;
    } while (magnitude != 0);
    const std::size_t first_digit = begin;
    if (spec.alternate)
        for (std::size_t i = prefix.size(); i != 0; --i) buffer[--begin] = prefix[i - 1];
    if (negative) buffer[--begin] = '-';

    const string_view whole{buffer + begin, sizeof buffer - begin};
    if (spec.zero_pad && spec.align == '\0' && whole.size() < spec.width) {
        // Zeros go between sign/prefix and digits: -0x00ff, not 000-0xff.
        format_spec zeros;
        zeros.fill = '0';
        zeros.align = '>';
        zeros.width = static_cast<std::uint8_t>(spec.width - (first_digit - begin));
        out.write(whole.substr(0, first_digit - begin));
        format_text(out, whole.substr(first_digit - begin), zeros);
        return;
    }
    format_text(out, whole, spec, '>');
}

} // namespace toro
