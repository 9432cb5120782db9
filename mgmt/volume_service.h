// VolumeService: volume lifecycle (create, resize, relabel, delete, recover at start) over
// the catalogue and the local file store, keeping the open BlockVolumes that the iSCSI
// target serves. On the controller it also decides where copies go (placement.h): it writes
// the master and replica rows; each owning node's data plane creates their files (this node
// creates the master's file itself when it is the master). Every state change is one
// catalogue transaction with its event row.
// Thread-safe (a mutex orders lifecycle calls); the Catalogue and IoPool must outlive it.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "backend/store/file_store.h"
#include "backend/store/file_volume.h"
#include "core/result.h"
#include "core/volume_spec.h"
#include "db/catalogue.h"
#include "mgmt/api_error.h"

namespace tandem::mgmt {

template <class T>
using ApiResult = core::Result<T, ApiError>;

struct CreateVolume {
  std::string name;
  uint64_t size_bytes = 0;
  uint32_t block_size = 512;
  std::string class_name;
  core::Labels labels;
  // The master's node NAME. Empty: the node the request came in through (the "origin"),
  // and when that is empty too, this node.
  std::string node;
  std::string origin_node;
};

struct UpdateVolume {
  std::optional<uint64_t> size_bytes;
  // Label changes: a value sets the label, nullopt removes it.
  std::map<std::string, std::optional<std::string>> labels;
};

// iSCSI access control as set through the API. Secrets are write-only: reads of a volume
// report only whether CHAP is on.
struct AccessChange {
  std::vector<std::string> initiators;
  std::optional<std::pair<std::string, std::string>> chap;         // user, secret
  std::optional<std::pair<std::string, std::string>> mutual_chap;  // user, secret
};

// A volume as the API shows it.
struct VolumeView {
  db::VolumeRow row;
  std::vector<db::CopyRow> copies;
  core::Labels effective;  // class defaults + own labels
  core::VolumeSettings settings;
};

class VolumeService {
 public:
  VolumeService(db::Catalogue& cat, backend::IoPool& pool, std::string volumes_dir,
                std::string node_id, std::string node_name);

  // Opens every master copy this node holds; volumes whose master file is missing go
  // offline (event). Replica copies are left to the replication data plane.
  ApiResult<void> recover();

  ApiResult<VolumeView> create(const CreateVolume& spec);
  ApiResult<VolumeView> update(const std::string& name, const UpdateVolume& change);
  ApiResult<void> remove(const std::string& name);
  ApiResult<VolumeView> get(const std::string& name);
  ApiResult<db::AccessRow> access(const std::string& name);
  ApiResult<db::AccessRow> set_access(const std::string& name, const AccessChange& change);
  ApiResult<std::vector<VolumeView>> list();

  // The served volume (nullptr when not open on this node).
  std::shared_ptr<core::BlockVolume> open_volume(const std::string& volume_id);
  // Where served volumes come from (the node's VolumeHost); without one, the files this
  // service opened itself (single-process tests).
  void set_volume_source(std::function<std::shared_ptr<core::BlockVolume>(const std::string&)> f);
  // Hook from the iSCSI target: true while an initiator is logged in to the volume.
  void set_in_use_check(std::function<bool(const std::string& volume_name)> f);
  // Called after a volume was deleted (to drop what was built on it).
  void set_deleted_hook(std::function<void(const std::string& volume_id)> f);
  // Called (without the service's lock held) after every committed change to volumes,
  // copies or access, so the data plane can reconcile at once.
  void set_changed_hook(std::function<void()> f);
  // fdatasync every open volume (clean shutdown).
  void flush_all();

  const backend::FileStore& store() const { return store_; }

 private:
  ApiResult<VolumeView> view_of(db::Tx& tx, db::VolumeRow row);
  ApiResult<int> online_nodes(db::Tx& tx);
  // Adds or drops replica rows so the volume has `want` replicas (events name the nodes).
  ApiResult<void> resize_replicas(db::Tx& tx, const db::VolumeRow& row,
                                  const core::VolumeSettings& settings, int want);
  void notify_changed();

  db::Catalogue& cat_;
  backend::IoPool& pool_;
  backend::FileStore store_;
  std::string node_id_;
  std::string node_name_;
  std::mutex mu_;  // orders lifecycle operations and guards open_
  std::map<std::string, std::shared_ptr<backend::FileVolume>> open_;
  std::function<bool(const std::string&)> in_use_;
  std::function<void(const std::string&)> deleted_;
  std::function<void()> changed_;
  std::function<std::shared_ptr<core::BlockVolume>(const std::string&)> source_;
};

}  // namespace tandem::mgmt
