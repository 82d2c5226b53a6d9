// Host tests for the block device seam: the transfer rules (multi-block, misaligned and out-of-range
// transfers rejected with nothing written), memory_block_device, faulty_block_device (exactly the Nth
// operation fails and nothing else changes), file_block_device round trips through a temporary file, and code
// generic over block_device instantiated with the archetype.
#include <catch2/catch.hpp>

#include "../temp_path.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <toro/dev/block_device.hpp>
#include <toro/dev/file_block_device.hpp>

namespace {

using toro::block_device;
using toro::memory_block_device;

std::string str(toro::string_view s) {
    return {s.data(), s.size()};
}

// Block i, byte j of a recognisable pattern (differs for every block and every position in it).
std::byte pattern(std::uint64_t block, std::size_t j, std::uint8_t salt = 0) {
    return static_cast<std::byte>((block * 31 + j * 7 + salt) & 0xff);
}

std::vector<std::byte> blocks_of(std::uint64_t first, std::size_t n, std::size_t block_size,
                                 std::uint8_t salt) {
    std::vector<std::byte> v(n * block_size);
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = pattern(first + i / block_size, i % block_size, salt);
    return v;
}

// Code that knows only the concept: copies block `from` to block `to` through a caller's buffer.
template <block_device D>
toro::expected<void> copy_block(D& d, std::uint64_t from, std::uint64_t to, std::span<std::byte> buf) {
    if (auto ok = d.read(from, buf.first(d.block_size())); !ok) return ok;
    return d.write(to, buf.first(d.block_size()));
}

} // namespace

// Types that miss a part of the concept do not model it.
namespace {
struct no_flush {
    std::size_t block_size() const { return 512; }
    std::uint64_t block_count() const { return 0; }
    toro::expected<void> read(std::uint64_t, std::span<std::byte>) { return {}; }
    toro::expected<void> write(std::uint64_t, std::span<const std::byte>) { return {}; }
};
struct throws_away_errors : toro::block_device_archetype {
    void read(std::uint64_t, std::span<std::byte>) {}
};
static_assert(!block_device<no_flush>);
static_assert(!block_device<throws_away_errors>);
static_assert(!block_device<int>);
} // namespace

TEST_CASE("block: the archetype is enough for code generic over block devices", "[block]") {
    toro::block_device_archetype d;
    std::byte buf[512];
    auto r = copy_block(d, 0, 1, buf);
    REQUIRE_FALSE(r);
    CHECK(str(r.error().what) == "block transfer past the end of the device; lba");
    CHECK(r.error().value == 0);
    CHECK(d.flush());
}

TEST_CASE("block: check_block_transfer and valid_block_size", "[block]") {
    CHECK(toro::check_block_transfer(512, 8, 0, 512 * 8));
    CHECK(toro::check_block_transfer(512, 8, 7, 512));
    CHECK_FALSE(toro::check_block_transfer(512, 8, 7, 1024));
    CHECK_FALSE(toro::check_block_transfer(512, 8, 8, 512));
    CHECK_FALSE(toro::check_block_transfer(512, 8, ~std::uint64_t{0}, 512)); // lba + 1 would overflow
    CHECK_FALSE(toro::check_block_transfer(512, 8, 0, 0));
    CHECK_FALSE(toro::check_block_transfer(512, 8, 0, 511));
    static_assert(toro::valid_block_size(512) && toro::valid_block_size(4096));
    static_assert(!toro::valid_block_size(256) && !toro::valid_block_size(1000) &&
                  !toro::valid_block_size(0));
}

TEST_CASE("block: memory device geometry", "[block]") {
    std::vector<std::byte> storage(512 * 10 + 100); // the trailing partial block is not used
    memory_block_device<> d{storage};
    CHECK(d.block_size() == 512);
    CHECK(d.block_count() == 10);

    std::vector<std::byte> big(4096 * 3 + 4095);
    memory_block_device<4096> d4{big};
    CHECK(d4.block_size() == 4096);
    CHECK(d4.block_count() == 3);
}

TEST_CASE("block: multi-block writes and reads", "[block]") {
    std::vector<std::byte> storage(512 * 16, std::byte{0xee});
    memory_block_device<> d{storage};

    const auto data = blocks_of(3, 5, 512, 1); // blocks 3..7
    REQUIRE(d.write(3, data));
    CHECK(d.writes() == 1);
    // Exactly blocks 3..7 changed.
    for (std::size_t i = 0; i < storage.size(); ++i) {
        const std::uint64_t block = i / 512;
        const std::byte want = block >= 3 && block < 8 ? pattern(block, i % 512, 1) : std::byte{0xee};
        REQUIRE(storage[i] == want);
    }

    // A read straddling written and unwritten blocks, and one of the middle blocks alone.
    std::vector<std::byte> back(512 * 7);
    REQUIRE(d.read(2, back));
    for (std::size_t i = 0; i < back.size(); ++i) {
        const std::uint64_t block = 2 + i / 512;
        const std::byte want = block >= 3 && block < 8 ? pattern(block, i % 512, 1) : std::byte{0xee};
        REQUIRE(back[i] == want);
    }
    std::vector<std::byte> one(512);
    REQUIRE(d.read(5, one));
    CHECK(one == std::vector<std::byte>(data.begin() + 2 * 512, data.begin() + 3 * 512));

    // The last block and the whole device are reachable.
    const auto last = blocks_of(15, 1, 512, 9);
    REQUIRE(d.write(15, last));
    std::vector<std::byte> all(512 * 16);
    REQUIRE(d.read(0, all));
    CHECK(std::vector<std::byte>(all.end() - 512, all.end()) == last);
    CHECK(d.reads() == 3);
}

TEST_CASE("block: bad transfers are error values and write nothing", "[block]") {
    std::vector<std::byte> storage(512 * 8, std::byte{0x11});
    const auto before = storage;
    memory_block_device<> d{storage};
    std::vector<std::byte> src(512 * 2, std::byte{0x22});

    SECTION("size not a multiple of the block size") {
        auto r = d.write(0, std::span<const std::byte>{src}.first(513));
        REQUIRE_FALSE(r);
        CHECK(str(r.error().what) == "transfer size is not a multiple of the block size; bytes");
        CHECK(r.error().value == 513);
        std::vector<std::byte> dst(100, std::byte{0x33});
        auto rr = d.read(0, dst);
        REQUIRE_FALSE(rr);
        CHECK(rr.error().value == 100);
        CHECK(dst == std::vector<std::byte>(100, std::byte{0x33})); // not partially filled
    }
    SECTION("past the end: the run straddles the last block") {
        auto r = d.write(7, src); // blocks 7 and 8; 8 does not exist
        REQUIRE_FALSE(r);
        CHECK(str(r.error().what) == "block transfer past the end of the device; lba");
        CHECK(r.error().value == 7);
    }
    SECTION("past the end: lba beyond the device, and lba + blocks overflowing") {
        CHECK_FALSE(d.write(8, std::span<const std::byte>{src}.first(512)));
        auto r = d.write(~std::uint64_t{0}, src);
        REQUIRE_FALSE(r);
        CHECK(r.error().value == ~std::uint64_t{0});
        std::vector<std::byte> dst(512);
        CHECK_FALSE(d.read(~std::uint64_t{0} - 1, dst));
    }
    SECTION("empty transfer") {
        auto r = d.write(0, std::span<const std::byte>{});
        REQUIRE_FALSE(r);
        CHECK(str(r.error().what) == "empty block transfer; lba");
    }
    CHECK(storage == before);
    CHECK_FALSE(d.dirty());
}

TEST_CASE("block: flush clears dirty and is counted", "[block]") {
    std::vector<std::byte> storage(512 * 4);
    memory_block_device<> d{storage};
    CHECK_FALSE(d.dirty());
    REQUIRE(d.write(1, blocks_of(1, 1, 512, 0)));
    CHECK(d.dirty());
    REQUIRE(d.flush());
    CHECK_FALSE(d.dirty());
    CHECK(d.flushes() == 1);
    REQUIRE(d.flush());
    CHECK(d.flushes() == 2);
}

TEST_CASE("block: the fault injector fails exactly the Nth operation", "[block]") {
    std::vector<std::byte> storage(512 * 8, std::byte{0});
    memory_block_device<> mem{storage};
    toro::faulty_block_device<memory_block_device<>> d{mem, 3};
    static_assert(block_device<decltype(d)>);
    CHECK(d.block_size() == 512);
    CHECK(d.block_count() == 8);

    const auto a = blocks_of(0, 2, 512, 1), b = blocks_of(2, 2, 512, 2), c = blocks_of(4, 1, 512, 3);
    std::vector<std::byte> dst(512 * 2);
    REQUIRE(d.write(0, a));  // 1
    REQUIRE(d.read(0, dst)); // 2
    CHECK(dst == a);
    const auto snapshot = storage;
    auto r = d.write(2, b); // 3: fails, reaches nothing
    REQUIRE_FALSE(r);
    CHECK(str(r.error().what) == "injected I/O failure; operation");
    CHECK(r.error().value == 3);
    CHECK(storage == snapshot);
    CHECK(mem.writes() == 1);
    CHECK(mem.reads() == 1);
    REQUIRE(d.write(4, c)); // 4: fine again
    REQUIRE(d.flush());     // 5
    CHECK(mem.writes() == 2);
    CHECK(mem.flushes() == 1);
    CHECK(d.operations() == 5);
    CHECK(d.failures() == 1);
    // Blocks 2..3 never got b.
    std::vector<std::byte> mid(512 * 2);
    REQUIRE(d.read(2, mid)); // 6
    CHECK(mid == std::vector<std::byte>(512 * 2, std::byte{0}));
}

TEST_CASE("block: the fault injector can fail every operation from the Nth on, and be re-armed", "[block]") {
    std::vector<std::byte> storage(512 * 4);
    memory_block_device<> mem{storage};
    toro::faulty_block_device<memory_block_device<>> d{mem};
    std::vector<std::byte> buf(512);
    for (int i = 0; i < 4; ++i) REQUIRE(d.read(0, buf)); // never fails by default
    d.fail_operation(6, true);
    REQUIRE(d.read(0, buf)); // 5
    auto f = d.flush();      // 6
    REQUIRE_FALSE(f);
    CHECK(f.error().value == 6);
    auto w = d.write(0, buf); // 7
    REQUIRE_FALSE(w);
    CHECK(w.error().value == 7);
    CHECK_FALSE(d.read(0, buf)); // 8
    CHECK(d.failures() == 3);
    CHECK(mem.reads() == 5);
    CHECK(mem.writes() == 0);
    CHECK(mem.flushes() == 0);
    d.fail_operation(toro::faulty_block_device<memory_block_device<>>::never);
    CHECK(d.read(0, buf)); // 9
    CHECK(d.operations() == 9);
}

TEST_CASE("block: the fault injector passes the inner device's errors through", "[block]") {
    std::vector<std::byte> storage(512 * 2);
    memory_block_device<> mem{storage};
    toro::faulty_block_device<memory_block_device<>> d{mem, 100};
    std::vector<std::byte> buf(512 * 3);
    auto r = d.read(0, buf);
    REQUIRE_FALSE(r);
    CHECK(str(r.error().what) == "block transfer past the end of the device; lba");
    CHECK(d.failures() == 0);
    CHECK(d.operations() == 1);
}

TEST_CASE("block: generic code over memory and faulty devices", "[block]") {
    std::vector<std::byte> storage(512 * 4);
    memory_block_device<> mem{storage};
    const auto b0 = blocks_of(0, 1, 512, 5);
    REQUIRE(mem.write(0, b0));
    std::vector<std::byte> buf(512);
    REQUIRE(copy_block(mem, 0, 3, buf));
    CHECK(std::vector<std::byte>(storage.begin() + 3 * 512, storage.end()) == b0);

    toro::faulty_block_device<memory_block_device<>> d{mem, 2}; // the copy's write fails
    auto r = copy_block(d, 0, 2, buf);
    REQUIRE_FALSE(r);
    CHECK(r.error().value == 2);
    CHECK(std::vector<std::byte>(storage.begin() + 2 * 512, storage.begin() + 3 * 512) ==
          std::vector<std::byte>(512, std::byte{0}));
}

TEST_CASE("block: file-backed device round trip", "[block]") {
    temp_path tmp;
    using file_dev = toro::file_block_device<>;
    const auto data = blocks_of(1, 3, 512, 7);
    {
        auto d = file_dev::create(tmp.path.c_str(), 6);
        REQUIRE(d);
        CHECK(d->block_size() == 512);
        CHECK(d->block_count() == 6);
        REQUIRE(d->write(1, data));
        REQUIRE(d->flush());
        // Bad transfers are rejected before touching the file.
        CHECK_FALSE(d->write(5, data));
        CHECK_FALSE(d->write(0, std::span<const std::byte>{data}.first(700)));
        std::vector<std::byte> back(512 * 3);
        REQUIRE(d->read(1, back));
        CHECK(back == data);
    }
    struct stat st {};
    REQUIRE(stat(tmp.path.c_str(), &st) == 0);
    CHECK(st.st_size == 512 * 6);

    // Reopened: the bytes are in the file, the rest zero.
    auto d = file_dev::open(tmp.path.c_str());
    REQUIRE(d);
    CHECK(d->block_count() == 6);
    std::vector<std::byte> all(512 * 6);
    REQUIRE(d->read(0, all));
    for (std::size_t i = 0; i < all.size(); ++i) {
        const std::uint64_t block = i / 512;
        const std::byte want = block >= 1 && block < 4 ? pattern(block, i % 512, 7) : std::byte{0};
        REQUIRE(all[i] == want);
    }
    // Moving the device keeps it usable; the moved-from one owns nothing.
    file_dev moved = std::move(*d);
    std::vector<std::byte> one(512);
    REQUIRE(moved.read(2, one));
    CHECK(one == std::vector<std::byte>(data.begin() + 512, data.begin() + 1024));
    REQUIRE(copy_block(moved, 1, 5, one));
}

TEST_CASE("block: file-backed device open errors", "[block]") {
    auto missing = toro::file_block_device<>::open("/nonexistent-dir/toro.img");
    REQUIRE_FALSE(missing);
    CHECK(str(missing.error().what) == "cannot open the disk image; errno");
    CHECK(missing.error().value == ENOENT);

    temp_path tmp;
    const int fd = ::open(tmp.path.c_str(), O_WRONLY);
    REQUIRE(fd >= 0);
    REQUIRE(ftruncate(fd, 1000) == 0);
    close(fd);
    auto odd = toro::file_block_device<>::open(tmp.path.c_str());
    REQUIRE_FALSE(odd);
    CHECK(str(odd.error().what) == "disk image size is not a multiple of the block size; bytes");
    CHECK(odd.error().value == 1000);

    auto d4 = toro::file_block_device<4096>::create(tmp.path.c_str(), 2);
    REQUIRE(d4);
    CHECK(d4->block_count() == 2);
    CHECK(d4->block_size() == 4096);
}
