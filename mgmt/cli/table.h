// Table: aligned plain-text columns for tandemctl's human output. Value type.
#pragma once

#include <algorithm>
#include <ostream>
#include <string>
#include <vector>

namespace tandem::mgmt {

class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void print(std::ostream& out, int indent = 0) const {
    std::vector<size_t> w(header_.size());
    for (size_t i = 0; i < header_.size(); ++i) w[i] = header_[i].size();
    for (const auto& r : rows_) {
      for (size_t i = 0; i < r.size() && i < w.size(); ++i) w[i] = std::max(w[i], r[i].size());
    }
    auto line = [&](const std::vector<std::string>& r) {
      out << std::string(indent, ' ');
      for (size_t i = 0; i < w.size(); ++i) {
        std::string cell = i < r.size() ? r[i] : "";
        out << cell;
        if (i + 1 < w.size()) out << std::string(w[i] - cell.size() + 2, ' ');
      }
      out << "\n";
    };
    line(header_);
    for (const auto& r : rows_) line(r);
  }

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace tandem::mgmt
