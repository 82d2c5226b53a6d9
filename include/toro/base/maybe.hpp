// toro::maybe<T>: a T or nothing, for "there may be none" answers that are not errors (a NIC with no frame
// waiting). std::optional works freestanding only until value() is named: it calls abort(), which a kernel
// does not have, and it drags <exception> and <typeinfo> in. Move-only T (driver tokens) is supported.
#pragma once

#include <concepts>
#include <new>
#include <type_traits>
#include <utility>

namespace toro {

// `return nothing;` from a function returning maybe<T>.
struct nothing_t {
    explicit constexpr nothing_t(int) {}
};
inline constexpr nothing_t nothing{0};

// Deliberately small, shaped like expected<T>: has_value/operator bool, value(), operator-> / *, reset,
// emplace. Reading an empty maybe is undefined, as with std::optional's operator*.
template <class T>
class maybe {
    static_assert(!std::is_reference_v<T>, "maybe<T&> is not supported; use maybe<T*>");

public:
    constexpr maybe() = default;
    constexpr maybe(nothing_t) {}
    maybe(const T& v) requires std::copy_constructible<T> { emplace(v); }
    maybe(T&& v) { emplace(std::move(v)); }
    maybe(const maybe& o) requires std::copy_constructible<T> {
        if (o.ok_) emplace(o.storage_.value);
    }
    maybe(maybe&& o) {
        if (o.ok_) emplace(std::move(o.storage_.value));
    }
    maybe& operator=(const maybe& o) requires std::copy_constructible<T> {
        if (this != &o) {
            reset();
            if (o.ok_) emplace(o.storage_.value);
        }
        return *this;
    }
    maybe& operator=(maybe&& o) {
        if (this != &o) {
            reset();
            if (o.ok_) emplace(std::move(o.storage_.value));
        }
        return *this;
    }
    ~maybe() { reset(); }

    template <class... Args>
    T& emplace(Args&&... args) {
        reset();
        ::new (&storage_.value) T(std::forward<Args>(args)...);
        ok_ = true;
        return storage_.value;
    }
    void reset() {
        if (ok_) storage_.value.~T();
        ok_ = false;
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

private:
    union storage {
        constexpr storage() : dummy{} {}
        constexpr ~storage() {}
        char dummy;
        T value;
    } storage_;
    bool ok_ = false;
};

} // namespace toro
