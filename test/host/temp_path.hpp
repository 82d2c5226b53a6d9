// Host tests: a unique temporary file path, created empty and removed when the test ends.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <string>

struct temp_path {
    std::string path;
    temp_path() {
        char name[] = "/tmp/toro_test_XXXXXX";
        const int fd = mkstemp(name);
        REQUIRE(fd >= 0);
        close(fd);
        path = name;
    }
    ~temp_path() { unlink(path.c_str()); }
    temp_path(const temp_path&) = delete;
    temp_path& operator=(const temp_path&) = delete;
};
