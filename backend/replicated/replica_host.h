// ReplicaCopy: one replica copy this node holds (volume uuid, copy number): the pure
// ReplicaEngine, its FileVolume and its persisted RegionMap, under one mutex. Frames come
// from whichever inbound connection the master uses and are applied on that connection's
// strand: a write of at most FileVolume::kInlineWriteMax (no FUA) is written there, larger
// ones and flushes go to the store pool. Replies go back on that connection; the ACKs of one
// socket read go out together at its end, as one cumulative ACK when the master's HELLO
// allows (wire::kFeatureAckThrough). A frame on a new connection ends the stream of the old
// one (the master reconnected): the copy waits for the master's SYNC_REQUEST, as after a
// restart.
//
// ReplicaHost: the node's FrameHandler on tcp/5703. Routes each frame by (volume, copy) to
// its ReplicaCopy, forwarded I/O requests to the I/O handler, and answers frames for copies
// this node does not hold with NACK kUnknownCopy.
//
// Owner: the daemon's volume host. Thread-safe (a mutex guards the routing table, another
// each copy). The FileVolume's IoPool must outlive them.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backend/link/link_server.h"
#include "backend/store/file_volume.h"
#include "backend/wire/frame.h"
#include "core/result.h"

namespace tandem::backend::replicated {

class ReplicaCopy : public std::enable_shared_from_this<ReplicaCopy> {
 public:
  struct Options {
    std::string uuid;  // volume id (text form)
    uint32_t copy = 0;
    uint64_t generation = 1;
    std::string map_path;
    // The image file was created just now (all zeros): with no map yet, every region is known
    // to be unwritten (seq 0) instead of unknown, so a resync sends only what the master wrote.
    bool fresh_file = false;
    // The catalogue records the copy in sync: with a fresh file and no map it holds exactly a
    // fresh master's data and streams from sequence 1 without a resync.
    bool in_sync = false;
  };

  static core::Result<std::shared_ptr<ReplicaCopy>, std::string> open(
      std::shared_ptr<FileVolume> local, Options options);
  ~ReplicaCopy();

  void on_frame(const std::shared_ptr<link::InboundConnection>& conn,
                const wire::FrameHeader& header, std::vector<uint8_t> payload);
  void on_connection_down(uint64_t connection_id);
  // The controller announced a new generation.
  void set_generation(uint64_t generation);
  // Stops taking frames (later ones are NACKed by the host once removed); flushes the file
  // and checkpoints the map so a restart resyncs only what changes meanwhile. `done` (may be
  // empty) runs when that finished.
  void close(std::function<void()> done = {});

  const std::string& uuid() const;
  uint32_t copy() const;
  std::string state() const;  // idle | syncing | streaming | failed
  uint64_t applied_seq() const;

  struct Impl;

 private:
  explicit ReplicaCopy(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class ReplicaHost : public link::FrameHandler {
 public:
  using IoHandler = std::function<void(const std::shared_ptr<link::InboundConnection>&,
                                       const wire::FrameHeader&, std::vector<uint8_t>)>;

  void add(std::shared_ptr<ReplicaCopy> copy);
  std::shared_ptr<ReplicaCopy> remove(const std::string& uuid, uint32_t copy);
  std::shared_ptr<ReplicaCopy> find(const std::string& uuid, uint32_t copy) const;
  std::vector<std::shared_ptr<ReplicaCopy>> all() const;
  // Frames of forwarded I/O (types the replica engines do not take).
  void set_io_handler(IoHandler h);

  void on_frame(const std::shared_ptr<link::InboundConnection>& conn,
                const wire::FrameHeader& header, std::vector<uint8_t> payload) override;
  void on_connection_down(const std::shared_ptr<link::InboundConnection>& conn,
                          const std::string& reason) override;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<wire::Uuid, uint32_t>, std::shared_ptr<ReplicaCopy>> copies_;
  IoHandler io_;
};

}  // namespace tandem::backend::replicated
