// Errors as values: toro::error (a static message plus one optional number) and toro::expected<T>.
// Kernel code never throws; a function that can fail returns expected<T> and the caller decides.
#pragma once

#include <cstdint>
#include <new>
#include <type_traits>
#include <utility>

#include <toro/base/string_view.hpp>

namespace toro {

// What went wrong, in words a user can act on, plus the offending value when there is one
// (an index, an address, a count). `what` must point to static storage.
struct error {
    string_view what;
    std::uint64_t value = 0;
    bool has_value = false;

    constexpr error(string_view w) : what{w} {}
    constexpr error(string_view w, std::uint64_t v) : what{w}, value{v}, has_value{true} {}
};

// Tag that marks an error return: `return unexpected{"bad magic"};`.
struct unexpected {
    error err;
    constexpr unexpected(string_view w) : err{w} {}
    constexpr unexpected(string_view w, std::uint64_t v) : err{w, v} {}
    constexpr unexpected(error e) : err{e} {}
};

// A T or an error. Deliberately small: has_value/operator bool, value(), error(), operator-> / *.
template <class T>
class [[nodiscard]] expected {
    static_assert(!std::is_reference_v<T>, "expected<T&> is not supported");

public:
    expected(const T& v) : ok_{true} { ::new (&storage_.value) T(v); }
    expected(T&& v) : ok_{true} { ::new (&storage_.value) T(std::move(v)); }
    expected(unexpected u) : ok_{false} { ::new (&storage_.err) toro::error(u.err); }
    expected(const expected&) = delete;
    expected& operator=(const expected&) = delete;
    expected(expected&& o) : ok_{o.ok_} {
        if (ok_)
            ::new (&storage_.value) T(std::move(o.storage_.value));
        else
            ::new (&storage_.err) toro::error(o.storage_.err);
    }
    ~expected() {
        if (ok_) storage_.value.~T();
    }

    constexpr bool has_value() const { return ok_; }
    constexpr explicit operator bool() const { return ok_; }
    constexpr T& value() & { return storage_.value; }
    constexpr const T& value() const& { return storage_.value; }
    constexpr T&& value() && { return std::move(storage_.value); }
    constexpr T* operator->() { return &storage_.value; }
    constexpr const T* operator->() const { return &storage_.value; }
    constexpr T& operator*() & { return storage_.value; }
    constexpr const T& operator*() const& { return storage_.value; }
    constexpr T&& operator*() && { return std::move(storage_.value); }
    constexpr const toro::error& error() const { return storage_.err; }

private:
    union storage {
        constexpr storage() : dummy{} {}
        constexpr ~storage() {}
        char dummy;
        T value;
        toro::error err;
    } storage_;
    bool ok_;
};

// expected<void>: success or an error.
template <>
class [[nodiscard]] expected<void> {
public:
    constexpr expected() = default;
    constexpr expected(unexpected u) : err_{u.err}, ok_{false} {}
    constexpr bool has_value() const { return ok_; }
    constexpr explicit operator bool() const { return ok_; }
    constexpr const toro::error& error() const { return err_; }

private:
    toro::error err_{""};
    bool ok_ = true;
};

} // namespace toro
