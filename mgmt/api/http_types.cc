#include "mgmt/api/http_types.h"

namespace tandem::mgmt {
namespace {

int hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool decode(std::string_view in, bool plus_is_space, std::string* out) {
  out->clear();
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) return false;
      int h = hex(in[i + 1]), l = hex(in[i + 2]);
      if (h < 0 || l < 0) return false;
      out->push_back(static_cast<char>(h * 16 + l));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out->push_back(' ');
    } else {
      out->push_back(c);
    }
  }
  return true;
}

}  // namespace

bool split_target(const std::string& target, std::string* path,
                  std::map<std::string, std::string>* query) {
  if (target.empty() || target[0] != '/') return false;
  auto qpos = target.find('?');
  std::string_view raw_path(target.data(), qpos == std::string::npos ? target.size() : qpos);
  if (!decode(raw_path, false, path)) return false;
  query->clear();
  if (qpos == std::string::npos) return true;
  std::string_view rest(target);
  rest.remove_prefix(qpos + 1);
  while (!rest.empty()) {
    auto amp = rest.find('&');
    auto part = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
    if (part.empty()) continue;
    auto eq = part.find('=');
    std::string k, v;
    if (!decode(part.substr(0, eq), true, &k)) return false;
    if (eq != std::string_view::npos && !decode(part.substr(eq + 1), true, &v)) return false;
    (*query)[k] = v;
  }
  return true;
}

}  // namespace tandem::mgmt
