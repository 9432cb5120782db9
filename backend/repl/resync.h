// Delta sync (resync) of one copy, master side: which regions to send and how far the stream
// has got. Pure state; the MasterEngine owns one ResyncSession per syncing copy and drives it
// from its own strand (not thread-safe).
//
// Protocol (all frames on the one FIFO link to the copy; DESIGN.md "Consistency model"):
//  1. The master sequences an internal FLUSH (not sent to this copy), so S, its sequence, is
//     new to every session, and sends SYNC_REQUEST{sequence = S}. From then on every new write
//     (sequence > S) is also sent to the copy, in order. The copy rebases its stream (next
//     expected sequence S+1) and answers with its REGION_SUMMARY{sequence = S} (chunks, LAST
//     on the final one): its RegionMap, i.e. state <= S. Answers of an abandoned session still
//     on the link carry a smaller sequence and are ignored.
//  2. plan_resync(): regions = diff(master's map as of S, copy's summary). Regions no side
//     ever wrote are equal (seq 0 on both) and never sent.
//  3. For each region r, at most `window` at a time: the master reads r from its local store
//     as an operation in its volume order at the current position p (the read waits for every
//     earlier overlapping write and every later overlapping write waits for the read), stamps
//     it with stamp = master map seq of r at p, and queues SYNC_DATA{sequence = stamp,
//     count = r, LAST} into the link queue at position p: after the WRITE frames <= p, before
//     those > p. The copy applies frames in link order, so the region is overwritten with
//     exactly its contents as of p and every later write lands on top: newer data is never
//     overwritten by older sync data. The copy acks with REGION_SUMMARY{(r, stamp)} after the
//     local write completed.
//  4. When every region is acked, the master sends SYNC_DONE{sequence = D} (D = last assigned)
//     and from then on waits for the copy's ACKs before completing writes ("joining"). Once
//     the copy has acked every sequence <= D it holds everything the master holds and is
//     reported in sync.
// Resuming: a copy that drops mid-stream keeps the (region, stamp) entries it applied, so the
// next SYNC_REQUEST's summary matches the master for those regions and the new plan resumes
// after the last acknowledged region without resending it. Regions the copy wrote during the
// interrupted session but had not received yet are reported unknown (replica_engine.h), so
// they are sent again: a partial write never makes a stale region look current.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <span>
#include <vector>

#include "backend/repl/region_map.h"
#include "backend/wire/frame.h"

namespace tandem::backend::repl {

// The regions the master must send to a copy whose REGION_SUMMARY is `summary`; `master` is
// the master's map as of the SYNC_REQUEST. kInvalid for entries outside the volume.
RegionResult<std::vector<uint64_t>> plan_resync(const RegionMap& master,
                                                std::span<const wire::RegionEntry> summary);

class ResyncSession {
 public:
  // `regions` ascending and unique (plan_resync's output); window >= 1.
  ResyncSession(std::vector<uint64_t> regions, uint32_t window);

  // The next region to read and send, if any is left and fewer than `window` are in flight.
  std::optional<uint64_t> next();
  // The copy applied region r. False if r was not in flight (duplicate or foreign ack).
  bool ack(uint64_t region);
  bool done() const { return next_ == regions_.size() && in_flight_.empty(); }

  uint64_t planned() const { return regions_.size(); }
  uint64_t acked() const { return acked_; }
  size_t in_flight() const { return in_flight_.size(); }
  // The highest region acknowledged so far, for progress reports.
  std::optional<uint64_t> last_acked() const { return last_acked_; }

 private:
  std::vector<uint64_t> regions_;
  uint32_t window_;
  size_t next_ = 0;
  std::set<uint64_t> in_flight_;
  uint64_t acked_ = 0;
  std::optional<uint64_t> last_acked_;
};

}  // namespace tandem::backend::repl
