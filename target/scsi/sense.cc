#include "target/scsi/sense.h"

namespace tandem::target::scsi {

Sense make_sense(SenseKey key, Asc asc) {
  Sense s;
  s.key = key;
  s.asc = asc;
  return s;
}

Sense invalid_field_in_cdb(uint16_t byte, int8_t bit) {
  Sense s = make_sense(SenseKey::kIllegalRequest, kAscInvalidFieldInCdb);
  s.field = FieldPointer{true, byte, bit};
  return s;
}

Sense invalid_field_in_parameter_list(uint16_t byte, int8_t bit) {
  Sense s = make_sense(SenseKey::kIllegalRequest, kAscInvalidFieldInParameterList);
  s.field = FieldPointer{false, byte, bit};
  return s;
}

Sense parameter_list_length_error() {
  return make_sense(SenseKey::kIllegalRequest, kAscParameterListLengthError);
}

std::vector<uint8_t> build_fixed_sense(const Sense& sense) {
  std::vector<uint8_t> b(kFixedSenseLength, 0);
  b[0] = 0x70;  // current error, fixed format (SPC-4 4.5.3, table 45)
  b[2] = static_cast<uint8_t>(sense.key) & 0x0F;
  if (sense.information) {
    b[0] |= 0x80;  // VALID: INFORMATION field is defined
    uint32_t v = *sense.information;
    b[3] = static_cast<uint8_t>(v >> 24);
    b[4] = static_cast<uint8_t>(v >> 16);
    b[5] = static_cast<uint8_t>(v >> 8);
    b[6] = static_cast<uint8_t>(v);
  }
  b[7] = kFixedSenseLength - 8;
  b[12] = sense.asc.asc;
  b[13] = sense.asc.ascq;
  if (sense.field) {
    // SKSV, C/D, BPV and BIT POINTER; FIELD POINTER (SPC-4 4.5.2.4.2, table 50).
    b[15] = 0x80;
    if (sense.field->in_cdb) b[15] |= 0x40;
    if (sense.field->bit >= 0) b[15] |= 0x08 | (sense.field->bit & 0x07);
    b[16] = static_cast<uint8_t>(sense.field->byte >> 8);
    b[17] = static_cast<uint8_t>(sense.field->byte);
  }
  return b;
}

ScsiResult check_condition(const Sense& sense) {
  ScsiResult r;
  r.status = Status::kCheckCondition;
  r.sense = build_fixed_sense(sense);
  return r;
}

}  // namespace tandem::target::scsi
