// Vocabulary shared by the pure replication engines (MasterEngine, ReplicaEngine): payload
// handles, local-store operations the engines ask their shell to run, and the error type of
// their control inputs. Plain values; safe to copy between threads (payloads are immutable).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/wire/frame.h"
#include "core/block_volume.h"
#include "core/result.h"

namespace tandem::backend::repl {

// Block data travels by shared immutable buffer: the shell, the local store and the frame
// encoder may all hold it at once without copies.
using Payload = std::shared_ptr<const std::vector<uint8_t>>;

inline Payload make_payload(std::vector<uint8_t> bytes) {
  return std::make_shared<const std::vector<uint8_t>>(std::move(bytes));
}

// A local-store operation an engine wants run. The shell runs it (off the network thread)
// and reports back with on_store_done(tag, result[, data]). The engines never hand the store
// two overlapping operations at once, so the store may run them in any order.
enum class StoreKind : uint8_t {
  kWrite,  // write `data` at lba; fua: stable before completion
  kUnmap,  // deallocate [lba, lba+blocks): reads back as zeros
  kFlush,  // everything completed before this op was issued reaches stable storage
  kRead,   // read [lba, lba+blocks) and return the bytes with the completion
};

struct StoreOp {
  uint64_t tag = 0;  // echo in on_store_done
  StoreKind kind = StoreKind::kWrite;
  uint64_t lba = 0;
  uint64_t blocks = 0;
  bool fua = false;
  Payload data;  // kWrite
  // The replication sequence this op applies (writes, unmaps, flushes), or for resync data
  // the sequence of the region it reflects; 0 for reads. For logs and simulation checks.
  uint64_t seq = 0;
  bool resync = false;  // resync data (a region overwritten with the master's copy)
};

// Misuse of a control input (unknown copy, wrong state, bad argument). Network input never
// produces one of these: a bad frame is answered on the wire or ends the copy's sync state.
enum class ReplErrc { kInvalid, kUnknownCopy, kState };
using ReplError = core::Error<ReplErrc>;
template <class T>
using ReplResult = core::Result<T, ReplError>;

}  // namespace tandem::backend::repl
