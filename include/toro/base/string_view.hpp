// toro::string_view: a pointer and a length over read-only characters.
// std::string_view drags <cwchar> and libc string calls into freestanding code; this one needs nothing.
#pragma once

#include <cstddef>

namespace toro {

class string_view {
public:
    constexpr string_view() = default;
    constexpr string_view(const char* data, std::size_t size) : data_{data}, size_{size} {}
    // From a NUL-terminated string (literals included); null gives the empty view.
    constexpr string_view(const char* s) : data_{s} {
        if (s != nullptr)
            while (s[size_] != '\0') ++size_;
    }

    constexpr const char* data() const { return data_; }
    constexpr std::size_t size() const { return size_; }
    constexpr bool empty() const { return size_ == 0; }
    constexpr const char* begin() const { return data_; }
    constexpr const char* end() const { return data_ + size_; }
    constexpr char operator[](std::size_t i) const { return data_[i]; }

    constexpr string_view substr(std::size_t pos, std::size_t n = ~std::size_t{0}) const {
        if (pos > size_) pos = size_;
        if (n > size_ - pos) n = size_ - pos;
        return {data_ + pos, n};
    }
    constexpr bool starts_with(string_view p) const { return size_ >= p.size_ && substr(0, p.size_) == p; }

    friend constexpr bool operator==(string_view a, string_view b) {
        if (a.size_ != b.size_) return false;
        for (std::size_t i = 0; i < a.size_; ++i)
            if (a.data_[i] != b.data_[i]) return false;
        return true;
    }

private:
    const char* data_ = "";
    std::size_t size_ = 0;
};

} // namespace toro
