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
