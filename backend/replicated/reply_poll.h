// Polling for replicas' answers. A replicated write is acknowledged when its copies' ACKs
// arrive, tens of microseconds after its frame left on loopback or a fast LAN. A network
// thread that blocks in epoll_wait meanwhile has to be woken for the ACK, and on a virtual
// machine that wake-up (an inter-processor interrupt to a halted vCPU) costs the replica about
// as much as the write itself: on the 2-vCPU bench box a 4 KiB write at QD 1 took 123 us with
// 1 replica against 63 us without, and 94 us when the master polled for the ACK instead.
// So while replicated requests of this process wait for their copies, the network threads
// poll (non-blocking epoll) for up to a window after their last handler before they sleep.
// The cost is bounded: CPU spent polling at most `window` per idle stretch, and none while no
// replicated request is outstanding.
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

namespace detail {
void awaiting_copies_add(int64_t delta);  // ReplicatedVolume only
}

// Like io.run() (returns once io is stopped or out of work), but after each handler, while
// requests_awaiting_copies() > 0, polls io without blocking for up to `window` before blocking
// again. window 0: exactly io.run().
void run_polling_for_replies(boost::asio::io_context& io, std::chrono::microseconds window);

}  // namespace tandem::backend::replicated
