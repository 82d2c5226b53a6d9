// Host tests for toro/console/format.hpp: every spec and argument type, limits, padding, fixed_buffer
// truncation, custom formatters, and (through a requires-expression) the compile-time rejections.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include <toro/console/format.hpp>

namespace {

struct string_sink {
    std::string text;
    int writes = 0;
    void write(toro::string_view v) {
        text.append(v.data(), v.size());
        ++writes;
    }
};
static_assert(toro::char_sink<string_sink>);
static_assert(toro::char_sink<toro::fixed_buffer<4>>);
static_assert(toro::char_sink<toro::format_sink>);
static_assert(!toro::char_sink<int>);

template <class... Args>
std::string fmt(toro::format_string<Args...> f, const Args&... args) {
    string_sink s;
    toro::format_to(s, f, args...);
    return s.text;
}

template <class T>
std::string str(const T& v) {
    return fmt("{}", v);
}

// A string usable as a template argument, to ask "does this format string compile for these types?".
template <std::size_t N>
struct literal {
    char text[N];
    constexpr literal(const char (&s)[N]) {
        for (std::size_t i = 0; i < N; ++i) text[i] = s[i];
    }
};
// A rejected format string makes the consteval constructor non-constant, which is a substitution
// failure here rather than a hard error.
template <literal Fmt, class... Args>
concept compiles = requires {
    typename std::integral_constant<bool, (toro::format_string<Args...>(Fmt.text), true)>;
};

struct point {
    int x, y;
};
enum class color : std::uint8_t { red = 1, blue = 200 };
enum class delta : std::int8_t { down = -5 };
enum plain_enum { plain_a = 7 };
enum class huge : std::uint64_t { top = ~std::uint64_t{0} };
enum class tiny : std::int64_t { bottom = std::numeric_limits<std::int64_t>::min() };

} // namespace

// A later unit's extension point: point prints as "(x, y)" and accepts only "{}" and a width.
template <>
struct toro::formatter<point> {
    static void format(format_sink& out, const point& p, const format_spec& spec) {
        toro::fixed_buffer<32> text;
        toro::format_to(text, "({}, {})", p.x, p.y);
        toro::format_text(out, text.view(), spec);
    }
    static constexpr bool accepts(const format_spec& spec) { return spec.type == '\0' && !spec.alternate; }
};

TEST_CASE("literal text and brace escapes", "[format]") {
    CHECK(fmt("") == "");
    CHECK(fmt("plain text") == "plain text");
    CHECK(fmt("{{}}") == "{}");
    CHECK(fmt("a{{b") == "a{b");
    CHECK(fmt("a}}b") == "a}b");
    CHECK(fmt("{{{}}}", 5) == "{5}");
    CHECK(fmt("{}{}{}", 1, 2, 3) == "123");
    CHECK(fmt("x={} y={}.", 1, -2) == "x=1 y=-2.");
    CHECK(fmt("{} {{{{", 'a') == "a {{");
}

TEST_CASE("literal text goes out in runs, not per character", "[format]") {
    string_sink s;
    toro::format_to(s, "hello {} world", 1);
    CHECK(s.text == "hello 1 world");
    CHECK(s.writes == 3);
}

TEST_CASE("decimal: zero and the limits of every width", "[format]") {
    CHECK(str(0) == "0");
    CHECK(str(0u) == "0");
    CHECK(str(-1) == "-1");
    CHECK(str(std::numeric_limits<signed char>::min()) == "-128");
    CHECK(str(std::numeric_limits<signed char>::max()) == "127");
    CHECK(str(std::numeric_limits<std::uint8_t>::max()) == "255"); // uint8_t is a number, not a char
    CHECK(str(std::uint8_t{0}) == "0");
    CHECK(str(std::numeric_limits<std::int16_t>::min()) == "-32768");
    CHECK(str(std::numeric_limits<std::int16_t>::max()) == "32767");
    CHECK(str(std::numeric_limits<std::uint16_t>::max()) == "65535");
    CHECK(str(std::numeric_limits<std::int32_t>::min()) == "-2147483648");
    CHECK(str(std::numeric_limits<std::int32_t>::max()) == "2147483647");
    CHECK(str(std::numeric_limits<std::uint32_t>::max()) == "4294967295");
    CHECK(str(std::numeric_limits<std::int64_t>::min()) == "-9223372036854775808");
    CHECK(str(std::numeric_limits<std::int64_t>::max()) == "9223372036854775807");
    CHECK(str(std::numeric_limits<std::uint64_t>::max()) == "18446744073709551615");
    CHECK(str(std::numeric_limits<long long>::min()) == "-9223372036854775808");
    CHECK(str(std::numeric_limits<unsigned long long>::max()) == "18446744073709551615");
    CHECK(str(std::numeric_limits<long>::min()) == "-9223372036854775808");
    CHECK(str(std::size_t{12345}) == "12345");
    CHECK(fmt("{:d}", -42) == "-42");
    CHECK(fmt("{:d}", 42u) == "42");
}

TEST_CASE("hex, binary, octal, with and without prefix", "[format]") {
    CHECK(fmt("{:x}", 255) == "ff");
    CHECK(fmt("{:X}", 255) == "FF");
    CHECK(fmt("{:#x}", 255) == "0xff");
    CHECK(fmt("{:#X}", 255) == "0XFF");
    CHECK(fmt("{:x}", 0) == "0");
    CHECK(fmt("{:#x}", 0) == "0x0");
    CHECK(fmt("{:b}", 5) == "101");
    CHECK(fmt("{:#b}", 5) == "0b101");
    CHECK(fmt("{:b}", 0) == "0");
    CHECK(fmt("{:#b}", 0) == "0b0");
    CHECK(fmt("{:o}", 8) == "10");
    CHECK(fmt("{:#o}", 8) == "010");
    CHECK(fmt("{:#o}", 0) == "0");
    CHECK(fmt("{:x}", 0xdeadbeefu) == "deadbeef");
    CHECK(fmt("{:x}", std::numeric_limits<std::uint64_t>::max()) == "ffffffffffffffff");
    CHECK(fmt("{:#X}", std::numeric_limits<std::uint64_t>::max()) == "0XFFFFFFFFFFFFFFFF");
    CHECK(fmt("{:o}", std::numeric_limits<std::uint64_t>::max()) == "1777777777777777777777");
    CHECK(fmt("{:b}", std::numeric_limits<std::uint64_t>::max()) == std::string(64, '1'));
    CHECK(fmt("{:#b}", std::numeric_limits<std::uint64_t>::max()) == "0b" + std::string(64, '1'));
    CHECK(fmt("{:x}", std::numeric_limits<std::uint8_t>::max()) == "ff");
    CHECK(fmt("{:x}", std::numeric_limits<std::uint16_t>::max()) == "ffff");
    CHECK(fmt("{:x}", std::numeric_limits<std::uint32_t>::max()) == "ffffffff");
    // Negative numbers keep their sign; the digits are the magnitude (as std::format does).
    CHECK(fmt("{:x}", -255) == "-ff");
    CHECK(fmt("{:#x}", -255) == "-0xff");
    CHECK(fmt("{:x}", std::numeric_limits<std::int64_t>::min()) == "-8000000000000000");
    CHECK(fmt("{:b}", std::numeric_limits<std::int64_t>::min()) == "-1" + std::string(63, '0'));
    CHECK(fmt("{:x}", std::numeric_limits<std::int8_t>::min()) == "-80");
    CHECK(fmt("{:x}", std::int8_t{-1}) == "-1");
}

TEST_CASE("width, zero padding and alignment", "[format]") {
    CHECK(fmt("{:8}", 42) == "      42"); // numbers default right
    CHECK(fmt("{:>8}", 42) == "      42");
    CHECK(fmt("{:<8}", 42) == "42      ");
    CHECK(fmt("{:^8}", 42) == "   42   ");
    CHECK(fmt("{:^7}", 42) == "  42   "); // the odd pad goes right
    CHECK(fmt("{:*^7}", 42) == "**42***");
    CHECK(fmt("{:_<6x}", 255) == "ff____");
    CHECK(fmt("{:08x}", 0xbeefu) == "0000beef");
    CHECK(fmt("{:#018x}", 0xdeadbeefu) == "0x00000000deadbeef");
    CHECK(fmt("{:#010b}", 5) == "0b00000101");
    CHECK(fmt("{:05}", -42) == "-0042");
    CHECK(fmt("{:#08x}", -255) == "-0x000ff");
    CHECK(fmt("{:<08}", 5) == "5       "); // an explicit alignment overrides '0'
    CHECK(fmt("{:>#8x}", 255) == "    0xff");
    CHECK(fmt("{:08}", 0) == "00000000");
    // Width smaller than the content never cuts it.
    CHECK(fmt("{:2}", 12345) == "12345");
    CHECK(fmt("{:02x}", 0x12345) == "12345");
    CHECK(fmt("{:#03x}", 0xfff) == "0xfff");
    CHECK(fmt("{:1}", "hello") == "hello");
    CHECK(fmt("{:5}", 12345) == "12345");
    // The largest width pads in several chunks.
    const std::string wide = fmt("{:255}", 7);
    CHECK(wide.size() == 255);
    CHECK(wide == std::string(254, ' ') + "7");
    CHECK(fmt("{:#0255b}", 1u) == "0b" + std::string(252, '0') + "1");
}

TEST_CASE("bool", "[format]") {
    CHECK(str(true) == "true");
    CHECK(str(false) == "false");
    CHECK(fmt("{:s}", true) == "true");
    CHECK(fmt("{:6}", true) == "true  "); // text defaults left
    CHECK(fmt("{:>6}", false) == " false");
    CHECK(fmt("{:d}", true) == "1");
    CHECK(fmt("{:d}", false) == "0");
    CHECK(fmt("{:#x}", true) == "0x1");
}

TEST_CASE("char", "[format]") {
    CHECK(str('A') == "A");
    CHECK(fmt("{:c}", 'z') == "z");
    CHECK(fmt("{:3}", 'A') == "A  ");
    CHECK(fmt("{:>3}", 'A') == "  A");
    CHECK(fmt("{:d}", 'A') == "65");
    CHECK(fmt("{:#x}", 'A') == "0x41");
    CHECK(fmt("{:x}", '\xff') == "ff"); // as an unsigned byte, even where char is signed
    CHECK(fmt("[{}]", '\0').size() == 3);
}

TEST_CASE("strings: const char*, char arrays, char*, string_view", "[format]") {
    CHECK(str("literal") == "literal");
    const char* p = "pointer";
    CHECK(str(p) == "pointer");
    char mutable_text[] = "mutable";
    char* mp = mutable_text;
    CHECK(str(mp) == "mutable");
    CHECK(str(mutable_text) == "mutable");
    const char unterminated[4] = {'a', 'b', 'c', 'd'}; // a fixed-size name field, full to the end
    CHECK(fmt("[{}]", unterminated) == "[abcd]");
    const char early[8] = "ab\0cdef";
    CHECK(str(early) == "ab");
    const char* null = nullptr;
    CHECK(str(null) == "(null)");
    CHECK(str("") == "");
    const toro::string_view hello_world{"hello world"};
    CHECK(str(hello_world.substr(0, 5)) == "hello"); // not NUL-terminated at 5
    CHECK(str(toro::string_view{}) == "");
    CHECK(fmt("{:s}", "s") == "s");
    CHECK(fmt("{:>5}", "ab") == "   ab");
    CHECK(fmt("{:<5}|", "ab") == "ab   |");
    CHECK(fmt("{:5}|", "ab") == "ab   |");
    CHECK(fmt("{:^6}", "ab") == "  ab  ");
    CHECK(fmt("{:.>6}", hello_world.substr(6)) == ".world");
    CHECK(fmt("{:3}", "toolong") == "toolong");
    CHECK(fmt("{} {}", "a", toro::string_view{"b"}) == "a b");
}

TEST_CASE("pointers print as 0x-prefixed hex", "[format]") {
    CHECK(str(reinterpret_cast<void*>(0x1000)) == "0x1000");
    CHECK(str(reinterpret_cast<const void*>(0xffff800000000000)) == "0xffff800000000000");
    CHECK(str(static_cast<void*>(nullptr)) == "0x0");
    CHECK(str(nullptr) == "0x0");
    CHECK(str(reinterpret_cast<int*>(0xabc0)) == "0xabc0");
    CHECK(str(reinterpret_cast<const std::uint8_t*>(0x10)) == "0x10"); // a byte pointer is not a string
    CHECK(fmt("{:p}", reinterpret_cast<void*>(0x20)) == "0x20");
    CHECK(fmt("{:018}", reinterpret_cast<void*>(0x1000)) == "0x0000000000001000");
    CHECK(fmt("{:>8}", reinterpret_cast<void*>(0x1000)) == "  0x1000");
    CHECK(fmt("{:<8}|", reinterpret_cast<void*>(0x1000)) == "0x1000  |");
    int local = 0;
    char expect[32];
    std::snprintf(expect, sizeof expect, "%p", static_cast<void*>(&local));
    CHECK(str(&local) == expect);
}

TEST_CASE("enums print their underlying integer", "[format]") {
    CHECK(str(color::red) == "1");
    CHECK(str(color::blue) == "200");
    CHECK(fmt("{:#x}", color::blue) == "0xc8");
    CHECK(str(delta::down) == "-5");
    CHECK(str(plain_a) == "7");
    CHECK(str(huge::top) == "18446744073709551615");
    CHECK(str(tiny::bottom) == "-9223372036854775808");
    CHECK(fmt("{:4}", color::red) == "   1");
}

TEST_CASE("toro::error prints what and the value in hex", "[format]") {
    CHECK(str(toro::error{"bad magic"}) == "bad magic");
    CHECK(str(toro::error{"bad index", 42}) == "bad index: 0x2a");
    CHECK(str(toro::error{"zero", 0}) == "zero: 0x0");
    CHECK(str(toro::error{"max", ~std::uint64_t{0}}) == "max: 0xffffffffffffffff");
    toro::expected<int> failed{toro::unexpected{"elf: no segments", 3}};
    CHECK(fmt("load failed: {}", failed.error()) == "load failed: elf: no segments: 0x3");
}

TEST_CASE("custom formatter<T>", "[format]") {
    CHECK(str(point{1, -2}) == "(1, -2)");
    CHECK(fmt("{:>10}", point{3, 4}) == "    (3, 4)");
    CHECK(fmt("[{}] {:#x}", point{0, 0}, 16) == "[(0, 0)] 0x10");
    static_assert(toro::formattable<point>);
    static_assert(compiles<"{:8}", point>);
    static_assert(!compiles<"{:x}", point>); // its accepts() says no
}

TEST_CASE("fixed_buffer: view, NUL termination, truncation", "[format]") {
    toro::fixed_buffer<5> b;
    CHECK(b.view() == "");
    CHECK(b.c_str()[0] == '\0');
    CHECK(b.capacity() == 5);
    b.write("hel");
    b.write("lo");
    CHECK(b.view() == "hello");
    CHECK_FALSE(b.truncated()); // exactly full is not truncated
    CHECK(std::string(b.c_str()) == "hello");
    b.write("");
    CHECK_FALSE(b.truncated());
    b.write("!");
    CHECK(b.truncated());
    CHECK(b.view() == "hello");
    CHECK(b.size() == 5);
    b.clear();
    CHECK(b.view() == "");
    CHECK_FALSE(b.truncated());

    toro::fixed_buffer<8> part;
    toro::format_to(part, "value={:#x}", 0x1234u);
    CHECK(part.view() == "value=0x");
    CHECK(part.truncated());
    CHECK(std::string(part.c_str()) == "value=0x");

    toro::fixed_buffer<0> none;
    none.write("x");
    CHECK(none.view() == "");
    CHECK(none.truncated());
    toro::fixed_buffer<0> none_ok;
    toro::format_to(none_ok, "");
    CHECK_FALSE(none_ok.truncated());

    // Copies are independent (no pointer back into the original).
    toro::fixed_buffer<16> a;
    a.write("abc");
    toro::fixed_buffer<16> c = a;
    a.write("def");
    CHECK(c.view() == "abc");
    CHECK(a.view() == "abcdef");
}

TEST_CASE("format_to_buffer", "[format]") {
    const auto line = toro::format_to_buffer<32>("{}: {:08x}", "reg", 0xabcdu);
    CHECK(line.view() == "reg: 0000abcd");
    CHECK_FALSE(line.truncated());
    const auto cut = toro::format_to_buffer<8>("{}", 123456789);
    CHECK(cut.view() == "12345678");
    CHECK(cut.truncated());
    const auto padded_cut = toro::format_to_buffer<4>("{:>10}", 1);
    CHECK(padded_cut.view() == "    ");
    CHECK(padded_cut.truncated());
}

TEST_CASE("format_sink forwards to the wrapped sink", "[format]") {
    string_sink s;
    toro::format_sink erased{s};
    toro::format_to(erased, "{}-{}", 1, "two");
    toro::format_sink copy = erased; // copies refer to the same sink
    copy.write("!");
    CHECK(s.text == "1-two!");
}

// The checks format_string makes while compiling. The positive cases prove the probe itself works.
static_assert(compiles<"{} {}", int, int>);
static_assert(compiles<"no fields">);
static_assert(compiles<"{{}}">);
static_assert(!compiles<"{} {}", int>);   // too few arguments
static_assert(!compiles<"{}", int, int>); // too many arguments
static_assert(!compiles<"{{}}", int>);    // escapes are not fields
static_assert(!compiles<"}", int>);       // unmatched '}'
static_assert(!compiles<"{", int>);       // unterminated field
static_assert(!compiles<"{:x", int>);
static_assert(!compiles<"{0}", int>);  // no positional fields
static_assert(!compiles<"{:q}", int>); // unknown type
static_assert(!compiles<"{:xx}", int>);
static_assert(!compiles<"{:+}", int>);   // no sign option
static_assert(!compiles<"{:256}", int>); // width limit
static_assert(compiles<"{:255}", int>);
static_assert(compiles<"{:#018x} {:<8} {:>8} {:^8} {:*^8} {:08b} {:o} {:X} {:d}", int, int, int, int, int,
                       int, int, int, int>);
static_assert(!compiles<"{:x}", const char*>);  // hex of a string
static_assert(!compiles<"{:08}", const char*>); // zero-pad a string
static_assert(!compiles<"{:#}", toro::string_view>);
static_assert(compiles<"{:>8s}", toro::string_view>);
static_assert(!compiles<"{:c}", int>);
static_assert(!compiles<"{:s}", int>);
static_assert(!compiles<"{:#}", bool>);
static_assert(compiles<"{:x}", bool>);
static_assert(!compiles<"{:#x}", void*>);      // pointers always carry 0x
static_assert(!compiles<"{:8}", toro::error>); // errors take no spec
static_assert(compiles<"{}", toro::error>);
static_assert(compiles<"{}", char[4]>);
static_assert(!toro::formattable<std::vector<int>>);
static_assert(!toro::formattable<char16_t>);
static_assert(!toro::formattable<const char16_t*>);
static_assert(!toro::formattable<wchar_t>);
