// Session: turning a ScsiResult into Data-In PDUs and/or a SCSI Response (RFC 7143 §11.4,
// §11.7), honouring the initiator's MaxRecvDataSegmentLength and MaxBurstLength.
#include <algorithm>

#include "target/iscsi/session.h"

namespace tandem::target::iscsi {

void Session::send_data_in(const Task& t, const scsi::ScsiResult& result, Actions& out) {
  const bool good = result.status == scsi::Status::kGood && result.sense.empty();
  const uint32_t n =
      t.read || t.expected_in > 0
          ? static_cast<uint32_t>(std::min<size_t>(result.data_in.size(), t.expected_in))
          : 0;
  // Residuals (§11.4.5) compare the initiator's expected length with what the CDB asked
  // for: more asked than expected is an overflow (only the expected part moved), less is an
  // underflow. Without a CDB length (INQUIRY, MODE SENSE...), a short Data-In is an
  // underflow.
  bool underflow = false;
  bool overflow = false;
  uint32_t residual = 0;
  const bool in_dir = !t.write;  // bidirectional commands report the write side here
  const uint32_t expected = in_dir ? t.expected_in : t.edtl;
  if (result.cdb_transfer_length && *result.cdb_transfer_length > expected) {
    overflow = true;
    residual = *result.cdb_transfer_length - expected;
  } else if (in_dir && n < expected) {
    underflow = true;
    residual = expected - n;
  } else if (!in_dir && result.cdb_transfer_length && *result.cdb_transfer_length < expected) {
    underflow = true;
    residual = expected - *result.cdb_transfer_length;
  }

  // Phase-collapse: with GOOD status and no sense, the last Data-In carries the status
  // (§11.7.2 S bit) and no SCSI Response follows.
  const bool status_in_data = good && n > 0;
  const uint32_t seg = std::max<uint32_t>(params_.initiator_max_recv_data_segment_length, 512);
  const uint32_t burst = std::max<uint32_t>(params_.max_burst_length, 512);
  const auto* bytes = reinterpret_cast<const uint8_t*>(result.data_in.data());
  uint32_t offset = 0;
  uint32_t data_sn = 0;
  uint32_t in_burst = 0;
  while (offset < n) {
    const uint32_t chunk = std::min({seg, n - offset, burst - in_burst});
    DataIn d;
    d.lun = t.lun;
    d.itt = t.itt;
    d.data_sn = data_sn++;
    d.buffer_offset = offset;
    d.data.assign(bytes + offset, bytes + offset + chunk);
    offset += chunk;
    in_burst += chunk;
    const bool last = offset == n;
    // F ends each Data-In sequence; a sequence is at most MaxBurstLength (§13.13).
    d.final = last || in_burst == burst;
    if (in_burst == burst) in_burst = 0;
    if (last && status_in_data) {
      d.status_present = true;
      d.status = static_cast<uint8_t>(result.status);
      d.underflow = underflow;
      d.overflow = overflow;
      d.residual = residual;
      fill_sns(d, true);
    } else {
      fill_sns(d, false);
      d.stat_sn = 0;  // reserved without the S bit
    }
    out.push_back(SendPdu{std::move(d)});
  }
  if (status_in_data) return;

  ScsiResponse r;
  r.itt = t.itt;
  r.status = static_cast<uint8_t>(result.status);
  r.underflow = underflow;
  r.overflow = overflow;
  r.residual = residual;
  // ExpDataSN: Data-In plus R2T PDUs sent for this command (§11.4.8).
  r.exp_data_sn = data_sn + t.r2t_sn;
  if (!result.sense.empty()) {
    // Sense data with its 2-byte SenseLength prefix (§11.4.7.2).
    const size_t len = std::min<size_t>(result.sense.size(), 0xffff);
    r.data.reserve(len + 2);
    r.data.push_back(uint8_t(len >> 8));
    r.data.push_back(uint8_t(len));
    r.data.insert(r.data.end(), result.sense.begin(), result.sense.begin() + len);
  }
  fill_sns(r, true);
  out.push_back(SendPdu{std::move(r)});
}

}  // namespace tandem::target::iscsi
