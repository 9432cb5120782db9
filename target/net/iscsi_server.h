// IscsiServer: the Asio shell of the iSCSI target (RFC 7143 over TCP). It accepts
// connections, reads into the spans iscsi::PduParser prepares (write payloads land in their
// task buffers; see pdu_parser.h), drives iscsi::LoginMachine and
// iscsi::Session, and hands SCSI tasks to the ScsiDevice of the session's target. Each
// connection lives on its own strand; device completions are posted back to it. The
// io_context and the TargetDirectory must outlive the server.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "target/iscsi/login.h"
#include "target/iscsi/session.h"
#include "target/iscsi/target_catalog.h"
#include "target/scsi/scsi_device.h"

namespace boost::asio {
class io_context;
}

namespace tandem::target::net {

// What the server serves: the targets (for login and SendTargets) and, for a target name,
// the SCSI device behind LUN 0. Called on connection strands: must be thread-safe and
// must not block for long.
class TargetDirectory : public iscsi::TargetCatalog {
 public:
  virtual std::shared_ptr<scsi::ScsiDevice> device(std::string_view target_name) = 0;
};

struct IscsiServerOptions {
  std::string address = "127.0.0.1";
  uint16_t port = 3260;
  iscsi::LoginConfig login;
  iscsi::SessionConfig session;
  std::chrono::seconds login_timeout{15};
  std::chrono::seconds nop_interval{5};   // target-initiated NOP-In keepalive
  std::chrono::seconds nop_timeout{30};   // no answer for this long: the connection is dead
  size_t max_outbound_bytes = 16u << 20;  // stop reading while this much waits to be sent
};

class IscsiServer {
 public:
  IscsiServer(boost::asio::io_context& ioc, TargetDirectory& directory, IscsiServerOptions opts);
  ~IscsiServer();
  // Binds and starts accepting; returns an error message or "".
  std::string start();
  // Closes the listener and every connection.
  void stop();
  // Full-feature Normal sessions logged in to `target_name` right now. Thread-safe.
  size_t sessions_for(std::string_view target_name) const;
  // Closes every session of a target (the volume was deleted or changed hands).
  void drop_target(std::string_view target_name);

  struct Impl;  // shared with the connections (iscsi_server.cc)

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace tandem::target::net
