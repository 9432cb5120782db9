// ClusterService: membership, run by the controller over its catalogue. Nodes join with
// the cluster's join token and a certificate signing request (their key never leaves
// them) and get back a certificate from the cluster CA and a node token; they then
// heartbeat with that token; a node silent for longer than the timeout is marked offline.
// Heartbeats carry the master's copy reports and are answered with the cluster-state
// snapshot (cluster_state.h) when the node's copy is stale. Thread-safe (all state is in
// the catalogue). The catalogue and CA (which may be null off the controller) must outlive it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/result.h"
#include "core/volume_spec.h"
#include "db/catalogue.h"
#include "mgmt/api_error.h"

namespace tandem::mgmt {

// A volume's settings as its class and its own labels resolve them (defaults when they do
// not parse); read in the caller's transaction.
core::VolumeSettings settings_of(db::Tx& tx, const db::VolumeRow& v);

// Signs node certificates (the controller holds the cluster CA).
class CertificateAuthority {
 public:
  virtual ~CertificateAuthority() = default;
  // Signs a node's request only when it names that node (CN) and its address (IP SAN).
  virtual core::Result<std::string, std::string> sign(const std::string& csr_pem,
                                                      const std::string& node_name,
                                                      const std::string& address) = 0;
  virtual std::string ca_pem() const = 0;
};

struct JoinRequest {
  std::string name;
  std::string address;
  std::string api_url;
  uint16_t iscsi_port = 3260;
  uint16_t repl_port = 5703;
  std::string csr_pem;
  std::string node_id;  // set when a known node re-joins
};

struct JoinGrant {
  std::string node_id;
  std::string certificate_pem;
  std::string ca_pem;
  std::string node_token;
};

// Events a node saw itself (e.g. a refused replication peer), carried by its heartbeat to
// the cluster's log. Bounded by the router: at most kMaxReportedEvents, short texts.
struct ReportedEvent {
  std::string kind;     // [a-z-]{1,40}
  std::string message;  // at most 1000 bytes
};
inline constexpr size_t kMaxReportedEvents = 100;

// What a volume's master node knows about one copy of it (its own included), sent on
// every heartbeat and at once through the copy-state route when a copy drops out of sync.
struct CopyReport {
  std::string volume_id;
  uint32_t number = 0;  // the copy number (CopyRow::number)
  std::string state;    // in-sync | syncing | out-of-sync | offline
  uint64_t applied_seq = 0;
  uint64_t sync_done_bytes = 0;
  uint64_t sync_total_bytes = 0;
  uint64_t behind_bytes = 0;
  // On the master's own copy only: what the volume may serve under its failure mode
  // (healthy | degraded | read-only | halted); empty: leave it to the replica states.
  std::string volume_state;
  // The generation of the master that made the report. The controller refuses a report whose
  // generation is not the volume's (a deposed master's late report, even when its node has
  // been made master again since), so nothing but the current master changes the copies.
  uint64_t generation = 0;
  // When the master made it: increasing on the master's node, across restarts too
  // (VolumeHost::next_report_seq). A heartbeat made before a copy dropped out of sync can
  // arrive after the copy-state report that recorded it: its "in-sync" is older than the row's
  // report_seq and ignored. 0: unordered (applied as before).
  uint64_t report_seq = 0;
};
inline constexpr size_t kMaxCopyReports = 10000;

// JSON of reports: [{volume_id, number, state, generation, report_seq, applied_seq,
// sync_done_bytes, sync_total_bytes, behind_bytes}]. Parsing checks everything (bounded array,
// types, lengths, known states, a generation of at least 1) and fails with a 400/422 naming
// `field`.
nlohmann::json copy_reports_json(const std::vector<CopyReport>& reports);
core::Result<std::vector<CopyReport>, ApiError> parse_copy_reports(const nlohmann::json& j,
                                                                   const char* field = "copies");

struct HeartbeatReport {
  uint64_t capacity_bytes = 0;
  uint64_t free_bytes = 0;
  std::vector<ReportedEvent> events;
  std::vector<CopyReport> copies;
  // The cluster-state revision the node holds; the answer carries a new snapshot when it
  // differs from the controller's (-1: none yet).
  int64_t known_revision = -1;
  // The node's boot id (Linux /proc/sys/kernel/random/boot_id; "" when unknown): a change
  // means the node rebooted and its copies may have lost unflushed writes (record_boot).
  std::string boot_id;
};
// A boot id as a heartbeat may carry it: 1-64 bytes of [0-9A-Za-z-].
bool valid_boot_id(const std::string& id);

struct CopyReportOutcome {
  int applied = 0;  // rows updated
  int ignored = 0;  // unknown volume or copy, or the node is not the volume's master
  // Of `ignored`: reports for a volume the node does not master (any more), or that it
  // mastered at another generation than the volume's. A deposed master must not take such an
  // answer as "recorded": it would then acknowledge writes alone.
  int not_master = 0;
};

// Applies a node's copy reports to the catalogue inside the caller's transaction. Only
// reports for volumes whose master_node is `node_id`, at the volume's generation, count; the
// others are ignored (a deposed master's view is stale). A report clears the copy's rebooted
// mark (the master has acknowledged writes without it, or resynced it). A copy's state change
// writes a "copy-<state>" event; the volume then becomes "degraded" when any replica is not in-sync
// and "healthy" when all are (with a "volume-degraded"/"volume-healthy" event), unless it is in
// another state (offline, read-only, halted), which the data plane owns. Usable on any catalogue:
// the controller's own data plane calls it (through ClusterService::apply_copy_reports) for its
// node.
db::DbResult<CopyReportOutcome> apply_copy_reports(db::Tx& tx, const std::string& node_id,
                                                   const std::vector<CopyReport>& reports);
// Records the boot id a node (`node_id`, named `node_name`) reported, in the caller's
// transaction. When it differs from the one recorded before (a reboot: power loss or a
// kernel crash; a process restart keeps it), every copy on the node lost what it had not
// flushed: an in-sync replica is recorded out of sync and rebooted (never promoted, resynced
// by its master), and a volume the node masters is handed to a copy that holds every
// acknowledged write when one exists, even on an offline node (the volume then waits for it),
// else kept with an event (mgmt::choose_master). Events: node-rebooted, and per volume. The
// node must not hold a master lease (its first heartbeat since it started: it has none).
// Returns whether a reboot was recorded. An empty boot id or a first one records nothing.
db::DbResult<bool> record_boot(db::Tx& tx, const std::string& node_id, const std::string& node_name,
                               const std::string& boot_id);
// Recomputes a volume's healthy/degraded state from its replica rows (event on change).
db::DbResult<void> refresh_volume_health(db::Tx& tx, const std::string& volume_id,
                                         const std::string& node_name);

class ClusterService {
 public:
  ClusterService(db::Catalogue& cat, CertificateAuthority* ca, std::string controller_name,
                 std::chrono::milliseconds node_timeout);

  // Join token handling: created (hashed in the catalogue) at the controller's first start.
  static constexpr const char* kJoinTokenSetting = "join_token_sha256";
  core::Result<JoinGrant, ApiError> join(const JoinRequest& req, const std::string& bearer);
  core::Result<nlohmann::json, ApiError> heartbeat(const std::string& node_name,
                                                   const std::string& bearer,
                                                   const HeartbeatReport& report);
  // The copy-state route: a node's reports applied and committed before the answer. A node
  // reporting for a volume it does not master gets 409 (it was deposed: nothing it reports
  // is recorded, so it must not go on as if it were).
  core::Result<nlohmann::json, ApiError> report_copy_state(const std::string& node_name,
                                                           const std::string& bearer,
                                                           const std::vector<CopyReport>& reps);
  // apply_copy_reports in a transaction of its own; needs no CA (the controller's data plane
  // reports its own node's copies through this).
  core::Result<CopyReportOutcome, ApiError> apply_copy_reports(
      const std::string& node_id, const std::vector<CopyReport>& reports);
  // Called (outside any transaction) after a heartbeat, copy-state report, join or
  // liveness check changed the cluster state (its revision moved), so the controller's own
  // data plane can reconcile at once. Set before serving.
  void set_changed_hook(std::function<void()> f) { changed_ = std::move(f); }
  // Marks nodes whose last heartbeat is older than the timeout offline (with an event);
  // the controller's own node is kept alive by its own loop. Heartbeats count from this
  // service's construction at the earliest (a restarted controller waits a full timeout).
  // Volumes whose master's node is offline are promoted as choose_master says (re-checked
  // each time: one waiting for a copy is promoted when it returns). Returns how many nodes
  // and waiting volumes changed.
  int check_liveness(int64_t now_ms);

 private:
  // Every volume mastered on `lost` (offline): promoted as choose_master says, or left to
  // wait (events only when `newly_lost`: this is re-checked at every liveness check).
  // Returns how many volumes were promoted.
  db::DbResult<int> promote_away_from(db::Tx& tx, const db::NodeRow& lost, bool newly_lost,
                                      int64_t now_ms);
  db::DbResult<void> restore_replica_counts(db::Tx& tx);

  db::Catalogue& cat_;
  CertificateAuthority* ca_;
  std::string controller_name_;
  std::chrono::milliseconds node_timeout_;
  std::function<void()> changed_;
  // When this controller started watching: a node's timeout runs from here at the earliest
  // (node_expired), so a restart does not declare the nodes dead for its own absence.
  int64_t started_ms_;
};

}  // namespace tandem::mgmt
