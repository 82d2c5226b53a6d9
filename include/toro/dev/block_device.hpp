// block_device: what the filesystem asks of a disk. The concept, an archetype that models exactly it, the
// transfer check every device shares, and two freestanding fakes: memory_block_device (a disk over a buffer
// you hand it, usable on the host and in kernel tests) and faulty_block_device<D> (fails a chosen operation
// of any block device). The file-backed fake is host-only: toro/dev/file_block_device.hpp.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>

#include <toro/base/expected.hpp>

namespace toro {

// block_size(): bytes per block, a power of two >= 512, fixed for the device's life. block_count(): blocks.
// read(lba, dst) / write(lba, src): whole blocks from block lba on, as many as the span holds; the span's
// size must be a non-zero multiple of block_size() and the run must end at or before block_count(). A
// transfer that breaks those rules is an error value and touches nothing; a device error is an error value
// too (after which a write may have reached some of its blocks). flush(): every write that returned before it
// is durable.
template <class D>
concept block_device = requires(D& d, const D& cd, std::uint64_t lba, std::span<std::byte> dst,
                                std::span<const std::byte> src) {
    { cd.block_size() } -> std::same_as<std::size_t>;
    { cd.block_count() } -> std::same_as<std::uint64_t>;
    { d.read(lba, dst) } -> std::same_as<expected<void>>;
    { d.write(lba, src) } -> std::same_as<expected<void>>;
    { d.flush() } -> std::same_as<expected<void>>;
};

// Checks one transfer against the rules above; every device (driver or fake) calls it before moving bytes.
constexpr expected<void> check_block_transfer(std::size_t block_size, std::uint64_t block_count,
                                              std::uint64_t lba, std::size_t bytes) {
    if (bytes == 0) return unexpected{"empty block transfer; lba", lba};
    if (bytes % block_size != 0)
        return unexpected{"transfer size is not a multiple of the block size; bytes", bytes};
    const std::uint64_t blocks = bytes / block_size;
    if (lba > block_count || blocks > block_count - lba) // (written so that lba + blocks cannot overflow)
        return unexpected{"block transfer past the end of the device; lba", lba};
    return {};
}

// True for the block sizes the concept allows.
constexpr bool valid_block_size(std::size_t n) {
    return n >= 512 && (n & (n - 1)) == 0;
}

// Models block_device and nothing more (not copyable or movable); code generic over block devices is
// instantiated with it to prove it asks for no more.
struct block_device_archetype {
    block_device_archetype() = default;
    block_device_archetype(const block_device_archetype&) = delete;
    block_device_archetype& operator=(const block_device_archetype&) = delete;
    std::size_t block_size() const { return 512; }
    std::uint64_t block_count() const { return 0; }
    expected<void> read(std::uint64_t lba, std::span<std::byte>) {
        return unexpected{"block transfer past the end of the device; lba", lba};
    }
    expected<void> write(std::uint64_t lba, std::span<const std::byte>) {
        return unexpected{"block transfer past the end of the device; lba", lba};
    }
    expected<void> flush() { return {}; }
};
static_assert(block_device<block_device_archetype>);

// A disk over a caller's buffer: block_count() = buffer size / BlockSize (a trailing partial block is not
// used). Counts calls so tests can check what a user of the device asked for.
template <std::size_t BlockSize = 512>
class memory_block_device {
    static_assert(valid_block_size(BlockSize), "block size must be a power of two >= 512");

public:
    explicit memory_block_device(std::span<std::byte> storage) : storage_{storage} {}
    memory_block_device(const memory_block_device&) = delete;
    memory_block_device& operator=(const memory_block_device&) = delete;

    std::size_t block_size() const { return BlockSize; }
    std::uint64_t block_count() const { return storage_.size() / BlockSize; }

    expected<void> read(std::uint64_t lba, std::span<std::byte> dst) {
        ++reads_;
        if (auto ok = check_block_transfer(BlockSize, block_count(), lba, dst.size()); !ok) return ok;
        const std::byte* from = storage_.data() + lba * BlockSize;
        for (std::size_t i = 0; i < dst.size(); ++i) dst[i] = from[i];
        return {};
    }
    expected<void> write(std::uint64_t lba, std::span<const std::byte> src) {
        ++writes_;
        if (auto ok = check_block_transfer(BlockSize, block_count(), lba, src.size()); !ok) return ok;
        std::byte* to = storage_.data() + lba * BlockSize;
        for (std::size_t i = 0; i < src.size(); ++i) to[i] = src[i];
        dirty_ = true;
        return {};
    }
    expected<void> flush() {
        ++flushes_;
        dirty_ = false;
        return {};
    }

    // Calls made (failed ones included), and whether a write has landed since the last flush.
    std::uint64_t reads() const { return reads_; }
    std::uint64_t writes() const { return writes_; }
    std::uint64_t flushes() const { return flushes_; }
    bool dirty() const { return dirty_; }
    std::span<std::byte> storage() const { return storage_; }

private:
    std::span<std::byte> storage_;
    std::uint64_t reads_ = 0, writes_ = 0, flushes_ = 0;
    bool dirty_ = false;
};
static_assert(block_device<memory_block_device<>>);
static_assert(block_device<memory_block_device<4096>>);

// Wraps any block device and fails operation number n (counting every read, write and flush from 1), and
// optionally every operation after it, with "injected I/O failure". A failed operation never reaches the
// wrapped device, so its contents and counters are exactly as if the call had not been made.
template <block_device D>
class faulty_block_device {
public:
    static constexpr std::uint64_t never = ~std::uint64_t{0};

    explicit faulty_block_device(D& inner, std::uint64_t fail_at = never, bool and_after = false)
        : inner_{inner}, fail_at_{fail_at}, and_after_{and_after} {}
    faulty_block_device(const faulty_block_device&) = delete;
    faulty_block_device& operator=(const faulty_block_device&) = delete;

    // Re-arms: operation n (counted from 1 since construction, as operations() does) fails.
    void fail_operation(std::uint64_t n, bool and_after = false) {
        fail_at_ = n;
        and_after_ = and_after;
    }

    std::size_t block_size() const { return inner_.block_size(); }
    std::uint64_t block_count() const { return inner_.block_count(); }
    expected<void> read(std::uint64_t lba, std::span<std::byte> dst) {
        if (auto ok = admit(); !ok) return ok;
        return inner_.read(lba, dst);
    }
    expected<void> write(std::uint64_t lba, std::span<const std::byte> src) {
        if (auto ok = admit(); !ok) return ok;
        return inner_.write(lba, src);
    }
    expected<void> flush() {
        if (auto ok = admit(); !ok) return ok;
        return inner_.flush();
    }

    std::uint64_t operations() const { return ops_; }    // reads + writes + flushes, failed ones included
    std::uint64_t failures() const { return failures_; } // injected ones only
    D& inner() const { return inner_; }

private:
    expected<void> admit() {
        const std::uint64_t n = ++ops_;
        if (n == fail_at_ || (and_after_ && fail_at_ != never && n > fail_at_)) {
            ++failures_;
            return unexpected{"injected I/O failure; operation", n};
        }
        return {};
    }

    D& inner_;
    std::uint64_t fail_at_;
    bool and_after_;
    std::uint64_t ops_ = 0, failures_ = 0;
};
static_assert(block_device<faulty_block_device<block_device_archetype>>);
static_assert(block_device<faulty_block_device<memory_block_device<>>>);

} // namespace toro
