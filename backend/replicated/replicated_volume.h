// ReplicatedVolume: the master copy of one volume as the iSCSI target sees it (a
// core::BlockVolume). It runs the pure MasterEngine on one strand and carries out its
// actions: local store operations on the node's FileVolume (a small write is written on the
// strand itself, see store_ops.h runs_inline; the rest on the store pool), frames to each replica
// over its own PeerLink (mutual TLS on tcp/5703, lz4 per the volume's label), completions to the
// target, out-of-sync reports to the control plane. The links run on the volume's strand, so
// an ACK is handled where it is read; a write's payload is encoded (lz4, CRC) once and the
// same bytes are queued on every replica's link.
//
// Solo mode: with no replicas, I/O goes straight to the FileVolume (no engine, no region
// map: the replicated path costs nothing until it is used). The first replica switches the
// volume over on the strand: new requests wait, direct I/O in flight drains, the region map
// is opened (or, when the volume was served solo, rebuilt from the file's allocated extents
// at a fresh sequence, so a new replica is sent exactly the regions ever written) and the
// engine starts. Removing the last replica switches back once the engine is idle, and
// deletes the map (it stops being maintained).
//
// Sequences survive restarts through a small reservation file (blocks of 2^20, fdatasync'd
// before use), so a restarted master never reuses a sequence a replica may have applied.
//
// Owner: the daemon's volume host (shared_ptr; I/O callbacks hold references). Thread-safe:
// every public call may come from any thread. Completion callbacks run on the volume's strand
// or on store threads. The io_context, ssl::context and the FileVolume's IoPool must outlive
// the volume; the io_context must run until close() has called back.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backend/link/link_types.h"
#include "backend/store/file_volume.h"
#include "backend/wire/frame.h"
#include "core/block_volume.h"
#include "core/result.h"
#include "core/volume_spec.h"

namespace boost::asio {
class io_context;
namespace ssl {
class context;
}  // namespace ssl
}  // namespace boost::asio

namespace tandem::backend::replicated {

// One replica of the volume as the control plane places it.
struct ReplicaPeer {
  uint32_t copy = 0;      // the copy number on the wire (catalogue copies.number)
  std::string node_name;  // the peer's certificate CN
  std::string host;       // replication endpoint
  uint16_t port = 5703;
  bool in_sync = false;  // the catalogue says it holds exactly the master's data
  bool operator==(const ReplicaPeer&) const = default;
};

// A copy as the API reports it (the master's view of each replica).
struct CopyStatus {
  uint32_t copy = 0;
  std::string node_name;
  std::string state;  // in-sync | syncing | out-of-sync
  bool link_up = false;
  uint64_t applied_seq = 0;
  uint64_t behind_bytes = 0;
  uint64_t sync_done_bytes = 0;
  uint64_t sync_total_bytes = 0;
};

struct ReplicatedStats {
  std::atomic<uint64_t> replicated_writes{0};
  std::atomic<uint64_t> direct_writes{0};
};

class ReplicatedVolume : public core::BlockVolume,
                         public std::enable_shared_from_this<ReplicatedVolume> {
 public:
  struct Options {
    std::string uuid;  // catalogue id (text form)
    uint64_t generation = 1;
    // Sequences this master assigns start above this (a promoted master starts above every
    // sequence an earlier master could have used: the volume host passes generation << 40).
    uint64_t min_sequence = 0;
    bool compress = true;
    std::string image_path;  // the FileVolume's file (read for allocated extents)
    std::string map_path;    // region map file
    std::string seq_path;    // sequence reservation file
    wire::Hello hello;       // this node's HELLO on outbound links
    std::shared_ptr<link::LinkMetrics> link_metrics;
    // A copy that was in sync dropped out: record it in the catalogue, then call
    // confirm_out_of_sync(copy). Writes wait for that (no acknowledged write may be missing
    // from a copy the catalogue still calls in sync). Called on the strand: hand off, do not
    // block.
    std::function<void(uint32_t copy, const std::string& reason)> on_out_of_sync;
    // A copy changed state (in sync, syncing...): report soon. Called on the strand.
    std::function<void()> on_change;
    // Round trip of each replicated write (seconds), for the latency histogram.
    std::function<void(double)> observe_write;
    std::chrono::milliseconds tick{250};  // resync starts, status snapshots
    // Resync reads (what a syncing replica is sent) at most this many bytes per second, so
    // a resync leaves room for application I/O; 0: unlimited.
    uint64_t resync_bytes_per_second = 0;
    // While the lease is lapsed, requests wait this long for a renewal before they are
    // answered NOT READY (under an initiator's usual 30 s command timeout).
    std::chrono::milliseconds lease_hold{20'000};
    // A replica link that reads nothing this long is down (its copy drops out of sync and
    // writes go on without it); the link sends heartbeats every quarter of it when idle.
    std::chrono::milliseconds link_timeout{5'000};
  };

  static core::Result<std::shared_ptr<ReplicatedVolume>, std::string> open(
      boost::asio::io_context& io, boost::asio::ssl::context& tls,
      std::shared_ptr<FileVolume> local, Options options);
  ~ReplicatedVolume() override;

  // The replica set the catalogue wants now: adds links for new copies, removes the others.
  void set_peers(std::vector<ReplicaPeer> peers);
  void confirm_out_of_sync(uint32_t copy);
  // The volume's failure mode (labels): with fewer in-sync replicas than it needs for longer
  // than `grace`, writes are refused (hard: read-only, DATA PROTECT, until the replicas are
  // back AND an initiator logs in again; soft/threshold: NOT READY until enough are back).
  void set_policy(core::FailureMode mode, int replicas, int threshold,
                  std::chrono::milliseconds grace);
  // An initiator logged in to the volume (releases hard mode's read-only latch once the
  // replicas are back).
  void note_login();
  // The master lease lapsed (true) or was renewed (false). While fenced nothing is
  // acknowledged, since another node may be promoted in the meantime: new requests and
  // completions are held, in order, and go on when the lease is renewed (a controller
  // restart is a delay, not an error); after Options::lease_hold, or at close() (deposed),
  // they are answered NOT READY. The caller renews only once the cluster state that came
  // with the renewal is applied, so a deposed master is closed before anything is released.
  void set_fenced(bool fenced);
  // Once closed, requests go to `next` (a deposed master's node forwards to the new master:
  // sessions that logged in while it was master keep working); until then, or without one,
  // they are answered NOT READY.
  void set_successor(std::shared_ptr<core::BlockVolume> next);
  bool fenced() const;
  // The image file grew (volumes without replicas: the engine is sized at start).
  void refresh_capacity();
  // The volume's tandem/compression label changed.
  void set_compression(bool on);
  // Snapshot for reports (thread-safe; refreshed on the strand every tick and on changes).
  std::vector<CopyStatus> copy_status() const;
  uint64_t last_sequence() const;
  // Stops: links close, requests still waiting fail kNotReady, later ones too. `done` runs
  // once every link has closed.
  void close(std::function<void()> done);
  const ReplicatedStats& stats() const;

  const std::string& uuid() const override;
  uint32_t block_size() const override;
  uint64_t block_count() const override;
  core::VolumeState state() const override;

  void read(uint64_t lba, std::span<std::byte> out, Done done) override;
  void write(uint64_t lba, std::span<const std::byte> data, bool fua, Done done) override;
  void flush(Done done) override;
  void unmap(uint64_t lba, uint64_t blocks, Done done) override;
  void compare_and_write(uint64_t lba, std::span<const std::byte> compare,
                         std::span<const std::byte> data, bool fua, Done done) override;
  void lba_status(uint64_t lba, uint64_t max_blocks, ExtentsDone done) override;

  struct Impl;

 private:
  explicit ReplicatedVolume(std::unique_ptr<Impl> impl);
  // Solo path: true if `op` was handed `done` (wrapped) and runs on the local store.
  bool try_direct(const std::function<void(Done)>& op, Done& done);
  std::shared_ptr<core::BlockVolume> successor() const;  // set and closed: who serves now
  // Parks a request that arrived while fenced (set_fenced); `retry` re-issues it.
  void hold(std::function<void(Done)> retry, Done done);
  void direct_done();
  std::unique_ptr<Impl> impl_;
};

// The allocated extents of a file (SEEK_DATA / SEEK_HOLE), in bytes: what a volume served
// without a region map may have written.
std::vector<std::pair<uint64_t, uint64_t>> allocated_extents(int fd, uint64_t size);

}  // namespace tandem::backend::replicated
