// HOST-ONLY (stdio, std::function; never included by kernel code). pcap_writer<D>: wraps any NIC and writes
// every frame it receives or sends to a classic pcap file (LINKTYPE_ETHERNET, microsecond timestamps from an
// injected clock), for Wireshark or tcpdump -r.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <span>
#include <utility>

#include <toro/base/expected.hpp>
#include <toro/dev/net_device.hpp>

namespace toro {

namespace pcap {
inline constexpr std::uint32_t magic = 0xa1b2c3d4; // microsecond timestamps; every field little-endian
inline constexpr std::uint16_t version_major = 2, version_minor = 4;
inline constexpr std::uint32_t snaplen = 65535;
inline constexpr std::uint32_t linktype_ethernet = 1;
inline constexpr std::size_t file_header_size = 24, record_header_size = 16;

// Microseconds since the Unix epoch from the system clock: the default clock.
inline std::uint64_t system_clock_us() {
    using namespace std::chrono;
    return static_cast<std::uint64_t>(
        duration_cast<microseconds>(system_clock::now().time_since_epoch()).count());
}
} // namespace pcap

// Every frame is recorded when it passes: a received one before the stack's callback sees it, a sent one
// after the stack's callback has filled it (a transmit that fails records nothing). Each record is flushed at
// once, so the file is readable while the writer lives. Move-only; tokens point at the writer, so moving it
// while tokens are out leaves them dangling.
template <net_device D>
class pcap_writer {
public:
    using clock = std::function<std::uint64_t()>; // microseconds since the Unix epoch

    class rx_token {
    public:
        rx_token(rx_token&&) = default;
        rx_token(const rx_token&) = delete;
        rx_token& operator=(const rx_token&) = delete;

        template <class F>
        rx_result_t<F> consume(F&& f) && {
            return std::move(inner_).consume([&](std::span<const std::byte> frame) -> rx_result_t<F> {
                if (!frame.empty()) w_->record(frame); // (empty: a stale token, no frame passed)
                return f(frame);
            });
        }

    private:
        friend pcap_writer;
        rx_token(pcap_writer* w, typename D::rx_token inner) : w_{w}, inner_{std::move(inner)} {}
        pcap_writer* w_;
        typename D::rx_token inner_;
    };

    class tx_token {
    public:
        tx_token(tx_token&&) = default;
        tx_token(const tx_token&) = delete;
        tx_token& operator=(const tx_token&) = delete;

        template <class F>
        tx_fn_result_t<F> consume(std::size_t len, F&& f) && {
            return std::move(inner_).consume(
                len, [&](std::span<std::byte> buffer) -> std::invoke_result_t<F&, std::span<std::byte>> {
                    struct record_on_exit { // after f has filled the buffer, whatever f returns
                        pcap_writer* w;
                        std::span<std::byte> buffer;
                        ~record_on_exit() { w->record(buffer); }
                    } rec{w_, buffer};
                    return f(buffer);
                });
        }

    private:
        friend pcap_writer;
        tx_token(pcap_writer* w, typename D::tx_token inner) : w_{w}, inner_{std::move(inner)} {}
        pcap_writer* w_;
        typename D::tx_token inner_;
    };

    // Creates (or truncates) the file at path and writes the pcap file header.
    static expected<pcap_writer> open(D& inner, const char* path, clock now = pcap::system_clock_us) {
        std::FILE* f = std::fopen(path, "wb");
        if (f == nullptr) return unexpected{"cannot create the pcap file"};
        pcap_writer w{inner, f, std::move(now)};
        std::byte h[pcap::file_header_size];
        put32(h + 0, pcap::magic);
        put16(h + 4, pcap::version_major);
        put16(h + 6, pcap::version_minor);
        put32(h + 8, 0);  // thiszone: timestamps are UTC
        put32(h + 12, 0); // sigfigs
        put32(h + 16, pcap::snaplen);
        put32(h + 20, pcap::linktype_ethernet);
        if (std::fwrite(h, 1, sizeof h, f) != sizeof h || std::fflush(f) != 0)
            return unexpected{"cannot write the pcap file header"};
        return w;
    }

    pcap_writer(pcap_writer&& o) noexcept
        : inner_{o.inner_}, file_{std::exchange(o.file_, nullptr)}, now_{std::move(o.now_)},
          records_{o.records_}, write_errors_{o.write_errors_} {}
    pcap_writer& operator=(pcap_writer&&) = delete;
    ~pcap_writer() {
        if (file_ != nullptr) std::fclose(file_);
    }

    maybe<received<rx_token, tx_token>> receive() {
        auto r = inner_->receive();
        if (!r) return nothing;
        return received<rx_token, tx_token>{rx_token{this, std::move(r->rx)},
                                            tx_token{this, std::move(r->tx)}};
    }
    maybe<tx_token> transmit() {
        auto t = inner_->transmit();
        if (!t) return nothing;
        return tx_token{this, std::move(*t)};
    }
    mac_address mac() const { return inner_->mac(); }
    std::size_t mtu() const { return inner_->mtu(); }

    std::uint64_t records() const { return records_; }           // frames written
    std::uint64_t write_errors() const { return write_errors_; } // frames that could not be written
    D& inner() const { return *inner_; }

private:
    pcap_writer(D& inner, std::FILE* f, clock now) : inner_{&inner}, file_{f}, now_{std::move(now)} {}

    static void put16(std::byte* p, std::uint16_t v) {
        for (int i = 0; i < 2; ++i) p[i] = static_cast<std::byte>(v >> (8 * i));
    }
    static void put32(std::byte* p, std::uint32_t v) {
        for (int i = 0; i < 4; ++i) p[i] = static_cast<std::byte>(v >> (8 * i));
    }

    void record(std::span<const std::byte> frame) {
        const std::uint64_t us = now_();
        const auto kept =
            static_cast<std::uint32_t>(frame.size() < pcap::snaplen ? frame.size() : pcap::snaplen);
        std::byte h[pcap::record_header_size];
        put32(h + 0, static_cast<std::uint32_t>(us / 1'000'000));
        put32(h + 4, static_cast<std::uint32_t>(us % 1'000'000));
        put32(h + 8, kept);
        put32(h + 12, static_cast<std::uint32_t>(frame.size()));
        if (std::fwrite(h, 1, sizeof h, file_) != sizeof h ||
            std::fwrite(frame.data(), 1, kept, file_) != kept || std::fflush(file_) != 0) {
            ++write_errors_;
            return;
        }
        ++records_;
    }

    D* inner_;
    std::FILE* file_;
    clock now_;
    std::uint64_t records_ = 0, write_errors_ = 0;
};
static_assert(net_device<pcap_writer<loopback<>>>);

} // namespace toro
