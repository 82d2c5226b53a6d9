// HOST-ONLY. transcript<Step, Mock>: the script engine shared by the register mocks (console/mock_io.hpp,
// arch/x86_64/mock_lapic.hpp). A test scripts the accesses it expects; each access the driver makes is
// matched against the next step, in order, and every mismatch, access past the end and step never played
// becomes a readable line ("access 3: expected write 0x03 to +3 (LCR), got read of +5 (LSR)").
// A Step has a `times` (accesses it stands for: repeated reads); Mock provides describe(const Step&).
// Uses <vector>/<string>: never include it from kernel code.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace toro::testing {

template <class Step, class Mock>
class transcript {
public:
    // A runaway driver loop must not bury the first, useful message under thousands of copies.
    static constexpr std::size_t max_failures = 20;

    // Every problem so far, plus one line for the rest of the script if it was not played out.
    std::vector<std::string> failures() const {
        std::vector<std::string> all = failures_;
        if (dropped_ != 0) all.push_back("... and " + std::to_string(dropped_) + " more failures");
        if (pos_ < script_.size()) {
            std::size_t missing = script_[pos_].times - used_;
            for (std::size_t i = pos_ + 1; i < script_.size(); ++i) missing += script_[i].times;
            all.push_back("access " + std::to_string(accesses_ + 1) + ": expected " +
                          mock().describe(remaining(script_[pos_])) + ", never happened (" +
                          std::to_string(missing) + " expected accesses missing)");
        }
        return all;
    }
    bool done() const { return failures().empty(); }
    // failures() as one newline-separated string, for INFO() or printing.
    std::string report() const {
        std::string out;
        for (const std::string& f : failures()) out += f + "\n";
        return out;
    }
    std::size_t accesses() const { return accesses_; }

protected:
    void add(const Step& s) {
        if (s.times != 0) script_.push_back(s);
    }
    const Step* next() const { return pos_ < script_.size() ? &script_[pos_] : nullptr; }
    // The current step as it stands now: a repeated read partly played out has fewer reads left.
    Step remaining(Step s) const {
        s.times -= used_;
        return s;
    }
    // Counts one access against the current step.
    void consume() {
        ++accesses_;
        if (pos_ < script_.size() && ++used_ == script_[pos_].times) {
            ++pos_;
            used_ = 0;
        }
    }
    void fail(const std::string& what) {
        if (failures_.size() < max_failures)
            failures_.push_back("access " + std::to_string(accesses_ + 1) + ": " + what);
        else
            ++dropped_;
    }
    // "unexpected X after the script ended" or "expected Y, got X", when `matches` is false.
    void check(const Step& got, bool matches) {
        const Step* s = next();
        if (s == nullptr)
            fail("unexpected " + mock().describe(got) + " after the script ended");
        else if (!matches)
            fail("expected " + mock().describe(remaining(*s)) + ", got " + mock().describe(got));
    }

private:
    const Mock& mock() const { return static_cast<const Mock&>(*this); }

    std::vector<Step> script_;
    std::size_t pos_ = 0;  // current script step
    std::size_t used_ = 0; // accesses already matched against a repeated step
    std::size_t accesses_ = 0;
    std::vector<std::string> failures_;
    std::size_t dropped_ = 0;
};

} // namespace toro::testing
