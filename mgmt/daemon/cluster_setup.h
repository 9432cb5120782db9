// Cluster bootstrap for tandemd: the controller's CA, join token and own node certificate
// on first start; a joining node's key, CSR and join call; the heartbeat loop a joined node
// runs; and the forwarding of API calls to the controller. Runs at start-up on the main
// thread, except NodeAgent, which owns one background thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "mgmt/api/http_types.h"
#include "mgmt/api/router.h"
#include "mgmt/cluster_service.h"

namespace tandem::mgmt {

struct NodeIdentity {
  std::string name;
  std::string address;
  std::string api_url;
  uint16_t iscsi_port = 3260;
  uint16_t repl_port = 5703;
  std::string data_dir;
  std::string boot_id;  // sent with every heartbeat ("" : unknown; reboots go unnoticed)
};

// The controller's CA on disk (DATA_DIR/tls/ca/).
class FileCa : public CertificateAuthority {
 public:
  explicit FileCa(std::string dir) : dir_(std::move(dir)) {}
  core::Result<std::string, std::string> sign(const std::string& csr_pem,
                                              const std::string& node_name,
                                              const std::string& address) override;
  std::string ca_pem() const override;

 private:
  std::string dir_;
};

// Controller first start: CA, its own node certificate, and the join token (printed once,
// kept in DATA_DIR/join.token, its hash in the catalogue). Returns an error message or "".
std::string bootstrap_controller(db::Catalogue& cat, const NodeIdentity& me);

// A joining node: when DATA_DIR/tls/node.crt or DATA_DIR/node.token is missing, creates a
// key and CSR and calls the controller's join route. Writes node.id, node.token and the
// credentials. Returns an error message or "".
std::string join_cluster(const NodeIdentity& me, const std::string& controller_url,
                         const std::string& join_token);

// Passes an API call to the controller and returns its answer (502 when unreachable).
// `origin_node` (this node's name) goes along as X-Tandem-Origin-Node.
HttpResponse forward_to(const std::string& controller_url, const HttpRequest& req,
                        const std::string& origin_node = {});

// Heartbeats to the controller every interval on its own thread until stopped. Each
// heartbeat carries the copy reporter's reports and the cluster-state revision this node
// holds; a newer snapshot in the answer is applied to the local catalogue (when one was
// given) and then the state-applied hook runs, on the agent's thread.
class NodeAgent {
 public:
  // `admin_token` is updated from the controller's answers. `local` (may be null) is this
  // node's catalogue, which mirrors the controller's cluster state; it must outlive us.
  NodeAgent(NodeIdentity me, std::string controller_url, std::chrono::milliseconds interval,
            std::shared_ptr<TokenHash> admin_token, db::Catalogue* local = nullptr);
  ~NodeAgent();
  void start();
  void stop();
  // Queues an event for the cluster's log; it rides on the next heartbeat (bounded: the
  // oldest are dropped past kMaxReportedEvents). Thread-safe.
  void report_event(std::string kind, std::string message);
  // Called on the agent's thread at each heartbeat for the copies this node masters. When
  // they do not fit one heartbeat body, a moving window of them is sent each time.
  void set_copy_reporter(std::function<std::vector<CopyReport>()> f);
  // Called on the agent's thread after a cluster-state snapshot was applied locally. Set
  // before start().
  void set_state_applied_hook(std::function<void()> f);
  // The master lease: true while the last heartbeat the controller answered was sent less
  // than 2/3 of its node timeout ago. The controller declares a node offline (and promotes
  // away from it) only after the full timeout, so a node stops acknowledging writes before
  // another master can exist. False until a heartbeat was answered (a restarted node does
  // not master anything before the controller heard from it). Thread-safe.
  bool lease_valid() const;
  // POSTs the reports to the controller's copy-state route and waits for the answer: true
  // only on 200 (committed there). Meant for the few copies that just changed: the body
  // must stay under the controller's 1 MiB limit (about 5000 reports). Thread-safe.
  bool report_copies_now(const std::vector<CopyReport>& reports,
                         std::chrono::milliseconds timeout);

 private:
  void run();
  // Mirrors the snapshot into the local catalogue and runs the hook; false if not applied.
  bool apply_state(const nlohmann::json& snapshot);
  nlohmann::json bounded_reports(const std::vector<CopyReport>& all);

  NodeIdentity me_;
  std::string controller_url_;
  std::string token_;
  std::chrono::milliseconds interval_;
  std::shared_ptr<TokenHash> admin_token_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool reachable_ = true;
  std::deque<ReportedEvent> pending_;  // guarded by mu_
  db::Catalogue* local_;
  std::function<std::vector<CopyReport>()> copy_reporter_;
  std::function<void()> state_applied_;
  int64_t known_revision_ = -1;  // agent thread only
  size_t report_cursor_ = 0;     // agent thread only
  std::thread thread_;
  std::atomic<int64_t> lease_until_ns_{0};  // steady_clock ns; 0: no answer yet (no lease)
};

}  // namespace tandem::mgmt
