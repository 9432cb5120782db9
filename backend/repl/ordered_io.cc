#include "backend/repl/ordered_io.h"

namespace tandem::backend::repl {

bool OrderedIo::blocked(size_t index) const {
  const Entry& e = q_[index];
  for (size_t i = 0; i < index; ++i) {
    const Entry& p = q_[i];
    if (p.done) continue;
    if (e.barrier) return true;
    if (p.barrier) continue;  // later ops never wait for a flush
    if (p.lba < e.lba + e.blocks && e.lba < p.lba + p.blocks) return true;
  }
  return false;
}

bool OrderedIo::add(uint64_t tag, uint64_t lba, uint64_t blocks, bool barrier) {
  q_.push_back(Entry{tag, lba, blocks, barrier, false, false});
  if (blocked(q_.size() - 1)) return false;
  q_.back().issued = true;
  return true;
}

std::vector<uint64_t> OrderedIo::complete(uint64_t tag) {
  std::vector<uint64_t> released;
  bool found = false;
  for (Entry& e : q_) {
    if (e.tag == tag && e.issued && !e.done) {
      e.done = true;
      found = true;
      break;
    }
  }
  if (!found) return released;
  while (!q_.empty() && q_.front().done) q_.pop_front();
  for (size_t i = 0; i < q_.size(); ++i) {
    if (q_[i].issued || blocked(i)) continue;
    q_[i].issued = true;
    released.push_back(q_[i].tag);
  }
  return released;
}

}  // namespace tandem::backend::repl
