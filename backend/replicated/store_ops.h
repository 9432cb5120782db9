// Runs one engine StoreOp on a node's FileVolume: the one place where the master and replica
// shells turn engine store operations into BlockVolume calls. The payload of a write is kept
// alive until `done` runs (on a store thread); a read hands its bytes to `done`.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "backend/repl/engine_types.h"
#include "backend/store/file_volume.h"

namespace tandem::backend::replicated {

// A write small enough to apply on the calling thread (FileVolume::write_now): a page-cache
// copy of at most kInlineWriteMax costs less than the hand-off to a store thread and back.
// FUA writes (a sync) and everything else go to the pool (run_store_op).
inline bool runs_inline(const repl::StoreOp& op) {
  return op.kind == repl::StoreKind::kWrite && !op.fua && op.data &&
         op.data->size() <= FileVolume::kInlineWriteMax;
}

inline core::IoResult run_inline(FileVolume& local, const repl::StoreOp& op) {
  return local.write_now(op.lba, std::as_bytes(std::span(*op.data)));
}

inline void run_store_op(FileVolume& local, const repl::StoreOp& op,
                         std::function<void(core::IoResult, repl::Payload)> done) {
  switch (op.kind) {
    case repl::StoreKind::kWrite: {
      auto data = op.data;
      local.write(op.lba, std::as_bytes(std::span(*data)), op.fua,
                  [done, data](core::IoResult r) { done(r, nullptr); });
      return;
    }
    case repl::StoreKind::kUnmap:
      local.unmap(op.lba, op.blocks, [done](core::IoResult r) { done(r, nullptr); });
      return;
    case repl::StoreKind::kFlush:
      local.flush([done](core::IoResult r) { done(r, nullptr); });
      return;
    case repl::StoreKind::kRead: {
      auto buf = std::make_shared<std::vector<uint8_t>>(op.blocks * local.block_size());
      local.read(op.lba, std::as_writable_bytes(std::span(*buf)), [done, buf](core::IoResult r) {
        done(r, std::shared_ptr<const std::vector<uint8_t>>(buf));
      });
      return;
    }
  }
}

}  // namespace tandem::backend::replicated
