#include "tests/integration/daemon_fixture.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>

extern char** environ;

namespace tandem::testkit {
namespace {

using Clock = std::chrono::steady_clock;

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Waits for pid with a deadline; returns its wait status or -1.
int wait_for(pid_t pid, int timeout_s) {
  auto deadline = Clock::now() + std::chrono::seconds(timeout_s);
  // waitpid has no timeout: use a pidfd-free loop on WNOHANG with poll() on nothing,
  // each step bounded; the condition awaited is the child's exit.
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0) return -1;
    if (Clock::now() > deadline) return -1;
    ::poll(nullptr, 0, 10);
  }
}

}  // namespace

std::string unique_loopback() {
  static std::atomic<int> n{0};
  int pid = static_cast<int>(::getpid());
  return "127." + std::to_string(100 + pid % 150) + "." + std::to_string((pid / 150) % 250 + 1) +
         "." + std::to_string(++n % 250 + 1);
}

CommandResult run_command(const std::vector<std::string>& argv, int timeout_s,
                          const std::vector<std::string>& extra_env) {
  CommandResult res;
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0) return res;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err_pipe[1], 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_store;
  for (char** e = environ; *e; ++e) env_store.emplace_back(*e);
  for (const auto& e : extra_env) env_store.push_back(e);
  std::vector<char*> env;
  for (auto& e : env_store) env.push_back(e.data());
  env.push_back(nullptr);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, args[0], &fa, nullptr, args.data(), env.data());
  posix_spawn_file_actions_destroy(&fa);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (rc != 0) {
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    res.err = std::string("spawn failed: ") + std::strerror(rc);
    return res;
  }
  auto deadline = Clock::now() + std::chrono::seconds(timeout_s);
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  while (open_fds > 0 && Clock::now() < deadline) {
    if (::poll(fds, 2, 100) <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
      char buf[4096];
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n <= 0) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      } else {
        (i == 0 ? res.out : res.err).append(buf, static_cast<size_t>(n));
      }
    }
  }
  for (auto& f : fds) {
    if (f.fd >= 0) ::close(f.fd);
  }
  int status = wait_for(pid, open_fds > 0 ? 0 : timeout_s);
  if (status < 0) {
    ::kill(pid, SIGKILL);
    status = wait_for(pid, 10);
    res.err += "\n[timed out]";
  }
  res.exit_code = status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return res;
}

Daemon::Daemon(std::string data_dir, std::string address, std::string node_name)
    : data_dir_(std::move(data_dir)),
      address_(std::move(address)),
      node_name_(std::move(node_name)),
      log_path_(data_dir_ + ".log") {}

Daemon::~Daemon() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    wait_for(pid_, 10);
  }
}

bool Daemon::start(const std::vector<std::string>& extra_args, int timeout_s) {
  int fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  int ready_pipe[2];
  if (fd < 0 || ::pipe2(ready_pipe, O_CLOEXEC) != 0) return false;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, ready_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&fa, fd, 2);
  std::vector<std::string> argv{TANDEMD_PATH, "--node-name", node_name_, "--bind",  address_,
                                "--data-dir",  data_dir_,    "--log-level", "debug"};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  int rc = posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(ready_pipe[1]);
  ::close(fd);
  if (rc != 0) {
    pid_ = -1;
    ::close(ready_pipe[0]);
    return false;
  }
  // The daemon's stdout goes to us: wait for the ready line (the condition), copying
  // everything into the log file so tests can show it.
  std::string out;
  bool ready = false;
  auto deadline = Clock::now() + std::chrono::seconds(timeout_s);
  while (!ready && Clock::now() < deadline) {
    pollfd p{ready_pipe[0], POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char buf[1024];
    ssize_t n = ::read(ready_pipe[0], buf, sizeof buf);
    if (n <= 0) break;  // exited
    out.append(buf, static_cast<size_t>(n));
    ready = out.find(" ready: ") != std::string::npos;
  }
  {
    std::ofstream log(log_path_, std::ios::app);
    log << out;
  }
  // Keep draining stdout in the background of the daemon's life: closing our end would
  // SIGPIPE it on its next print; tandemd ignores SIGPIPE, so closing is safe.
  ::close(ready_pipe[0]);
  if (!ready) {
    ::kill(pid_, SIGKILL);
    wait_for(pid_, 10);
    pid_ = -1;
  }
  return ready;
}

int Daemon::stop(int timeout_s) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  int status = wait_for(pid_, timeout_s);
  if (status < 0) {
    ::kill(pid_, SIGKILL);
    wait_for(pid_, 10);
  }
  pid_ = -1;
  return status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void Daemon::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  wait_for(pid_, 10);
  pid_ = -1;
}

std::string Daemon::token() const {
  std::ifstream f(data_dir_ + "/admin.token");
  std::string t;
  std::getline(f, t);
  return t;
}

std::string Daemon::last_output() const { return slurp(log_path_); }

Daemon::Reply Daemon::http(const std::string& method, const std::string& target,
                           const std::string& body, bool with_token) const {
  Reply reply;
  auto client = mgmt::HttpClient::make(url(), with_token ? token() : "", 30);
  if (!client) return reply;
  auto r = client->request(method, target, body);
  if (!r) {
    reply.raw = r.error();
    return reply;
  }
  reply.status = r->status;
  reply.raw = r->body;
  reply.headers = r->headers;
  reply.body = nlohmann::json::parse(r->body, nullptr, false);
  return reply;
}

CommandResult Daemon::ctl(std::vector<std::string> args) const {
  std::vector<std::string> argv{TANDEMCTL_PATH, "--server", url(), "--token", token()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_command(argv);
}

}  // namespace tandem::testkit
