// toro::expected and toro::string_view: values, errors with and without a number, moves.
#include <catch2/catch.hpp>

#include <toro/base/expected.hpp>

using toro::expected;
using toro::string_view;
using toro::unexpected;

namespace {

expected<int> half(int x) {
    if (x % 2 != 0) return unexpected{"odd input", static_cast<std::uint64_t>(x)};
    return x / 2;
}

expected<void> must_be_positive(int x) {
    if (x <= 0) return unexpected{"not positive"};
    return {};
}

struct move_only {
    int v;
    explicit move_only(int x) : v{x} {}
    move_only(move_only&& o) : v{o.v} { o.v = -1; }
};

} // namespace

TEST_CASE("expected carries a value or an error with its number") {
    auto ok = half(8);
    REQUIRE(ok);
    CHECK(*ok == 4);
    auto bad = half(7);
    REQUIRE_FALSE(bad);
    CHECK(bad.error().what == string_view{"odd input"});
    CHECK(bad.error().has_value);
    CHECK(bad.error().value == 7);
}

TEST_CASE("expected<void> is success or an error without a number") {
    CHECK(must_be_positive(1).has_value());
    auto r = must_be_positive(0);
    REQUIRE_FALSE(r);
    CHECK(r.error().what == string_view{"not positive"});
    CHECK_FALSE(r.error().has_value);
}

TEST_CASE("expected moves its value") {
    expected<move_only> a{move_only{5}};
    expected<move_only> b{static_cast<expected<move_only>&&>(a)};
    CHECK(b->v == 5);
    CHECK(a->v == -1);
}

TEST_CASE("string_view compares, slices and tests prefixes") {
    string_view s{"exit=42"};
    CHECK(s.size() == 7);
    CHECK(s.starts_with("exit="));
    CHECK_FALSE(s.starts_with("exit=42!"));
    CHECK(s.substr(5) == string_view{"42"});
    CHECK(s.substr(9).empty());
    CHECK(string_view{nullptr}.empty());
    CHECK_FALSE(s == string_view{"exit=43"});
}
