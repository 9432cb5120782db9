// Result<T, E>: a value or an error, returned by every fallible call (STYLE habit 2).
// A tiny stand-in for C++23 std::expected; E is a per-module error type. Value type,
// no allocation of its own, safe to move between threads.
#pragma once

#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

namespace tandem::core {

// A generic error: a machine-readable code and a human message.
template <class Code>
struct Error {
  Code code;
  std::string message;
};

template <class E>
struct Unexpected {
  E error;
};

template <class E>
Unexpected<std::decay_t<E>> fail(E&& e) {
  return Unexpected<std::decay_t<E>>{std::forward<E>(e)};
}

template <class T, class E>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
  Result(Unexpected<E> e) : v_(std::in_place_index<1>, std::move(e.error)) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return checked(); }
  const T& value() const& { return const_cast<Result*>(this)->checked(); }
  T&& value() && { return std::move(checked()); }
  T* operator->() { return &checked(); }
  const T* operator->() const { return &const_cast<Result*>(this)->checked(); }
  T& operator*() { return checked(); }

  const E& error() const {
    if (ok()) std::abort();  // Asking a success for its error is a broken invariant.
    return std::get<1>(v_);
  }

 private:
  T& checked() {
    if (!ok()) std::abort();
    return std::get<0>(v_);
  }
  std::variant<T, E> v_;
};

// Result<void, E>: success carries nothing.
template <class E>
class [[nodiscard]] Result<void, E> {
 public:
  Result() = default;
  Result(Unexpected<E> e) : err_(std::move(e.error)), failed_(true) {}
  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const E& error() const {
    if (!failed_) std::abort();
    return err_;
  }

 private:
  E err_{};
  bool failed_ = false;
};

}  // namespace tandem::core
