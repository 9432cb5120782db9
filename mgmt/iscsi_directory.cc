#include "mgmt/iscsi_directory.h"

#include <spdlog/spdlog.h>

#include "core/volume_spec.h"
#include "db/catalogue.h"
#include "mgmt/volume_service.h"
#include "target/scsi/logical_unit.h"

namespace tandem::mgmt {
namespace {

std::optional<std::string> volume_name_of(std::string_view iqn) {
  if (iqn.substr(0, core::kIqnPrefix.size()) != core::kIqnPrefix) return std::nullopt;
  std::string name(iqn.substr(core::kIqnPrefix.size()));
  if (!core::valid_volume_name(name)) return std::nullopt;
  return name;
}

// Persistent reservations of one volume, saved in the catalogue on every change so they
// survive a restart (SPC-4 5.9.4: the catalogue write completes before the command does).
class CataloguePrStore : public target::scsi::PrStore {
 public:
  CataloguePrStore(db::Catalogue& cat, std::string volume_id)
      : cat_(cat), volume_id_(std::move(volume_id)) {}

  std::optional<target::scsi::PrState> load() override {
    auto r = cat_.transact<std::optional<std::string>>(
        [&](db::Tx& tx) { return tx.reservation_of(volume_id_); });
    if (!r || !*r) return std::nullopt;
    auto state = target::scsi::parse_pr_state(**r);
    if (!state) spdlog::error("volume {}: stored reservation state is unreadable", volume_id_);
    return state;
  }
  void save(const target::scsi::PrState& state) override {
    auto bytes = target::scsi::serialize_pr_state(state);
    auto r = cat_.transact<void>(
        [&](db::Tx& tx) { return tx.set_reservation(volume_id_, bytes); });
    if (!r) spdlog::error("volume {}: cannot save reservations: {}", volume_id_, r.error().message);
  }

 private:
  db::Catalogue& cat_;
  std::string volume_id_;
};

}  // namespace

IscsiDirectory::IscsiDirectory(VolumeService& volumes, db::Catalogue& catalogue,
                               std::string portal_address, uint16_t portal_port)
    : volumes_(volumes),
      catalogue_(catalogue),
      portal_(portal_address + ":" + std::to_string(portal_port) + ",1") {}

std::optional<target::iscsi::TargetEntry> IscsiDirectory::entry_for(const std::string& volume_name,
                                                                    bool with_auth) const {
  target::iscsi::TargetEntry e;
  e.name = core::iqn_for(volume_name);
  e.alias = volume_name;
  e.addresses = {portal_};
  auto access = volumes_.access(volume_name);
  if (!access) return std::nullopt;
  e.allowed_initiators = access->initiators;
  if (with_auth && !access->chap_user.empty()) {
    e.auth.chap = target::iscsi::ChapCredentials{access->chap_user, access->chap_secret};
    if (!access->mutual_user.empty()) {
      e.auth.mutual_chap =
          target::iscsi::ChapCredentials{access->mutual_user, access->mutual_secret};
    }
  }
  return e;
}

std::optional<target::iscsi::TargetEntry> IscsiDirectory::find(std::string_view name) const {
  auto vol = volume_name_of(name);
  if (!vol) return std::nullopt;
  return entry_for(*vol, true);
}

std::vector<target::iscsi::TargetEntry> IscsiDirectory::list() const {
  std::vector<target::iscsi::TargetEntry> out;
  auto all = volumes_.list();
  if (!all) return out;
  for (const auto& v : *all) {
    if (auto e = entry_for(v.row.name, false)) out.push_back(std::move(*e));
  }
  return out;
}

std::shared_ptr<target::scsi::ScsiDevice> IscsiDirectory::device(std::string_view target_name) {
  auto name = volume_name_of(target_name);
  if (!name) return nullptr;
  auto v = volumes_.get(*name);
  if (!v) return nullptr;
  auto vol = volumes_.open_volume(v->row.id);
  if (!vol) return nullptr;
  std::lock_guard lock(mu_);
  auto it = units_.find(v->row.id);
  if (it != units_.end() && it->second.volume == vol) return it->second.device;
  auto lu = std::make_shared<target::scsi::LogicalUnit>(
      vol, std::make_shared<CataloguePrStore>(catalogue_, v->row.id));
  units_[v->row.id] = Unit{vol, lu};
  return lu;
}

void IscsiDirectory::forget(const std::string& volume_id) {
  std::lock_guard lock(mu_);
  units_.erase(volume_id);
}

}  // namespace tandem::mgmt
