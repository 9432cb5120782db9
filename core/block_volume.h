// BlockVolume: the one interface where the iSCSI target (target/) meets storage (backend/).
// The target never knows whether a volume is a local file, a replicated master or a forwarder.
//
// Threading: every I/O call returns at once; its completion callback runs later on a thread
// owned by the implementation (never inside the call for real backends, though test doubles
// may complete inline), except inside an InlineCompletionScope (below). Callers must keep the
// buffers they pass alive until the callback runs and must post the callback's work back to
// their own strand. Implementations keep writes to overlapping ranges in submission order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace tandem::core {

// What the volume may serve right now (DESIGN.md, failure modes).
enum class VolumeState {
  kHealthy,   // reads and writes
  kDegraded,  // reads and writes, fewer copies than declared
  kReadOnly,  // writes refused: DATA PROTECT / WRITE PROTECTED
  kHalted,    // writes refused: NOT READY
  kOffline,   // nothing served
};

const char* to_string(VolumeState s);

// Outcome of one I/O. The target maps these to SCSI sense data.
enum class IoStatus {
  kOk,
  kMediumError,   // the store failed (EIO)
  kWriteProtected,  // volume is read-only
  kNotReady,      // volume halted or offline
  kOutOfRange,    // LBA range beyond capacity (caller should have checked)
  kMiscompare,    // COMPARE AND WRITE: compare data differs
  kNoSpace,       // ENOSPC on the backing store
};

struct IoResult {
  IoStatus status = IoStatus::kOk;
  // COMPARE AND WRITE: byte offset of the first differing byte when status == kMiscompare.
  uint64_t miscompare_offset = 0;
  bool ok() const { return status == IoStatus::kOk; }
};

// A run of blocks with one provisioning status (GET LBA STATUS, SBC-3 5.8).
struct LbaExtent {
  uint64_t lba = 0;
  uint64_t blocks = 0;
  bool mapped = true;
};

class BlockVolume {
 public:
  using Done = std::function<void(IoResult)>;
  using ExtentsDone = std::function<void(IoResult, std::vector<LbaExtent>)>;

  virtual ~BlockVolume() = default;

  // Stable identity: the volume UUID (used for VPD 0x83 and the serial number).
  virtual const std::string& uuid() const = 0;
  virtual uint32_t block_size() const = 0;
  virtual uint64_t block_count() const = 0;
  virtual VolumeState state() const = 0;

  // out.size() must equal blocks * block_size().
  virtual void read(uint64_t lba, std::span<std::byte> out, Done done) = 0;
  // data.size() is a whole number of blocks. fua: stable before done runs.
  virtual void write(uint64_t lba, std::span<const std::byte> data, bool fua, Done done) = 0;
  // Everything acknowledged so far reaches stable storage.
  virtual void flush(Done done) = 0;
  // Deallocate blocks; they read back as zeros afterwards.
  virtual void unmap(uint64_t lba, uint64_t blocks, Done done) = 0;
  // Atomically: if the range equals `compare`, write `data` (same size); else kMiscompare.
  virtual void compare_and_write(uint64_t lba, std::span<const std::byte> compare,
                                 std::span<const std::byte> data, bool fua, Done done) = 0;
  // Provisioning status starting at lba, covering at most max_blocks.
  virtual void lba_status(uint64_t lba, uint64_t max_blocks, ExtentsDone done) = 0;
};

// A caller whose completions only post work to its own strand (the iSCSI connection) opens
// this scope around its I/O calls to let an implementation complete a call inside it when
// that cannot block: FileVolume serves a read from the page cache with RWF_NOWAIT instead of
// waking a pool thread and having it wake the caller again. Outside a scope (e.g. on a
// replication engine's strand) nothing changes. Per thread; scopes nest.
class InlineCompletionScope {
 public:
  InlineCompletionScope() { ++depth_; }
  ~InlineCompletionScope() { --depth_; }
  InlineCompletionScope(const InlineCompletionScope&) = delete;
  InlineCompletionScope& operator=(const InlineCompletionScope&) = delete;
  static bool active() { return depth_ > 0; }

 private:
  static thread_local int depth_;
};

}  // namespace tandem::core
