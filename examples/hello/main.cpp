// hello: the smallest toro appliance. It names no optional unit, prints a greeting and the boot protocol it
// came through, and exits 0 (CloudIt turns that into its own exit status).
#include <toro/kernel.hpp>

using hello = toro::appliance<>;

int app_main(hello& os) {
    toro::print("Hello from toro! Booted through {}.\n", toro::protocol_name(os.boot.protocol));
    if (!os.boot.cmdline().empty()) toro::print("Command line: {}\n", os.boot.cmdline());
    return 0;
}

TORO_APPLIANCE(hello, app_main)
