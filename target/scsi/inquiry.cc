#include "target/scsi/inquiry.h"

#include <algorithm>
#include <cctype>

namespace tandem::target::scsi {
namespace {

constexpr uint8_t kSupportedPages[] = {0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2};

void append_padded(std::vector<uint8_t>& out, const char* s, size_t width) {
  size_t n = 0;
  for (; s[n] != '\0' && n < width; ++n) out.push_back(static_cast<uint8_t>(s[n]));
  for (; n < width; ++n) out.push_back(' ');
}

// Page header: PERIPHERAL QUALIFIER/TYPE, PAGE CODE, PAGE LENGTH (set by finish_page).
std::vector<uint8_t> page_header(uint8_t page) { return {0x00, page, 0x00, 0x00}; }
void finish_page(std::vector<uint8_t>& p) { put_be16(&p[2], static_cast<uint16_t>(p.size() - 4)); }

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

uint64_t fnv1a(const std::string& s, uint64_t seed) {
  uint64_t h = seed;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

// 25 nibbles (100 bits) of identity from the UUID: its own hex digits minus the version
// nibble when it is a canonical 32-digit UUID, else a hash of the string.
std::vector<uint8_t> identity_nibbles(const std::string& uuid) {
  std::vector<uint8_t> hex;
  for (char c : uuid) {
    if (c == '-') continue;
    int v = hex_value(c);
    if (v < 0) {
      hex.clear();
      break;
    }
    hex.push_back(static_cast<uint8_t>(v));
  }
  std::vector<uint8_t> out;
  if (hex.size() == 32) {
    for (size_t i = 0; i < hex.size() && out.size() < 25; ++i) {
      if (i != 12) out.push_back(hex[i]);  // skip the constant version nibble
    }
    return out;
  }
  uint64_t a = fnv1a(uuid, 0xcbf29ce484222325ull);
  uint64_t b = fnv1a(uuid, 0x84222325cbf29ce4ull);
  for (int i = 0; i < 16; ++i) out.push_back(static_cast<uint8_t>((a >> (60 - 4 * i)) & 0xF));
  for (int i = 0; i < 9; ++i) out.push_back(static_cast<uint8_t>((b >> (60 - 4 * i)) & 0xF));
  return out;
}

void append_designator(std::vector<uint8_t>& p, uint8_t proto_codeset, uint8_t piv_assoc_type,
                       const std::vector<uint8_t>& value) {
  p.push_back(proto_codeset);
  p.push_back(piv_assoc_type);
  p.push_back(0x00);
  p.push_back(static_cast<uint8_t>(value.size()));
  p.insert(p.end(), value.begin(), value.end());
}

std::vector<uint8_t> device_identification(const DeviceInfo& info) {
  auto p = page_header(0x83);
  // NAA designator: code set binary, association LU, type NAA (SPC-4 7.8.6.1, table 459).
  auto naa = naa6_designator(info.uuid);
  append_designator(p, 0x01, 0x03, std::vector<uint8_t>(naa.begin(), naa.end()));
  // T10 vendor id designator: ASCII, association LU, type 1 (SPC-4 7.8.6.4).
  std::vector<uint8_t> t10;
  append_padded(t10, kVendorId, 8);
  for (char c : info.uuid) t10.push_back(static_cast<uint8_t>(c));
  if (t10.size() > 252) t10.resize(252);
  append_designator(p, 0x02, 0x01, t10);
  // Relative target port: protocol iSCSI (5), binary, PIV=1, association target port, type 4.
  std::vector<uint8_t> rtp = {0x00, 0x00, 0x00, 0x00};
  put_be16(&rtp[2], info.relative_target_port);
  append_designator(p, 0x51, 0x94, rtp);
  finish_page(p);
  return p;
}

std::vector<uint8_t> block_limits(const DeviceInfo& info) {
  auto p = page_header(0xB0);
  p.resize(64, 0);  // PAGE LENGTH 0x3C (SBC-3 6.6.4, table 197)
  const uint32_t bs = info.block_size;
  // WSNZ = 0: WRITE SAME with NUMBER OF LOGICAL BLOCKS = 0 covers the LBAs up to the end
  // of the medium, within MAXIMUM WRITE SAME LENGTH (SBC-3 5.42, 6.6.4).
  p[4] = 0x00;
  p[5] = kMaxCompareAndWriteBlocks;
  put_be16(&p[6], static_cast<uint16_t>(std::max<uint32_t>(1, 4096 / bs)));  // OPT. GRANULARITY
  put_be32(&p[8], max_transfer_blocks(bs));
  put_be32(&p[12], std::max<uint32_t>(1, kOptimalTransferBytes / bs));
  put_be32(&p[16], max_transfer_blocks(bs));  // MAXIMUM PREFETCH LENGTH
  put_be32(&p[20], max_unmap_blocks(bs));
  put_be32(&p[24], kMaxUnmapDescriptors);
  // OPTIMAL UNMAP GRANULARITY: 4 KiB, but left unreported (0) for 4096-byte volumes: QEMU 7.2
  // (Debian 12) then keeps an allocation map whose block-status probe of
  // BDRV_REQUEST_MAX_BYTES (not a multiple of 4096) trips an assertion in its iSCSI driver
  // on every large read.
  put_be32(&p[28], bs >= kOptimalUnmapGranularityBytes ? 0 : kOptimalUnmapGranularityBytes / bs);
  put_be32(&p[32], 0x80000000u);  // UGAVALID, alignment 0
  put_be64(&p[36], max_write_same_blocks(bs));
  finish_page(p);
  return p;
}

std::vector<uint8_t> block_device_characteristics() {
  auto p = page_header(0xB1);
  p.resize(64, 0);
  put_be16(&p[4], 0x0001);  // MEDIUM ROTATION RATE: non-rotating (SBC-3 6.6.2)
  finish_page(p);
  return p;
}

std::vector<uint8_t> logical_block_provisioning() {
  auto p = page_header(0xB2);
  p.resize(8, 0);
  // LBPU, LBPWS, LBPWS10 and LBPRZ (SBC-3 6.6.5, table 201); ANC_SUP = DP = 0.
  p[5] = 0x80 | 0x40 | 0x20 | 0x04;
  p[6] = 0x02;  // PROVISIONING TYPE: thin provisioned
  finish_page(p);
  return p;
}

}  // namespace

uint32_t max_transfer_blocks(uint32_t block_size) { return kMaxTransferBytes / block_size; }
uint32_t max_unmap_blocks(uint32_t block_size) {
  return static_cast<uint32_t>(kMaxUnmapBytes / block_size);
}
uint64_t max_write_same_blocks(uint32_t block_size) { return kMaxWriteSameBytes / block_size; }
uint8_t logical_per_physical_exponent(uint32_t block_size) {
  uint8_t e = 0;
  while (kPhysicalBlockBytes != 0 && e < 15 &&
         (static_cast<uint64_t>(block_size) << (e + 1)) <= kPhysicalBlockBytes) {
    ++e;
  }
  return e;
}

std::array<uint8_t, 16> naa6_designator(const std::string& uuid) {
  // NAA 6 | 24-bit IEEE company id | 36-bit vendor specific id | 64-bit extension.
  std::vector<uint8_t> nib = {0x6};
  for (int i = 5; i >= 0; --i)
    nib.push_back(static_cast<uint8_t>((kNaaCompanyId >> (4 * i)) & 0xF));
  auto id = identity_nibbles(uuid);
  nib.insert(nib.end(), id.begin(), id.end());
  std::array<uint8_t, 16> out{};
  for (size_t i = 0; i < 32; ++i) out[i / 2] |= static_cast<uint8_t>(nib[i] << ((i % 2) ? 0 : 4));
  return out;
}

std::string unit_serial(const std::string& uuid) {
  std::string s;
  for (char c : uuid) {
    if (c != '-') s.push_back(c);
  }
  if (s.empty()) s.push_back('0');
  if (s.size() > 251) s.resize(251);
  return s;
}

std::vector<uint8_t> standard_inquiry(bool lun_present) {
  std::vector<uint8_t> d;
  d.reserve(96);
  d.push_back(lun_present ? 0x00 : 0x7F);  // direct access block device / no LU (SPC-4 6.6.2)
  d.push_back(0x00);                       // RMB = 0
  d.push_back(0x06);                       // VERSION: SPC-4
  d.push_back(0x12);                       // HISUP, RESPONSE DATA FORMAT 2
  d.push_back(0x00);                       // ADDITIONAL LENGTH (below)
  d.push_back(0x00);                       // SCCS ACC TPGS 3PC PROTECT = 0
  d.push_back(0x00);
  d.push_back(0x02);  // CMDQUE
  append_padded(d, kVendorId, 8);
  append_padded(d, kProductId, 16);
  append_padded(d, kProductRevision, 4);
  d.resize(58, 0);  // vendor specific, reserved
  // VERSION DESCRIPTORS (SPC-4 table 146): SAM-5, SPC-4, SBC-3, iSCSI.
  for (uint16_t v : {0x00A0, 0x0460, 0x04C0, 0x0960}) append_be16(d, v);
  d.resize(96, 0);
  d[4] = static_cast<uint8_t>(d.size() - 5);
  return d;
}

core::Result<std::vector<uint8_t>, Sense> vpd_page(uint8_t page, const DeviceInfo& info) {
  switch (page) {
    case 0x00: {
      auto p = page_header(0x00);
      p.insert(p.end(), std::begin(kSupportedPages), std::end(kSupportedPages));
      finish_page(p);
      return p;
    }
    case 0x80: {
      auto p = page_header(0x80);
      for (char c : unit_serial(info.uuid)) p.push_back(static_cast<uint8_t>(c));
      finish_page(p);
      return p;
    }
    case 0x83:
      return device_identification(info);
    case 0xB0:
      return block_limits(info);
    case 0xB1:
      return block_device_characteristics();
    case 0xB2:
      return logical_block_provisioning();
    default:
      return core::fail(invalid_field_in_cdb(2));
  }
}

core::Result<std::vector<uint8_t>, Sense> build_inquiry(const Cdb& cdb, const DeviceInfo& info,
                                                        bool lun_present) {
  const bool evpd = cdb[1] & 0x01;
  if (cdb[1] & 0x02) return core::fail(invalid_field_in_cdb(1, 1));  // CMDDT (obsolete)
  if (!evpd) {
    if (cdb[2] != 0) return core::fail(invalid_field_in_cdb(2));  // SPC-4 6.6.1
    return standard_inquiry(lun_present);
  }
  if (!lun_present) return core::fail(make_sense(SenseKey::kIllegalRequest, kAscLunNotSupported));
  return vpd_page(cdb[2], info);
}

}  // namespace tandem::target::scsi
