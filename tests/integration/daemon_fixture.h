// Test kit for integration tests: starts the real tandemd binary on its own loopback
// address with a temporary data dir, waits for its "ready" line, talks HTTP to it, runs
// tandemctl, and stops it (SIGTERM, or SIGKILL for crash tests). One Daemon per process.
#pragma once

#include <sys/types.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "mgmt/cli/http_client.h"

namespace tandem::testkit {

// A loopback address unique to this test (127.<pid-derived>.<n>.1), so tests run in
// parallel without port clashes.
std::string unique_loopback();

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs argv with a deadline; captures stdout and stderr.
CommandResult run_command(const std::vector<std::string>& argv, int timeout_s = 60,
                          const std::vector<std::string>& extra_env = {});

class Daemon {
 public:
  Daemon(std::string data_dir, std::string address, std::string node_name = "n1");
  ~Daemon();

  // Starts tandemd and waits (bounded) until it prints its ready line. Returns false with
  // the daemon's output in last_output() if it exits or times out.
  bool start(const std::vector<std::string>& extra_args = {}, int timeout_s = 30);
  // SIGTERM and wait; returns the exit status (or -1 on timeout, after SIGKILL).
  int stop(int timeout_s = 30);
  void kill9();
  bool running() const { return pid_ > 0; }

  std::string token() const;
  std::string url() const { return "http://" + address_ + ":" + std::to_string(http_port_); }
  const std::string& address() const { return address_; }
  const std::string& data_dir() const { return data_dir_; }
  std::string last_output() const;

  struct Reply {
    int status = 0;
    nlohmann::json body;
    std::string raw;
    std::map<std::string, std::string> headers;
  };
  Reply http(const std::string& method, const std::string& target,
             const std::string& body = "", bool with_token = true) const;
  CommandResult ctl(std::vector<std::string> args) const;

 private:
  std::string data_dir_;
  std::string address_;
  std::string node_name_;
  int http_port_ = 8080;
  pid_t pid_ = -1;
  std::string log_path_;
};

}  // namespace tandem::testkit
