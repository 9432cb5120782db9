#include "mgmt/volume_host.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>
#include <future>
#include <set>

#include "backend/transport/tls_identity.h"
#include "backend/transport/tls_stream.h"
#include "core/volume_spec.h"
#include "mgmt/verify.h"

namespace tandem::mgmt {
namespace {

namespace rep = backend::replicated;

std::string replica_key(const std::string& volume_id, uint32_t number) {
  return volume_id + "/" + std::to_string(number);
}

const char* volume_state_name(core::VolumeState s) {
  switch (s) {
    case core::VolumeState::kReadOnly:
      return "read-only";
    case core::VolumeState::kHalted:
      return "halted";
    case core::VolumeState::kDegraded:
      return "degraded";
    default:
      return "healthy";
  }
}

// Waits for a BlockVolume completion (shutdown paths only).
core::IoResult wait(const std::function<void(core::BlockVolume::Done)>& op) {
  auto p = std::make_shared<std::promise<core::IoResult>>();
  auto f = p->get_future();
  op([p](core::IoResult r) { p->set_value(r); });
  if (f.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
    return {core::IoStatus::kNotReady, 0};
  }
  return f.get();
}

}  // namespace

VolumeHost::VolumeHost(boost::asio::io_context& io, db::Catalogue& catalogue, backend::IoPool& pool,
                       Options options)
    : io_(io), cat_(catalogue), pool_(pool), opt_(std::move(options)), store_(opt_.volumes_dir) {}

VolumeHost::~VolumeHost() { stop(); }

std::string VolumeHost::start(Reporter reporter, RecordEvent record) {
  reporter_ = std::move(reporter);
  record_ = std::move(record);
  if (auto r = store_.init(); !r) return "store: " + r.error().message;
  auto creds = backend::transport::load_node_credentials(opt_.tls_dir);
  if (!creds) return "TLS credentials in " + opt_.tls_dir + ": " + creds.error().message;
  auto ctx = backend::transport::make_tls_context(*creds);
  if (!ctx) return ctx.error().message;
  tls_ = std::make_unique<boost::asio::ssl::context>(std::move(*ctx));
  // I/O forwarded by other nodes runs on the volumes mastered here, never on a forwarder
  // (which could loop back to another node).
  forward_server_ = std::make_unique<backend::fwd::ForwardServer>(
      [this](const std::string& id) -> std::shared_ptr<core::BlockVolume> {
        std::lock_guard lock(mu_);
        auto it = masters_.find(id);
        return it == masters_.end() ? nullptr : it->second.volume;
      });
  replicas_->set_io_handler(
      [this](const std::shared_ptr<backend::link::InboundConnection>& c,
             const backend::wire::FrameHeader& h,
             std::vector<uint8_t> payload) { forward_server_->handle(c, h, std::move(payload)); });
  reconcile();
  worker_ = std::thread([this] { run(); });
  reporter_thread_ = std::thread([this] { run_reporter(); });
  return {};
}

void VolumeHost::stop() {
  {
    std::lock_guard lock(work_mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  stopped_.store(true);
  work_cv_.notify_all();
  urgent_cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  if (reporter_thread_.joinable()) reporter_thread_.join();
  std::lock_guard serial(reconcile_mu_);
  std::map<std::string, Master> masters;
  std::map<std::string, Replica> replicas;
  std::map<std::string, Forwarder> forwarders;
  {
    std::lock_guard lock(mu_);
    masters.swap(masters_);
    replicas.swap(replicas_by_key_);
    forwarders.swap(forwarders_);
  }
  // A clean stop: the last flush reaches every replica, maps are checkpointed, so a restart
  // resyncs nothing that did not change. These waits need the io_context running.
  for (auto& [id, m] : masters) {
    (void)wait([&](auto done) { m.volume->flush(done); });
    auto closed = std::make_shared<std::promise<void>>();
    auto f = closed->get_future();
    m.volume->close([closed] { closed->set_value(); });
    f.wait_for(std::chrono::seconds(10));
  }
  for (auto& [k, r] : replicas) {
    replicas_->remove(r.row.id, r.number);
    auto closed = std::make_shared<std::promise<void>>();
    auto f = closed->get_future();
    r.copy->close([closed] { closed->set_value(); });
    f.wait_for(std::chrono::seconds(10));
  }
  for (auto& [id, f] : forwarders) f.volume->close();
}

void VolumeHost::kick() {
  {
    std::lock_guard lock(work_mu_);
    kicked_ = true;
  }
  work_cv_.notify_all();
}

void VolumeHost::fence_superseded() {
  std::map<std::string, std::pair<std::string, uint64_t>> named;  // id -> (master, generation)
  auto r = cat_.transact<void>([&](db::Tx& tx) -> db::DbResult<void> {
    auto vols = tx.list_volumes();
    if (!vols) return core::fail(vols.error());
    for (const auto& v : *vols) named[v.id] = {v.master_node, v.generation};
    return {};
  });
  if (!r) return;  // the reconcile that follows retries the read
  std::lock_guard lock(mu_);
  for (auto& [id, m] : masters_) {
    auto it = named.find(id);
    if (m.superseded || (it != named.end() && it->second.first == opt_.node_id &&
                         it->second.second == m.row.generation)) {
      continue;
    }
    m.superseded = true;
    m.volume->set_fenced(true);
    spdlog::warn("volume={} no longer mastered here at generation {}: fenced until closed",
                 m.row.name, m.row.generation);
  }
}

void VolumeHost::run() {
  std::unique_lock lock(work_mu_);
  // The lease is checked more often than heartbeats go, so a lapse fences within ~100 ms.
  auto step = std::min(opt_.interval, std::chrono::milliseconds(100));
  auto next_reconcile = std::chrono::steady_clock::now();
  while (!stopping_) {
    work_cv_.wait_for(lock, step, [&] { return kicked_ || stopping_; });
    if (stopping_) break;
    lock.unlock();
    if (opt_.lease_valid) {
      bool ok = opt_.lease_valid();
      // Renewed after a lapse: the cluster state that came with the renewal (applied before
      // it, NodeAgent::run) may depose a master. Reconcile first, so a deposed master is
      // closed (its held I/O answered NOT READY) before the others release theirs.
      if (ok && lease_lapsed_ && !reconcile()) ok = false;  // busy: try again next step
      lease_lapsed_ = !ok;
      std::lock_guard l(mu_);
      for (auto& [id, m] : masters_) m.volume->set_fenced(!ok || m.superseded);
    }
    lock.lock();
    if (!kicked_ && std::chrono::steady_clock::now() < next_reconcile) continue;
    kicked_ = false;
    next_reconcile = std::chrono::steady_clock::now() + opt_.interval;
    lock.unlock();
    reconcile();
    lock.lock();
  }
}

bool VolumeHost::reconcile() {
  if (stopped_.load()) return false;
  std::unique_lock serial(reconcile_mu_, std::defer_lock);
  if (!serial.try_lock_for(std::chrono::seconds(2))) {
    kick();
    return false;
  }
  if (stopped_.load()) return false;
  std::lock_guard lock(mu_);
  reconcile_locked();
  return true;
}

bool VolumeHost::ensure_image(const db::VolumeRow& v, bool& fresh) {
  fresh = false;
  if (!store_.exists(v.id)) {
    if (auto r = store_.create(v.id, v.size_bytes); !r) {
      spdlog::error("volume={} cannot create image: {}", v.name, r.error().message);
      if (record_) record_(v.name, "copy-create-failed", r.error().message);
      return false;
    }
    fresh = true;
  }
  return true;
}

void VolumeHost::reconcile_locked() {
  struct Want {
    db::VolumeRow row;
    db::CopyRow me;
    std::vector<rep::ReplicaPeer> peers;
    core::VolumeSettings settings;
  };
  std::map<std::string, Want> masters;
  std::map<std::string, Want> replicas;
  struct Remote {
    db::VolumeRow row;
    db::NodeRow master;
  };
  std::map<std::string, Remote> remotes;
  auto r = cat_.transact<void>([&](db::Tx& tx) -> db::DbResult<void> {
    auto nodes = tx.list_nodes();
    if (!nodes) return core::fail(nodes.error());
    std::map<std::string, db::NodeRow> by_id;
    for (auto& n : *nodes) by_id[n.id] = n;
    auto vols = tx.list_volumes();
    if (!vols) return core::fail(vols.error());
    for (auto& v : *vols) {
      auto copies = tx.copies_of(v.id);
      if (!copies) return core::fail(copies.error());
      const db::CopyRow* mine = nullptr;
      for (const auto& c : *copies) {
        if (c.node_id == opt_.node_id) mine = &c;
      }
      if (!mine || mine->role != "master") {
        auto m = by_id.find(v.master_node);
        if (m != by_id.end() && v.master_node != opt_.node_id) {
          remotes.emplace(v.id, Remote{v, m->second});
        }
      }
      if (!mine) continue;
      Want w{v, *mine, {}, settings_of(tx, v)};
      if (mine->role == "master") {
        for (const auto& c : *copies) {
          if (c.role != "replica") continue;
          auto n = by_id.find(c.node_id);
          if (n == by_id.end()) continue;
          w.peers.push_back(rep::ReplicaPeer{c.number, n->second.name, n->second.address,
                                             n->second.repl_port, c.state == db::kCopyInSync});
        }
        masters.emplace(v.id, std::move(w));
      } else {
        replicas.emplace(replica_key(v.id, mine->number), std::move(w));
      }
    }
    return {};
  });
  if (!r) {
    spdlog::error("volume host: catalogue: {}", r.error().message);
    return;
  }
  // Close what is no longer here (a deleted volume's files go; a role change keeps them).
  std::vector<std::string> gone;
  for (const auto& [id, m] : masters_) {
    if (!masters.count(id)) gone.push_back(id);
  }
  // Demoted masters: their sessions move to this node's forwarder once it exists (below).
  std::map<std::string, std::shared_ptr<rep::ReplicatedVolume>> demoted;
  for (const auto& id : gone) {
    bool still_here = std::any_of(replicas.begin(), replicas.end(),
                                  [&](const auto& kv) { return kv.second.row.id == id; });
    if (still_here) {
      // Demoted (a new master was promoted while this node was away): the files stay and
      // become a replica copy, which the new master resyncs.
      demoted[id] = masters_[id].volume;
      begin_role_change(id);
      close_master(id, false, role_change_done(id));
    } else {
      close_master(id, true);
    }
  }
  gone.clear();
  for (const auto& [k, rr] : replicas_by_key_) {
    if (!replicas.count(k)) gone.push_back(k);
  }
  for (const auto& k : gone) {
    std::string id = replicas_by_key_[k].row.id;
    if (masters.count(id)) {
      // Promoted: the replica copy closes (flushed, map checkpointed), then the same files
      // open as the master.
      begin_role_change(id);
      close_replica(k, false, role_change_done(id));
    } else {
      close_replica(k, true);
    }
  }
  for (auto& [id, w] : masters) {
    if (closing_.count(id)) continue;
    auto it = masters_.find(id);
    if (it == masters_.end()) {
      open_master(w.row, w.me, std::move(w.peers));
      it = masters_.find(id);
      if (it == masters_.end()) continue;
    } else if (it->second.superseded || it->second.row.generation != w.row.generation) {
      // Mastered here again at a newer generation while the old object still ran (the
      // snapshots in between were never seen): reopen it, so it numbers above the new
      // generation and resyncs every copy, instead of being deposed by them forever.
      begin_role_change(id);
      close_master(id, false, role_change_done(id));
      continue;
    } else {
      if (w.row.size_bytes > it->second.row.size_bytes) {
        // Grown (only volumes without replicas can be): the file, then the served capacity.
        if (auto g = store_.grow(id, w.row.size_bytes); !g) {
          spdlog::error("volume={} cannot grow: {}", w.row.name, g.error().message);
        }
        it->second.volume->refresh_capacity();
      }
      it->second.volume->set_peers(std::move(w.peers));
    }
    it->second.volume->set_compression(w.settings.compression);
    auto grace = w.settings.grace_seconds >= 0
                     ? std::chrono::milliseconds(int64_t{w.settings.grace_seconds} * 1000)
                     : opt_.failure_grace;
    it->second.volume->set_policy(w.settings.failure_mode, w.settings.replicas,
                                  w.settings.threshold, grace);
    it->second.row = w.row;
  }
  for (auto& [k, w] : replicas) {
    if (closing_.count(w.row.id)) continue;
    auto it = replicas_by_key_.find(k);
    if (it == replicas_by_key_.end()) {
      open_replica(w.row, w.me);
    } else if (it->second.row.generation != w.row.generation) {
      // A new master was promoted: frames of the old generation are refused from now on.
      it->second.copy->set_generation(w.row.generation);
      it->second.row = w.row;
    }
  }
  // Forwarders: one per volume mastered elsewhere; a new master is a retarget (pending I/O
  // moves with it).
  for (auto it = forwarders_.begin(); it != forwarders_.end();) {
    if (remotes.count(it->first)) {
      ++it;
      continue;
    }
    if (masters.count(it->first)) {
      // This node became the master: sessions that logged in through the forwarder keep it,
      // now pointed at this node's own replication endpoint.
      if (it->second.master_node != opt_.node_id) {
        backend::fwd::ForwardingVolume::Target self{opt_.node_name, opt_.address, opt_.repl_port};
        if (it->second.volume->retarget(self)) it->second.master_node = opt_.node_id;
      }
      ++it;
      continue;
    }
    it->second.volume->close();
    it = forwarders_.erase(it);
  }
  for (auto& [id, r] : remotes) {
    backend::fwd::ForwardingVolume::Target t{r.master.name, r.master.address, r.master.repl_port};
    auto it = forwarders_.find(id);
    if (it != forwarders_.end() && it->second.size_bytes != r.row.size_bytes) {
      it->second.volume->close();  // sized at creation: new logins get a new one
      forwarders_.erase(it);
      it = forwarders_.end();
    }
    if (it != forwarders_.end()) {
      if (it->second.master_node != r.master.id) {
        if (it->second.volume->retarget(t)) it->second.master_node = r.master.id;
      }
      continue;
    }
    backend::fwd::ForwardingVolume::Options fo;
    fo.metrics = opt_.link_metrics;
    fo.idle_timeout = opt_.link_timeout;
    fo.heartbeat_interval = std::max(opt_.link_timeout / 4, std::chrono::milliseconds(50));
    backend::wire::Hello hello;
    hello.node_id = opt_.node_id;
    hello.address = opt_.address;
    auto f = backend::fwd::ForwardingVolume::create(
        io_, *tls_, id, r.row.block_size, r.row.size_bytes / r.row.block_size, t, hello, fo);
    if (!f) {
      spdlog::error("volume={} cannot forward to {}: {}", r.row.name, r.master.name,
                    f.error().message);
      continue;
    }
    forwarders_[id] = Forwarder{r.master.id, r.row.size_bytes, *f};
  }
  for (auto& [id, vol] : demoted) {
    if (auto f = forwarders_.find(id); f != forwarders_.end()) vol->set_successor(f->second.volume);
  }
}

void VolumeHost::open_master(const db::VolumeRow& v, const db::CopyRow& me,
                             std::vector<rep::ReplicaPeer> peers) {
  bool fresh = false;
  if (!ensure_image(v, fresh)) return;
  auto file = backend::FileVolume::open(store_.path_of(v.id), v.id, v.block_size, pool_);
  if (!file) {
    spdlog::error("volume={} cannot open image {}", v.name, store_.path_of(v.id));
    return;
  }
  if (fresh) {
    // A new master file: a map left by an earlier copy of this volume id cannot describe it.
    ::unlink((opt_.volumes_dir + "/" + v.id + ".map").c_str());
  }
  rep::ReplicatedVolume::Options o;
  o.uuid = v.id;
  o.generation = v.generation;
  // Generation g's master numbers its writes above g << 40: no two masters of the volume ever
  // use the same sequence (region maps compare sequences to find what differs).
  o.min_sequence = v.generation > 1 ? v.generation << 40 : 0;
  o.image_path = store_.path_of(v.id);
  o.map_path = opt_.volumes_dir + "/" + v.id + ".map";
  o.seq_path = opt_.volumes_dir + "/" + v.id + ".seq";
  o.hello.node_id = opt_.node_id;
  o.hello.address = opt_.address;
  o.link_metrics = opt_.link_metrics;
  o.observe_write = opt_.observe_write;
  o.resync_bytes_per_second = opt_.resync_bytes_per_second;
  o.link_timeout = opt_.link_timeout;
  std::string vid = v.id;
  o.on_out_of_sync = [this, vid, gen = v.generation](uint32_t copy, const std::string& reason) {
    report_out_of_sync(vid, gen, copy, reason);
  };
  o.on_change = [this] {
    // A copy is in sync again (or changed otherwise): tell the controller now rather than
    // with the next heartbeat, so it can count on the copy (e.g. to promote it) sooner.
    {
      std::lock_guard lock(work_mu_);
      report_soon_ = true;
    }
    urgent_cv_.notify_all();
  };
  auto vol = rep::ReplicatedVolume::open(io_, *tls_, std::move(file), std::move(o));
  if (!vol) {
    spdlog::error("volume={} cannot start replication: {}", v.name, vol.error());
    return;
  }
  spdlog::info("volume={} id={} master here ({} replicas)", v.name, v.id, peers.size());
  (*vol)->set_peers(std::move(peers));
  masters_[v.id] = Master{v, me.number, false, *vol};
}

void VolumeHost::open_replica(const db::VolumeRow& v, const db::CopyRow& me) {
  bool fresh = false;
  if (!ensure_image(v, fresh)) return;
  std::string map_path = opt_.volumes_dir + "/" + v.id + ".map";
  if (fresh) ::unlink(map_path.c_str());
  auto file = backend::FileVolume::open(store_.path_of(v.id), v.id, v.block_size, pool_);
  if (!file) {
    spdlog::error("volume={} cannot open image {}", v.name, store_.path_of(v.id));
    return;
  }
  rep::ReplicaCopy::Options o;
  o.uuid = v.id;
  o.copy = me.number;
  o.generation = v.generation;
  o.map_path = map_path;
  o.fresh_file = fresh;
  o.in_sync = me.state == db::kCopyInSync;
  auto copy = rep::ReplicaCopy::open(std::move(file), o);
  if (!copy) {
    spdlog::error("volume={} copy {}: {}", v.name, me.number, copy.error());
    return;
  }
  spdlog::info("volume={} id={} replica copy {} here ({})", v.name, v.id, me.number,
               fresh ? "new image" : "existing image");
  replicas_->add(*copy);
  replicas_by_key_[replica_key(v.id, me.number)] = Replica{v, me.number, *copy};
}

// Closing never waits: a removed copy's files go at once (its data is no longer wanted, and
// I/O still in flight lands in an unlinked file); a kept one is flushed by close().
void VolumeHost::begin_role_change(const std::string& volume_id) { closing_.insert(volume_id); }

std::function<void()> VolumeHost::role_change_done(const std::string& volume_id) {
  return [this, volume_id] {
    {
      std::lock_guard lock(mu_);
      closing_.erase(volume_id);
    }
    kick();  // the next reconcile opens the copy in its new role
  };
}

void VolumeHost::close_master(const std::string& id, bool delete_files_too,
                              std::function<void()> done) {
  auto it = masters_.find(id);
  if (it == masters_.end()) return;
  auto vol = it->second.volume;
  std::string name = it->second.row.name;
  masters_.erase(it);
  if (delete_files_too) {
    vol->close({});
    delete_files(id);
    if (done) done();
  } else if (vol->fenced()) {
    // Deposed while its lease was lapsed: a flush would only be held until the hold expires.
    vol->close(done);
  } else {
    vol->flush([vol, done = std::move(done)](core::IoResult) { vol->close(done); });
  }
  spdlog::info("volume={} id={} master closed{}", name, id,
               delete_files_too ? ", files deleted" : "");
}

void VolumeHost::close_replica(const std::string& key, bool delete_files_too,
                               std::function<void()> done) {
  auto it = replicas_by_key_.find(key);
  if (it == replicas_by_key_.end()) return;
  Replica r = it->second;
  replicas_by_key_.erase(it);
  replicas_->remove(r.row.id, r.number);
  r.copy->close(std::move(done));
  if (delete_files_too) delete_files(r.row.id);
  spdlog::info("volume={} copy {} closed{}", r.row.name, r.number,
               delete_files_too ? ", files deleted" : "");
}

void VolumeHost::delete_files(const std::string& id) {
  (void)store_.remove(id);
  ::unlink((opt_.volumes_dir + "/" + id + ".map").c_str());
  ::unlink((opt_.volumes_dir + "/" + id + ".seq").c_str());
}

std::shared_ptr<core::BlockVolume> VolumeHost::open_volume(const std::string& volume_id) {
  std::lock_guard lock(mu_);
  auto it = masters_.find(volume_id);
  if (it != masters_.end()) {
    it->second.volume->note_login();  // the target asks at each login
    return it->second.volume;
  }
  auto f = forwarders_.find(volume_id);
  if (f != forwarders_.end()) return f->second.volume;
  return nullptr;
}

uint64_t VolumeHost::next_report_seq() {
  const auto now_us = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                                std::chrono::system_clock::now().time_since_epoch())
                                                .count());
  uint64_t cur = report_seq_.load();
  uint64_t next = 0;
  do {
    next = std::max(cur + 1, now_us);
  } while (!report_seq_.compare_exchange_weak(cur, next));
  return next;
}

std::vector<CopyReport> VolumeHost::copy_reports() {
  // Taken before any state is read: a copy that drops out of sync after this is reported
  // through the copy-state route with a higher sequence, which this snapshot cannot undo.
  const uint64_t seq = next_report_seq();
  std::lock_guard lock(mu_);
  std::vector<CopyReport> out;
  for (const auto& [id, m] : masters_) {
    CopyReport self;
    self.volume_id = id;
    self.number = m.number;
    self.state = db::kCopyInSync;
    self.generation = m.row.generation;
    self.report_seq = seq;
    self.applied_seq = m.volume->last_sequence();
    self.volume_state = volume_state_name(m.volume->state());
    out.push_back(self);
    for (const auto& c : m.volume->copy_status()) {
      CopyReport r;
      r.volume_id = id;
      r.number = c.copy;
      r.state = c.state;
      r.generation = m.row.generation;
      r.report_seq = seq;
      r.applied_seq = c.applied_seq;
      r.sync_done_bytes = c.sync_done_bytes;
      r.sync_total_bytes = c.sync_total_bytes;
      r.behind_bytes = c.behind_bytes;
      out.push_back(std::move(r));
    }
  }
  return out;
}

core::Result<nlohmann::json, std::string> VolumeHost::local_checksums(
    const std::string& volume_id) {
  uint64_t size = 0;
  {
    std::lock_guard lock(mu_);
    if (auto it = masters_.find(volume_id); it != masters_.end()) {
      size = it->second.row.size_bytes;
    } else {
      for (const auto& [k, r] : replicas_by_key_) {
        if (r.row.id == volume_id) size = r.row.size_bytes;
      }
    }
  }
  if (size == 0) return core::fail("no copy of volume " + volume_id + " on this node");
  auto sums = checksum_image(store_.path_of(volume_id), size);
  if (!sums) return core::fail(sums.error());
  return to_json(*sums);
}

void VolumeHost::flush_all() {
  std::vector<std::shared_ptr<rep::ReplicatedVolume>> vols;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, m] : masters_) vols.push_back(m.volume);
  }
  for (auto& v : vols) (void)wait([&](auto done) { v->flush(done); });
}

void VolumeHost::report_out_of_sync(const std::string& volume_id, uint64_t generation,
                                    uint32_t copy, std::string reason) {
  {
    std::lock_guard lock(work_mu_);
    urgent_.push_back(Urgent{volume_id, generation, copy, std::move(reason)});
  }
  urgent_cv_.notify_all();
}

void VolumeHost::still_mastered(std::vector<Urgent>& batch, std::vector<CopyReport>& reports) {
  std::lock_guard lock(mu_);
  size_t kept = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    auto it = masters_.find(batch[i].volume_id);
    if (it == masters_.end() || it->second.row.generation != batch[i].generation) continue;
    if (kept != i) {  // (a self-move would empty the strings)
      batch[kept] = std::move(batch[i]);
      reports[kept] = std::move(reports[i]);
    }
    ++kept;
  }
  batch.resize(kept);
  reports.resize(kept);
}

// Records out-of-sync copies with the controller, then lets their masters go on. Retries
// until recorded: until then writes wait, which is what keeps an acknowledged write off a
// copy the catalogue would still call in sync.
void VolumeHost::run_reporter() {
  std::unique_lock lock(work_mu_);
  while (!stopping_) {
    urgent_cv_.wait(lock, [&] { return stopping_ || !urgent_.empty() || report_soon_; });
    if (stopping_) break;
    if (urgent_.empty()) {
      report_soon_ = false;
      lock.unlock();
      auto all = copy_reports();
      if (reporter_ && !all.empty()) (void)reporter_(all);  // best effort: heartbeats follow
      lock.lock();
      continue;
    }
    auto batch = std::move(urgent_);
    urgent_.clear();
    lock.unlock();
    std::vector<CopyReport> reports;
    const uint64_t seq = next_report_seq();  // after the events: above earlier snapshots
    for (const auto& u : batch) {
      CopyReport r;
      r.volume_id = u.volume_id;
      r.number = u.copy;
      r.state = db::kCopyOutOfSync;
      r.generation = u.generation;
      r.report_seq = seq;
      reports.push_back(r);
      spdlog::info("volume={} recording copy {} out of sync: {}", u.volume_id, u.copy, u.reason);
    }
    bool ok = false;
    for (int attempt = 0; !ok; ++attempt) {
      // A master closed meanwhile (deposed: the controller refuses its reports) has nothing
      // left to confirm; its writes failed when it closed.
      still_mastered(batch, reports);
      if (batch.empty()) break;
      ok = reporter_ && reporter_(reports);
      if (ok) break;
      std::unique_lock l2(work_mu_);
      if (urgent_cv_.wait_for(l2,
                              std::chrono::milliseconds(std::min(1000, 50 << std::min(attempt, 4))),
                              [&] { return stopping_; })) {
        return;
      }
    }
    for (const auto& u : batch) {
      std::shared_ptr<rep::ReplicatedVolume> vol;
      {
        std::lock_guard l(mu_);
        auto it = masters_.find(u.volume_id);
        if (it != masters_.end() && it->second.row.generation == u.generation) {
          vol = it->second.volume;
        }
      }
      if (vol) vol->confirm_out_of_sync(u.copy);
    }
    lock.lock();
  }
}

}  // namespace tandem::mgmt
