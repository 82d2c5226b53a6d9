// hang: a test appliance that never finishes (interrupts off, halted), to check that CloudIt reports a hung
// guest with its last console lines instead of waiting forever.
#include <toro/kernel.hpp>

using hang_os = toro::appliance<>;

int app_main(hang_os&) {
    toro::print("hang test: about to stop forever\n");
    toro::arch::halt_forever();
}

TORO_APPLIANCE(hang_os, app_main)
