#include "target/scsi/mode_pages.h"

namespace tandem::target::scsi {
namespace {

// Default values. Caching page (SBC-3 6.5.5): WCE = 1 since acknowledged writes are only
// guaranteed stable after FUA or SYNCHRONIZE CACHE.
const std::vector<uint8_t> kCachingDefault = {0x08, 0x12, 0x04, 0, 0, 0, 0, 0, 0, 0,
                                              0,    0,    0,    0, 0, 0, 0, 0, 0, 0};
const std::vector<uint8_t> kCachingChangeable = {0x08, 0x12, 0x04, 0, 0, 0, 0, 0, 0, 0,
                                                 0,    0,    0,    0, 0, 0, 0, 0, 0, 0};
// Control page (SPC-4 7.5.8): QUEUE ALGORITHM MODIFIER = 1 (unrestricted reordering). SWP
// (byte 4 bit 3) is changeable: an initiator may write-protect the logical unit.
const std::vector<uint8_t> kControlDefault = {0x0A, 0x0A, 0x00, 0x10, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0};
const std::vector<uint8_t> kControlChangeable = {0x0A, 0x0A, 0, 0, 0x08, 0, 0, 0, 0, 0, 0, 0};
// Informational exceptions control page (SPC-4 7.5.11): DEXCPT = 1, nothing to report.
const std::vector<uint8_t> kIeDefault = {0x1C, 0x0A, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0};
const std::vector<uint8_t> kIeChangeable = {0x1C, 0x0A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};

enum PageControl : uint8_t { kCurrent = 0, kChangeable = 1, kDefault = 2, kSaved = 3 };

}  // namespace

ModePages::ModePages() : caching_(kCachingDefault), control_(kControlDefault), ie_(kIeDefault) {}

core::Result<std::vector<uint8_t>, Sense> ModePages::sense(const Cdb& cdb, const DeviceInfo& info,
                                                           bool write_protected) const {
  const bool ten = cdb[0] == op::kModeSense10;
  const bool dbd = cdb[1] & 0x08;
  const bool llbaa = ten && (cdb[1] & 0x10);
  const uint8_t pc = cdb[2] >> 6;
  const uint8_t page = cdb[2] & 0x3F;
  const uint8_t subpage = cdb[3];
  // No saved values are implemented (SPC-4 6.11.1).
  if (pc == kSaved) {
    return core::fail(make_sense(SenseKey::kIllegalRequest, kAscSavingParametersNotSupported));
  }
  if (subpage != 0x00 && !(page == kAllPages && subpage == 0xFF)) {
    return core::fail(invalid_field_in_cdb(3));
  }
  auto pick = [pc](const std::vector<uint8_t>& cur, const std::vector<uint8_t>& def,
                   const std::vector<uint8_t>& chg) -> const std::vector<uint8_t>& {
    return pc == kChangeable ? chg : pc == kDefault ? def : cur;
  };
  std::vector<uint8_t> pages;
  auto add = [&pages](const std::vector<uint8_t>& p) {
    pages.insert(pages.end(), p.begin(), p.end());
  };
  switch (page) {
    case kCachingPage:
      add(pick(caching_, kCachingDefault, kCachingChangeable));
      break;
    case kControlPage:
      add(pick(control_, kControlDefault, kControlChangeable));
      break;
    case kInformationalExceptionsPage:
      add(pick(ie_, kIeDefault, kIeChangeable));
      break;
    case kAllPages:
      add(pick(caching_, kCachingDefault, kCachingChangeable));
      add(pick(control_, kControlDefault, kControlChangeable));
      add(pick(ie_, kIeDefault, kIeChangeable));
      break;
    default:
      return core::fail(invalid_field_in_cdb(2, 5));
  }

  // Block descriptor (SBC-3 6.5.2): short (8 bytes) or long (16 bytes, LLBAA).
  std::vector<uint8_t> bd;
  if (!dbd) {
    if (llbaa) {
      append_be64(bd, info.block_count);
      append_be32(bd, 0);
      append_be32(bd, info.block_size);
    } else {
      append_be32(bd, info.block_count > 0xFFFFFFFFull ? 0xFFFFFFFFu
                                                       : static_cast<uint32_t>(info.block_count));
      append_be32(bd, info.block_size & 0x00FFFFFF);  // reserved byte is 0
    }
  }
  // DEVICE-SPECIFIC PARAMETER: WP, DPOFUA (SBC-3 6.5.1).
  const uint8_t dsp = static_cast<uint8_t>((write_protected ? 0x80 : 0x00) | 0x10);
  std::vector<uint8_t> out;
  if (ten) {
    out.resize(8, 0);
    out[3] = dsp;
    out[4] = llbaa && !dbd ? 0x01 : 0x00;  // LONGLBA
    put_be16(&out[6], static_cast<uint16_t>(bd.size()));
  } else {
    out.resize(4, 0);
    out[2] = dsp;
    out[3] = static_cast<uint8_t>(bd.size());
  }
  out.insert(out.end(), bd.begin(), bd.end());
  out.insert(out.end(), pages.begin(), pages.end());
  if (ten) {
    put_be16(&out[0], static_cast<uint16_t>(out.size() - 2));
  } else {
    out[0] = static_cast<uint8_t>(out.size() - 1);
  }
  return out;
}

core::Result<bool, Sense> ModePages::select(const Cdb& cdb, std::span<const std::byte> data,
                                            const DeviceInfo& info) {
  const bool ten = cdb[0] == op::kModeSelect10;
  if (cdb[1] & 0x01) return core::fail(invalid_field_in_cdb(1, 0));  // SP: cannot save
  const uint32_t list_len = ten ? get_be16(&cdb[7]) : cdb[4];
  if (list_len == 0) return false;  // SPC-4 6.9: not an error
  if (data.size() < list_len) return core::fail(parameter_list_length_error());
  const uint8_t* p = as_u8(data);
  const size_t header = ten ? 8 : 4;
  if (list_len < header) return core::fail(parameter_list_length_error());
  size_t bd_len = ten ? get_be16(&p[6]) : p[3];
  const bool long_lba = ten && (p[4] & 0x01);
  if (header + bd_len > list_len) return core::fail(parameter_list_length_error());
  const size_t bd_size = long_lba ? 16 : 8;
  if (bd_len != 0 && bd_len != bd_size) {
    return core::fail(invalid_field_in_parameter_list(static_cast<uint16_t>(ten ? 6 : 3)));
  }
  if (bd_len != 0) {
    // The block length cannot be changed (SBC-3 6.5.2).
    const uint8_t* bd = p + header;
    uint32_t len = long_lba ? get_be32(bd + 12) : get_be24(bd + 5);
    if (len != info.block_size) {
      return core::fail(
          invalid_field_in_parameter_list(static_cast<uint16_t>(header + (long_lba ? 12 : 5))));
    }
  }

  std::vector<uint8_t> caching = caching_, control = control_, ie = ie_;
  size_t off = header + bd_len;
  while (off < list_len) {
    if (list_len - off < 2) return core::fail(parameter_list_length_error());
    const uint8_t code = p[off] & 0x3F;
    if (p[off] & 0x40)
      return core::fail(invalid_field_in_parameter_list(static_cast<uint16_t>(off), 6));
    std::vector<uint8_t>* cur = nullptr;
    const std::vector<uint8_t>* chg = nullptr;
    switch (code) {
      case kCachingPage:
        cur = &caching;
        chg = &kCachingChangeable;
        break;
      case kControlPage:
        cur = &control;
        chg = &kControlChangeable;
        break;
      case kInformationalExceptionsPage:
        cur = &ie;
        chg = &kIeChangeable;
        break;
      default:
        return core::fail(invalid_field_in_parameter_list(static_cast<uint16_t>(off), 5));
    }
    const size_t page_len = static_cast<size_t>(p[off + 1]) + 2;
    if (page_len != cur->size()) {
      return core::fail(invalid_field_in_parameter_list(static_cast<uint16_t>(off + 1)));
    }
    if (list_len - off < page_len) return core::fail(parameter_list_length_error());
    for (size_t i = 2; i < page_len; ++i) {
      const uint8_t v = p[off + i];
      const uint8_t mask = (*chg)[i];
      if ((v ^ (*cur)[i]) & ~mask) {
        return core::fail(invalid_field_in_parameter_list(static_cast<uint16_t>(off + i)));
      }
      (*cur)[i] = static_cast<uint8_t>(((*cur)[i] & ~mask) | (v & mask));
    }
    off += page_len;
  }
  const bool changed = caching != caching_ || control != control_ || ie != ie_;
  caching_ = std::move(caching);
  control_ = std::move(control);
  ie_ = std::move(ie);
  return changed;
}

}  // namespace tandem::target::scsi
