// Test doubles and helpers shared by the backend_fwd tests: data patterns, bounded waits for
// one completion, a BlockVolume that can hold every call (a master stuck with I/O in flight),
// one that is halted, and an InboundConnection without a network. Test-only.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "backend/link/link_server.h"
#include "backend/wire/frame.h"
#include "core/block_volume.h"

namespace tandem::backend::fwd::testing {

using namespace std::chrono_literals;
using core::IoResult;
using core::IoStatus;

constexpr auto kWait = 5s;
constexpr uint32_t kBs = 512;
constexpr uint64_t kBlocks = 4096;
const std::string kUuid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

inline std::vector<std::byte> pattern(size_t blocks, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::byte> v(blocks * kBs);
  for (auto& b : v) b = std::byte(rng());
  return v;
}

// Waits (bounded) for one completion.
template <class T>
struct Waiter {
  std::shared_ptr<std::promise<T>> p = std::make_shared<std::promise<T>>();
  std::future<T> f = p->get_future();
  auto cb() {
    return [p = p](T r) { p->set_value(r); };
  }
  std::optional<T> get(std::chrono::milliseconds bound = kWait) {
    if (f.wait_for(bound) != std::future_status::ready) return std::nullopt;
    return f.get();
  }
};

inline IoResult io(std::function<void(core::BlockVolume::Done)> start) {
  Waiter<IoResult> w;
  start(w.cb());
  auto r = w.get();
  EXPECT_TRUE(r.has_value()) << "no completion within the bound";
  return r.value_or(IoResult{IoStatus::kMediumError});
}

// A BlockVolume over another that can hold every call (the master "stuck" with I/O in flight).
class GatedVolume : public core::BlockVolume {
 public:
  explicit GatedVolume(std::shared_ptr<core::BlockVolume> inner) : inner_(std::move(inner)) {}
  const std::string& uuid() const override { return inner_->uuid(); }
  uint32_t block_size() const override { return inner_->block_size(); }
  uint64_t block_count() const override { return inner_->block_count(); }
  core::VolumeState state() const override { return inner_->state(); }
  void read(uint64_t lba, std::span<std::byte> out, Done d) override {
    gate([=, this, d = std::move(d)]() mutable { inner_->read(lba, out, std::move(d)); });
  }
  void write(uint64_t lba, std::span<const std::byte> data, bool fua, Done d) override {
    gate([=, this, d = std::move(d)]() mutable { inner_->write(lba, data, fua, std::move(d)); });
  }
  void flush(Done d) override {
    gate([this, d = std::move(d)]() mutable { inner_->flush(std::move(d)); });
  }
  void unmap(uint64_t lba, uint64_t n, Done d) override {
    gate([=, this, d = std::move(d)]() mutable { inner_->unmap(lba, n, std::move(d)); });
  }
  void compare_and_write(uint64_t lba, std::span<const std::byte> c,
                         std::span<const std::byte> data, bool fua, Done d) override {
    gate([=, this, d = std::move(d)]() mutable {
      inner_->compare_and_write(lba, c, data, fua, std::move(d));
    });
  }
  void lba_status(uint64_t lba, uint64_t n, ExtentsDone d) override {
    gate([=, this, d = std::move(d)]() mutable { inner_->lba_status(lba, n, std::move(d)); });
  }

  void hold() {
    std::lock_guard lock(mu_);
    holding_ = true;
  }
  void release() {
    std::vector<std::function<void()>> run;
    {
      std::lock_guard lock(mu_);
      holding_ = false;
      run.swap(held_);
    }
    for (auto& f : run) f();
  }
  bool wait_held(size_t n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kWait, [&] { return held_.size() >= n; });
  }

 private:
  void gate(std::function<void()> f) {
    {
      std::lock_guard lock(mu_);
      if (holding_) {
        held_.push_back(std::move(f));
        cv_.notify_all();
        return;
      }
    }
    f();
  }
  std::shared_ptr<core::BlockVolume> inner_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool holding_ = false;
  std::vector<std::function<void()>> held_;
};

// A master volume that is halted: writes answered NOT READY at once (inline, as doubles may).
class HaltedVolume : public GatedVolume {
 public:
  using GatedVolume::GatedVolume;
  void write(uint64_t, std::span<const std::byte>, bool, Done d) override {
    d(IoResult{IoStatus::kNotReady});
  }
};

// An InboundConnection without a network: decodes and keeps every reply.
class FakeConnection : public link::InboundConnection {
 public:
  link::SendStatus reply(std::vector<uint8_t>&& frame) override {
    wire::FrameDecoder dec;
    auto step = dec.feed(frame);
    std::lock_guard lock(mu);
    if (!step || step->status != wire::FrameDecoder::Status::kFrame ||
        step->consumed != frame.size()) {
      ++bad;
    } else {
      replies.push_back(dec.take());
    }
    cv.notify_all();
    return link::SendStatus::kQueued;
  }
  void close(std::string) override {}
  uint64_t id() const override { return 1; }
  const std::string& peer_name() const override { return name_; }
  const std::string& remote() const override { return name_; }
  const wire::Hello& peer_hello() const override { return hello_; }
  size_t queued_bytes() const override { return 0; }

  std::mutex mu;
  std::condition_variable cv;
  std::vector<wire::Frame> replies;
  size_t bad = 0;

 private:
  std::string name_ = "fake";
  wire::Hello hello_{"fake", ""};
};

}  // namespace tandem::backend::fwd::testing
