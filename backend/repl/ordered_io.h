// OrderedIo: the local-store issue order of one copy. Operations are added in replication
// order (sequence order); one may be handed to the store only when no earlier, unfinished
// operation overlaps its block range, so a store that completes in any order still ends up
// as if it applied everything in sequence order. Barriers (flush) wait for every earlier
// operation; later operations do not wait for a barrier. Owned by one engine; not
// thread-safe. Cost is O(n) per add and O(n^2) per completion for n unfinished operations,
// which the engines bound (queue depth / resync window).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <vector>

namespace tandem::backend::repl {

class OrderedIo {
 public:
  // Appends an operation after every one added before. Returns true when it may be issued
  // now (the caller issues it), false when it must wait (complete() will release it).
  bool add(uint64_t tag, uint64_t lba, uint64_t blocks, bool barrier);
  // Marks `tag` finished. Returns the tags that became issuable, in order of addition.
  // An unknown tag returns nothing.
  std::vector<uint64_t> complete(uint64_t tag);
  // Forgets everything (the copy restarted its store state).
  void clear() { q_.clear(); }
  size_t size() const { return q_.size(); }

 private:
  struct Entry {
    uint64_t tag;
    uint64_t lba;
    uint64_t blocks;
    bool barrier;
    bool issued;
    bool done;
  };
  bool blocked(size_t index) const;

  std::deque<Entry> q_;
};

}  // namespace tandem::backend::repl
