// FileStore: the sparse files that hold a node's copies, `<dir>/<volume-id>.img`.
// Stateless apart from the directory; safe from any thread for distinct volume ids.
#pragma once

#include <cstdint>
#include <string>

#include "core/result.h"

namespace tandem::backend {

enum class StoreErrc { kIo, kNoSpace, kExists, kNotFound, kShrink };
using StoreError = core::Error<StoreErrc>;
template <class T>
using StoreResult = core::Result<T, StoreError>;

class FileStore {
 public:
  explicit FileStore(std::string dir) : dir_(std::move(dir)) {}

  // Creates the directory if needed.
  StoreResult<void> init() const;
  std::string path_of(const std::string& volume_id) const;
  // A new sparse file of exactly `bytes`; no blocks allocated.
  StoreResult<void> create(const std::string& volume_id, uint64_t bytes) const;
  // Grows the file; shrinking is refused.
  StoreResult<void> grow(const std::string& volume_id, uint64_t bytes) const;
  StoreResult<void> remove(const std::string& volume_id) const;
  bool exists(const std::string& volume_id) const;
  // Bytes free on the filesystem holding the directory, and its total size.
  StoreResult<uint64_t> free_bytes() const;
  StoreResult<uint64_t> total_bytes() const;

 private:
  std::string dir_;
};

}  // namespace tandem::backend
