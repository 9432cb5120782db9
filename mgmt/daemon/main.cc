// tandemd: one Tandem storage node. Wires the catalogue, the local store, the REST API and
// (with later issues) the iSCSI target and replication; owns start-up and clean shutdown.
#include <fcntl.h>
#include <malloc.h>
#include <sched.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <boost/asio.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "backend/replicated/reply_poll.h"
#include "backend/store/io_pool.h"
#include "core/volume_spec.h"
#include "db/catalogue.h"
#include "mgmt/api/router.h"
#include "mgmt/cluster_service.h"
#include "mgmt/daemon/cluster_setup.h"
#include "mgmt/daemon/replication_endpoint.h"
#include "mgmt/http/server.h"
#include "mgmt/iscsi_directory.h"
#include "mgmt/metrics.h"
#include "mgmt/volume_host.h"
#include "mgmt/volume_service.h"

namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using namespace tandem;

struct Options {
  std::string node_name = "n1";
  std::string bind = "127.0.0.1";
  std::string data_dir = "./tandem-data";
  uint16_t http_port = 8080;
  uint16_t iscsi_port = 3260;
  uint16_t repl_port = 5703;
  std::string log_level = "info";
  unsigned io_threads = 4;
  unsigned net_threads = 0;  // 0: default_net_threads()
  unsigned reply_poll_us = 200;
  unsigned replica_poll_us = 200;
  int heartbeat_ms = 500;
  int node_timeout_ms = 3000;
  int failure_grace_s = 90;
  uint64_t resync_mib_s = 0;
  uint32_t iscsi_queue_depth = 128;
  std::string join;  // controller API URL; empty: this node is the controller
  std::string join_token;
  std::string boot_id_file = "/proc/sys/kernel/random/boot_id";
};

// CPUs this process may run on (its affinity mask, so a container's cpuset counts), at least 1.
unsigned usable_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) {
    return static_cast<unsigned>(CPU_COUNT(&set));
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

// One network thread per two CPUs, at least one. On 2 CPUs one thread costs less CPU per
// I/O than two (no scheduler-lock hand-offs between threads): in an A/B on the 2-core VM,
// 1 vs 2 threads gave 1.30x / 1.42x the 4 KiB QD 32 writes with 1 / 2 replicas and 1.07-1.18x
// at QD 1 (README, tandemd, "Threads"). That holds since nothing slow runs on the network
// threads any more: REST handlers run on their own pools, and a region map dirties 64 MiB
// groups, so its fdatasync on the master's strand comes once per group, not once per 1 MiB
// region a write first touches (with that, one thread had lost up to 12x).
unsigned default_net_threads() { return std::max(1u, usable_cpus() / 2); }

// Holds an exclusive flock on DATA_DIR/tandemd.lock for the life of the process, so two
// daemons never share a data dir (the kernel drops the lock if we die).
int lock_data_dir(const std::string& dir) {
  std::string path = dir + "/tandemd.lock";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    std::cerr << "tandemd: cannot open " << path << ": " << std::strerror(errno) << "\n";
    return -1;
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {};
    ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
    std::string pid = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "?";
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
    std::cerr << "tandemd: data directory " << dir << " is in use by another tandemd (pid " << pid
              << "); refusing to start\n";
    ::close(fd);
    return -1;
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    spdlog::warn("cannot record pid in {}", path);
  }
  return fd;
}

std::string read_first_line(const std::string& path) {
  std::ifstream f(path);
  std::string s;
  std::getline(f, s);
  return s;
}

bool write_private_file(const std::string& path, const std::string& content) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  bool ok = ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()) &&
            ::fsync(fd) == 0;
  ::close(fd);
  return ok && ::rename(tmp.c_str(), path.c_str()) == 0;
}

// The admin token: created (and printed) once; afterwards only its hash is compared.
// Deleting DATA_DIR/admin.token and restarting rotates it.
std::optional<std::string> ensure_token(db::Catalogue& cat, const std::string& dir) {
  std::string path = dir + "/admin.token";
  std::string token = read_first_line(path);
  bool fresh = token.empty();
  if (fresh) {
    token = mgmt::random_hex(24);
    if (!write_private_file(path, token + "\n")) {
      spdlog::critical("cannot write {}: {}", path, std::strerror(errno));
      return std::nullopt;
    }
  }
  std::string hash = mgmt::sha256_hex(token);
  auto r = cat.transact<void>([&](db::Tx& tx) -> db::DbResult<void> {
    auto cur = tx.setting("admin_token_sha256");
    if (!cur) return core::fail(cur.error());
    if (*cur && **cur == hash) return {};
    if (auto s = tx.set_setting("admin_token_sha256", hash); !s) return s;
    auto e = tx.append_event({0, 0, "", "", "token-created",
                              fresh ? "admin token created" : "admin token taken from file"});
    if (!e) return core::fail(e.error());
    return {};
  });
  if (!r) {
    spdlog::critical("catalogue: {}", r.error().message);
    return std::nullopt;
  }
  if (fresh) {
    std::cout << "admin token: " << token << "  (saved in " << path
              << ", mode 0600; shown only once)" << std::endl;
  }
  return hash;
}

std::string node_id_for(const std::string& dir) {
  std::string path = dir + "/node.id";
  std::string id = read_first_line(path);
  if (id.empty()) {
    id = core::new_uuid();
    write_private_file(path, id + "\n");
  }
  return id;
}

// Replicated writes of up to 1 MiB allocate and free a payload buffer each (and the front end
// and the replica's decoder theirs). By default glibc serves such sizes with mmap, or trims
// them back to the kernel soon after free, so every write page-faulted in fresh zeroed pages
// and gave them back again (madvise/munmap): measured 5-10% of a node's CPU at 1 MiB writes.
// Kept in the heap instead, freed buffers are reused as they are. Payloads are at most 8 MiB
// (wire::kMaxPayload); the trim threshold bounds what an idle node keeps per arena.
void keep_io_buffers_in_heap() {
  mallopt(M_MMAP_THRESHOLD, 16 << 20);
  mallopt(M_TRIM_THRESHOLD, 32 << 20);
}

int run(int argc, char** argv) {
  keep_io_buffers_in_heap();
  CLI::App app{"tandemd: a Tandem replicated block-storage node"};
  Options o;
  app.add_option("--node-name", o.node_name, "this node's name")->capture_default_str();
  app.add_option("--bind", o.bind, "address every port binds to")->capture_default_str();
  app.add_option("--data-dir", o.data_dir, "catalogue, token and volume files")
      ->capture_default_str();
  app.add_option("--http-port", o.http_port, "REST API, console, metrics")->capture_default_str();
  app.add_option("--iscsi-port", o.iscsi_port, "iSCSI target")->capture_default_str();
  app.add_option("--repl-port", o.repl_port, "replication (TLS)")->capture_default_str();
  app.add_option("--log-level", o.log_level, "trace|debug|info|warn|error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}))
      ->capture_default_str();
  app.add_option("--io-threads", o.io_threads, "threads for disk I/O")
      ->check(CLI::Range(1u, 64u))
      ->capture_default_str();
  o.net_threads = default_net_threads();
  app.add_option("--net-threads", o.net_threads,
                 "threads serving iSCSI, replication and HTTP I/O (default: one per two CPUs "
                 "this process may use, at least 1)")
      ->check(CLI::Range(1u, 16u))
      ->capture_default_str();
  app.add_option("--reply-poll-us", o.reply_poll_us,
                 "while replicated writes wait for their replicas, network threads poll for up "
                 "to this long after their last event instead of sleeping (0: never poll)")
      ->check(CLI::Range(0u, 10000u))
      ->capture_default_str();
  app.add_option("--replica-poll-us", o.replica_poll_us,
                 "after a frame for a replica this node holds arrives, network threads poll for "
                 "up to this long for the next one instead of sleeping, yielding the CPU to any "
                 "other runnable thread (0: never poll)")
      ->check(CLI::Range(0u, 10000u))
      ->capture_default_str();
  app.add_option("--heartbeat-ms", o.heartbeat_ms, "heartbeat interval")
      ->check(CLI::Range(100, 60000))
      ->capture_default_str();
  app.add_option("--node-timeout-ms", o.node_timeout_ms,
                 "controller: a node silent this long is offline; every node: a replication link "
                 "silent for 2/3 of it (1-5 s) is down")
      ->check(CLI::Range(200, 600000))
      ->capture_default_str();
  app.add_option("--failure-grace", o.failure_grace_s,
                 "seconds a volume may stay below its failure mode's replica requirement "
                 "before writes stop (label tandem/failure-grace overrides)")
      ->check(CLI::Range(0, 86400))
      ->capture_default_str();
  app.add_option("--resync-rate", o.resync_mib_s,
                 "MiB/s a resync may read and send per volume, leaving room for application "
                 "I/O (0: unlimited)")
      ->check(CLI::Range(uint64_t{0}, uint64_t{100000}))
      ->capture_default_str();
  app.add_option("--iscsi-queue-depth", o.iscsi_queue_depth,
                 "commands an iSCSI session may have outstanding (CmdSN window)")
      ->check(CLI::Range(1u, 4096u))
      ->capture_default_str();
  app.add_option("--join", o.join, "join the cluster whose controller API is at this URL");
  app.add_option("--join-token", o.join_token, "the controller's join token (first start)");
  app.add_option("--boot-id-file", o.boot_id_file,
                 "file holding this machine's boot id; a changed id at start means the node "
                 "rebooted (power loss): its copies are resynced, never promoted as they are. "
                 "Tests point it at a file of their own")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  if (!core::valid_object_name(o.node_name)) {
    std::cerr << "tandemd: --node-name must match [a-z0-9][a-z0-9-]{0,62}\n";
    return 2;
  }

  auto logger = spdlog::stderr_color_mt("tandemd");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [" + o.node_name + "] %v");
  spdlog::set_level(spdlog::level::from_str(o.log_level));

  std::error_code ec;
  fs::create_directories(o.data_dir, ec);
  if (ec) {
    std::cerr << "tandemd: cannot create " << o.data_dir << ": " << ec.message() << "\n";
    return 1;
  }
  o.data_dir = fs::canonical(o.data_dir).string();
  // The boot id tells a reboot (unflushed writes may be gone) from a process restart (the
  // page cache survived). Unreadable: reboots go unnoticed, as before boot ids existed.
  std::string boot_id = read_first_line(o.boot_id_file);
  while (!boot_id.empty() && (boot_id.back() == '\n' || boot_id.back() == ' ')) boot_id.pop_back();
  if (boot_id.empty()) {
    spdlog::warn("no boot id in {}: a reboot of this node will not be told from a restart",
                 o.boot_id_file);
  } else if (!mgmt::valid_boot_id(boot_id)) {
    spdlog::critical("--boot-id-file {}: not a boot id (1-64 of [0-9A-Za-z-])", o.boot_id_file);
    return 1;
  }
  int lock_fd = lock_data_dir(o.data_dir);
  if (lock_fd < 0) return 1;
  ::signal(SIGPIPE, SIG_IGN);

  auto cat = db::Catalogue::open(o.data_dir + "/catalogue.db");
  if (!cat) {
    spdlog::critical("catalogue: {}", cat.error().message);
    return 1;
  }
  db::Catalogue& catalogue = **cat;
  // The admin token belongs to the cluster: the controller makes it; a joined node learns
  // its hash from the controller.
  auto admin_token = std::make_shared<mgmt::TokenHash>();
  if (o.join.empty()) {
    auto token_hash = ensure_token(catalogue, o.data_dir);
    if (!token_hash) return 1;
    admin_token->set(*token_hash);
  }

  std::string api_url = "http://" + o.bind + ":" + std::to_string(o.http_port);
  mgmt::NodeIdentity me{o.node_name, o.bind,     api_url, o.iscsi_port,
                        o.repl_port, o.data_dir, boot_id};
  bool controller = o.join.empty();
  if (controller) {
    if (auto err = mgmt::bootstrap_controller(catalogue, me); !err.empty()) {
      spdlog::critical("cluster: {}", err);
      return 1;
    }
  } else if (auto err = mgmt::join_cluster(me, o.join, o.join_token); !err.empty()) {
    spdlog::critical("cluster: {}", err);
    return 1;
  }
  std::string node_id = node_id_for(o.data_dir);
  backend::IoPool io_pool(o.io_threads);
  mgmt::VolumeService volumes(catalogue, io_pool, o.data_dir + "/volumes", node_id, o.node_name);

  auto register_node = [&](const std::string& state) {
    db::NodeRow n;
    n.id = node_id;
    n.name = o.node_name;
    n.address = o.bind;
    n.api_url = api_url;
    n.state = state;
    n.capacity_bytes = volumes.store().total_bytes().ok() ? *volumes.store().total_bytes() : 0;
    n.free_bytes = volumes.store().free_bytes().ok() ? *volumes.store().free_bytes() : 0;
    n.last_heartbeat_ms = db::now_ms();
    return catalogue.transact<void>([&](db::Tx& tx) -> db::DbResult<void> {
      auto prev = tx.node_by_name(o.node_name);
      if (!prev) return core::fail(prev.error());
      if (*prev && (*prev)->id != node_id) {
        return core::fail(db::DbError{db::DbErrc::kConflict,
                                      "node name '" + o.node_name + "' belongs to another node"});
      }
      if (auto u = tx.upsert_node(n); !u) return u;
      // The controller's own node: its boot id is checked here (others' with heartbeats),
      // before any of its copies opens.
      if (controller) {
        if (auto b = mgmt::record_boot(tx, node_id, o.node_name, boot_id); !b) {
          return core::fail(b.error());
        }
      }
      bool changed = !*prev || (*prev)->state != state;
      if (changed) {
        auto e = tx.append_event({0, 0, "", o.node_name, "node-" + state,
                                  "node " + o.node_name + " at " + o.bind + " is " + state});
        if (!e) return core::fail(e.error());
      }
      return {};
    });
  };
  if (auto r = volumes.store().init(); !r) {
    spdlog::critical("store: {}", r.error().message);
    return 1;
  }
  if (auto r = register_node("online"); !r) {
    spdlog::critical("catalogue: {}", r.error().message);
    return 1;
  }
  if (auto r = volumes.recover(); !r) {
    spdlog::critical("recovery: {}", r.error().message);
    return 1;
  }

  mgmt::Metrics metrics;
  std::optional<mgmt::FileCa> ca;
  std::optional<mgmt::ClusterService> cluster;
  std::optional<mgmt::NodeAgent> agent;
  if (controller) {
    ca.emplace(o.data_dir + "/tls/ca");
    cluster.emplace(catalogue, &*ca, o.node_name, std::chrono::milliseconds(o.node_timeout_ms));
  }
  mgmt::ApiContext ctx{&catalogue,  &volumes,    &metrics, cluster ? &*cluster : nullptr,
                       admin_token, o.node_name, {}};
  asio::io_context ioc;
  // Management work that blocks stays off the network threads (ioc), which serve iSCSI and
  // replication: catalogue transactions (each write one fsync of the WAL: the heartbeats
  // below, the controller's handling of other nodes' heartbeats and copy reports, API calls)
  // on the control pool; whole-volume reads and calls to other nodes (verify, checksums) on
  // the slow pool, so they never hold up a heartbeat; API calls a joined node passes on to
  // the controller on the forward pool (Router's Lane says why apart). Not the IoPool:
  // management work must not queue behind, or delay, the volumes' disk I/O. They mostly wait
  // (on fsync, disk or peers), so their threads cost little CPU.
  asio::thread_pool control_pool(2);
  asio::thread_pool slow_pool(4);
  asio::thread_pool forward_pool(controller ? 1 : 4);

  // The data plane: copies placed on this node, replication links, forwarders.
  auto link_metrics = std::make_shared<backend::link::LinkMetrics>();
  mgmt::VolumeHost::Options host_opts;
  host_opts.node_id = node_id;
  host_opts.node_name = o.node_name;
  host_opts.address = o.bind;
  host_opts.repl_port = o.repl_port;
  host_opts.volumes_dir = o.data_dir + "/volumes";
  host_opts.tls_dir = o.data_dir + "/tls";
  host_opts.interval = std::chrono::milliseconds(o.heartbeat_ms);
  host_opts.failure_grace = std::chrono::seconds(o.failure_grace_s);
  host_opts.resync_bytes_per_second = o.resync_mib_s << 20;
  // Replication links give a silent peer 2/3 of the node timeout (1-5 s): a replica cut off
  // by a partition stalls writes about as long as the master lease, not a fixed 5 s.
  host_opts.link_timeout =
      std::clamp(std::chrono::milliseconds(o.node_timeout_ms * 2 / 3),
                 std::chrono::milliseconds(1'000), std::chrono::milliseconds(5'000));
  host_opts.link_metrics = link_metrics;
  host_opts.observe_write = [&metrics](double s) { metrics.observe_replicated_write(s); };
  if (!controller) {
    // Set once the agent exists (below); the host only calls it after start().
    host_opts.lease_valid = [&agent] { return !agent || agent->lease_valid(); };
  }
  mgmt::VolumeHost host(ioc, catalogue, io_pool, host_opts);
  volumes.set_volume_source([&host](const std::string& id) { return host.open_volume(id); });
  ctx.local_checksums = [&host](const std::string& id) { return host.local_checksums(id); };
  ctx.call_node = [](const std::string& url, const mgmt::HttpRequest& r) {
    return mgmt::forward_to(url, r);
  };
  metrics.set_replication_source([&host, link_metrics] {
    return mgmt::Metrics::ReplicationSample{link_metrics->bytes_sent_raw.load(),
                                            link_metrics->bytes_sent_wire.load(),
                                            host.copy_reports()};
  });

  if (!controller) {
    ctx.forward = [url = o.join, name = o.node_name](const mgmt::HttpRequest& r) {
      return mgmt::forward_to(url, r, name);
    };
    agent.emplace(me, o.join, std::chrono::milliseconds(o.heartbeat_ms), admin_token, &catalogue);
    agent->set_copy_reporter([&host] { return host.copy_reports(); });
    agent->set_state_applied_hook([&host] {
      host.fence_superseded();
      host.kick();
    });
    agent->start();
  } else {
    // API changes on the controller take effect here at once (the volume exists for iSCSI
    // as soon as create answers); other nodes learn them from their next heartbeat.
    volumes.set_changed_hook([&host] { host.reconcile(); });
  }
  auto record_event = [&](const std::string& volume, const std::string& kind,
                          const std::string& message) {
    if (agent) {
      agent->report_event(kind, (volume.empty() ? "" : "volume " + volume + ": ") + message);
      return;
    }
    auto r = catalogue.transact<int64_t>([&](db::Tx& tx) {
      return tx.append_event({0, 0, volume, o.node_name, kind, message});
    });
    if (!r) spdlog::error("cannot record event {}: {}", kind, r.error().message);
  };
  mgmt::VolumeHost::Reporter reporter;
  if (controller) {
    reporter = [&cluster, node_id](const std::vector<mgmt::CopyReport>& reports) {
      auto r = cluster->apply_copy_reports(node_id, reports);
      return r.ok() && r->not_master == 0;  // a deposed master's report is not recorded
    };
  } else {
    reporter = [&agent](const std::vector<mgmt::CopyReport>& reports) {
      return agent->report_copies_now(reports, std::chrono::milliseconds(5000));
    };
  }
  if (auto err = host.start(reporter, record_event); !err.empty()) {
    spdlog::critical("volumes: {}", err);
    return 1;
  }
  mgmt::Router router(ctx);
  mgmt::HttpServer http(ioc, {&control_pool, &slow_pool, &forward_pool}, router, metrics,
                        {o.bind, o.http_port, 1 << 20, 30, 30});
  if (auto err = http.start(); !err.empty()) {
    spdlog::critical("http: {}", err);
    return 1;
  }

  mgmt::IscsiDirectory directory(volumes, catalogue, o.bind, o.iscsi_port);
  target::net::IscsiServerOptions iscsi_opts;
  iscsi_opts.address = o.bind;
  iscsi_opts.port = o.iscsi_port;
  iscsi_opts.login.queue_depth = o.iscsi_queue_depth;
  iscsi_opts.session.queue_depth = o.iscsi_queue_depth;
  target::net::IscsiServer iscsi(ioc, directory, iscsi_opts);
  if (auto err = iscsi.start(); !err.empty()) {
    spdlog::critical("iscsi: {}", err);
    return 1;
  }
  volumes.set_in_use_check(
      [&](const std::string& name) { return iscsi.sessions_for(core::iqn_for(name)) > 0; });
  volumes.set_deleted_hook([&](const std::string& id) { directory.forget(id); });

  // Refused peers are recorded from the network thread that refused them: the catalogue
  // write goes to the control pool.
  mgmt::ReplicationEndpoint replication(
      ioc, [&](const std::string& kind, const std::string& message) {
        asio::post(control_pool, [&record_event, kind, message] { record_event("", kind, message); });
      });
  if (auto err = replication.start(o.data_dir + "/tls", node_id, o.bind, o.repl_port,
                                   host.frame_handler(), link_metrics, host_opts.link_timeout / 4);
      !err.empty()) {
    spdlog::critical("replication: {}", err);
    return 1;
  }

  // The node's own heartbeat into the catalogue (and, on the controller, liveness checks and
  // its own copies' reports): write transactions, so on the control pool, on a strand of its
  // own so the timer is never touched from two threads.
  auto heartbeat_strand = asio::make_strand(control_pool);
  asio::steady_timer heartbeat(heartbeat_strand);
  bool heartbeat_stopped = false;  // on heartbeat_strand: a wait that already fired ends too
  std::function<void()> beat = [&] {
    heartbeat.expires_after(std::chrono::milliseconds(o.heartbeat_ms));
    heartbeat.async_wait([&](boost::system::error_code e) {
      if (e || heartbeat_stopped) return;
      if (auto r = register_node("online"); !r) spdlog::warn("heartbeat: {}", r.error().message);
      if (cluster) {
        cluster->check_liveness(db::now_ms());
        // The controller's own copies report straight into its catalogue.
        if (auto r = cluster->apply_copy_reports(node_id, host.copy_reports()); !r) {
          spdlog::warn("copy reports: {}", r.error().message);
        }
      }
      beat();
    });
  };
  asio::post(heartbeat_strand, beat);

  std::thread stopper;
  asio::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code e, int sig) {
    if (e) return;
    spdlog::info("signal {}: stopping (finishing in-flight requests)", sig);
    asio::post(heartbeat_strand, [&] {
      heartbeat_stopped = true;
      heartbeat.cancel();
    });
    iscsi.stop();
    // Volumes flush and close while the io_context still runs their links (the replicas
    // must acknowledge the final flush), then the listeners go.
    stopper = std::thread([&] {
      host.flush_all();
      host.stop();
      asio::post(ioc, [&] {
        replication.stop();
        http.stop([&] { ioc.stop(); });
      });
    });
  });

  spdlog::info("node {} ({}) ready: API {}/api/v1, iSCSI {}:{}, replication {}:{} (TLS), data {}",
               o.node_name, node_id, api_url, o.bind, o.iscsi_port, o.bind, o.repl_port,
               o.data_dir);
  std::cout << "tandemd " << o.node_name << " ready: API " << api_url << "/api/v1, iSCSI " << o.bind
            << ":" << o.iscsi_port << std::endl;

  std::vector<std::thread> threads;
  const backend::replicated::PollWindows poll_window{std::chrono::microseconds(o.reply_poll_us),
                                                     std::chrono::microseconds(o.replica_poll_us)};
  for (unsigned i = 1; i < o.net_threads; ++i) {
    threads.emplace_back([&] { backend::replicated::run_polling_for_replies(ioc, poll_window); });
  }
  backend::replicated::run_polling_for_replies(ioc, poll_window);
  for (auto& t : threads) t.join();
  if (stopper.joinable()) stopper.join();
  // Every HTTP request has been answered (the server drained) and the heartbeat is cancelled:
  // what the pools still hold is finished before the node records itself offline.
  control_pool.join();
  slow_pool.join();
  forward_pool.join();

  if (agent) agent->stop();
  if (auto r = register_node("offline"); !r) spdlog::warn("catalogue: {}", r.error().message);
  catalogue.checkpoint();
  spdlog::info("stopped cleanly");
  ::close(lock_fd);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return run(argc, argv); }
