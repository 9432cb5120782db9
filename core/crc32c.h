// CRC32C (Castagnoli, reflected polynomial 0x82F63B78; RFC 3720 B.4), used by the replication
// frame codec and the region-map file. Pure functions over caller-owned bytes; safe from any
// thread. The SSE4.2 instruction is used when the CPU has it (three interleaved streams on
// buffers of 768 bytes and more, combined by zero-extension tables), else slicing-by-8 tables.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace tandem::core {

// Extend semantics: crc32c(b, crc32c(a)) == crc32c(a ++ b); seed 0 starts a fresh checksum.
// (Pre/post inversion happens inside: the value is the standard one, "123456789" -> e3069283.)
uint32_t crc32c(std::span<const uint8_t> data, uint32_t seed = 0);
uint32_t crc32c(std::span<const std::byte> data, uint32_t seed = 0);

namespace crc32c_detail {
// The paths, exposed so tests and bench/ can compare them. hardware() and
// hardware_one_stream() (the plain single-chain loop) must only be called when
// hardware_available() is true.
uint32_t software(const uint8_t* data, size_t size, uint32_t seed);
uint32_t hardware(const uint8_t* data, size_t size, uint32_t seed);
uint32_t hardware_one_stream(const uint8_t* data, size_t size, uint32_t seed);
bool hardware_available();
// crc32c(data ++ `bytes` zero bytes) from crc32c(data), by the GF(2) arithmetic the stream
// combine uses (so tests can check that arithmetic on its own).
uint32_t extend_zeros(uint32_t crc, uint64_t bytes);
}  // namespace crc32c_detail

}  // namespace tandem::core
