// Must NOT compile with -DTORO_EXPECT_COMPILE_ERROR: a format string with more fields than arguments is
// rejected when the call is compiled. Without the define the same call is well-formed, which shows the
// failure comes from the checked line and not from something else in this file.
#include <toro/console/format.hpp>

void format_compile_fail() {
    toro::fixed_buffer<32> out;
#ifdef TORO_EXPECT_COMPILE_ERROR
    toro::format_to(out, "{} and {}", 1); // two fields, one argument
#else
    toro::format_to(out, "{} and {}", 1, 2);
#endif
}
