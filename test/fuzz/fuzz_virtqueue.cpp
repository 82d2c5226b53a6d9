// libFuzzer target for toro::virtio::virtqueue: the fuzzer plays a hostile device that writes whatever it
// likes into the used ring (and the rest of the shared memory) while the driver adds, publishes and pops.
// Checked against a model of the chains in flight: the queue never crashes (ASan/UBSan), never returns a
// token that is not a published chain in flight, never reclaims a chain twice, rejects a good element only
// as the spec allows, keeps its descriptor accounting exact, and never hands out a descriptor that belongs to
// a chain in flight (the chain's descriptors are read from the shared table right after add()).
//
// The first byte picks the options (bit 0 event_idx, bit 1 no_interrupt); then operations, an opcode byte and
// its operands (missing bytes read as 0):
//   op % 8 = 0-1  add        1 byte: bits 0-1 readable count, bits 2-3 writable count; then 1 byte per buffer
//                            (its length - 1)
//            2    publish    and should_notify
//            3    element    the device writes used ring slot (its index + 1 byte % 4): id (1 byte; >= 0xf0
//                            takes 4 more bytes, raw), len (1 byte; 0xff takes 4 more bytes, raw)
//            4    used.idx   1 byte: signed step from the device's index, or 0x80 then 2 bytes, raw
//            5    pop        1 byte: up to (b % 4) + 1 pops
//            6    scribble   1 byte: part (% 3: descriptor table, avail ring, used ring) and offset in it
//                            (/ 3), 1 byte: the value
//            7    control    1 byte: 0-1 disable/enable interrupts, 2 honest completion of the oldest
//                            published chain not completed yet, 3 up to 4 of those, or for 0xff spin
//                            (65792 honest round trips in batches of 8, once per input, to wrap the u16
//                            indices)
#include <cstddef>
#include <cstdint>

#include <toro/dev/virtio/virtqueue.hpp>

namespace {

using namespace toro::virtio;

constexpr std::uint16_t n = 8;

[[noreturn]] void fail() {
    __builtin_trap();
}
void check(bool ok) {
    if (!ok) fail();
}

class input {
public:
    input(const std::uint8_t* data, std::size_t size) : data_{data}, size_{size} {}
    bool done() const { return at_ >= size_; }
    std::uint8_t byte() { return at_ < size_ ? data_[at_++] : 0; }
    std::uint32_t u32() {
        return byte() | std::uint32_t{byte()} << 8 | std::uint32_t{byte()} << 16 |
               std::uint32_t{byte()} << 24;
    }

private:
    const std::uint8_t* data_;
    std::size_t size_;
    std::size_t at_ = 0;
};

legacy_ring_storage<n> rings;
std::byte data[4096];
virtqueue<n> q;

// The model: what the driver has in flight, by head.
struct chain_model {
    bool live = false;
    bool published = false;
    bool posted = false; // the honest device has completed it
    std::uint16_t count = 0;
    std::uint32_t writable = 0;
    std::uint16_t descs[n]{};
    std::uint32_t order = 0; // publication order, for honest completions
};
chain_model chains[n];
std::uint16_t pending_publish[n]; // heads added since the last publish, in order
std::uint16_t pending_count = 0;
std::uint32_t publish_seq = 0;
std::uint16_t device_used = 0; // the index the device believes in
std::uint32_t consumed = 0;    // used elements the driver consumed: never more than it published

std::uint16_t load16(std::byte* p) {
    std::uint16_t v;
    __builtin_memcpy(&v, p, 2);
    return v;
}
void store16(std::byte* p, std::uint16_t v) {
    __builtin_memcpy(p, &v, 2);
}
void store32(std::byte* p, std::uint32_t v) {
    __builtin_memcpy(p, &v, 4);
}

std::uint16_t model_descriptors() {
    std::uint16_t total = 0;
    std::uint16_t live = 0;
    for (const chain_model& c : chains)
        if (c.live) total = static_cast<std::uint16_t>(total + c.count), ++live;
    check(live == q.chains_in_flight());
    return total;
}

void check_accounting() {
    check(q.free_descriptors() == n - model_descriptors());
}

void set_used_idx(std::uint16_t v) {
    device_used = v;
    store16(rings.memory().used + ring_offsets::idx, v);
}

void do_add(input& in) {
    const std::uint8_t shape = in.byte();
    const std::size_t n_out = shape & 3, n_in = (shape >> 2) & 3;
    buffer out[3], wr[3];
    std::uint32_t writable = 0;
    for (std::size_t i = 0; i < n_out; ++i) out[i] = {data + 64 * i, std::uint32_t{in.byte()} + 1};
    for (std::size_t i = 0; i < n_in; ++i) {
        wr[i] = {data + 1024 + 64 * i, std::uint32_t{in.byte()} + 1};
        writable += wr[i].len;
    }
    const std::uint16_t before = q.free_descriptors();
    auto t = q.add({out, n_out}, {wr, n_in});
    if (!t) {
        const bool expected_error = (n_out + n_in == 0 && t.error().what == vq_error::empty_chain) ||
                                    (n_out + n_in > before && t.error().what == vq_error::no_descriptors);
        check(expected_error);
        check(q.free_descriptors() == before);
        return;
    }
    const std::uint16_t head = *t;
    check(head < n && !chains[head].live);
    // Walk the chain in the shared table now, before the device can touch it: the descriptors must be free
    // in the model, distinct, and hold what was asked.
    chain_model c;
    c.live = true;
    c.count = static_cast<std::uint16_t>(n_out + n_in);
    c.writable = writable;
    std::uint16_t d = head;
    for (std::uint16_t i = 0; i < c.count; ++i) {
        check(d < n);
        for (const chain_model& other : chains)
            if (other.live)
                for (std::uint16_t j = 0; j < other.count; ++j) check(other.descs[j] != d);
        for (std::uint16_t j = 0; j < i; ++j) check(c.descs[j] != d);
        c.descs[i] = d;
        virtq_desc v;
        __builtin_memcpy(&v, rings.memory().desc + 16 * d, 16);
        const buffer& b = i < n_out ? out[i] : wr[i - n_out];
        check(v.addr == reinterpret_cast<std::uintptr_t>(b.data) && v.len == b.len);
        check(((v.flags & desc_f_write) != 0) == (i >= n_out));
        check(((v.flags & desc_f_next) != 0) == (i + 1 < c.count));
        d = v.next;
    }
    chains[head] = c;
    pending_publish[pending_count++] = head;
}

void do_publish() {
    q.publish();
    for (std::uint16_t i = 0; i < pending_count; ++i) {
        chains[pending_publish[i]].published = true;
        chains[pending_publish[i]].order = publish_seq++;
    }
    pending_count = 0;
    (void)q.should_notify();
}

// One pop, judged against the model. Returns whether anything came back (a completion or an error).
bool do_pop() {
    auto r = q.pop_used();
    if (r && !r->ready) return false;
    const bool jump = !r && r.error().what == vq_error::used_index_jump;
    if (!jump) check(++consumed <= publish_seq);
    if (r) {
        const std::uint16_t t = r->token;
        check(t < n && chains[t].live && chains[t].published); // in flight, never twice
        check(r->len <= chains[t].writable);
        chains[t] = {};
        return true;
    }
    const auto& e = r.error();
    if (e.what == vq_error::bad_used_len) {
        check(e.value < n && chains[e.value].live && chains[e.value].published);
        chains[e.value] = {};
    } else if (e.what == vq_error::bad_used_id) {
        check(e.value >= n || !chains[e.value].live || !chains[e.value].published);
    } else {
        check(e.what == vq_error::used_index_jump);
        return false; // nothing consumed: popping again would say the same
    }
    return true;
}

// An honest device completing the oldest published chain.
void honest_completion() {
    int best = -1;
    for (int i = 0; i < n; ++i)
        if (chains[i].live && chains[i].published && !chains[i].posted &&
            (best < 0 || chains[i].order < chains[best].order))
            best = i;
    if (best < 0) return;
    chains[best].posted = true;
    const std::size_t slot = ring_offsets::used_slot(device_used % n);
    store32(rings.memory().used + slot, static_cast<std::uint32_t>(best));
    store32(rings.memory().used + slot + 4, chains[best].writable);
    set_used_idx(static_cast<std::uint16_t>(device_used + 1));
}

// Many full round trips, when nothing is outstanding, so the free-running indices wrap. Once per input:
// it is the slow part.
bool spun = false;
void spin(std::uint32_t rounds) {
    if (spun || model_descriptors() != 0 || q.has_used() || pending_count != 0) return;
    spun = true;
    device_used = load16(rings.memory().used + ring_offsets::idx);
    // A batch of n one-descriptor chains per round: fills the table, so the free list is exercised too.
    const buffer b{data, 16};
    std::uint16_t tokens[n];
    for (std::uint32_t i = 0; i < rounds; i += n) {
        for (std::uint16_t k = 0; k < n; ++k) {
            auto t = q.add({}, {&b, 1});
            check(t.has_value());
            tokens[k] = *t;
            chains[*t] = {true, false, false, 1, 16, {}, 0};
            pending_publish[pending_count++] = *t;
        }
        do_publish();
        for (std::uint16_t k = 0; k < n; ++k) honest_completion();
        for (std::uint16_t k = 0; k < n; ++k) {
            auto r = q.pop_used();
            check(r && r->ready && r->token == tokens[k] && r->len == 16);
            ++consumed;
            chains[tokens[k]] = {};
        }
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
    input in{bytes, size};
    const std::uint8_t opts = in.byte();
    check(q.attach(rings.memory(), {.event_idx = (opts & 1) != 0, .no_interrupt = (opts & 2) != 0})
              .has_value());
    for (chain_model& c : chains) c = {};
    pending_count = 0;
    publish_seq = 0;
    device_used = 0;
    consumed = 0;
    spun = false;

    for (int ops = 0; !in.done() && ops < 4096; ++ops) {
        const std::uint8_t op = in.byte();
        switch (op % 8) {
        case 0:
        case 1:
            do_add(in);
            break;
        case 2:
            do_publish();
            break;
        case 3: {
            const std::uint16_t index = static_cast<std::uint16_t>(device_used + in.byte() % 4);
            std::uint32_t id = in.byte();
            if (id >= 0xf0) id = in.u32();
            std::uint32_t len = in.byte();
            if (len == 0xff) len = in.u32();
            const std::size_t slot = ring_offsets::used_slot(index % n);
            store32(rings.memory().used + slot, id);
            store32(rings.memory().used + slot + 4, len);
            break;
        }
        case 4: {
            const std::uint8_t b = in.byte();
            if (b == 0x80)
                set_used_idx(static_cast<std::uint16_t>(in.byte() | in.byte() << 8));
            else
                set_used_idx(static_cast<std::uint16_t>(device_used + static_cast<std::int8_t>(b)));
            break;
        }
        case 5:
            for (int k = in.byte() % 4; k >= 0; --k)
                if (!do_pop()) break;
            break;
        case 6: {
            const std::uint8_t where = in.byte();
            const std::uint8_t v = in.byte();
            const virtqueue_memory m = rings.memory();
            if (where % 3 == 0) m.desc[where / 3 % desc_table_bytes(n)] = std::byte{v};
            if (where % 3 == 1) m.avail[where / 3 % avail_ring_bytes(n)] = std::byte{v};
            if (where % 3 == 2) m.used[where / 3 % used_ring_bytes(n)] = std::byte{v};
            break;
        }
        case 7: {
            const std::uint8_t b = in.byte();
            switch (b % 4) {
            case 0:
                q.disable_interrupts();
                break;
            case 1:
                (void)q.enable_interrupts();
                break;
            case 2:
                honest_completion();
                break;
            case 3:
                if (b == 0xff)
                    spin(65536 + 256); // used elements: past the wrap
                else
                    for (int k = (b >> 2) % 4; k >= 0; --k) honest_completion();
                break;
            }
            break;
        }
        }
        check_accounting();
    }
    // Drain what is left, then everything in flight must still be accounted for.
    for (int k = 0; k < 2 * n + 2 && do_pop(); ++k) {
    }
    check_accounting();
    return 0;
}
