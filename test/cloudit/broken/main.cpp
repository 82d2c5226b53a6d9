// Does not compile on purpose: app_main returns a string where an int is expected.
#include <toro/kernel.hpp>

using broken_os = toro::appliance<>;

int app_main(broken_os&) {
    return "not a status";
}

TORO_APPLIANCE(broken_os, app_main)
