// tandemctl: the operator's command line for a Tandem cluster, over the REST API.
// Exit codes: 0 ok, 1 the server refused or could not be reached (message printed),
// 2 usage error.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "backend/transport/tls_identity.h"
#include "core/volume_spec.h"
#include "mgmt/cli/http_client.h"
#include "mgmt/cli/table.h"

namespace {

namespace backend = tandem::backend;
using nlohmann::json;
using tandem::mgmt::HttpClient;

constexpr int kExitServer = 1;
constexpr int kExitUsage = 2;

struct Globals {
  std::string server = "http://127.0.0.1:8080";
  std::string token;
  std::string token_file;
  bool as_json = false;
};

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string resolve_token(const Globals& g) {
  if (!g.token.empty()) return g.token;
  if (const char* env = std::getenv("TANDEM_TOKEN"); env && *env) return env;
  if (!g.token_file.empty()) {
    std::ifstream f(g.token_file);
    if (!f) throw UsageError("cannot read token file " + g.token_file);
    std::string t;
    std::getline(f, t);
    return t;
  }
  return {};
}

// Sends one request; prints the server's error and returns nullopt on failure.
std::optional<json> call(const Globals& g, const std::string& method, const std::string& target,
                         const json* body = nullptr) {
  auto client = HttpClient::make(g.server, resolve_token(g));
  if (!client) throw UsageError(client.error());
  auto res = client->request(method, target, body ? body->dump() : "");
  if (!res) {
    std::cerr << "error: " << res.error() << "\n";
    return std::nullopt;
  }
  json j = res->body.empty() ? json::object() : json::parse(res->body, nullptr, false);
  if (res->status >= 400) {
    std::string msg = res->body;
    if (j.is_object() && j.contains("error")) msg = j["error"].value("message", res->body);
    std::cerr << "error: " << msg << " (HTTP " << res->status << ")\n";
    return std::nullopt;
  }
  return j;
}

std::string size_text(const json& v) {
  return v.is_number() ? tandem::core::format_size(v.get<uint64_t>()) : v.dump();
}

void print_volumes(const json& vols) {
  tandem::mgmt::Table t({"NAME", "SIZE", "REPLICAS", "MODE", "STATE", "MASTER", "IQN"});
  for (const auto& v : vols) {
    t.add({v.value("name", ""), size_text(v["size_bytes"]), std::to_string(v.value("replicas", 0)),
           v.value("failure_mode", ""), v.value("state", ""), v.value("master", ""),
           v.value("iqn", "")});
  }
  t.print(std::cout);
}

void print_volume(const json& v) {
  std::cout << "Name:           " << v.value("name", "") << "\n"
            << "ID:             " << v.value("id", "") << "\n"
            << "IQN:            " << v.value("iqn", "") << "\n"
            << "Size:           " << size_text(v["size_bytes"]) << " (" << v["size_bytes"]
            << " bytes, block size " << v.value("block_size", 0) << ")\n"
            << "State:          " << v.value("state", "") << "\n"
            << "Replicas:       " << v.value("replicas", 0) << "\n"
            << "Failure mode:   " << v.value("failure_mode", "");
  if (v.value("failure_mode", "") == "threshold") {
    std::cout << " (threshold " << v.value("failure_threshold", 0) << ")";
  }
  std::cout << "\n"
            << "Nodes needed:   " << v.value("nodes_required", 0) << " to place, "
            << v.value("nodes_for_ha", 0) << " for high availability ("
            << (v.value("ha_available", false) ? "available" : "NOT available") << ")\n"
            << "Class:          " << (v.value("class", "").empty() ? "-" : v.value("class", ""))
            << "\n"
            << "Generation:     " << v.value("generation", 0) << "\n";
  std::cout << "Labels:";
  if (v["effective_labels"].empty()) std::cout << "         -";
  std::cout << "\n";
  for (auto& [k, val] : v["effective_labels"].items()) {
    std::cout << "  " << k << "=" << val.get<std::string>() << "\n";
  }
  tandem::mgmt::Table t({"#", "NODE", "ROLE", "STATE", "APPLIED-SEQ", "BEHIND", "PROGRESS"});
  for (const auto& c : v["copies"]) {
    uint64_t done = c.value("sync_done_bytes", uint64_t{0});
    uint64_t total = c.value("sync_total_bytes", uint64_t{0});
    // Progress means something only while a copy resyncs; otherwise "-". The total is an upper
    // bound until the copy's hashes are in (it only falls), so the percentage only rises.
    std::string progress = "-";
    if (c.value("state", "") == "syncing" && total > 0) {
      progress = std::to_string(std::min<uint64_t>(100, done * 100 / total)) + "%";
    }
    t.add({std::to_string(c.value("number", 0)), c.value("node", ""), c.value("role", ""),
           c.value("state", ""), std::to_string(c.value("applied_seq", uint64_t{0})),
           size_text(c.value("behind_bytes", json(0))), progress});
  }
  std::cout << "Copies:\n";
  t.print(std::cout, 2);
}

json label_body(const std::vector<std::string>& labels, bool allow_remove) {
  json out = json::object();
  for (const auto& l : labels) {
    auto eq = l.find('=');
    if (eq == std::string::npos) {
      if (allow_remove && !l.empty() && l.back() == '-') {
        out[l.substr(0, l.size() - 1)] = nullptr;
        continue;
      }
      throw UsageError("label must be key=value" + std::string(allow_remove ? " or key-" : "") +
                       ": " + l);
    }
    out[l.substr(0, eq)] = l.substr(eq + 1);
  }
  return out;
}

uint64_t size_arg(const std::string& s) {
  auto r = tandem::core::parse_size(s);
  if (!r) throw UsageError(r.error().message);
  return *r;
}

int emit(const Globals& g, const std::optional<json>& j, const std::function<void(const json&)>& f) {
  if (!j) return kExitServer;
  if (g.as_json) {
    std::cout << j->dump(2) << "\n";
  } else {
    f(*j);
  }
  return 0;
}

int run(int argc, char** argv) {
  CLI::App app{"tandemctl: manage a Tandem replicated block-storage cluster"};
  app.require_subcommand(1);
  Globals g;
  app.add_option("--server", g.server, "API URL")->capture_default_str();
  app.add_option("--token", g.token, "admin bearer token (or TANDEM_TOKEN, or --token-file)");
  app.add_option("--token-file", g.token_file, "file holding the admin token");
  app.add_flag("--json", g.as_json, "print JSON instead of tables");

  int rc = 0;
  std::function<int()> action;

  // volume ...
  auto* vol = app.add_subcommand("volume", "manage volumes");
  vol->require_subcommand(1);
  std::string name, size, mode, cls, node, master_node;
  int replicas = -1, threshold = -1;
  uint32_t block_size = 512;
  std::vector<std::string> labels;

  auto* vcreate = vol->add_subcommand("create", "create a volume");
  vcreate->add_option("name", name, "volume name")->required();
  vcreate->add_option("--size", size, "size, e.g. 10GiB")->required();
  vcreate->add_option("--block-size", block_size, "512 or 4096")->capture_default_str();
  vcreate->add_option("--replicas", replicas, "replica count 0-5");
  vcreate->add_option("--failure-mode", mode, "hard | soft | threshold | alwayson");
  vcreate->add_option("--threshold", threshold, "failure threshold 0-5 (threshold mode)");
  vcreate->add_option("--class", cls, "storage class");
  vcreate->add_option("--label", labels, "label key=value (repeatable)");
  vcreate->add_option("--node", master_node,
                      "node for the master copy (default: the node you talk to)");
  vcreate->callback([&] {
    action = [&] {
      json body{{"name", name}, {"size", size_arg(size)}, {"block_size", block_size}};
      if (!cls.empty()) body["class"] = cls;
      json l = label_body(labels, false);
      if (!l.empty()) body["labels"] = l;
      if (replicas >= 0) body["replicas"] = replicas;
      if (!mode.empty()) body["failure_mode"] = mode;
      if (threshold >= 0) body["failure_threshold"] = threshold;
      if (!master_node.empty()) body["node"] = master_node;
      return emit(g, call(g, "POST", "/api/v1/volumes", &body), [](const json& v) {
        std::cout << "created volume " << v.value("name", "") << " ("
                  << size_text(v["size_bytes"]) << ") at " << v.value("iqn", "") << "\n";
      });
    };
  });

  auto* vlist = vol->add_subcommand("list", "list volumes");
  vlist->callback([&] {
    action = [&] {
      return emit(g, call(g, "GET", "/api/v1/volumes"),
                  [](const json& j) { print_volumes(j["volumes"]); });
    };
  });

  auto* vget = vol->add_subcommand("get", "show one volume");
  vget->add_option("name", name, "volume name")->required();
  vget->callback([&] {
    action = [&] { return emit(g, call(g, "GET", "/api/v1/volumes/" + name), print_volume); };
  });

  auto* vupdate = vol->add_subcommand("update", "change a volume's labels or grow it");
  vupdate->add_option("name", name, "volume name")->required();
  vupdate->add_option("--size", size, "new (larger) size");
  vupdate->add_option("--replicas", replicas, "replica count 0-5");
  vupdate->add_option("--failure-mode", mode, "hard | soft | threshold | alwayson");
  vupdate->add_option("--threshold", threshold, "failure threshold 0-5");
  vupdate->add_option("--label", labels, "key=value sets, key- removes (repeatable)");
  vupdate->callback([&] {
    action = [&] {
      json body = json::object();
      if (!size.empty()) body["size"] = size_arg(size);
      json l = label_body(labels, true);
      if (!l.empty()) body["labels"] = l;
      if (replicas >= 0) body["replicas"] = replicas;
      if (!mode.empty()) body["failure_mode"] = mode;
      if (threshold >= 0) body["failure_threshold"] = threshold;
      if (body.empty()) throw UsageError("nothing to update: give --size, --replicas, ...");
      return emit(g, call(g, "PATCH", "/api/v1/volumes/" + name, &body), print_volume);
    };
  });

  auto* vdelete = vol->add_subcommand("delete", "delete a volume and its data");
  vdelete->add_option("name", name, "volume name")->required();
  vdelete->callback([&] {
    action = [&] {
      return emit(g, call(g, "DELETE", "/api/v1/volumes/" + name),
                  [&](const json&) { std::cout << "deleted volume " << name << "\n"; });
    };
  });

  // volume verify NAME: compare every in-sync copy's region checksums (exit 1 on a difference).
  auto* vverify = vol->add_subcommand("verify", "compare the checksums of every in-sync copy");
  vverify->add_option("name", name, "volume name")->required();
  vverify->callback([&] {
    action = [&] {
      auto j = call(g, "POST", "/api/v1/volumes/" + name + "/verify");
      int rc = emit(g, j, [&](const json& v) {
        uint64_t compared = v.value("compared", 0);
        if (v.value("identical", false)) {
          std::cout << "volume " << name << ": all " << compared
                    << " in-sync copies identical (" << v.value("regions", 0) << " regions of "
                    << v.value("region_bytes", 0) / 1024 << " KiB)\n";
        } else {
          std::cout << "volume " << name << ": copies DIFFER in " << v.value("differing_count", 0)
                    << " region(s)";
          if (v.contains("error")) std::cout << " (" << v["error"].get<std::string>() << ")";
          std::cout << "\n";
          for (const auto& r : v.value("differing_regions", json::array())) {
            std::cout << "  region " << r.get<uint64_t>() << "\n";
          }
        }
        for (const auto& c : v.value("copies", json::array())) {
          std::cout << "  copy " << c.value("number", 0) << " on " << c.value("node", "?") << " ("
                    << c.value("role", "?") << ", " << c.value("state", "?") << ")"
                    << (c.value("compared", false) ? "" : " not compared") << "\n";
        }
      });
      if (rc == 0 && j && !j->value("identical", false)) return 1;
      return rc;
    };
  });

  // volume access NAME [...]: show, or replace the volume's iSCSI access control.
  std::vector<std::string> allow;
  std::string chap_user, chap_secret, mutual_user, mutual_secret;
  bool open_access = false;
  auto* vaccess = vol->add_subcommand(
      "access", "show or set who may log in (initiator names, CHAP, mutual CHAP)");
  vaccess->add_option("name", name, "volume name")->required();
  vaccess->add_option("--allow", allow, "initiator name allowed to log in (repeatable)");
  vaccess->add_option("--chap-user", chap_user, "CHAP user the initiator must present");
  vaccess->add_option("--chap-secret", chap_secret, "CHAP secret (12-255 bytes)");
  vaccess->add_option("--mutual-user", mutual_user, "user the target answers mutual CHAP with");
  vaccess->add_option("--mutual-secret", mutual_secret, "mutual CHAP secret (12-255 bytes)");
  vaccess->add_flag("--open", open_access, "allow every initiator, no CHAP");
  vaccess->callback([&] {
    action = [&] {
      auto show = [](const json& a) {
        std::cout << "Initiators:  "
                  << (a["initiators"].empty() ? std::string("any") : std::string()) << "\n";
        for (const auto& i : a["initiators"]) std::cout << "  " << i.get<std::string>() << "\n";
        std::cout << "CHAP:        "
                  << (a["chap"].value("enabled", false) ? "user " + a["chap"].value("user", "")
                                                        : std::string("off"))
                  << "\n"
                  << "Mutual CHAP: "
                  << (a["mutual_chap"].value("enabled", false)
                          ? "user " + a["mutual_chap"].value("user", "")
                          : std::string("off"))
                  << "\n";
      };
      bool setting = open_access || !allow.empty() || !chap_user.empty() ||
                     !chap_secret.empty() || !mutual_user.empty() || !mutual_secret.empty();
      std::string target = "/api/v1/volumes/" + name + "/access";
      if (!setting) return emit(g, call(g, "GET", target), show);
      if (open_access && (!allow.empty() || !chap_user.empty() || !mutual_user.empty())) {
        throw UsageError("--open cannot be combined with --allow or CHAP options");
      }
      if (chap_user.empty() != chap_secret.empty()) {
        throw UsageError("--chap-user and --chap-secret go together");
      }
      if (mutual_user.empty() != mutual_secret.empty()) {
        throw UsageError("--mutual-user and --mutual-secret go together");
      }
      json body{{"initiators", allow}};
      if (!chap_user.empty()) body["chap"] = {{"user", chap_user}, {"secret", chap_secret}};
      if (!mutual_user.empty()) {
        body["mutual_chap"] = {{"user", mutual_user}, {"secret", mutual_secret}};
      }
      return emit(g, call(g, "PUT", target, &body), show);
    };
  });

  // node list
  auto* nodecmd = app.add_subcommand("node", "cluster nodes");
  nodecmd->require_subcommand(1);
  nodecmd->add_subcommand("list", "list nodes")->callback([&] {
    action = [&] {
      return emit(g, call(g, "GET", "/api/v1/nodes"), [](const json& j) {
        tandem::mgmt::Table t({"NAME", "ADDRESS", "STATE", "CAPACITY", "FREE", "COPIES",
                               "LAST HEARTBEAT"});
        for (const auto& n : j["nodes"]) {
          t.add({n.value("name", ""), n.value("address", ""), n.value("state", ""),
                 size_text(n["capacity_bytes"]), size_text(n["free_bytes"]),
                 std::to_string(n.value("copies", 0)), n.value("last_heartbeat", "")});
        }
        t.print(std::cout);
      });
    };
  });

  // class create|list|delete
  auto* classcmd = app.add_subcommand("class", "storage classes (default labels)");
  classcmd->require_subcommand(1);
  auto* ccreate = classcmd->add_subcommand("create", "create a class");
  ccreate->add_option("name", name, "class name")->required();
  ccreate->add_option("--replicas", replicas, "default replica count");
  ccreate->add_option("--failure-mode", mode, "default failure mode");
  ccreate->add_option("--threshold", threshold, "default failure threshold");
  ccreate->add_option("--label", labels, "label key=value (repeatable)");
  ccreate->callback([&] {
    action = [&] {
      json body{{"name", name}};
      json l = label_body(labels, false);
      if (!l.empty()) body["labels"] = l;
      if (replicas >= 0) body["replicas"] = replicas;
      if (!mode.empty()) body["failure_mode"] = mode;
      if (threshold >= 0) body["failure_threshold"] = threshold;
      return emit(g, call(g, "POST", "/api/v1/classes", &body),
                  [](const json& c) { std::cout << "created class " << c.value("name", "") << "\n"; });
    };
  });
  classcmd->add_subcommand("list", "list classes")->callback([&] {
    action = [&] {
      return emit(g, call(g, "GET", "/api/v1/classes"), [](const json& j) {
        tandem::mgmt::Table t({"NAME", "LABELS"});
        for (const auto& c : j["classes"]) {
          std::string l;
          for (auto& [k, v] : c["labels"].items()) {
            l += (l.empty() ? "" : ",") + k + "=" + v.get<std::string>();
          }
          t.add({c.value("name", ""), l.empty() ? "-" : l});
        }
        t.print(std::cout);
      });
    };
  });
  auto* cdelete = classcmd->add_subcommand("delete", "delete a class");
  cdelete->add_option("name", name, "class name")->required();
  cdelete->callback([&] {
    action = [&] {
      return emit(g, call(g, "DELETE", "/api/v1/classes/" + name),
                  [&](const json&) { std::cout << "deleted class " << name << "\n"; });
    };
  });

  // events
  int64_t since = 0, limit = 100;
  auto* events = app.add_subcommand("events", "audit log of state changes");
  events->add_option("--since", since, "only events after this sequence number");
  events->add_option("--limit", limit, "at most this many (1-1000)")->capture_default_str();
  events->callback([&] {
    action = [&] {
      std::string target =
          "/api/v1/events?since=" + std::to_string(since) + "&limit=" + std::to_string(limit);
      return emit(g, call(g, "GET", target), [](const json& j) {
        tandem::mgmt::Table t({"SEQ", "TIME", "KIND", "VOLUME", "NODE", "MESSAGE"});
        for (const auto& e : j["events"]) {
          t.add({std::to_string(e.value("seq", 0)), e.value("time", ""), e.value("kind", ""),
                 e.value("volume", ""), e.value("node", ""), e.value("message", "")});
        }
        t.print(std::cout);
      });
    };
  });

  // cert ca|node|show: the cluster CA and node certificates, made locally (no server).
  auto* cert = app.add_subcommand("cert", "create the cluster CA and node certificates (offline)");
  cert->require_subcommand(1);
  std::string dir, ca_dir, out_dir, address, file;
  int days = backend::transport::kDefaultNodeValidityDays;
  auto* cert_ca = cert->add_subcommand("ca", "create a cluster CA in a directory");
  cert_ca->add_option("--dir", dir, "directory for ca.key (0600) and ca.crt")->required();
  cert_ca->callback([&] {
    action = [&] {
      auto ca = backend::transport::create_cluster_ca(dir);
      if (!ca) {
        std::cerr << "error: " << ca.error().message << "\n";
        return kExitServer;
      }
      std::cout << "created " << ca->common_name << "\nfingerprint " << ca->fingerprint_sha256
                << "\n";
      return 0;
    };
  });
  auto* cert_node = cert->add_subcommand("node", "make a node key and a certificate from a CA");
  cert_node->add_option("--ca-dir", ca_dir, "directory holding ca.key and ca.crt")->required();
  cert_node->add_option("--name", name, "node name (certificate CN)")->required();
  cert_node->add_option("--address", address, "node IP address (certificate SAN)")->required();
  cert_node->add_option("--out", out_dir, "directory for node.key (0600), node.crt, ca.crt")
      ->required();
  cert_node->add_option("--days", days, "validity in days")->capture_default_str();
  cert_node->callback([&] {
    action = [&] {
      namespace tls = backend::transport;
      auto kc = tls::create_node_key_and_csr(name, address);
      if (!kc) throw UsageError(kc.error().message);
      auto crt = tls::sign_csr(ca_dir, kc->csr_pem, days);
      auto ca = tls::read_pem_file(std::filesystem::path(ca_dir) / tls::kCaCertFile);
      if (!crt || !ca) {
        std::cerr << "error: " << (!crt ? crt.error().message : ca.error().message) << "\n";
        return kExitServer;
      }
      if (auto st = tls::store_node_credentials(out_dir, {*crt, kc->key_pem, *ca}); !st) {
        std::cerr << "error: " << st.error().message << "\n";
        return kExitServer;
      }
      auto fp = tls::fingerprint_sha256(*crt);
      std::cout << "certificate for " << name << " (" << address << ") in " << out_dir
                << "\nfingerprint " << (fp ? *fp : "?") << "\n";
      return 0;
    };
  });
  auto* cert_show = cert->add_subcommand("show", "show a certificate; check it against a CA");
  cert_show->add_option("file", file, "certificate (PEM)")->required();
  cert_show->add_option("--ca", ca_dir, "CA certificate (PEM) to verify against");
  cert_show->callback([&] {
    action = [&] {
      namespace tls = backend::transport;
      auto pem = tls::read_pem_file(file);
      if (!pem) throw UsageError(pem.error().message);
      auto cn = tls::subject_cn(*pem);
      auto fp = tls::fingerprint_sha256(*pem);
      if (!cn || !fp) {
        std::cerr << "error: " << (!cn ? cn.error().message : fp.error().message) << "\n";
        return kExitServer;
      }
      std::cout << "subject CN  " << *cn << "\nfingerprint " << *fp << "\n";
      if (ca_dir.empty()) return 0;
      auto ca = tls::read_pem_file(ca_dir);
      if (!ca) throw UsageError(ca.error().message);
      auto v = tls::verify_peer(*pem, *ca);
      std::cout << "verified    " << (v ? "yes" : "NO: " + v.error().message) << "\n";
      return v ? 0 : kExitServer;
    };
  });

  // cluster
  app.add_subcommand("cluster", "cluster summary")->callback([&] {
    action = [&] {
      return emit(g, call(g, "GET", "/api/v1/cluster"), [](const json& c) {
        std::cout << "Version:     " << c.value("version", "") << "\n"
                  << "Controller:  " << c.value("controller", "") << "\n"
                  << "Nodes:       " << c.value("nodes_online", 0) << " online of "
                  << c.value("nodes", 0) << "\n"
                  << "Volumes:     " << c.value("volumes", 0) << " ("
                  << size_text(c["provisioned_bytes"]) << " provisioned)\n"
                  << "Health:      " << c["health"].value("status", "") << "\n";
        for (auto& [state, n] : c["health"]["volumes"].items()) {
          std::cout << "  " << state << ": " << n << "\n";
        }
      });
    };
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  } catch (const UsageError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return kExitUsage;
  }
  if (!action) return kExitUsage;
  try {
    rc = action();
  } catch (const UsageError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return kExitUsage;
  }
  return rc;
}

}  // namespace

int main(int argc, char** argv) { return run(argc, argv); }
