// IscsiDirectory: tells the iSCSI target which targets exist (one per volume,
// iqn.2026-11.dev.tandem:<name>) and builds the SCSI logical unit behind each, over the
// volume this node has open, with the access control and persistent reservations kept in
// the catalogue. One LogicalUnit per volume is shared by all its sessions, so
// reservations and mode pages are per volume. Thread-safe; VolumeService must outlive it.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "core/block_volume.h"
#include "target/net/iscsi_server.h"

namespace tandem::db {
class Catalogue;
}

namespace tandem::mgmt {

class VolumeService;

class IscsiDirectory : public target::net::TargetDirectory {
 public:
  IscsiDirectory(VolumeService& volumes, db::Catalogue& catalogue, std::string portal_address,
                 uint16_t portal_port);

  std::optional<target::iscsi::TargetEntry> find(std::string_view name) const override;
  std::vector<target::iscsi::TargetEntry> list() const override;
  std::shared_ptr<target::scsi::ScsiDevice> device(std::string_view target_name) override;
  // Forget the logical unit of a deleted volume.
  void forget(const std::string& volume_id);

 private:
  std::optional<target::iscsi::TargetEntry> entry_for(const std::string& volume_name,
                                                      bool with_auth) const;

  VolumeService& volumes_;
  db::Catalogue& catalogue_;
  std::string portal_;  // "ip:port,1" for SendTargets
  mutable std::mutex mu_;
  // By volume id: the unit and the volume it was built on. A unit is rebuilt when the node
  // serves the volume through another object (a new forwarder after growth, a new master).
  struct Unit {
    std::shared_ptr<core::BlockVolume> volume;
    std::shared_ptr<target::scsi::ScsiDevice> device;
  };
  std::map<std::string, Unit> units_;
};

}  // namespace tandem::mgmt
