#include "backend/repl/block_diff.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstdlib>
#include <memory>

namespace tandem::backend::repl {
namespace {

struct CtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

}  // namespace

std::vector<wire::BlockHash> hash_units(std::span<const uint8_t> region, uint32_t unit) {
  const uint64_t n = wire::units_in(region.size(), unit);
  std::vector<wire::BlockHash> out(n);
  std::unique_ptr<EVP_MD_CTX, CtxFree> ctx(EVP_MD_CTX_new());
  if (!ctx) std::abort();  // out of memory: nothing sensible to compare with
  unsigned char digest[EVP_MAX_MD_SIZE];
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t at = i * unit, len = std::min<uint64_t>(unit, region.size() - at);
    unsigned int dlen = 0;
    if (EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1 ||
        EVP_DigestUpdate(ctx.get(), region.data() + at, len) != 1 ||
        EVP_DigestFinal_ex(ctx.get(), digest, &dlen) != 1 || dlen < wire::kBlockHashSize) {
      std::abort();  // SHA-256 is always available in OpenSSL 3's default provider
    }
    std::copy_n(digest, wire::kBlockHashSize, out[i].begin());
  }
  return out;
}

std::vector<bool> units_to_send(std::span<const uint8_t> region, uint32_t unit,
                                const std::vector<wire::BlockHash>* copy_hashes) {
  const uint64_t n = wire::units_in(region.size(), unit);
  std::vector<bool> send(n, false);
  if (!copy_hashes) {
    for (uint64_t i = 0; i < n; ++i) {
      const auto part =
          region.subspan(i * unit, std::min<uint64_t>(unit, region.size() - i * unit));
      send[i] = std::any_of(part.begin(), part.end(), [](uint8_t b) { return b != 0; });
    }
    return send;
  }
  const std::vector<wire::BlockHash> mine = hash_units(region, unit);
  for (uint64_t i = 0; i < n; ++i)
    send[i] = i >= copy_hashes->size() || mine[i] != (*copy_hashes)[i];
  return send;
}

}  // namespace tandem::backend::repl
