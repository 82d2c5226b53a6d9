// elfwrap IN.elf OUT32.elf: turns a toro ELF64 kernel into the ELF32 Multiboot1 image that QEMU's
// `-kernel` loader accepts (see tools/elf/elf32_wrap.hpp for the layout and why).
// The output is written to a temporary file beside OUT32.elf and renamed into place, so a failed
// or interrupted run never leaves a half-written kernel for the next build step to boot.
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "elf/elf.hpp"
#include "elf/elf32_wrap.hpp"

namespace {

int die(const char* path, const std::string& message) {
    std::fprintf(stderr, "elfwrap: %s: %s\n", path, message.c_str());
    return 1;
}

// Reads the whole file, or returns false with the reason in `err`.
bool read_file(const char* path, std::vector<std::uint8_t>& out, std::string& err) {
    const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err = std::strerror(errno);
        return false;
    }
    std::uint8_t buf[1 << 16];
    for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            err = std::strerror(errno);
            ::close(fd);
            return false;
        }
        if (n == 0) break;
        out.insert(out.end(), buf, buf + n);
    }
    ::close(fd);
    return true;
}

// Writes `data` to `path` atomically with mode 0644 (explicitly, whatever the umask).
bool write_file_atomic(const std::string& path, const std::vector<std::uint8_t>& data, std::string& err) {
    std::string tmp = path + ".tmp.XXXXXX";
    const int fd = ::mkstemp(tmp.data());
    if (fd < 0) {
        err = std::string("cannot create temporary file: ") + std::strerror(errno);
        return false;
    }
    auto fail = [&](const char* what) {
        err = std::string(what) + ": " + std::strerror(errno);
        ::close(fd);
        ::unlink(tmp.c_str());
        return false;
    };
    std::size_t done = 0;
    while (done < data.size()) {
        const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail("write");
        done += static_cast<std::size_t>(n);
    }
    if (::fchmod(fd, 0644) != 0) return fail("chmod");
    if (::fsync(fd) != 0) return fail("fsync");
    if (::close(fd) != 0) {
        err = std::string("close: ") + std::strerror(errno);
        ::unlink(tmp.c_str());
        return false;
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        err = std::string("rename: ") + std::strerror(errno);
        ::unlink(tmp.c_str());
        return false;
    }
    return true;
}

} // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: elfwrap IN.elf OUT32.elf\n");
        return 1;
    }
    const char* in = argv[1];
    const char* out = argv[2];

    std::vector<std::uint8_t> file;
    std::string err;
    if (!read_file(in, file, err)) return die(in, err);

    auto img = toro::tools::parse_elf64(file);
    if (!img) return die(in, img.error().message);
    auto wrapped = toro::tools::wrap_multiboot_elf32(*img, file);
    if (!wrapped) return die(in, wrapped.error().message);

    if (!write_file_atomic(out, *wrapped, err)) return die(out, err);
    return 0;
}
