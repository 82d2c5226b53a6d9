// bigbss: a test appliance with 3 MiB of BSS, more than the boot shim's 2 MiB bootstrap map, to check that
// the link map keeps what the shim touches early below 2 MiB whatever the size of BSS, and that BSS arrives
// zeroed and writable at both ends.
#include <toro/kernel.hpp>

using bigbss_os = toro::appliance<>;

namespace {
char big[3 << 20];
}

int app_main(bigbss_os&) {
    bool zero = big[0] == 0 && big[sizeof big / 2] == 0 && big[sizeof big - 1] == 0;
    big[0] = 1;
    big[sizeof big - 1] = 2;
    toro::print("bigbss: {} bytes of BSS at {}, zeroed: {}, written: {}\n", sizeof big,
                static_cast<void*>(big), zero, big[0] + big[sizeof big - 1] == 3);
    return zero ? 0 : 1;
}

TORO_APPLIANCE(bigbss_os, app_main)
