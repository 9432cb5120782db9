// VolumeHost: this node's data plane. It reads the node's catalogue (the controller's own, or
// the mirror a joined node keeps from heartbeats) and makes the running copies match it:
// creates and opens the image of every copy placed here, runs a ReplicatedVolume for each
// volume this node masters (with links to its replicas) and a ReplicaCopy behind the
// node's tcp/5703 handler for each replica, and closes and deletes copies that were removed.
// It serves the iSCSI target's volumes (open_volume) and reports copy states to the control
// plane: on every heartbeat, and at once when an in-sync copy drops out (writes wait for
// that record, see ReplicatedVolume).
//
// Owner: the daemon. Thread-safe. Reconciling runs on the host's own worker thread (kick()
// wakes it; it also runs every `interval`), never on network threads. The io_context, the
// catalogue and the IoPool must outlive the host; stop() before they go.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "backend/fwd/forward_server.h"
#include "backend/fwd/forwarding_volume.h"
#include "backend/link/link_types.h"
#include "backend/replicated/replica_host.h"
#include "backend/replicated/replicated_volume.h"
#include "backend/store/file_store.h"
#include "backend/store/io_pool.h"
#include "db/catalogue.h"
#include "mgmt/cluster_service.h"

namespace boost::asio {
class io_context;
namespace ssl {
class context;
}  // namespace ssl
}  // namespace boost::asio

namespace tandem::mgmt {

class VolumeHost {
 public:
  struct Options {
    std::string node_id;
    std::string node_name;
    std::string address;  // our replication address (HELLO)
    uint16_t repl_port = 5703;
    std::string volumes_dir;
    std::string tls_dir;
    std::chrono::milliseconds interval{1000};
    std::chrono::milliseconds failure_grace{90'000};  // unless tandem/failure-grace says
    uint64_t resync_bytes_per_second = 0;             // 0: unlimited
    // A silent replica or forwarding link is declared down after this (the daemon derives it
    // from --node-timeout-ms, so a partitioned replica stalls writes about as long as a lost
    // master does).
    std::chrono::milliseconds link_timeout{5'000};
    std::shared_ptr<backend::link::LinkMetrics> link_metrics;
    std::function<void(double)> observe_write;  // replicated write round trip (seconds)
    // The master lease (joined nodes); empty: always valid (the controller's own node).
    std::function<bool()> lease_valid;
  };
  // Records reports in the cluster's catalogue; true once they are committed there.
  // Called on the host's reporter thread; may block (a call to the controller).
  using Reporter = std::function<bool(const std::vector<CopyReport>&)>;
  // Puts an event in the cluster's log.
  using RecordEvent = std::function<void(const std::string& volume, const std::string& kind,
                                         const std::string& message)>;

  VolumeHost(boost::asio::io_context& io, db::Catalogue& catalogue, backend::IoPool& pool,
             Options options);
  ~VolumeHost();

  // Loads this node's TLS credentials (outbound links) and starts the worker. Error or "".
  std::string start(Reporter reporter, RecordEvent record);
  // Closes every copy (flushes, checkpoints maps) and stops the worker.
  void stop();
  // The catalogue changed: reconcile soon.
  void kick();
  // The catalogue mirror changed: a master it no longer names here at the generation it runs
  // stops acknowledging at once (fenced until the reconcile closes it), before the node's
  // lease is renewed by the same heartbeat answer.
  void fence_superseded();
  // Reconciles now on the caller's thread (start-up, and the controller's API so a volume is
  // served as soon as its create answers). Never waits for I/O: closing a copy is
  // asynchronous, so network threads may call it. Skipped (kick() instead) when another
  // reconcile holds on for longer than a moment (then false).
  bool reconcile();

  // The FrameHandler for the node's tcp/5703 listener.
  std::shared_ptr<backend::replicated::ReplicaHost> frame_handler() const { return replicas_; }
  // The volume the iSCSI target serves (nullptr when this node cannot serve it now).
  std::shared_ptr<core::BlockVolume> open_volume(const std::string& volume_id);
  // Every copy state this node knows as a master, for the heartbeat.
  std::vector<CopyReport> copy_reports();
  // Region checksums of this node's copy of a volume (mgmt/verify.h JSON), or why not.
  core::Result<nlohmann::json, std::string> local_checksums(const std::string& volume_id);
  // fdatasync every open image (clean shutdown).
  void flush_all();

 private:
  struct Master {
    db::VolumeRow row;
    uint32_t number = 1;
    bool superseded = false;  // fence_superseded(): fenced whatever the lease says
    std::shared_ptr<backend::replicated::ReplicatedVolume> volume;
  };
  struct Replica {
    db::VolumeRow row;
    uint32_t number = 0;
    std::shared_ptr<backend::replicated::ReplicaCopy> copy;
  };
  // A volume this node presents but does not master: its I/O goes to the master.
  struct Forwarder {
    std::string master_node;  // node id
    uint64_t size_bytes = 0;
    std::shared_ptr<backend::fwd::ForwardingVolume> volume;
  };

  void run();
  void reconcile_locked();
  bool ensure_image(const db::VolumeRow& v, bool& fresh);
  void open_master(const db::VolumeRow& v, const db::CopyRow& me,
                   std::vector<backend::replicated::ReplicaPeer> peers);
  void open_replica(const db::VolumeRow& v, const db::CopyRow& me);
  // `done` (may be empty) runs once the copy's files are free for another role.
  void close_master(const std::string& id, bool delete_files, std::function<void()> done = {});
  void close_replica(const std::string& key, bool delete_files, std::function<void()> done = {});
  // A copy changing role on this node (promoted replica, demoted master) waits for the old
  // object to close before the new one opens the same files.
  void begin_role_change(const std::string& volume_id);
  // Runs when the old object closed: the volume may open in its new role.
  std::function<void()> role_change_done(const std::string& volume_id);
  void delete_files(const std::string& id);
  void report_out_of_sync(const std::string& volume_id, uint64_t generation, uint32_t copy,
                          std::string reason);
  // Orders this node's copy reports (CopyReport::report_seq): above every earlier one, and
  // from the wall clock's microseconds, so a restarted process goes on above its last ones.
  uint64_t next_report_seq();
  std::atomic<uint64_t> report_seq_{0};
  void run_reporter();

  boost::asio::io_context& io_;
  db::Catalogue& cat_;
  backend::IoPool& pool_;
  Options opt_;
  backend::FileStore store_;
  std::unique_ptr<boost::asio::ssl::context> tls_;
  std::shared_ptr<backend::replicated::ReplicaHost> replicas_ =
      std::make_shared<backend::replicated::ReplicaHost>();
  Reporter reporter_;
  RecordEvent record_;

  std::timed_mutex reconcile_mu_;  // serialises reconciles and stop()
  std::atomic<bool> stopped_{false};
  std::mutex mu_;  // guards the maps below (never held while waiting for I/O)
  std::map<std::string, Master> masters_;           // by volume id
  std::map<std::string, Replica> replicas_by_key_;  // "volume-id/number"
  std::map<std::string, Forwarder> forwarders_;     // by volume id
  std::set<std::string> closing_;                   // volume ids changing role
  std::unique_ptr<backend::fwd::ForwardServer> forward_server_;

  std::mutex work_mu_;
  std::condition_variable work_cv_;
  bool kicked_ = false;
  bool stopping_ = false;
  bool lease_lapsed_ = false;  // run() thread only
  std::thread worker_;
  // Urgent out-of-sync reports waiting for the controller.
  struct Urgent {
    std::string volume_id;
    uint64_t generation;  // of the master that found the copy out of sync
    uint32_t copy;
    std::string reason;
  };
  std::vector<Urgent> urgent_;  // guarded by work_mu_
  // Drops from `batch` (and the matching `reports`) the volumes no longer mastered here at
  // the generation the report was made at.
  void still_mastered(std::vector<Urgent>& batch, std::vector<CopyReport>& reports);
  bool report_soon_ = false;  // a copy changed state: report all (best effort); work_mu_
  std::condition_variable urgent_cv_;
  std::thread reporter_thread_;
};

}  // namespace tandem::mgmt
