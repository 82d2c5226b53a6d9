// HOST-ONLY (POSIX: open/pread/pwrite/fsync; never included by kernel code). file_block_device: a block
// device over a file, for host tests and tools that want a disk image on the host's filesystem.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>

#include <toro/base/expected.hpp>
#include <toro/dev/block_device.hpp>

namespace toro {

// Owns its file descriptor (move-only). Errors from the OS are values carrying errno.
template <std::size_t BlockSize = 512>
class file_block_device {
    static_assert(valid_block_size(BlockSize), "block size must be a power of two >= 512");

public:
    // An existing file; its size must be a whole number of blocks.
    static expected<file_block_device> open(const char* path) {
        const int fd = ::open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0) return unexpected{"cannot open the disk image; errno", static_cast<std::uint64_t>(errno)};
        struct stat st {};
        if (::fstat(fd, &st) != 0) {
            const int e = errno;
            ::close(fd);
            return unexpected{"cannot stat the disk image; errno", static_cast<std::uint64_t>(e)};
        }
        if (st.st_size % BlockSize != 0) {
            ::close(fd);
            return unexpected{"disk image size is not a multiple of the block size; bytes",
                              static_cast<std::uint64_t>(st.st_size)};
        }
        return file_block_device{fd, static_cast<std::uint64_t>(st.st_size) / BlockSize};
    }

    // Creates (or truncates) the file to `blocks` zeroed blocks.
    static expected<file_block_device> create(const char* path, std::uint64_t blocks) {
        const int fd = ::open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
            return unexpected{"cannot create the disk image; errno", static_cast<std::uint64_t>(errno)};
        if (::ftruncate(fd, static_cast<off_t>(blocks * BlockSize)) != 0) {
            const int e = errno;
            ::close(fd);
            return unexpected{"cannot size the disk image; errno", static_cast<std::uint64_t>(e)};
        }
        return file_block_device{fd, blocks};
    }

    file_block_device(file_block_device&& o) noexcept : fd_{std::exchange(o.fd_, -1)}, blocks_{o.blocks_} {}
    file_block_device& operator=(file_block_device&& o) noexcept {
        if (this != &o) {
            close();
            fd_ = std::exchange(o.fd_, -1);
            blocks_ = o.blocks_;
        }
        return *this;
    }
    ~file_block_device() { close(); }

    std::size_t block_size() const { return BlockSize; }
    std::uint64_t block_count() const { return blocks_; }

    expected<void> read(std::uint64_t lba, std::span<std::byte> dst) {
        if (auto ok = check_block_transfer(BlockSize, blocks_, lba, dst.size()); !ok) return ok;
        std::size_t done = 0;
        while (done < dst.size()) { // pread may return less than asked
            const ssize_t n = ::pread(fd_, dst.data() + done, dst.size() - done,
                                      static_cast<off_t>(lba * BlockSize + done));
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return unexpected{"disk image read failed; errno", static_cast<std::uint64_t>(errno)};
            if (n == 0)
                return unexpected{"disk image shrank under the device; offset", lba * BlockSize + done};
            done += static_cast<std::size_t>(n);
        }
        return {};
    }
    expected<void> write(std::uint64_t lba, std::span<const std::byte> src) {
        if (auto ok = check_block_transfer(BlockSize, blocks_, lba, src.size()); !ok) return ok;
        std::size_t done = 0;
        while (done < src.size()) {
            const ssize_t n = ::pwrite(fd_, src.data() + done, src.size() - done,
                                       static_cast<off_t>(lba * BlockSize + done));
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return unexpected{"disk image write failed; errno", static_cast<std::uint64_t>(errno)};
            done += static_cast<std::size_t>(n);
        }
        return {};
    }
    expected<void> flush() {
        if (::fsync(fd_) != 0)
            return unexpected{"disk image fsync failed; errno", static_cast<std::uint64_t>(errno)};
        return {};
    }

private:
    file_block_device(int fd, std::uint64_t blocks) : fd_{fd}, blocks_{blocks} {}
    void close() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

    int fd_ = -1;
    std::uint64_t blocks_ = 0;
};
static_assert(block_device<file_block_device<>>);

} // namespace toro
