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
//  3. For each region r, at most `window` at a time (hash round trips and reads overlap):
//     a. Unless the copy's summary has r at seq 0 (never written: its region is all zeros,
//        see below), the master sends SYNC_HASH_REQUEST{S, r, unit} and the copy answers
//        SYNC_HASHES{S, r}: a SHA-256/128 hash of every `unit` bytes (4 KiB) of r, read from
//        its store at some link position q >= S (its read is ordered after every write it
//        received before the request, so it sees each of them whole or later data).
//     b. Then (at once for a seq-0 region) the master reads r from its local store as an
//        operation in its volume order at the current position p (the read waits for every
//        earlier overlapping write and every later overlapping write waits for the read),
//        stamps it with stamp = master map seq of r at p, compares each unit's hash with the
//        copy's (seq 0: with zeros) and queues SYNC_DELTA{sequence = stamp, count = r, a
//        bitmap of the units that differ and their bytes, LAST} into the link queue at
//        position p: after the WRITE frames <= p, before those > p. The copy assigns the
//        stamp to r in its map, writes the units it got and acks with
//        REGION_SUMMARY{(r, stamp)} after the local writes completed (at once if none).
//     Why the copy then holds exactly the master's r as of p, byte for byte b: the copy
//     applies every write in (S, p] before the SYNC_DELTA (link order) and the master holds
//     them at p. If one of them covers b, both end with the last such write's byte (writes
//     are overwrites: applying the same writes again changes nothing). If none does, b did
//     not change on the copy from S to p (only this session's SYNC_DELTA for r touches r,
//     and it comes at p), so whatever moment the copy's read saw it at, the copy's b at p is
//     the b it hashed; a unit whose hashes match therefore already holds the master's bytes
//     and a unit that differs is sent. A read on the copy that overlaps a write in flight
//     only sees some bytes newer, which can only make a unit differ (an extra send), never
//     hide a difference (the argument above holds for each byte at whatever moment it was
//     read). A seq-0 region in the copy's summary is all zeros there: its map was created
//     with a brand-new sparse image (a reused image gets a map of unknown regions, which
//     are hashed), and every write or resync marks the map before it touches the data.
//     Stale answers (another session's SYNC_HASHES, a region not waiting for hashes) are
//     ignored; a copy that never answers drops with its link.
// Resuming: a copy that drops mid-stream keeps the (region, stamp) entries it applied, so the
// next SYNC_REQUEST's summary matches the master for those regions and the new plan resumes
// after the last acknowledged region without resending it. Regions the copy wrote during the
// interrupted session but had not received yet are reported unknown (replica_engine.h), so
// they are sent again: a partial write never makes a stale region look current.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <vector>

#include "backend/repl/region_map.h"
#include "backend/wire/frame.h"

namespace tandem::backend::repl {

// A region a resync sends: its size, and whether the copy never wrote it (all zeros there:
// no hash round trip, only the master's non-zero units go).
struct PlannedRegion {
  uint64_t region = 0;
  uint64_t bytes = 0;
  bool copy_zero = false;
  bool operator==(const PlannedRegion&) const = default;
};

// The regions the master must send to a copy whose REGION_SUMMARY is `summary`; `master` is
// the master's map as of the SYNC_REQUEST. kInvalid for entries outside the volume.
RegionResult<std::vector<PlannedRegion>> plan_resync(const RegionMap& master,
                                                     std::span<const wire::RegionEntry> summary);

class ResyncSession {
 public:
  // `regions` ascending and unique (plan_resync's output); window >= 1.
  ResyncSession(std::vector<PlannedRegion> regions, uint32_t window);

  // The next region to start (hash request or read), if any is left and fewer than `window`
  // are in flight.
  std::optional<PlannedRegion> next();
  // Region r (in flight) was compared: `send_bytes` of its data go to the copy.
  void diffed(uint64_t region, uint64_t send_bytes);
  // The copy applied region r. False if r was not in flight (duplicate or foreign ack).
  bool ack(uint64_t region);
  bool done() const { return next_ == regions_.size() && in_flight_.empty(); }
  bool in_flight(uint64_t region) const { return in_flight_.count(region) != 0; }

  uint64_t planned() const { return regions_.size(); }
  uint64_t acked() const { return acked_; }
  size_t in_flight() const { return in_flight_.size(); }
  // Progress in data bytes: what the copy applied, and what the whole session sends. The
  // total is exact once every region was compared; until then it counts each region not yet
  // compared whole (an upper bound that falls as comparisons come in).
  uint64_t done_bytes() const { return done_bytes_; }
  uint64_t total_bytes() const { return total_bytes_; }
  // The highest region acknowledged so far, for progress reports.
  std::optional<uint64_t> last_acked() const { return last_acked_; }

 private:
  struct InFlight {
    uint64_t bytes = 0;  // the region's size until diffed, then the data bytes sent
    bool diffed = false;
  };
  std::vector<PlannedRegion> regions_;
  uint32_t window_;
  size_t next_ = 0;
  std::map<uint64_t, InFlight> in_flight_;
  uint64_t acked_ = 0;
  uint64_t done_bytes_ = 0;
  uint64_t total_bytes_ = 0;
  std::optional<uint64_t> last_acked_;
};

}  // namespace tandem::backend::repl
