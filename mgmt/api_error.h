// ApiError: what a management operation refuses with, already shaped for HTTP: a status,
// a stable machine code, a human message and optional details. Value type.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace tandem::mgmt {

struct ApiError {
  int status = 500;
  std::string code;
  std::string message;
  nlohmann::json details = nlohmann::json::object();

  static ApiError bad_request(std::string m) { return {400, "bad_request", std::move(m)}; }
  static ApiError not_found(std::string m) { return {404, "not_found", std::move(m)}; }
  static ApiError conflict(std::string m) { return {409, "conflict", std::move(m)}; }
  static ApiError invalid(std::string m) { return {422, "invalid_value", std::move(m)}; }
  static ApiError internal(std::string m) { return {500, "internal", std::move(m)}; }
};

}  // namespace tandem::mgmt
