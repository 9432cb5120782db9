// Polling for replication traffic. A replicated write is acknowledged when its copies' ACKs
// arrive, tens of microseconds after its frame left on loopback or a fast LAN. A network
// thread that blocks in epoll_wait meanwhile has to be woken for the ACK, and on a virtual
// machine that wake-up (an inter-processor interrupt to a halted vCPU) costs the replica about
// as much as the write itself: on the 2-vCPU bench box a 4 KiB write at QD 1 took 123 us with
// 1 replica against 63 us without, and 94 us when the master polled for the ACK instead.
// The same holds on the replica's side for the master's next frame.
// So the network threads poll (non-blocking epoll) instead of sleeping, for up to a window
// after their last handler:
// - while replicated requests of this process wait for their copies (the master's side);
// - after a replica-side frame arrived in this process (the copy's side), yielding the CPU
//   between empty polls so that a runnable thread on the same CPU (the master, the initiator)
//   goes first: a replica polls only on time nobody else wants.
// The cost is bounded: CPU spent polling at most the window per idle stretch, and none while
// no replication traffic flows.
#pragma once

#include <chrono>
#include <cstdint>

namespace boost::asio {
class io_context;
}

namespace tandem::backend::replicated {

// Replicated requests (writes, unmaps, flushes) of every ReplicatedVolume in this process that
// were handed to a replication engine and are not answered yet.
uint64_t requests_awaiting_copies();

// A replica-side frame (a master's write, flush or control frame for a copy) arrived in this
// process now. Cheap: one clock read and one relaxed store.
void note_copy_frame();

namespace detail {
void awaiting_copies_add(int64_t delta);  // ReplicatedVolume only
void forget_copy_frames();                 // tests: as if no copy frame ever arrived
bool copy_frame_noted();                   // tests: a copy frame arrived since (or ever)
}

struct PollWindows {
  std::chrono::microseconds replies{0};  // master's side: while requests await copies
  std::chrono::microseconds frames{0};   // copy's side: after the last note_copy_frame()
};

// Like io.run() (returns once io is stopped or out of work), but after each handler polls io
// without blocking, instead of blocking, for up to `w.replies` while requests_awaiting_copies()
// > 0, and for up to `w.frames` (yielding the CPU between polls) after a note_copy_frame().
// Both windows 0: exactly io.run().
void run_polling_for_replies(boost::asio::io_context& io, PollWindows w);

}  // namespace tandem::backend::replicated
