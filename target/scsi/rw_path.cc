// Medium-access commands (SBC-3 5.x): READ, WRITE, WRITE AND VERIFY, VERIFY, SYNCHRONIZE
// CACHE, PRE-FETCH, UNMAP, WRITE SAME, COMPARE AND WRITE, ORWRITE, GET LBA STATUS. Every CDB
// and Data-Out length is checked before a buffer is sized or a backend call is made.
#include <algorithm>
#include <atomic>
#include <cstring>

#include "target/scsi/logical_unit.h"

namespace tandem::target::scsi {
namespace {

using core::IoResult;
using core::IoStatus;

// Backend outcome -> sense (DESIGN.md failure modes; SBC-3 4.x, SPC-4 annex D).
Sense io_sense(const IoResult& r, bool write) {
  switch (r.status) {
    case IoStatus::kOk:
    case IoStatus::kMediumError:
      return make_sense(SenseKey::kMediumError, write ? kAscWriteError : kAscUnrecoveredReadError);
    case IoStatus::kWriteProtected:
      return make_sense(SenseKey::kDataProtect, kAscWriteProtected);
    case IoStatus::kNotReady:
      return make_sense(SenseKey::kNotReady, kAscNotReadyBecomingReady);
    case IoStatus::kOutOfRange:
      return make_sense(SenseKey::kIllegalRequest, kAscLbaOutOfRange);
    case IoStatus::kMiscompare: {
      Sense s = make_sense(SenseKey::kMiscompare, kAscMiscompareDuringVerify);
      s.information = static_cast<uint32_t>(r.miscompare_offset);
      return s;
    }
    case IoStatus::kNoSpace:
      return make_sense(SenseKey::kDataProtect, kAscSpaceAllocationFailedWriteProtect);
  }
  return make_sense(SenseKey::kMediumError, write ? kAscWriteError : kAscUnrecoveredReadError);
}

Sense lba_out_of_range() { return make_sense(SenseKey::kIllegalRequest, kAscLbaOutOfRange); }

// Byte offset of the TRANSFER LENGTH field, for the sense field pointer.
uint16_t length_field(uint8_t opcode) {
  switch (cdb_length(opcode)) {
    case 6:
      return 4;
    case 10:
      return 7;
    case 12:
      return 6;
    default:
      return 10;
  }
}

// Blocks a WRITE or WRITE AND VERIFY stores: TRANSFER LENGTH, or fewer when the initiator's
// Expected Data Transfer Length cut the Data-Out short. Then only the whole blocks that
// arrived are written, never a partial one, and the command completes with GOOD while the
// transport reports the residual overflow from ScsiResult::cdb_transfer_length (RFC 7143
// 11.4.5.1; libiscsi iSCSIResiduals expects exactly this).
size_t data_out_blocks(const Command& cmd, uint32_t blocks, uint32_t block_size) {
  return std::min<size_t>(blocks, cmd.data_out().size() / block_size);
}

// RDPROTECT / WRPROTECT / VRPROTECT must be zero: no protection information (SBC-3 5.x).
bool protect_field_set(const Cdb& cdb) { return cdb_length(cdb[0]) > 6 && (cdb[1] & 0xE0) != 0; }

// Runs `count` backend operations one after another, stopping at the first failure. A
// trampoline: backends that complete inline (test doubles) do not grow the stack.
class Chain : public std::enable_shared_from_this<Chain> {
 public:
  using Op = std::function<void(size_t index, core::BlockVolume::Done)>;
  Chain(size_t count, Op op, std::function<void(IoResult)> finish)
      : count_(count), op_(std::move(op)), finish_(std::move(finish)) {}

  void start() { next(); }

 private:
  enum : int { kIssuing, kWaiting, kDoneInline };

  void next() {
    while (true) {
      if (index_ == count_) return finish_(IoResult{});
      const size_t i = index_++;
      state_.store(kIssuing);
      op_(i, [self = shared_from_this()](IoResult r) { self->on_done(r); });
      int expected = kIssuing;
      if (state_.compare_exchange_strong(expected, kWaiting)) return;  // completes later
      if (!last_.ok()) return finish_(last_);
    }
  }

  void on_done(IoResult r) {
    last_ = r;
    int expected = kIssuing;
    if (state_.compare_exchange_strong(expected, kDoneInline)) return;  // next() continues
    if (!r.ok()) return finish_(r);
    next();
  }

  size_t count_;
  size_t index_ = 0;
  Op op_;
  std::function<void(IoResult)> finish_;
  std::atomic<int> state_{kIssuing};
  IoResult last_;
};

// ORWRITE (SBC-3 5.10) as an optimistic read-modify-write: read the blocks, OR the Data-Out
// into them, and store the result with the backend's atomic COMPARE AND WRITE against what
// was read. The result is atomic against every other writer of the volume (any logical unit,
// any node), because a write landing between the read and the store makes the compare fail;
// the cycle then starts again. Limits: each attempt costs two reads and a write, and a range
// other writers keep changing gets BUSY status after kOrWriteAttempts attempts (SAM-5 5.3).
class OrWriteOp : public std::enable_shared_from_this<OrWriteOp> {
 public:
  OrWriteOp(std::shared_ptr<core::BlockVolume> volume, Command cmd, uint64_t lba, size_t bytes,
            bool fua)
      : volume_(std::move(volume)),
        cmd_(std::move(cmd)),
        lba_(lba),
        fua_(fua),
        current_(bytes),
        merged_(bytes) {}

  void start() { attempt(); }

 private:
  void attempt() {
    ++attempts_;
    volume_->read(lba_, current_, [self = shared_from_this()](IoResult io) { self->on_read(io); });
  }

  void on_read(IoResult io) {
    if (!io.ok()) return reply_sense(cmd_, io_sense(io, false));
    auto in = cmd_.data_out();
    for (size_t i = 0; i < merged_.size(); ++i) merged_[i] = current_[i] | in[i];
    volume_->compare_and_write(lba_, current_, merged_, fua_,
                               [self = shared_from_this()](IoResult r) { self->on_store(r); });
  }

  void on_store(IoResult io) {
    if (io.status == IoStatus::kMiscompare) {
      if (attempts_ < kOrWriteAttempts) return attempt();
      return reply_busy(cmd_);
    }
    if (!io.ok()) return reply_sense(cmd_, io_sense(io, true));
    reply_good(cmd_);
  }

  std::shared_ptr<core::BlockVolume> volume_;
  Command cmd_;
  uint64_t lba_;
  bool fua_;
  int attempts_ = 0;
  std::vector<std::byte> current_;
  std::vector<std::byte> merged_;
};

}  // namespace

void LogicalUnit::read(Command& cmd) {
  const Cdb& cdb = cmd.cdb();
  if (protect_field_set(cdb)) return reply_sense(cmd, invalid_field_in_cdb(1, 7));
  if (auto s = check_readable()) return reply_sense(cmd, *s);
  const LbaRange r = decode_lba_range(cdb);
  const uint32_t bs = volume_->block_size();
  if (!range_ok(r.lba, r.blocks, volume_->block_count()))
    return reply_sense(cmd, lba_out_of_range());
  if (r.blocks > max_transfer_blocks(bs))
    return reply_sense(cmd, invalid_field_in_cdb(length_field(cdb[0])));
  if (r.blocks == 0) return reply_good(cmd);  // SBC-3 5.11: not an error
  auto result = std::make_shared<ScsiResult>();
  result->data_in.resize(static_cast<size_t>(r.blocks) * bs);
  volume_->read(r.lba, result->data_in, [cmd, result](IoResult io) mutable {
    if (!io.ok()) return reply_sense(cmd, io_sense(io, false));
    cmd.done(std::move(*result));
  });
}

// The checks every medium-writing command with an LBA and a transfer length starts with
// (SBC-3 4.x): no protection information, a writable volume, the range inside the medium and
// within MAXIMUM TRANSFER LENGTH. Answers the command and returns nullopt when one fails.
std::optional<LbaRange> LogicalUnit::checked_write_range(Command& cmd) {
  const Cdb& cdb = cmd.cdb();
  if (protect_field_set(cdb)) {
    reply_sense(cmd, invalid_field_in_cdb(1, 7));
    return std::nullopt;
  }
  if (auto s = check_writable()) {
    reply_sense(cmd, *s);
    return std::nullopt;
  }
  const LbaRange r = decode_lba_range(cdb);
  if (!range_ok(r.lba, r.blocks, volume_->block_count())) {
    reply_sense(cmd, lba_out_of_range());
    return std::nullopt;
  }
  if (r.blocks > max_transfer_blocks(volume_->block_size())) {
    reply_sense(cmd, invalid_field_in_cdb(length_field(cdb[0])));
    return std::nullopt;
  }
  return r;
}

// Writes the whole blocks of Data-Out that arrived (a shortfall is the transport's residual).
void LogicalUnit::write_blocks(Command& cmd, const LbaRange& r, bool fua) {
  const uint32_t bs = volume_->block_size();
  const size_t bytes = data_out_blocks(cmd, r.blocks, bs) * bs;
  if (bytes == 0) return reply_good(cmd);
  volume_->write(r.lba, cmd.data_out().first(bytes), fua, [cmd](IoResult io) mutable {
    if (!io.ok()) return reply_sense(cmd, io_sense(io, true));
    reply_good(cmd);
  });
}

void LogicalUnit::write(Command& cmd) {
  auto r = checked_write_range(cmd);
  if (!r) return;
  const Cdb& cdb = cmd.cdb();
  write_blocks(cmd, *r, (cdb_length(cdb[0]) > 6 && (cdb[1] & 0x08)) || !write_cache_enabled());
}

void LogicalUnit::write_and_verify(Command& cmd) {
  // SBC-3 5.32: the data are written and then verified on the medium. The backend's FUA
  // write is only acknowledged once stable on every copy, which is that verification; with
  // BYTCHK = 1 the comparison against the Data-Out buffer would compare the same bytes.
  auto r = checked_write_range(cmd);
  if (!r) return;
  write_blocks(cmd, *r, true);
}

void LogicalUnit::verify(Command& cmd) {
  // SBC-3 5.29: BYTCHK 00b verifies the medium only; 01b compares with the Data-Out
  // buffer; 11b compares one Data-Out block with every block (SBC-4); 10b is reserved.
  const Cdb& cdb = cmd.cdb();
  if (protect_field_set(cdb)) return reply_sense(cmd, invalid_field_in_cdb(1, 7));
  const uint8_t bytchk = (cdb[1] >> 1) & 0x03;
  if (bytchk == 2) return reply_sense(cmd, invalid_field_in_cdb(1, 2));
  if (auto s = check_readable()) return reply_sense(cmd, *s);
  const LbaRange r = decode_lba_range(cdb);
  const uint32_t bs = volume_->block_size();
  if (!range_ok(r.lba, r.blocks, volume_->block_count()))
    return reply_sense(cmd, lba_out_of_range());
  if (r.blocks > max_transfer_blocks(bs))
    return reply_sense(cmd, invalid_field_in_cdb(length_field(cdb[0])));
  if (r.blocks == 0 || bytchk == 0) return reply_good(cmd);
  const size_t bytes = static_cast<size_t>(r.blocks) * bs;
  const size_t expected_out = bytchk == 1 ? bytes : bs;
  if (cmd.data_out().size() < expected_out) {
    return reply_sense(cmd, invalid_field_in_cdb(length_field(cdb[0])));
  }
  auto buf = std::make_shared<std::vector<std::byte>>(bytes);
  volume_->read(r.lba, *buf, [cmd, buf, bytchk, bs](IoResult io) mutable {
    if (!io.ok()) return reply_sense(cmd, io_sense(io, false));
    auto out = cmd.data_out();
    for (size_t i = 0; i < buf->size(); ++i) {
      const std::byte want = bytchk == 1 ? out[i] : out[i % bs];
      if ((*buf)[i] != want) {
        // INFORMATION: offset of the first miscompared byte (SBC-3 5.29).
        Sense s = make_sense(SenseKey::kMiscompare, kAscMiscompareDuringVerify);
        s.information = static_cast<uint32_t>(i);
        return reply_sense(cmd, s);
      }
    }
    reply_good(cmd);
  });
}

void LogicalUnit::synchronize_cache(Command& cmd) {
  // SBC-3 5.22/5.23: the range is checked, then everything is flushed (IMMED is honoured by
  // completing after the flush anyway, which is allowed).
  const Cdb& cdb = cmd.cdb();
  if (auto s = check_readable()) return reply_sense(cmd, *s);
  const LbaRange r = decode_lba_range(cdb);
  if (!range_ok(r.lba, r.blocks, volume_->block_count()))
    return reply_sense(cmd, lba_out_of_range());
  volume_->flush([cmd](IoResult io) mutable {
    if (!io.ok()) return reply_sense(cmd, io_sense(io, true));
    reply_good(cmd);
  });
}

void LogicalUnit::pre_fetch(Command& cmd) {
  // SBC-3 5.9: there is no cache to load, so the blocks are never "in cache": GOOD, not
  // CONDITION MET.
  const Cdb& cdb = cmd.cdb();
  if (auto s = check_readable()) return reply_sense(cmd, *s);
  const LbaRange r = decode_lba_range(cdb);
  if (!range_ok(r.lba, r.blocks, volume_->block_count()))
    return reply_sense(cmd, lba_out_of_range());
  reply_good(cmd);
}

void LogicalUnit::unmap(Command& cmd) {
  // SBC-3 5.28, 5.28.2 (parameter list).
  const Cdb& cdb = cmd.cdb();
  if (cdb[1] & 0x01) return reply_sense(cmd, invalid_field_in_cdb(1, 0));  // ANCHOR: ANC_SUP = 0
  if (auto s = check_writable()) return reply_sense(cmd, *s);
  const uint32_t list_len = get_be16(&cdb[7]);
  if (list_len == 0) return reply_good(cmd);
  if (list_len < 8 || cmd.data_out().size() < list_len) {
    return reply_sense(cmd, parameter_list_length_error());
  }
  const uint8_t* p = as_u8(cmd.data_out());
  const uint32_t bd_len = get_be16(&p[2]);
  if (bd_len > list_len - 8) return reply_sense(cmd, parameter_list_length_error());
  const size_t count = bd_len / 16;  // a trailing partial descriptor is ignored
  if (count > kMaxUnmapDescriptors) return reply_sense(cmd, invalid_field_in_parameter_list(2));
  struct Extent {
    uint64_t lba;
    uint32_t blocks;
  };
  auto extents = std::make_shared<std::vector<Extent>>();
  const uint64_t capacity = volume_->block_count();
  const uint64_t limit = max_unmap_blocks(volume_->block_size());
  uint64_t total = 0;
  for (size_t i = 0; i < count; ++i) {
    const uint8_t* d = p + 8 + 16 * i;
    Extent e{get_be64(d), get_be32(d + 8)};
    if (!range_ok(e.lba, e.blocks, capacity)) return reply_sense(cmd, lba_out_of_range());
    total += e.blocks;
    if (total > limit)
      return reply_sense(cmd, invalid_field_in_parameter_list(static_cast<uint16_t>(16 + 16 * i)));
    if (e.blocks != 0) extents->push_back(e);
  }
  auto volume = volume_;
  auto chain = std::make_shared<Chain>(
      extents->size(),
      [volume, extents](size_t i, core::BlockVolume::Done done) {
        volume->unmap((*extents)[i].lba, (*extents)[i].blocks, std::move(done));
      },
      [cmd](IoResult io) mutable {
        if (!io.ok()) return reply_sense(cmd, io_sense(io, true));
        reply_good(cmd);
      });
  chain->start();
}

void LogicalUnit::write_same(Command& cmd) {
  // SBC-3 5.42/5.43 with SBC-4 NDOB. WSNZ = 0: NUMBER OF LOGICAL BLOCKS = 0 covers every LBA
  // from LOGICAL BLOCK ADDRESS to the end of the medium (SBC-3 5.42), which must then fit
  // MAXIMUM WRITE SAME LENGTH like any other count (SBC-3 6.6.4). The LBA is checked first:
  // libiscsi expects LBA OUT OF RANGE before anything about the length.
  const Cdb& cdb = cmd.cdb();
  const bool sixteen = cdb[0] == op::kWriteSame16;
  if (protect_field_set(cdb)) return reply_sense(cmd, invalid_field_in_cdb(1, 7));
  if (cdb[1] & 0x10) return reply_sense(cmd, invalid_field_in_cdb(1, 4));  // ANCHOR
  const bool unmap_bit = cdb[1] & 0x08;
  const bool ndob = sixteen && (cdb[1] & 0x01);
  if (auto s = check_writable()) return reply_sense(cmd, *s);
  const LbaRange r = decode_lba_range(cdb);
  const uint32_t bs = volume_->block_size();
  const uint64_t capacity = volume_->block_count();
  if (!range_ok(r.lba, r.blocks, capacity) || (r.blocks == 0 && r.lba >= capacity))
    return reply_sense(cmd, lba_out_of_range());
  const uint64_t blocks = r.blocks != 0 ? r.blocks : capacity - r.lba;
  if (blocks > max_write_same_blocks(bs))
    return reply_sense(cmd, invalid_field_in_cdb(length_field(cdb[0])));
  // The Data-Out buffer is exactly one logical block, or empty with NDOB (SBC-4 WRITE
  // SAME (16)): any other size means the initiator and the CDB disagree, so nothing is
  // written (libiscsi WriteSame10/16.InvalidDataOutSize).
  if (cmd.data_out().size() != (ndob ? 0u : bs))
    return reply_sense(cmd, invalid_field_in_cdb(length_field(cdb[0])));
  auto pattern = ndob ? std::span<const std::byte>() : cmd.data_out().first(bs);
  const bool zeros = ndob || std::all_of(pattern.begin(), pattern.end(),
                                         [](std::byte b) { return b == std::byte{0}; });
  auto on_done = [cmd](IoResult io) mutable {
    if (!io.ok()) return reply_sense(cmd, io_sense(io, true));
    reply_good(cmd);
  };
  if (unmap_bit) {
    // UNMAP = 1 requests deallocation (SBC-3 5.42/5.43); the Data-Out block is only
    // what a device server that cannot unmap would write, so it is not written here,
    // whatever it holds. LBPRZ = 1: the LBAs then read back as zeros (libiscsi's
    // UnmapUntilEnd checks exactly that after sending 0xFF blocks). Ranges need not be
    // aligned to the 4 KiB physical block: the backend zeroes partial ones.
    return volume_->unmap(r.lba, blocks, std::move(on_done));
  }
  // Write the block repeated, through one bounded buffer reused for every chunk.
  const uint32_t chunk_blocks = static_cast<uint32_t>(
      std::max<uint64_t>(1, std::min<uint64_t>(blocks, kWriteSameChunkBytes / bs)));
  auto buf = std::make_shared<std::vector<std::byte>>(static_cast<size_t>(chunk_blocks) * bs);
  if (!zeros) {
    for (uint32_t i = 0; i < chunk_blocks; ++i) {
      std::memcpy(buf->data() + static_cast<size_t>(i) * bs, pattern.data(), bs);
    }
  }
  const bool fua = !write_cache_enabled();
  const size_t chunks = static_cast<size_t>((blocks + chunk_blocks - 1) / chunk_blocks);
  auto volume = volume_;
  const uint64_t lba = r.lba;
  auto chain = std::make_shared<Chain>(
      chunks,
      [volume, buf, lba, blocks, chunk_blocks, bs, fua](size_t i, core::BlockVolume::Done done) {
        const uint64_t first = static_cast<uint64_t>(i) * chunk_blocks;
        const uint64_t n = std::min<uint64_t>(chunk_blocks, blocks - first);
        volume->write(lba + first,
                      std::span<const std::byte>(*buf).first(static_cast<size_t>(n) * bs), fua,
                      std::move(done));
      },
      std::move(on_done));
  chain->start();
}

void LogicalUnit::compare_and_write(Command& cmd) {
  // SBC-3 5.2: Data-Out holds the verify data then the write data, NUMBER OF LOGICAL BLOCKS
  // each. The backend performs the compare and the write atomically.
  const Cdb& cdb = cmd.cdb();
  if (protect_field_set(cdb)) return reply_sense(cmd, invalid_field_in_cdb(1, 7));
  if (auto s = check_writable()) return reply_sense(cmd, *s);
  const LbaRange r = decode_lba_range(cdb);
  const uint32_t bs = volume_->block_size();
  if (!range_ok(r.lba, r.blocks, volume_->block_count()))
    return reply_sense(cmd, lba_out_of_range());
  if (r.blocks > kMaxCompareAndWriteBlocks) return reply_sense(cmd, invalid_field_in_cdb(13));
  // The Data-Out buffer must be exactly twice NUMBER OF LOGICAL BLOCKS: a mismatch (say 256
  // blocks whose one-byte count wrapped to 0, or a count edited after the data were sized)
  // is refused rather than compared or written in part.
  const size_t half = static_cast<size_t>(r.blocks) * bs;
  if (cmd.data_out().size() != 2 * half) return reply_sense(cmd, invalid_field_in_cdb(13));
  if (r.blocks == 0) return reply_good(cmd);  // SBC-3 5.2: not an error
  const bool fua = (cdb[1] & 0x08) || !write_cache_enabled();
  volume_->compare_and_write(r.lba, cmd.data_out().first(half), cmd.data_out().subspan(half, half),
                             fua, [cmd](IoResult io) mutable {
                               if (!io.ok()) return reply_sense(cmd, io_sense(io, true));
                               reply_good(cmd);
                             });
}

void LogicalUnit::or_write(Command& cmd) {
  // SBC-3 5.10, ORWRITE(16): each Data-Out byte is ORed into the medium (BMOP 000b). No
  // protection information, so ORPROTECT must be zero. See OrWriteOp for atomicity.
  auto checked = checked_write_range(cmd);
  if (!checked) return;
  const LbaRange r = *checked;
  const Cdb& cdb = cmd.cdb();
  const uint32_t bs = volume_->block_size();
  if (r.blocks == 0) return reply_good(cmd);  // SBC-3 5.10: not an error
  const size_t bytes = static_cast<size_t>(r.blocks) * bs;
  if (cmd.data_out().size() < bytes)
    return reply_sense(cmd, invalid_field_in_cdb(length_field(cdb[0])));
  const bool fua = (cdb[1] & 0x08) || !write_cache_enabled();
  std::make_shared<OrWriteOp>(volume_, cmd, r.lba, bytes, fua)->start();
}

void LogicalUnit::get_lba_status(Command& cmd) {
  // SBC-3 5.6: descriptors starting at the requested LBA, as many as the allocation length
  // has room for.
  const Cdb& cdb = cmd.cdb();
  if (auto s = check_readable()) return reply_sense(cmd, *s);
  const uint64_t lba = get_be64(&cdb[2]);
  const uint32_t alloc = get_be32(&cdb[10]);
  const uint64_t capacity = volume_->block_count();
  if (lba >= capacity) return reply_sense(cmd, lba_out_of_range());
  const size_t max_desc = std::clamp<size_t>(alloc >= 8 ? (alloc - 8) / 16 : 0, 1, 1024);
  volume_->lba_status(
      lba, capacity - lba,
      [cmd, lba, capacity, alloc, max_desc](IoResult io, std::vector<core::LbaExtent> ext) mutable {
        if (!io.ok()) return reply_sense(cmd, io_sense(io, false));
        std::vector<uint8_t> d(8, 0);
        uint64_t next = lba;
        size_t n = 0;
        for (const auto& e : ext) {
          // Only contiguous extents from the requested LBA, within capacity.
          if (n == max_desc || e.lba != next || e.blocks == 0 || e.lba >= capacity) break;
          const uint64_t blocks = std::min<uint64_t>({e.blocks, capacity - e.lba, 0xFFFFFFFFull});
          append_be64(d, e.lba);
          append_be32(d, static_cast<uint32_t>(blocks));
          d.push_back(e.mapped ? 0x00 : 0x01);  // PROVISIONING STATUS
          d.insert(d.end(), 3, 0);
          next = e.lba + blocks;
          ++n;
        }
        if (n == 0) {  // backend said nothing useful: report mapped
          append_be64(d, lba);
          append_be32(d, static_cast<uint32_t>(std::min<uint64_t>(capacity - lba, 0xFFFFFFFFull)));
          d.insert(d.end(), 4, 0);
        }
        put_be32(&d[0], static_cast<uint32_t>(d.size() - 4));
        reply(cmd, d, alloc);
      });
}

}  // namespace tandem::target::scsi
