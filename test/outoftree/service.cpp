// A microservice that lives in its own repository and uses toro as a subproject.
#include <toro/kernel.hpp>

using service_os = toro::appliance<>;

int app_main(service_os& os) {
    toro::print("out-of-tree service up ({} bytes of usable RAM in {} regions)\n",
                os.boot.memory.usable_bytes(), os.boot.memory.regions().size());
    return 7; // a distinctive status the test checks
}

TORO_APPLIANCE(service_os, app_main)
